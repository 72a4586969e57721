//! A cache stampede, with and without tiercache.
//!
//! 1,000 concurrent callers ask for the same cold key, whose "query" takes
//! 50 ms. Hand-written cache-aside (check, miss, load, store) lets every
//! caller that misses run the query; `#[cache_aside]` runs it once and hands
//! the value to everyone. Then the value expires, and with `stale` the next
//! 1,000 callers get the old value at once while one refresh runs in the
//! background.
//!
//! ```text
//! cargo run --release --example stampede
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example stampede
//! ```
//!
//! The first runs on the embedded default (no Redis); the second adds L2
//! and the cross-process lock: run it in several terminals at once and the
//! query still runs once in all of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tiercache::{Cache, cache_aside};
use tokio::sync::RwLock;

const CALLERS: usize = 1_000;
const QUERY_TIME: Duration = Duration::from_millis(50);

/// The "database": counts its queries.
#[derive(Clone, Default)]
struct Db {
    queries: Arc<AtomicUsize>,
}

impl Db {
    async fn report(&self, day: u32) -> u64 {
        self.queries.fetch_add(1, SeqCst);
        tokio::time::sleep(QUERY_TIME).await;
        u64::from(day) * 1_000
    }

    fn queries(&self) -> usize {
        self.queries.load(SeqCst)
    }
}

/// What services write by hand today.
struct HandWritten {
    db: Db,
    map: RwLock<HashMap<u32, u64>>,
}

impl HandWritten {
    async fn report(&self, day: u32) -> u64 {
        if let Some(report) = self.map.read().await.get(&day) {
            return *report;
        }
        let report = self.db.report(day).await;
        self.map.write().await.insert(day, report);
        report
    }
}

/// The same, with tiercache.
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

    /// A short ttl, and a stale window: expired values are served at once
    /// while one refresh runs.
    #[cache_aside(prefix = "report-swr", ttl = "1s", stale = "1m", cache = self.cache)]
    async fn report_swr(&self, day: u32) -> u64 {
        self.db.report(day).await
    }
}

/// Runs `CALLERS` concurrent calls; returns their latencies, sorted.
async fn stampede<F, Fut>(call: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (call, start) = (call(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let began = Instant::now();
                call.await;
                began.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(CALLERS);
    for task in tasks {
        latencies.push(task.await.expect("a caller finished"));
    }
    latencies.sort();
    latencies
}

fn print(label: &str, queries: usize, latencies: &[Duration]) {
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{label:<34} {queries:>5} queries   p50 {:>9.2?}   p99 {:>9.2?}   max {:>9.2?}",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1],
    );
}

#[tokio::main]
async fn main() -> Result<(), tiercache::Error> {
    let redis = std::env::var("REDIS_URL").ok();
    // A namespace of its own per run, so that each run starts cold.
    let namespace = format!("stampede-example-{}", std::process::id());
    let cache = match &redis {
        Some(url) => {
            Cache::builder()
                .namespace(namespace)
                .redis(url.as_str())
                .build()
                .await?
        }
        None => Cache::in_memory(),
    };
    println!(
        "{CALLERS} concurrent callers of one cold key, {QUERY_TIME:?} query, {}\n",
        match &redis {
            Some(url) => format!("L1 + Redis at {url}"),
            None => "L1 only (set REDIS_URL to add Redis)".to_owned(),
        }
    );

    let hand = Arc::new(HandWritten {
        db: Db::default(),
        map: RwLock::default(),
    });
    let latencies = stampede(|| {
        let hand = hand.clone();
        async move { hand.report(7).await }
    })
    .await;
    print("hand-written cache-aside", hand.db.queries(), &latencies);

    let reports = Reports {
        db: Db::default(),
        cache: cache.clone(),
    };
    let latencies = stampede(|| {
        let reports = reports.clone();
        async move { reports.report(7).await }
    })
    .await;
    print("#[cache_aside]", reports.db.queries(), &latencies);

    // The value expires; with `stale`, nobody waits for the refresh.
    reports.report_swr(7).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = reports.db.queries();
    let latencies = stampede(|| {
        let reports = reports.clone();
        async move { reports.report_swr(7).await }
    })
    .await;
    tokio::time::sleep(QUERY_TIME * 2).await; // the refresh lands
    let refreshes = reports.db.queries() - before;
    print("#[cache_aside(stale)], expired", refreshes, &latencies);

    let stats = cache.stats();
    println!(
        "\nstats: {} loads, {} misses, {} L1 hits, {} L2 hits, {} stale served, {} lock waits",
        stats.loads,
        stats.misses,
        stats.l1_hits,
        stats.l2_hits,
        stats.stale_served,
        stats.lock_waits
    );
    Ok(())
}
