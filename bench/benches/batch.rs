//! Batch loads (issue 12): a page of 100 ids of which 90 are cached in
//! Redis and 10 are in no cache, three ways, side by side in one run:
//!
//! - `entries` — `cache.entries("user", &ids).try_get_many_with(..)`;
//! - `100 singles` — `cache.entry("user", &id).try_get_with(..)` per id,
//!   one after the other (what a loop over a `#[cache_aside]` function does);
//! - `raw MGET` — a hand-written `MGET` of the 100 keys + serde_json, and a
//!   pipeline of `SET PX` for the 10 it loaded (no versions, no lock, no
//!   conditional write: the floor).
//!
//! L1 is off, so every run reads Redis; before each run the 10 are deleted
//! again (untimed). The round trips of one run of each are counted through
//! a proxy and printed first.
//!
//! `cargo bench -p tiercache-bench --bench batch` (starts its own Redis).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tiercache::Cache;
use tiercache_bench::{Item, Proxy, host_port, item, raw, redis_url};

const IDS: u64 = 100;
const COLD: u64 = 10;
const TTL: Duration = Duration::from_secs(600);
const NAMESPACE: &str = "bench-batch";

fn ids() -> Vec<u64> {
    (0..IDS).collect()
}

/// The database: every id it is asked for.
async fn load(ids: Vec<u64>) -> Result<Vec<(u64, Item)>, std::convert::Infallible> {
    Ok(ids.into_iter().map(|id| (id, item(id))).collect())
}

async fn cache(url: &str) -> Cache {
    Cache::builder()
        .namespace(NAMESPACE)
        .redis(url)
        .l1_capacity(0)
        .build()
        .await
        .expect("the cache builds")
}

async fn entries(cache: &Cache) -> HashMap<u64, Item> {
    let ids = ids();
    let found = cache
        .entries("user", &ids)
        .ttl(TTL)
        .try_get_many_with(load)
        .await;
    found.unwrap_or_default()
}

async fn singles(cache: &Cache) -> HashMap<u64, Item> {
    let mut found = HashMap::with_capacity(IDS as usize);
    for id in ids() {
        let loaded: Item = cache
            .entry("user", &id)
            .ttl(TTL)
            .get_with(|| async move { item(id) })
            .await;
        found.insert(id, loaded);
    }
    found
}

fn raw_key(id: u64) -> String {
    format!("raw:batch:{id}")
}

async fn raw_mget(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<u64, Item> {
    let ids = ids();
    let keys: Vec<String> = ids.iter().map(|&id| raw_key(id)).collect();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(conn)
        .await
        .expect("MGET answers");
    let mut found = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for (id, value) in ids.into_iter().zip(values) {
        match value.and_then(|bytes| serde_json::from_slice::<Item>(&bytes).ok()) {
            Some(item) => {
                found.insert(id, item);
            }
            None => missing.push(id),
        }
    }
    let loaded = load(missing).await.unwrap_or_default();
    let mut pipe = redis::pipe();
    for (id, item) in &loaded {
        let bytes = serde_json::to_vec(item).expect("serializes");
        pipe.cmd("SET")
            .arg(raw_key(*id))
            .arg(bytes)
            .arg("PX")
            .arg(600_000)
            .ignore();
    }
    let () = pipe.query_async(conn).await.expect("SET answers");
    found.extend(loaded);
    found
}

/// Deletes the cold ids' entries (tiercache's and the raw ones).
async fn chill(conn: &mut redis::aio::MultiplexedConnection) {
    let mut keys: Vec<String> = (IDS - COLD..IDS).map(raw_key).collect();
    keys.extend((IDS - COLD..IDS).map(|id| format!("{NAMESPACE}:user:{id}")));
    let () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(conn)
        .await
        .expect("DEL answers");
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let url = redis_url();
    let (cache, conn) = runtime.block_on(async {
        let cache = cache(url).await;
        let mut conn = raw(url).await;
        // Warm: all 100 cached, then the 10 cold ones deleted.
        assert_eq!(entries(&cache).await.len(), IDS as usize);
        assert_eq!(raw_mget(&mut conn).await.len(), IDS as usize);
        chill(&mut conn).await;
        // Round trips of one run of each, through a counting proxy.
        let proxy = Proxy::start(host_port(url)).await;
        let counted = self::cache(&proxy.url()).await;
        let mut counted_conn = raw(&proxy.url()).await;
        for (name, run) in [("entries", 0), ("100 singles", 1), ("raw MGET", 2)] {
            chill(&mut conn).await;
            let before = proxy.round_trips();
            let found = match run {
                0 => entries(&counted).await,
                1 => singles(&counted).await,
                _ => raw_mget(&mut counted_conn).await,
            };
            assert_eq!(found.len(), IDS as usize);
            println!("batch/{name}: {} round trips", proxy.round_trips() - before);
        }
        (cache, conn)
    });

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("batch 100 ids, 90 in Redis");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let timed = |which: u8| {
        let (cache, conn) = (cache.clone(), conn.clone());
        move |iters: u64| {
            let (cache, mut conn) = (cache.clone(), conn.clone());
            async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    chill(&mut conn).await;
                    let started = Instant::now();
                    let found = match which {
                        0 => entries(&cache).await,
                        1 => singles(&cache).await,
                        _ => raw_mget(&mut conn).await,
                    };
                    spent += started.elapsed();
                    std::hint::black_box(found);
                }
                spent
            }
        }
    };
    group.bench_function("entries", |b| b.to_async(&runtime).iter_custom(timed(0)));
    group.bench_function("100 singles", |b| {
        b.to_async(&runtime).iter_custom(timed(1))
    });
    group.bench_function("raw MGET", |b| b.to_async(&runtime).iter_custom(timed(2)));
    group.finish();
    drop(conn);
    c.final_summary();
}
