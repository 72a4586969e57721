//! A small binary for instruction-level profiles of the hit paths
//! (`valgrind --tool=callgrind`, `perf`): `profile VARIANT N` makes N hits
//! of one key after filling it once. VARIANT: tiercache-u64, cached-u64,
//! tiercache-string, cached-string, moka-future, moka-sync, sketch-u64 (L1), and
//! l2-tiercache, l2-raw, l2-mget3, l2-cached (one task, sequential L2 hits; Redis from
//! `TIERCACHE_BENCH_REDIS` or started here).
//!
//! Wall-clock checks that interleave tiercache with its reference, for a
//! noisy machine: `l2-ab N` (L2 hit latency, call by call), `l2-64 N` (64
//! tasks, alternating rounds; `l2-64-tiercache N` alone, for `perf record`),
//! `inv N` (invalidation time after N loads, then again at once and 500 ms
//! later), `fill N` (the share of N loads of 10 ms each, 64 at a time, that
//! L1 keeps while write-throughs of other keys run at 100 a second).
//!
//! Instructions per hit = (Ir at N2 - Ir at N1) / (N2 - N1).

use std::hint::black_box;
use std::sync::Arc;

use futures_util::StreamExt;

use cached::macros::concurrent_cached;
use tiercache::{Cache, cache_aside};
use tiercache_bench::l1::{cached_str, cached_u64, tc_str, tc_u64};
use tiercache_bench::{
    BenchError, Item, item, raw, raw_get, raw_mget3, redis_url, set_raw_versions,
};

#[cache_aside(prefix = "l2", ttl = "10m", cache = cache, skip(cache))]
async fn tc_l2(cache: &Cache, id: u64) -> Item {
    item(id)
}

#[concurrent_cached(
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = {
        cached::AsyncRedisCache::builder("cached-l2")
            .ttl(std::time::Duration::from_secs(600))
            .connection_string(redis_url())
            .connection_manager(true)
            .build()
            .await
            .expect("AsyncRedisCache builds")
    },
    map_error = |e| BenchError(format!("{e:?}"))
)]
async fn cached_redis(id: u64) -> Result<Item, BenchError> {
    Ok(item(id))
}

/// A runtime like the criterion bench's: two workers.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A cache without L1 and a raw connection; for each id, `raw:l2:{id}`
/// holds the JSON of `item(id)` and tiercache's entry is in Redis.
async fn l2_fixture(ids: std::ops::Range<u64>) -> (Cache, redis::aio::MultiplexedConnection) {
    let cache = Cache::builder()
        .namespace("profile")
        .redis(redis_url())
        .l1_capacity(0)
        .build()
        .await
        .expect("cache");
    let mut conn = raw(redis_url()).await;
    for id in ids {
        let json = serde_json::to_vec(&item(id)).unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("raw:l2:{id}"))
            .arg(json)
            .query_async(&mut conn)
            .await
            .unwrap();
        black_box(tc_l2(&cache, id).await);
    }
    (cache, conn)
}

/// Wall-clock latency of L2 hits, tiercache and raw `GET` + serde_json
/// interleaved call by call on a multi-thread runtime (as the criterion
/// bench runs them), so that drift on a noisy machine hits both alike.
fn l2_ab(n: u64) {
    let rt = two_workers();
    let (cache, mut conn) = rt.block_on(l2_fixture(7..8));
    let (mut tc, mut rw) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let start = std::time::Instant::now();
        rt.block_on(async { black_box(tc_l2(&cache, black_box(7)).await) });
        tc.push(start.elapsed());
        let start = std::time::Instant::now();
        rt.block_on(async { black_box(raw_get(&mut conn, black_box(7)).await) });
        rw.push(start.elapsed());
    }
    tc.sort();
    rw.sort();
    let median = |v: &[std::time::Duration]| v[v.len() / 2];
    eprintln!(
        "l2-ab: tiercache median {:?}, raw median {:?}, ratio {:.2}",
        median(&tc),
        median(&rw),
        median(&tc).as_secs_f64() / median(&rw).as_secs_f64()
    );
}

/// L2 hit throughput of 64 tasks on a 2-worker runtime, tiercache and raw
/// `GET` + serde_json in alternating rounds of `n` calls each
/// (`l2-64`), or tiercache only (`l2-64-tiercache`, for `perf record`).
fn l2_64(variant: &str, n: u64) {
    let rt = two_workers();
    let (cache, conn) = rt.block_on(l2_fixture(0..64));
    let round = |which: u8| {
        let start = std::time::Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|id| {
                    let (cache, mut conn) = (cache.clone(), conn.clone());
                    tokio::spawn(async move {
                        for _ in 0..n / 64 {
                            match which {
                                0 => {
                                    black_box(tc_l2(&cache, id).await);
                                }
                                1 => {
                                    black_box(raw_get(&mut conn, id).await);
                                }
                                3 => {
                                    black_box(cached_redis(id).await.expect("cached answers"));
                                }
                                _ => {
                                    black_box(raw_mget3(&mut conn, id).await);
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        start.elapsed()
    };
    if variant == "l2-64-tiercache" {
        eprintln!("l2-64-tiercache: {:?} for {n} calls", round(0));
        return;
    }
    rt.block_on(set_raw_versions(&mut conn.clone()));
    rt.block_on(async {
        for id in 0..64 {
            black_box(cached_redis(id).await.expect("cached answers"));
        }
    });
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..10 {
        for (which, samples) in times.iter_mut().enumerate() {
            samples.push(round(which as u8));
        }
    }
    let per_s = |samples: &mut Vec<std::time::Duration>| {
        samples.sort();
        n as f64 / samples[5].as_secs_f64() / 1000.0
    };
    let [tc, get, mget, cached] = times.each_mut().map(per_s);
    eprintln!(
        "l2-64 (medians of 10 alternating rounds): tiercache {tc:.0} k/s, raw GET {get:.0} k/s, \
         raw MGET of 3 {mget:.0} k/s, cached's Redis store {cached:.0} k/s; tiercache / GET {:.2}, \
         MGET / GET {:.2}, tiercache / MGET {:.2}, cached / GET {:.2}",
        tc / get,
        mget / get,
        tc / mget,
        cached / get
    );
    assert!(cache.stats().loads <= 64, "every timed call was an L2 hit");
}

#[cache_aside(prefix = "inv", ttl = "10m", key = "{group}/{id}", tags = ["grp:{group}"], cache = cache, skip(cache))]
async fn tc_inv(cache: &Cache, id: u64, group: u64) -> Item {
    item(id + group)
}

/// Where invalidation time goes after `n` loads: the first invalidation
/// 20 ms after the loads, one right after it, and one 500 ms later.
fn invalidations(n: u64) {
    use futures_util::StreamExt;
    let rt = two_workers();
    rt.block_on(async {
        let cache = Cache::builder()
            .namespace(format!("inv-{}", std::process::id()))
            .redis(redis_url())
            .l1_capacity(250_000)
            .build()
            .await
            .expect("cache");
        let mut conn = raw(redis_url()).await;
        let channel = format!("{}:#events", cache.namespace());
        for _ in 0..3 {
            futures_util::stream::iter(0..n)
                .map(|id| tc_inv(&cache, id, 1))
                .buffer_unordered(256)
                .for_each(|v| async move {
                    black_box(v);
                })
                .await;
            let mut times = Vec::new();
            for pause in [20, 0, 500] {
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                let mut pings = Vec::new();
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    cache.ping().await.unwrap();
                    pings.push(start.elapsed().as_micros());
                }
                let ping = pings;
                let start = std::time::Instant::now();
                let _: () = redis::pipe()
                    .cmd("SET")
                    .arg("profile:other")
                    .arg("x")
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(&channel)
                    .arg("not an invalidation")
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let publish = start.elapsed();
                let start = std::time::Instant::now();
                cache.invalidate_tags(["grp:1"]).await.unwrap();
                times.push((ping, publish, start.elapsed()));
            }
            eprintln!(
                "inv {n} (ping, raw SET+PUBLISH, invalidate): after 20 ms {:?}, right after {:?}, after 500 ms {:?}",
                times[0], times[1], times[2]
            );
        }
    });
}

#[inline(never)]
async fn l2_hits(variant: &str, n: u64) {
    let (cache, mut conn) = l2_fixture(7..8).await;
    black_box(tc_l2(&cache, 7).await);
    black_box(cached_redis(7).await.unwrap());
    match variant {
        "l2-tiercache" => {
            for _ in 0..n {
                black_box(tc_l2(&cache, black_box(7)).await);
            }
            let stats = cache.stats();
            assert!(stats.loads <= 1, "{stats:?}");
        }
        "l2-raw" => {
            for _ in 0..n {
                black_box(raw_get(&mut conn, black_box(7)).await);
            }
        }
        "l2-mget3" => {
            set_raw_versions(&mut conn).await;
            for _ in 0..n {
                black_box(raw_mget3(&mut conn, black_box(7)).await);
            }
        }
        "l2-cached" => {
            for _ in 0..n {
                black_box(cached_redis(black_box(7)).await.unwrap());
            }
        }
        other => panic!("unknown variant {other}"),
    }
}

/// A sketch of an L1 lookup without moka on the hit path, to size what a
/// different L1 could give (not tiercache code): the key rendered into a
/// stack buffer (itoa, no allocation), hashed once (foldhash), one of 16
/// `RwLock` shards, a hash-table probe with that hash, an expiry check, a
/// downcast and a clone of the value.
struct Sketch {
    hasher: hashbrown::DefaultHashBuilder,
    shards: Vec<std::sync::RwLock<hashbrown::HashTable<SketchEntry>>>,
}

struct SketchEntry {
    hash: u64,
    key: Box<str>,
    value: Arc<dyn std::any::Any + Send + Sync>,
    expires: std::time::Instant,
}

impl Sketch {
    fn new() -> Self {
        Self {
            hasher: Default::default(),
            shards: (0..16).map(|_| Default::default()).collect(),
        }
    }

    fn key<'b>(buf: &'b mut [u8; 64], prefix: &str, id: u64) -> &'b str {
        let mut fmt = itoa::Buffer::new();
        let digits = fmt.format(id);
        let len = prefix.len() + 1 + digits.len();
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()] = b':';
        buf[prefix.len() + 1..len].copy_from_slice(digits.as_bytes());
        std::str::from_utf8(&buf[..len]).unwrap()
    }

    fn insert(&self, key: &str, value: Arc<dyn std::any::Any + Send + Sync>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards[(hash >> 60) as usize].write().unwrap();
        shard.insert_unique(
            hash,
            SketchEntry {
                hash,
                key: key.into(),
                value,
                expires: std::time::Instant::now() + std::time::Duration::from_secs(600),
            },
            |e| e.hash,
        );
    }

    #[inline(never)]
    fn get<T: Clone + 'static>(&self, prefix: &str, id: u64) -> Option<T> {
        use std::hash::BuildHasher;
        let mut buf = [0u8; 64];
        let key = Self::key(&mut buf, prefix, id);
        let hash = self.hasher.hash_one(key);
        let shard = self.shards[(hash >> 60) as usize].read().unwrap();
        let entry = shard.find(hash, |e| e.hash == hash && &*e.key == key)?;
        if entry.expires <= std::time::Instant::now() {
            return None;
        }
        entry.value.downcast_ref::<T>().cloned()
    }
}

#[inline(never)]
async fn hits(variant: &str, n: u64) {
    let name = String::from("user-4242");
    let moka_f: moka::future::Cache<String, Arc<Item>> = moka::future::Cache::new(10_000);
    let moka_s: moka::sync::Cache<String, Arc<Item>> = moka::sync::Cache::new(10_000);
    moka_f.insert("l1u64:42".into(), Arc::new(item(42))).await;
    moka_s.insert("l1u64:42".into(), Arc::new(item(42)));
    black_box(tc_u64(42).await);
    black_box(cached_u64(42).await);
    black_box(tc_str(name.clone()).await);
    black_box(cached_str(name.clone()).await);
    match variant {
        "tiercache-u64" => {
            for _ in 0..n {
                black_box(tc_u64(black_box(42)).await);
            }
        }
        "cached-u64" => {
            for _ in 0..n {
                black_box(cached_u64(black_box(42)).await);
            }
        }
        "tiercache-string" => {
            for _ in 0..n {
                black_box(tc_str(black_box(&name).clone()).await);
            }
        }
        "cached-string" => {
            for _ in 0..n {
                black_box(cached_str(black_box(&name).clone()).await);
            }
        }
        "moka-future" => {
            for _ in 0..n {
                black_box(moka_f.get(black_box("l1u64:42")).await);
            }
        }
        "sketch-u64" => {
            let sketch = Sketch::new();
            sketch.insert("l1u64:42", Arc::new(item(42)));
            assert!(sketch.get::<Item>("l1u64", 42).is_some());
            for _ in 0..n {
                black_box(sketch.get::<Item>("l1u64", black_box(42)));
            }
        }
        "moka-sync" => {
            for _ in 0..n {
                black_box(moka_s.get(black_box("l1u64:42")));
            }
        }
        other => panic!("unknown variant {other}"),
    }
}

/// Two threads, each on its own current-thread runtime, over 1,000 keys.
fn two_threads(variant: &str, n: u64) {
    let sketch = Sketch::new();
    let keys: Vec<String> = (0..1_000).map(|id| format!("l1u64:{id}")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for id in 0..1_000u64 {
            black_box(tc_u64(id).await);
            black_box(cached_u64(id).await);
            sketch.insert(&keys[id as usize], Arc::new(item(id)));
        }
    });
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let sketch = &sketch;
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for i in 0..n / 2 {
                        let id = (i + t * 500) % 1_000;
                        match variant {
                            "2t-tiercache" => drop(black_box(tc_u64(id).await)),
                            "2t-cached" => drop(black_box(cached_u64(id).await)),
                            "2t-sketch" => drop(black_box(sketch.get::<Item>("l1u64", id))),
                            other => panic!("unknown variant {other}"),
                        }
                    }
                });
            });
        }
    });
    let el = start.elapsed();
    eprintln!(
        "{variant}: {n} hits on 2 threads, {:.2} M/s",
        n as f64 / el.as_secs_f64() / 1e6
    );
}

#[cache_aside(prefix = "fill", ttl = "10m", cache = cache, skip(cache))]
async fn fill_load(cache: &Cache, id: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    id
}

#[tiercache::write_through(prefix = "fill", ttl = "10m", key = "{id}", cache = cache, skip(cache))]
async fn fill_write(cache: &Cache, id: u64) -> u64 {
    id
}

/// Loads `n` keys, 64 at a time, while another task writes other keys at
/// 100 a second; then asks each key again and counts the L1 hits.
fn fill(n: u64) {
    two_workers().block_on(async {
        // Room for every key: what is measured is invalidation, not eviction.
        let cache = Cache::builder()
            .l1_capacity(n * 4)
            .build()
            .await
            .expect("an in-memory cache builds");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (cache, done) = (cache.clone(), done.clone());
            async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
                let mut id = 1u64 << 40;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    tick.tick().await;
                    fill_write(&cache, id).await;
                    id += 1;
                }
                id - (1u64 << 40)
            }
        });
        let start = std::time::Instant::now();
        let loads = futures_util::stream::iter(0..n)
            .map(|id| {
                let cache = cache.clone();
                async move { fill_load(&cache, id).await }
            })
            .buffer_unordered(64)
            .count();
        loads.await;
        let elapsed = start.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let writes = writer.await.expect("writer");
        let before = cache.stats().l1_hits;
        for id in 0..n {
            black_box(fill_load(&cache, id).await);
        }
        let kept = cache.stats().l1_hits - before;
        eprintln!(
            "fill: {n} loads of 10 ms in {elapsed:.2?}, {writes} write-throughs of other keys meanwhile; L1 kept {kept} ({:.2} %)",
            kept as f64 * 100.0 / n as f64
        );
    });
}

fn main() {
    // With `--features metrics`: every series recorded, as in a service
    // that exports them (installed before any cache is built).
    #[cfg(feature = "metrics")]
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder");
    let mut args = std::env::args().skip(1);
    let variant = args.next().expect("VARIANT");
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("N"));
    if variant.starts_with("l2-64") {
        l2_64(&variant, n);
        return;
    }
    if variant == "inv" {
        invalidations(n);
        return;
    }
    if variant == "fill" {
        fill(n);
        return;
    }
    if variant == "l2-ab" {
        l2_ab(n);
        return;
    }
    if variant.starts_with("2t-") {
        two_threads(&variant, n);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let start = std::time::Instant::now();
    if variant.starts_with("l2-") {
        rt.block_on(l2_hits(&variant, n));
    } else {
        rt.block_on(hits(&variant, n));
    }
    eprintln!(
        "{variant}: {n} hits, {:.0} ns/hit",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}
