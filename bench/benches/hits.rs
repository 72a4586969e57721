//! Criterion cases 1–3 (issue 5): L1 hit, L2 hit, miss — each tiercache
//! path beside its references, measured in the same process.
//!
//! Run through `scripts/bench` (which starts Redis and writes the report), or
//! alone: `cargo bench -p tiercache-bench --bench hits` starts its own Redis.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use tiercache::{Cache, cache_aside};
use tiercache_bench::l1::{cached_str, cached_u64, tc_str, tc_u64};
use tiercache_bench::{
    BenchError, Item, item, raw, raw_get, raw_mget3, redis_url, set_raw_versions,
};

// ---------------------------------------------------------------------------
// The functions under test

/// tiercache with Redis; the cache decides L1 on or off.
#[cache_aside(prefix = "l2", ttl = "10m", cache = cache, skip(cache))]
async fn tc_l2(cache: &Cache, id: u64) -> Item {
    item(id)
}

/// tiercache miss: a fresh id every call.
#[cache_aside(prefix = "miss", ttl = "10m", cache = cache, skip(cache))]
async fn tc_miss(cache: &Cache, id: u64) -> Item {
    item(id)
}

/// `cached`'s `#[concurrent_cached]` on Redis (AsyncRedisCache, the same
/// ConnectionManager as tiercache's L2).
#[concurrent_cached(
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = {
        cached::AsyncRedisCache::builder("cached-l2")
            .ttl(Duration::from_secs(600))
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

/// The same, for misses (another prefix).
#[concurrent_cached(
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = {
        cached::AsyncRedisCache::builder("cached-miss")
            .ttl(Duration::from_secs(600))
            .connection_string(redis_url())
            .connection_manager(true)
            .build()
            .await
            .expect("AsyncRedisCache builds")
    },
    map_error = |e| BenchError(format!("{e:?}"))
)]
async fn cached_redis_miss(id: u64) -> Result<Item, BenchError> {
    Ok(item(id))
}

// ---------------------------------------------------------------------------
// Shared state

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
});

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

type MokaF = moka::future::Cache<String, Arc<Item>>;
type MokaS = moka::sync::Cache<String, Arc<Item>>;

struct Redis {
    /// L1 off: every call is an L2 hit.
    l2_only: Cache,
    /// L1 on, for misses (which fill it).
    full: Cache,
    raw: redis::aio::MultiplexedConnection,
}

static REDIS: OnceLock<Redis> = OnceLock::new();

fn redis() -> &'static Redis {
    REDIS.get_or_init(|| {
        RT.block_on(async {
            let url = redis_url();
            let build = |l1| {
                Cache::builder()
                    .namespace("bench")
                    .redis(url)
                    .l1_capacity(l1)
                    .build()
            };
            Redis {
                l2_only: build(0).await.expect("cache builds"),
                full: build(10_000).await.expect("cache builds"),
                raw: raw(url).await,
            }
        })
    })
}

const L1_KEYS: u64 = 1_000;
const L2_TASKS: u64 = 64;

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, slow: bool) {
    group
        .warm_up_time(Duration::from_millis(if slow { 500 } else { 300 }))
        .measurement_time(Duration::from_millis(if slow { 2_000 } else { 1_200 }))
        .sample_size(if slow { 20 } else { 30 });
}

// ---------------------------------------------------------------------------
// Case 1: L1 hit

fn l1_hit(c: &mut Criterion) {
    let rt = current_thread_rt();
    let moka_f: MokaF = moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(600))
        .build();
    let moka_s: MokaS = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(600))
        .build();
    let map: Mutex<HashMap<u64, Arc<Item>>> = Mutex::new(HashMap::new());
    let name = String::from("user-4242");
    rt.block_on(async {
        for id in 0..L1_KEYS {
            black_box(tc_u64(id).await);
            black_box(cached_u64(id).await);
            moka_f
                .insert(format!("l1u64:{id}"), Arc::new(item(id)))
                .await;
            moka_s.insert(format!("l1u64:{id}"), Arc::new(item(id)));
            map.lock().unwrap().insert(id, Arc::new(item(id)));
        }
        black_box(tc_str(name.clone()).await);
        black_box(cached_str(name.clone()).await);
        moka_f
            .insert(format!("l1str:{name}"), Arc::new(item(9)))
            .await;
    });
    assert_eq!(tiercache::global().stats().loads, L1_KEYS + 1);

    let mut g = c.benchmark_group("l1_hit");
    configure(&mut g, false);
    g.bench_function("u64/tiercache", |b| {
        b.to_async(&rt)
            .iter(|| async { tc_u64(black_box(42)).await })
    });
    g.bench_function("u64/cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached_u64(black_box(42)).await })
    });
    g.bench_function("u64/moka_future", |b| {
        b.to_async(&rt)
            .iter(|| async { moka_f.get(black_box("l1u64:42")).await })
    });
    g.bench_function("u64/moka_future_fresh_key", |b| {
        b.to_async(&rt).iter(|| async {
            let key = format!("l1u64:{}", black_box(42u64));
            moka_f.get(&key).await
        })
    });
    g.bench_function("u64/moka_sync", |b| {
        b.iter(|| moka_s.get(black_box("l1u64:42")))
    });
    g.bench_function("u64/mutex_hashmap", |b| {
        b.iter(|| map.lock().unwrap().get(&black_box(42)).cloned())
    });
    g.bench_function("string/tiercache", |b| {
        b.to_async(&rt)
            .iter(|| async { tc_str(black_box(&name).clone()).await })
    });
    g.bench_function("string/cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached_str(black_box(&name).clone()).await })
    });
    g.bench_function("string/moka_future", |b| {
        b.to_async(&rt)
            .iter(|| async { moka_f.get(black_box("l1str:user-4242")).await })
    });
    g.finish();

    // Two threads, each on its own current-thread runtime, hitting 1 or
    // 1,000 keys; time per call = the slower thread's time / all calls.
    let mut g = c.benchmark_group("l1_hit_2threads");
    configure(&mut g, false);
    for keys in [1u64, L1_KEYS] {
        let label = if keys == 1 { "1key" } else { "1000keys" };
        g.bench_function(format!("{label}/tiercache"), |b| {
            b.iter_custom(|iters| two_threads(iters, keys, |id| async move { tc_u64(id).await }))
        });
        g.bench_function(format!("{label}/cached"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, keys, |id| async move { cached_u64(id).await })
            })
        });
        let moka_f = &moka_f;
        let keys_text: Vec<String> = (0..keys).map(|id| format!("l1u64:{id}")).collect();
        let keys_text = &keys_text;
        g.bench_function(format!("{label}/moka_future"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, keys, |id| async move {
                    moka_f.get(&keys_text[id as usize]).await
                })
            })
        });
    }
    g.finish();
}

fn two_threads<F, Fut, T>(iters: u64, keys: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    let per_thread = iters.div_ceil(2);
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let (call, barrier) = (&call, &barrier);
                s.spawn(move || {
                    let rt = current_thread_rt();
                    barrier.wait();
                    let start = Instant::now();
                    rt.block_on(async {
                        let mut id = t * keys / 2;
                        for _ in 0..per_thread {
                            id += 1;
                            if id >= keys {
                                id = 0;
                            }
                            black_box(call(id).await);
                        }
                    });
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .max()
            .unwrap()
            // per_thread * 2 calls were made; report the time for `iters`.
            .mul_f64(iters as f64 / (per_thread * 2) as f64)
    })
}

// ---------------------------------------------------------------------------
// Case 2: L2 hit

fn l2_hit(c: &mut Criterion) {
    let r = redis();
    let mut raw = r.raw.clone();
    RT.block_on(async {
        for id in 0..=L2_TASKS {
            // Fill Redis through each path (L1 is off in l2_only).
            black_box(tc_l2(&r.full, id).await);
            black_box(cached_redis(id).await.expect("cached fills Redis"));
            let json = serde_json::to_vec(&item(id)).unwrap();
            let _: () = redis::cmd("SET")
                .arg(format!("raw:l2:{id}"))
                .arg(json)
                .arg("EX")
                .arg(600)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        set_raw_versions(&mut raw).await;
        black_box(tc_l2(&r.l2_only, 0).await);
    });
    let hits_before = r.l2_only.stats().l2_hits;

    let mut g = c.benchmark_group("l2_hit");
    configure(&mut g, true);
    g.bench_function("latency/tiercache", |b| {
        b.to_async(&*RT)
            .iter(|| async { tc_l2(&r.l2_only, black_box(7)).await })
    });
    g.bench_function("latency/raw_get_json", |b| {
        b.to_async(&*RT).iter(|| {
            let mut conn = r.raw.clone();
            async move { raw_get(&mut conn, black_box(7)).await }
        })
    });
    g.bench_function("latency/raw_mget3_json", |b| {
        b.to_async(&*RT).iter(|| {
            let mut conn = r.raw.clone();
            async move { raw_mget3(&mut conn, black_box(7)).await }
        })
    });
    g.bench_function("latency/cached", |b| {
        b.to_async(&*RT)
            .iter(|| async { cached_redis(black_box(7)).await.unwrap() })
    });

    // 64 tasks on the multi-thread runtime, each on its own key (so that
    // single-flight cannot merge calls); time per call = elapsed / calls.
    g.bench_function("throughput64/tiercache", |b| {
        b.iter_custom(|iters| tasks(iters, move |id| async move { tc_l2(&r.l2_only, id).await }))
    });
    g.bench_function("throughput64/raw_get_json", |b| {
        b.iter_custom(|iters| {
            tasks(iters, move |id| {
                let mut conn = r.raw.clone();
                async move { raw_get(&mut conn, id).await }
            })
        })
    });
    g.bench_function("throughput64/raw_mget3_json", |b| {
        b.iter_custom(|iters| {
            tasks(iters, move |id| {
                let mut conn = r.raw.clone();
                async move { raw_mget3(&mut conn, id).await }
            })
        })
    });
    g.bench_function("throughput64/cached", |b| {
        b.iter_custom(|iters| tasks(iters, |id| async move { cached_redis(id).await.unwrap() }))
    });
    g.finish();
    let stats = r.l2_only.stats();
    assert_eq!(stats.loads, 0, "every tiercache call was an L2 hit");
    assert!(stats.l2_hits > hits_before);

    let mut g = c.benchmark_group("codec");
    configure(&mut g, false);
    let value = item(7);
    g.bench_function("serde_json_roundtrip", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(black_box(&value)).unwrap();
            serde_json::from_slice::<Item>(&bytes).unwrap()
        })
    });
    g.finish();
}

fn tasks<F, Fut, T>(iters: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let per_task = iters.div_ceil(L2_TASKS);
    RT.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..L2_TASKS)
            .map(|t| {
                let call = call.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        black_box(call(t + 1).await);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        start
            .elapsed()
            .mul_f64(iters as f64 / (per_task * L2_TASKS) as f64)
    })
}

// ---------------------------------------------------------------------------
// Case 3: miss (load + write); round trips are counted in `scenarios`.

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn miss(c: &mut Criterion) {
    let r = redis();
    // A run-unique id range, so a second run does not hit the first's keys.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        * 1_000_000;
    NEXT_ID.store(base, Ordering::Relaxed);
    RT.block_on(async {
        black_box(tc_miss(&r.full, fresh_id()).await); // creates the version keys
        black_box(cached_redis_miss(fresh_id()).await.unwrap());
    });
    let loads_before = r.full.stats().loads;
    let mut g = c.benchmark_group("miss");
    configure(&mut g, true);
    g.bench_function("tiercache", |b| {
        b.to_async(&*RT)
            .iter(|| async { tc_miss(&r.full, fresh_id()).await })
    });
    g.bench_function("raw_get_set", |b| {
        b.to_async(&*RT).iter(|| {
            let mut conn = r.raw.clone();
            async move {
                let key = format!("raw:miss:{}", fresh_id());
                let found: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert!(found.is_none());
                let value = item(1);
                let json = serde_json::to_vec(&value).unwrap();
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(json)
                    .arg("EX")
                    .arg(600)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                value
            }
        })
    });
    g.bench_function("cached", |b| {
        b.to_async(&*RT)
            .iter(|| async { cached_redis_miss(fresh_id()).await.unwrap() })
    });
    g.finish();
    assert!(r.full.stats().loads > loads_before);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    l1_hit(&mut c);
    l2_hit(&mut c);
    miss(&mut c);
    c.final_summary();
}
