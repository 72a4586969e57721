//! Cases that are not a criterion loop (issue 5): round trips of a miss and
//! of a hit (case 3), invalidation at 1 / 1,000 / 100,000 entries (case 4),
//! a stampede of 1,000 callers (case 5), memory per L1 entry (case 6), and
//! the L1's hit ratio beside moka's (case 7, [`tiercache_bench::hit_ratio`]).
//! Results go to `target/tiercache-bench/scenarios.json` for `report`.
//!
//! `cargo bench -p tiercache-bench --bench scenarios [-- SECTION...]`, with
//! SECTION among `roundtrips invalidation stampede memory hit_ratio`
//! (default: all).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use futures_util::StreamExt;
use serde_json::json;
use tiercache::{Cache, cache_aside};
use tiercache_bench::{
    BenchError, Item, Proxy, Results, command_delta, commandstats, host_port, item, median_us,
    out_dir, percentiles_us, raw, redis_url, rss_bytes,
};

type Conn = redis::aio::MultiplexedConnection;

fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        * 1_000
}

// ---------------------------------------------------------------------------
// Case 3: round trips, through a counting proxy

#[cache_aside(prefix = "rt", ttl = "10m", cache = cache, skip(cache))]
async fn tc_rt(cache: &Cache, id: u64) -> Item {
    item(id)
}

static PROXY_URL: OnceLock<String> = OnceLock::new();

#[concurrent_cached(
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = {
        cached::AsyncRedisCache::builder("cached-rt")
            .ttl(Duration::from_secs(600))
            .connection_string(PROXY_URL.get().expect("proxy started"))
            .connection_manager(true)
            .build()
            .await
            .expect("AsyncRedisCache builds")
    },
    map_error = |e| BenchError(format!("{e:?}"))
)]
async fn cached_rt(id: u64) -> Result<Item, BenchError> {
    Ok(item(id))
}

async fn raw_miss(conn: &mut Conn, key: &str) -> Item {
    let found: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    assert!(found.is_none());
    let value = item(1);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(serde_json::to_vec(&value).unwrap())
        .arg("EX")
        .arg(600)
        .query_async(conn)
        .await
        .unwrap();
    value
}

async fn raw_hit(conn: &mut Conn, key: &str) -> Item {
    let found: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    serde_json::from_slice(&found.expect("present")).unwrap()
}

async fn round_trips(results: &Results) {
    let proxy = Proxy::start(host_port(redis_url())).await;
    let url = proxy.url();
    PROXY_URL.set(url.clone()).unwrap();
    let build = |l1| {
        Cache::builder()
            .namespace("rt")
            .redis(url.as_str())
            .l1_capacity(l1)
            .build()
    };
    let full = build(10_000).await.unwrap();
    let l2_only = build(0).await.unwrap();
    let mut via = raw(&url).await;
    let mut direct = raw(redis_url()).await;
    let base = run_id();
    // Warm up every path: version keys created, script loaded, connections open.
    black_box(tc_rt(&full, base).await);
    black_box(tc_rt(&l2_only, base).await);
    black_box(cached_rt(base).await.unwrap());
    black_box(cached_rt(base).await.unwrap());
    raw_miss(&mut via, &format!("raw:rt:{base}")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Once its tracked connection is up: the versions learnt, hits plain.
    black_box(tc_rt(&l2_only, base).await);
    black_box(tc_rt(&l2_only, base).await);

    const N: u64 = 50;
    let ids = || base + 1..=base + N;
    macro_rules! count {
        ($name:expr, $body:expr) => {{
            let rt0 = proxy.round_trips();
            let cmd0 = commandstats(&mut direct).await;
            $body;
            let rt1 = proxy.round_trips();
            let cmd1 = commandstats(&mut direct).await;
            let commands: serde_json::Map<String, serde_json::Value> = command_delta(&cmd0, &cmd1)
                .into_iter()
                .map(|(k, v)| (k, json!(v as f64 / N as f64)))
                .collect();
            results.put(
                $name,
                json!({ "round_trips": (rt1 - rt0) as f64 / N as f64, "commands": commands }),
            );
        }};
    }
    count!("roundtrips/miss/tiercache", {
        for id in ids() {
            black_box(tc_rt(&full, id).await);
        }
    });
    count!("roundtrips/l1_hit/tiercache", {
        for id in ids() {
            black_box(tc_rt(&full, id).await);
        }
    });
    count!("roundtrips/l2_hit/tiercache", {
        for id in ids() {
            black_box(tc_rt(&l2_only, id).await);
        }
    });
    count!("roundtrips/miss/raw_get_set", {
        for id in ids() {
            black_box(raw_miss(&mut via, &format!("raw:rt:{id}")).await);
        }
    });
    count!("roundtrips/l2_hit/raw_get", {
        for id in ids() {
            black_box(raw_hit(&mut via, &format!("raw:rt:{id}")).await);
        }
    });
    count!("roundtrips/miss/cached", {
        for id in ids() {
            black_box(cached_rt(id).await.unwrap());
        }
    });
    count!("roundtrips/l2_hit/cached", {
        for id in ids() {
            black_box(cached_rt(id).await.unwrap());
        }
    });
    // (+1: the warm-up call; +3 for l2_only)
    assert_eq!(full.stats().loads, N + 1, "misses loaded once each");
    assert_eq!(full.stats().l1_hits, N, "the second pass hit L1");
    assert_eq!(
        l2_only.stats().l2_hits,
        N + 3,
        "every l2_only call was an L2 hit"
    );
}

// ---------------------------------------------------------------------------
// Case 4: invalidation at 1 / 1,000 / 100,000 entries

/// Every entry carries the tag `grp:1` (and, implicitly, its prefix).
#[cache_aside(prefix = "inv", ttl = "10m", key = "{group}/{id}", tags = ["grp:{group}"], cache = cache, skip(cache))]
async fn tc_inv(cache: &Cache, id: u64, group: u64) -> Item {
    item(id + group)
}

/// Loads `n` entries (every call follows an invalidation, or starts cold,
/// so every call should load) and returns how many calls did not load:
/// values served from L1 although an invalidation covered them.
async fn populate_tiercache(cache: &Cache, n: u64) -> u64 {
    let before = cache.stats();
    futures_util::stream::iter(0..n)
        .map(|id| tc_inv(cache, id, 1))
        .buffer_unordered(256)
        .for_each(|v| async move {
            black_box(v);
        })
        .await;
    let after = cache.stats();
    assert_eq!(after.l2_hits, before.l2_hits, "no stale L2 hit");
    n - (after.loads - before.loads)
}

/// The seed-style tag set: `SET` each entry and `SADD` it to the tag's set.
async fn populate_seed(conn: &mut Conn, n: u64) {
    let value = serde_json::to_vec(&item(1)).unwrap();
    let mut id = 0;
    while id < n {
        let mut pipe = redis::pipe();
        for _ in 0..5_000.min(n - id) {
            let key = format!("seed:inv:{id}");
            pipe.cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("EX")
                .arg(600)
                .ignore();
            pipe.cmd("SADD").arg("seed:tag:inv").arg(&key).ignore();
            id += 1;
        }
        let _: () = pipe.query_async(conn).await.unwrap();
    }
}

/// The seed-style invalidation: `SMEMBERS`, then `DEL` of every member and
/// of the set (one pipeline, which is generous to it).
async fn invalidate_seed(conn: &mut Conn) -> usize {
    let keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg("seed:tag:inv")
        .query_async(conn)
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for chunk in keys.chunks(1_000) {
        pipe.cmd("DEL").arg(chunk).ignore();
    }
    pipe.cmd("DEL").arg("seed:tag:inv").ignore();
    let _: () = pipe.query_async(conn).await.unwrap();
    keys.len()
}

/// Lets the populate's aftermath settle, then wakes every connection the
/// invalidation is about to use, so that it is timed on a quiet system.
///
/// Right after the 10-second populate of 100,000 entries, the first round
/// trip on a connection that sat idle meanwhile is slow whatever it is: a
/// `PING` took 0.6–1.1 ms where the next ones took 0.15 ms, and a first
/// `PUBLISH` 0.6–1 ms (`profile inv 100000`); after the populate of one
/// entry there is no such idle time. An invalidation uses the cache's
/// connection and, through its `PUBLISH`, the instance's pub/sub
/// connection, so both are woken: `PING`s, and a message on the
/// invalidation channel that the listener ignores (not an invalidation).
/// The seed baseline's connection gets the same `PING`s.
async fn settle(cache: Option<(&Cache, &str)>, conn: &mut Conn) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    if let Some((_, channel)) = cache {
        let _: () = redis::cmd("PUBLISH")
            .arg(channel)
            .arg("warm-up")
            .query_async(conn)
            .await
            .unwrap();
    }
    for _ in 0..SETTLE_PINGS {
        match cache {
            Some((cache, _)) => cache.ping().await.unwrap(),
            None => {
                let _: String = redis::cmd("PING").query_async(conn).await.unwrap();
            }
        }
    }
}

/// Round trips made before each timed invalidation (see [`settle`]).
const SETTLE_PINGS: usize = 3;

async fn invalidation(results: &Results) {
    let namespace = format!("inv{}", run_id());
    let channel = format!("{namespace}:#events");
    let cache = Cache::builder()
        .namespace(namespace)
        .redis(redis_url())
        .l1_capacity(250_000)
        .build()
        .await
        .unwrap();
    let mut conn = raw(redis_url()).await;
    let _: () = redis::cmd("DEL")
        .arg("seed:tag:inv")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Each sample invalidates N freshly loaded entries, alternately by their
    // tag (`invalidate_tags`) and by their prefix (`invalidate_prefix`).
    for (n, reps) in [(1u64, 22), (1_000, 22), (100_000, 8)] {
        let (mut by_tag, mut by_prefix) = (Vec::new(), Vec::new());
        let mut populate = Duration::ZERO;
        let mut stale = 0;
        for rep in 0..reps {
            let t = Instant::now();
            let not_loaded = populate_tiercache(&cache, n).await;
            if rep > 0 {
                stale += not_loaded; // after an invalidation: stale L1 hits
            }
            populate += t.elapsed();
            settle(Some((&cache, &channel)), &mut conn).await;
            let t = Instant::now();
            if rep % 2 == 0 {
                cache.invalidate_tags(["grp:1"]).await.unwrap();
                by_tag.push(t.elapsed());
            } else {
                cache.invalidate_prefix("inv").await.unwrap();
                by_prefix.push(t.elapsed());
            }
        }
        // The last invalidation must have reached every entry.
        let not_loaded = populate_tiercache(&cache, n).await;
        stale += not_loaded;
        let common = json!({
            "samples": reps / 2,
            "populate_ms_per_rep": populate.as_secs_f64() * 1e3 / f64::from(reps),
            // Entries still served from L1 after an invalidation (should be
            // 0; moka's invalidate_entries_if misses some): a correctness check.
            "stale_l1_hits_per_invalidation": stale as f64 / f64::from(reps),
        });
        for (what, samples) in [
            ("tiercache", &mut by_tag),
            ("tiercache_prefix", &mut by_prefix),
        ] {
            let mut v = common.clone();
            v["median_us"] = json!(median_us(samples));
            results.put(&format!("invalidation/{what}/{n}"), v);
        }
        let mut seed = Vec::new();
        for _ in 0..reps {
            populate_seed(&mut conn, n).await;
            settle(None, &mut conn).await;
            let t = Instant::now();
            let deleted = invalidate_seed(&mut conn).await;
            seed.push(t.elapsed());
            assert_eq!(deleted as u64, n);
        }
        results.put(
            &format!("invalidation/seed/{n}"),
            json!({ "median_us": median_us(&mut seed), "samples": reps }),
        );
    }
}

// ---------------------------------------------------------------------------
// Case 5: stampede — 1,000 callers of one cold key, a 50 ms loader

const CALLERS: usize = 1_000;
const ROUNDS: u64 = 5;
const LOADER: Duration = Duration::from_millis(50);

static TC_LOADS: AtomicU64 = AtomicU64::new(0);
static NX_LOADS: AtomicU64 = AtomicU64::new(0);

#[cache_aside(prefix = "stampede", ttl = "10m", cache = cache, skip(cache))]
async fn tc_stampede(cache: &Cache, id: u64) -> Item {
    TC_LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(LOADER).await;
    item(id)
}

/// The classic baseline: `GET`; on a miss take `SET lock NX PX`, load, `SET`,
/// `DEL lock`; without the lock, sleep 100 ms and try again.
async fn nx_stampede(mut conn: Conn, id: u64) -> Item {
    let key = format!("nx:{id}");
    let lock = format!("nx:{id}:lock");
    loop {
        let found: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(bytes) = found {
            return serde_json::from_slice(&bytes).unwrap();
        }
        let locked: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg("token")
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if locked.is_some() {
            NX_LOADS.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(LOADER).await;
            let value = item(id);
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(serde_json::to_vec(&value).unwrap())
                .arg("EX")
                .arg(600)
                .query_async(&mut conn)
                .await
                .unwrap();
            let _: () = redis::cmd("DEL")
                .arg(&lock)
                .query_async(&mut conn)
                .await
                .unwrap();
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stampede_round<F, Fut>(call: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Item> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let barrier = barrier.clone();
            let fut = call();
            tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                black_box(fut.await);
                start.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(CALLERS);
    for h in handles {
        latencies.push(h.await.unwrap());
    }
    latencies
}

async fn stampede(results: &Results) {
    let cache = Cache::builder()
        .namespace("stampede")
        .redis(redis_url())
        .build()
        .await
        .unwrap();
    let conn = raw(redis_url()).await;
    let base = run_id();
    black_box(tc_stampede(&cache, base).await); // version keys exist
    TC_LOADS.store(0, Ordering::SeqCst);
    let report = |name: &str, loads: u64, mut all: Vec<Duration>| {
        let p = percentiles_us(&mut all, &[50.0, 99.0, 100.0]);
        results.put(
            name,
            json!({
                "callers": CALLERS, "rounds": ROUNDS, "loader_ms": LOADER.as_millis() as u64,
                "loader_calls_per_round": loads as f64 / ROUNDS as f64,
                "p50_ms": p[0] / 1e3, "p99_ms": p[1] / 1e3, "max_ms": p[2] / 1e3,
            }),
        );
    };
    let mut all = Vec::new();
    for round in 1..=ROUNDS {
        let id = base + round;
        let cache = cache.clone();
        all.extend(
            stampede_round(|| {
                let cache = cache.clone();
                async move { tc_stampede(&cache, id).await }
            })
            .await,
        );
    }
    report("stampede/tiercache", TC_LOADS.load(Ordering::SeqCst), all);
    let mut all = Vec::new();
    for round in 1..=ROUNDS {
        let id = base + round;
        all.extend(stampede_round(|| nx_stampede(conn.clone(), id)).await);
    }
    report("stampede/setnx_poll", NX_LOADS.load(Ordering::SeqCst), all);
}

// ---------------------------------------------------------------------------
// Case 6: memory per L1 entry, each measured in a fresh child process

static MEM_CACHE: OnceLock<Cache> = OnceLock::new();

/// The L1 byte budget of the `tiercache-budget` run: far less than a
/// million entries take, so that it binds.
const MEMORY_BUDGET: u64 = 64 << 20;

#[cache_aside(prefix = "mem", ttl = "1h", cache = MEM_CACHE.get().unwrap())]
async fn tc_mem(id: u64) -> Item {
    item(id)
}

fn memory_child(kind: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut extra = json!({});
    let (before, after, hits) = match kind {
        "tiercache" | "tiercache-budget" => rt.block_on(async {
            let budget = (kind == "tiercache-budget").then_some(MEMORY_BUDGET);
            let mut builder = Cache::builder().l1_capacity(n + n / 10);
            if let Some(bytes) = budget {
                builder = builder.l1_max_bytes(bytes);
            }
            MEM_CACHE.set(builder.build().await.unwrap()).unwrap();
            let before = rss_bytes();
            for id in 0..n {
                black_box(tc_mem(id).await);
            }
            let after = rss_bytes();
            let cache = MEM_CACHE.get().unwrap();
            if let Some(bytes) = budget {
                let stats = cache.stats();
                extra = json!({
                    "budget": bytes,
                    "l1_bytes": stats.l1_bytes,
                    "l1_entries": stats.l1_entries,
                });
                return (before, after, 0);
            }
            // Every entry must still be there: sample 1,000 of them.
            let hits0 = cache.stats().l1_hits;
            for id in (0..n).step_by((n / 1_000).max(1) as usize) {
                black_box(tc_mem(id).await);
            }
            (before, after, cache.stats().l1_hits - hits0)
        }),
        "moka" => {
            let cache: moka::sync::Cache<String, Arc<Item>> = moka::sync::Cache::builder()
                .max_capacity(n + n / 10)
                .time_to_live(Duration::from_secs(3600))
                .build();
            let before = rss_bytes();
            for id in 0..n {
                cache.insert(format!("mem:{id}"), Arc::new(item(id)));
            }
            let after = rss_bytes();
            let mut hits = 0;
            for id in (0..n).step_by((n / 1_000).max(1) as usize) {
                hits += u64::from(cache.get(&format!("mem:{id}")).is_some());
            }
            (before, after, hits)
        }
        other => panic!("unknown memory kind {other}"),
    };
    let mut out = json!({
        "entries": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_entry": (after - before) as f64 / n as f64,
        "sampled_present": hits,
        "secs": started.elapsed().as_secs_f64(),
    });
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    println!("MEMORY {out}");
}

fn memory(results: &Results) {
    let n: u64 = std::env::var("TIERCACHE_BENCH_MEM_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    for kind in ["tiercache", "moka", "tiercache-budget"] {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--memory-child", kind, &n.to_string()])
            .output()
            .expect("memory child runs");
        assert!(
            output.status.success(),
            "memory child {kind} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("MEMORY "))
            .expect("memory child prints its result");
        results.put(
            &format!("memory/{kind}"),
            serde_json::from_str(line).unwrap(),
        );
    }
}

// ---------------------------------------------------------------------------
// Case 7: hit ratio, tiercache's L1 beside moka, on the same streams

async fn hit_ratios(results: &Results) {
    use tiercache_bench::hit_ratio;
    for workload in hit_ratio::workloads() {
        for share in hit_ratio::CAPACITIES {
            let capacity = hit_ratio::KEYS * share / 100;
            let ours = hit_ratio::tiercache(&workload.keys, capacity).await;
            let moka = hit_ratio::moka(&workload.keys, capacity);
            results.put(
                &format!("hit_ratio/{}/{share}", workload.name),
                json!({ "tiercache": ours, "moka": moka, "requests": workload.keys.len() }),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let sections = [
        "roundtrips",
        "invalidation",
        "stampede",
        "memory",
        "hit_ratio",
    ];
    let asked: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| sections.contains(a))
        .collect();
    let run = |s: &str| asked.is_empty() || asked.contains(&s);

    let results = Results::default();
    // Keep earlier sections' results when only some run.
    let path = out_dir().join("scenarios.json");
    if let Ok(old) = std::fs::read(&path)
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&old)
        && !asked.is_empty()
    {
        for (k, v) in map {
            results.put(&k, v);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let timed = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        println!("-- {name}: {:.1}s", t.elapsed().as_secs_f64());
    };
    if run("roundtrips") {
        timed("roundtrips", &mut || rt.block_on(round_trips(&results)));
    }
    if run("invalidation") {
        timed("invalidation", &mut || rt.block_on(invalidation(&results)));
    }
    if run("stampede") {
        timed("stampede", &mut || rt.block_on(stampede(&results)));
    }
    if run("memory") {
        timed("memory", &mut || memory(&results));
    }
    if run("hit_ratio") {
        // On a runtime of its own, one thread: the replay is sequential.
        let one = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        timed("hit_ratio", &mut || one.block_on(hit_ratios(&results)));
    }
    results.write("scenarios.json");
}
