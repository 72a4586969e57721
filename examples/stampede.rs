//! A cache stampede, with and without tiercache.
//!
//! 1,000 concurrent callers ask for the same cold key, whose "query" takes
//! 50 ms. Hand-written cache-aside (check, miss, query, store) lets every
//! caller that misses run the query: 1,000 callers, 1,000 queries.
//! `#[cache_aside]` runs it once and hands the value to everyone. Then the
//! value expires, and with `stale` the next 1,000 callers get the old value
//! at once while one refresh runs in the background.
//!
//! ```sh
//! cargo run --release --example stampede
//!
//! redis-server --port 6379 --save '' --daemonize yes
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example stampede
//! ```
//!
//! Without `REDIS_URL` the cache is the embedded default (L1 only) and the
//! hand-written cache is a `RwLock<HashMap>`. With it, the cache adds Redis
//! (L2, and a cross-process lock around each load) and the hand-written
//! cache is a plain Redis `GET`, then `SET` on a miss. Each run uses a
//! namespace of its own, so it starts cold.

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands;
use tiercache::{Cache, Stats, cache_aside};
use tokio::sync::{Barrier, RwLock};

const CALLERS: usize = 1_000;
const QUERY_TIME: Duration = Duration::from_millis(50);
const DAY: u32 = 7;

/// The "database": each query takes `QUERY_TIME` and returns its own
/// sequence number, so a caller can tell which query its value came from.
#[derive(Clone, Default)]
struct Db {
    queries: Arc<AtomicU64>,
}

impl Db {
    async fn report(&self, _day: u32) -> u64 {
        let query = self.queries.fetch_add(1, SeqCst) + 1;
        tokio::time::sleep(QUERY_TIME).await;
        query
    }

    fn queries(&self) -> u64 {
        self.queries.load(SeqCst)
    }
}

/// What services write by hand today: look, and on a miss query and store.
enum HandWritten {
    InProcess(RwLock<HashMap<u32, u64>>),
    Redis {
        conn: redis::aio::MultiplexedConnection,
        namespace: String,
    },
}

impl HandWritten {
    async fn report(&self, db: &Db, day: u32) -> u64 {
        match self {
            Self::InProcess(map) => {
                if let Some(report) = map.read().await.get(&day) {
                    return *report;
                }
                let report = db.report(day).await;
                map.write().await.insert(day, report);
                report
            }
            Self::Redis { conn, namespace } => {
                let (mut conn, key) = (conn.clone(), format!("{namespace}:hand-written:{day}"));
                let cached: Option<u64> = conn.get(&key).await.expect("Redis answers GET");
                if let Some(report) = cached {
                    return report;
                }
                let report = db.report(day).await;
                let () = conn
                    .set_ex(&key, report, 600)
                    .await
                    .expect("Redis answers SET");
                report
            }
        }
    }
}

/// The same query, with tiercache.
#[derive(Clone)]
struct Reports {
    db: Db,
    cache: Cache,
}

impl Reports {
    #[cache_aside(prefix = "report", ttl = "10m", cache = self.cache)]
    async fn report(&self, day: u32) -> u64 {
        self.db.report(day).await
    }

    /// Fresh for 1 s, then served stale for up to a minute while one
    /// refresh runs. (The refresh runs as a task of its own, so `self` and
    /// the arguments must be `Clone + Send + Sync + 'static`.)
    #[cache_aside(prefix = "report-swr", ttl = "1s", stale = "1m", cache = self.cache)]
    async fn report_swr(&self, day: u32) -> u64 {
        self.db.report(day).await
    }
}

/// Starts `CALLERS` calls at once (behind a barrier); returns each caller's
/// latency, sorted, and the values they got.
async fn stampede<F, Fut>(call: F) -> (Vec<Duration>, Vec<u64>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let start = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (call, start) = (call(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let began = Instant::now();
                let value = call.await;
                (began.elapsed(), value)
            })
        })
        .collect();
    let (mut latencies, mut values) = (Vec::with_capacity(CALLERS), Vec::with_capacity(CALLERS));
    for task in tasks {
        let (latency, value) = task.await.expect("a caller finished");
        latencies.push(latency);
        values.push(value);
    }
    latencies.sort();
    values.sort();
    values.dedup();
    (latencies, values)
}

/// One row: how many queries ran, and the callers' latency percentiles.
fn row(label: &str, queries: u64, latencies: &[Duration]) {
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{label:<34} {queries:>5} queries   p50 {:>9.2?}   p99 {:>9.2?}   max {:>9.2?}",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1],
    );
}

/// What `cache.stats()` counted between two snapshots.
fn counted(label: &str, before: &Stats, after: &Stats) {
    println!(
        "  {label:<32} loads {}, misses {}, L1 hits {}, L2 hits {}, stale served {}, lock waits {}",
        after.loads - before.loads,
        after.misses - before.misses,
        after.l1_hits - before.l1_hits,
        after.l2_hits - before.l2_hits,
        after.stale_served - before.stale_served,
        after.lock_waits - before.lock_waits,
    );
}

/// Which queries the callers' values came from.
fn origin(values: &[u64]) -> String {
    match values {
        [one] => format!("the value of query #{one}"),
        [first, .., last] => format!(
            "{} different values (queries #{first}..#{last})",
            values.len()
        ),
        [] => "nothing".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let redis_url = std::env::var("REDIS_URL").ok();
    // A namespace of its own per run, so that each run starts cold.
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let namespace = format!(
        "stampede-example-{}-{}",
        std::process::id(),
        since_epoch.as_millis()
    );

    let (cache, hand) = match &redis_url {
        None => (
            Cache::in_memory(),
            HandWritten::InProcess(RwLock::default()),
        ),
        Some(url) => {
            let conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .map_err(|error| format!("no Redis at {url}: {error}"))?;
            let cache = Cache::builder()
                .namespace(namespace.as_str())
                .redis(url.as_str())
                .build()
                .await?;
            (cache, HandWritten::Redis { conn, namespace })
        }
    };
    let hand = Arc::new(hand);
    match &redis_url {
        None => println!(
            "{CALLERS} concurrent callers of one cold key, {QUERY_TIME:?} query, L1 only \
             (set REDIS_URL to add Redis)\nhand-written: a RwLock<HashMap>\n"
        ),
        Some(url) => println!(
            "{CALLERS} concurrent callers of one cold key, {QUERY_TIME:?} query, L1 + Redis \
             at {url}\nhand-written: Redis GET, then SET on a miss\n"
        ),
    }

    // 1. By hand: every caller that misses queries.
    let db = Db::default();
    let (latencies, by_hand) = stampede(|| {
        let (hand, db) = (hand.clone(), db.clone());
        async move { hand.report(&db, DAY).await }
    })
    .await;
    row("hand-written cache-aside", db.queries(), &latencies);

    // 2. tiercache: one query, shared by all.
    let reports = Reports {
        db: Db::default(),
        cache: cache.clone(),
    };
    let before_cold = cache.stats();
    let (latencies, cold) = stampede(|| {
        let reports = reports.clone();
        async move { reports.report(DAY).await }
    })
    .await;
    let after_cold = cache.stats();
    row("#[cache_aside]", reports.db.queries(), &latencies);

    // 3. The value expires; with `stale`, nobody waits for the refresh.
    let first = reports.report_swr(DAY).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the 1 s ttl
    let queries_before = reports.db.queries();
    let before_stale = cache.stats();
    let (latencies, stale) = stampede(|| {
        let reports = reports.clone();
        async move { reports.report_swr(DAY).await }
    })
    .await;
    let after_stale = cache.stats();
    row(
        "#[cache_aside(stale)], expired",
        reports.db.queries() - queries_before,
        &latencies,
    );
    tokio::time::sleep(QUERY_TIME * 3).await; // the background refresh lands
    let before_next = cache.stats();
    let next = reports.report_swr(DAY).await;
    let after_next = cache.stats();

    println!("\nwhat the callers got:");
    println!("  {:<32} {}", "hand-written cache-aside", origin(&by_hand));
    println!("  {:<32} {}", "#[cache_aside]", origin(&cold));
    let got = if stale == [first] {
        format!("the value of query #{first}, loaded before it expired")
    } else {
        format!("{} (before it expired: query #{first})", origin(&stale))
    };
    println!(
        "  {:<32} {got}; the next call, after the refresh: query #{next}",
        "#[cache_aside(stale)], expired",
    );
    println!("\ncache.stats(), counted during each act:");
    counted("#[cache_aside]", &before_cold, &after_cold);
    counted(
        "#[cache_aside(stale)], expired",
        &before_stale,
        &after_stale,
    );
    counted("the next call", &before_next, &after_next);
    Ok(())
}
