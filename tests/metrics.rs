//! The `metrics` feature (issue 13): every series of the README's table
//! moves when it should, recorded by metrics-util's debugging recorder,
//! against a real redis-server started here; and the table lists exactly
//! the series and labels the cache reports.
#![cfg(feature = "metrics")]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tiercache::{Cache, cache_aside};

/// What the recorder saw, summed over snapshots: a snapshot of the
/// debugging recorder drains its counters and histograms, and sets its
/// gauges back to 0.
#[derive(Default)]
struct Seen {
    /// Counter totals and histogram sample counts, by series.
    totals: HashMap<Series, u64>,
    /// The gauges of the last snapshot: what was set since the one before.
    gauges: HashMap<Series, f64>,
    /// Every gauge series ever seen.
    gauge_series: BTreeSet<Series>,
}

/// A series: its name and its labels, `namespace` included.
type Series = (String, BTreeMap<String, String>);

struct Recorded {
    snapshotter: Snapshotter,
    seen: Mutex<Seen>,
}

/// The process's recorder, installed once for every test here.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        Recorded {
            snapshotter,
            seen: Mutex::default(),
        }
    })
}

impl Recorded {
    fn update(&self) -> std::sync::MutexGuard<'_, Seen> {
        let mut seen = self.seen.lock().unwrap();
        seen.gauges.clear();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let series = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *seen.totals.entry(series).or_default() += n,
                DebugValue::Histogram(samples) => {
                    *seen.totals.entry(series).or_default() += samples.len() as u64;
                }
                DebugValue::Gauge(value) => {
                    seen.gauge_series.insert(series.clone());
                    seen.gauges.insert(series, value.into_inner());
                }
            }
        }
        seen
    }

    /// The total of `name` over the series of `namespace` whose labels
    /// include `labels`.
    fn total(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
        let seen = self.update();
        seen.totals
            .iter()
            .filter(|((n, l), _)| n == name && matches(l, namespace, labels))
            .map(|(_, total)| total)
            .sum()
    }

    /// The value gauge `name` of `namespace` was set to since the last
    /// snapshot (0 if it was not set since): read right after what sets it,
    /// with the tests serialized ([`serial`]).
    fn gauge(&self, namespace: &str, name: &str) -> Option<f64> {
        let seen = self.update();
        seen.gauges
            .iter()
            .find(|((n, l), _)| n == name && matches(l, namespace, &[]))
            .map(|(_, value)| *value)
    }

    /// Every series name seen, with the label names it had (`namespace`
    /// aside).
    fn scheme(&self) -> BTreeMap<String, BTreeSet<String>> {
        let seen = self.update();
        let mut scheme: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, labels) in seen.totals.keys().chain(&seen.gauge_series) {
            let names = scheme.entry(name.clone()).or_default();
            names.extend(labels.keys().filter(|k| *k != "namespace").cloned());
        }
        scheme
    }
}

/// Sets gauge `name` of `namespace` to -1, a value the cache never sets:
/// a later read of 0 is then the cache's own (the recorder's snapshot
/// also resets gauges to 0).
fn poison(namespace: &str, name: &'static str) {
    metrics::gauge!(name, "namespace" => namespace.to_owned()).set(-1.0);
}

/// Held by each test for its whole run: a snapshot taken by one test
/// resets the gauges another just set.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn matches(labels: &BTreeMap<String, String>, namespace: &str, wanted: &[(&str, &str)]) -> bool {
    labels.get("namespace").map(String::as_str) == Some(namespace)
        && wanted
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

fn requests(ns: &str, prefix: &str, result: &str) -> u64 {
    recorded().total(
        ns,
        "tiercache_requests_total",
        &[("prefix", prefix), ("result", result)],
    )
}

fn loads(ns: &str, prefix: &str, outcome: &str) -> u64 {
    recorded().total(
        ns,
        "tiercache_loads_total",
        &[("prefix", prefix), ("outcome", outcome)],
    )
}

async fn cache_on(url: &str, namespace: &str) -> Cache {
    // Built after the recorder is installed: handles are registered at
    // build and at a prefix's first call.
    recorded();
    Cache::builder()
        .namespace(namespace)
        .redis(url)
        .ttl_jitter(0.0)
        .background_load_timeout(Duration::from_millis(200))
        .circuit_breaker(2, Duration::from_secs(60))
        .redis_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("valid settings")
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the database is down")]
struct DbError;

impl From<tiercache::LoadTimeout> for DbError {
    fn from(_: tiercache::LoadTimeout) -> Self {
        DbError
    }
}

#[cache_aside(prefix = "slow", ttl = "1m", hard_timeout = "50ms", skip(cache), cache = cache)]
async fn slow(cache: &Cache, id: u64) -> Result<u64, DbError> {
    let _ = cache;
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(id)
}

/// Each counter, histogram and gauge of the table, driven by what moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_moves_when_it_should() {
    let _serial = serial().await;
    let server = support::shared();
    let ns = "metrics-moves";
    let a = cache_on(&server.url(), ns).await;
    let b = cache_on(&server.url(), ns).await;
    let minute = Duration::from_secs(60);

    // A miss: a load; then an L1 hit here and an L2 hit there.
    let v = a
        .entry("user", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    assert_eq!(v, 1);
    assert_eq!(recorded().gauge(ns, "tiercache_l1_entries"), Some(1.0));
    assert_eq!(
        (requests(ns, "user", "miss"), loads(ns, "user", "ok")),
        (1, 1)
    );
    let load_time = recorded().total(ns, "tiercache_load_duration_seconds", &[("prefix", "user")]);
    assert_eq!(load_time, 1, "one load timed");
    a.entry("user", &1u64)
        .ttl(minute)
        .get_with(|| async { 0u64 })
        .await;
    // Counted per thread, told to the recorder within a second.
    let told = support::eventually(Duration::from_secs(3), async || {
        requests(ns, "user", "l1_hit") == 1
    })
    .await;
    assert!(told, "the L1 hit reached the recorder");
    b.entry("user", &1u64)
        .ttl(minute)
        .get_with(|| async { 0u64 })
        .await;
    assert_eq!(requests(ns, "user", "l2_hit"), 1);
    // A first read takes the lock as it reads.
    for op in ["read_or_lock", "write"] {
        let timed = recorded().total(ns, "tiercache_redis_duration_seconds", &[("op", op)]);
        assert!(timed >= 1, "Redis {op} timed: {timed}");
    }

    // Stale: served at once past the fresh period, while a refresh runs;
    // that refresh outlives background_load_timeout: a timeout.
    let stale = |value: u64, pause: Duration| {
        a.entry("swr", &1u64)
            .ttl(Duration::from_millis(100))
            .stale(minute)
            .get_with(move || async move {
                tokio::time::sleep(pause).await;
                value
            })
    };
    assert_eq!(stale(1, Duration::ZERO).await, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(stale(2, Duration::from_secs(5)).await, 1, "the stale value");
    assert_eq!(requests(ns, "swr", "stale"), 1);
    let timed_out = support::eventually(Duration::from_secs(3), async || {
        loads(ns, "swr", "timeout") == 1
    })
    .await;
    assert!(timed_out, "the refresh was cut off");

    // Fail-safe: the load fails past the fresh period, the old value is
    // served; the failure is an `err`.
    let safe = |fail: bool| {
        a.entry("safe", &1u64)
            .ttl(Duration::from_millis(100))
            .fail_safe(minute)
            .try_get_with(move || async move { if fail { Err(DbError) } else { Ok(1u64) } })
    };
    assert_eq!(safe(false).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(safe(true).await.unwrap(), 1, "the fail-safe value");
    assert_eq!(requests(ns, "safe", "fail_safe"), 1);
    assert_eq!(loads(ns, "safe", "err"), 1);

    // A hard timeout, a panic and a cancelled caller.
    assert!(slow(&a, 1).await.is_err());
    assert_eq!(loads(ns, "slow", "timeout"), 1);
    let panicking = a.clone();
    let panicked = tokio::spawn(async move {
        panicking
            .entry("boom", &1u64)
            .ttl(minute)
            .get_with(|| async {
                if std::hint::black_box(true) {
                    panic!("the body panics");
                }
                0u64
            })
            .await
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(loads(ns, "boom", "panic"), 1);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        a.entry("never", &1u64)
            .ttl(minute)
            .get_with(std::future::pending::<u64>),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(loads(ns, "never", "cancelled"), 1);

    // An invalidation here is sent, and received there.
    let before = recorded().total(ns, "tiercache_invalidations_received_total", &[]);
    a.entry("user", &1u64).invalidate().await.unwrap();
    assert_eq!(
        recorded().total(ns, "tiercache_invalidations_sent_total", &[]),
        1
    );
    let received = support::eventually(Duration::from_secs(3), async || {
        recorded().total(ns, "tiercache_invalidations_received_total", &[]) > before
    })
    .await;
    assert!(received, "the other instance applied it");
}

/// What moves when Redis goes away: errors by kind, the breaker, pending
/// invalidations, the lost subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_move_their_series() {
    let _serial = serial().await;
    let mut server = support::RedisServer::start();
    let ns = "metrics-failures";
    let cache = cache_on(&server.url(), ns).await;
    let minute = Duration::from_secs(60);
    poison(ns, "tiercache_breaker_open");
    cache
        .entry("p", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    assert_eq!(recorded().gauge(ns, "tiercache_breaker_open"), Some(0.0));

    server.stop();
    // Calls still answer; their Redis operations fail until the breaker
    // opens, then are skipped.
    for i in 2..12u64 {
        let v = cache
            .entry("p", &i)
            .ttl(minute)
            .get_with(move || async move { i })
            .await;
        assert_eq!(v, i);
    }
    assert_eq!(recorded().gauge(ns, "tiercache_breaker_open"), Some(1.0));
    let failed = recorded().total(
        ns,
        "tiercache_redis_errors_total",
        &[("kind", "connection")],
    ) + recorded().total(ns, "tiercache_redis_errors_total", &[("kind", "timeout")]);
    assert!(failed >= 2, "failures counted: {failed}");
    let skipped = recorded().total(
        ns,
        "tiercache_redis_errors_total",
        &[("kind", "breaker_open")],
    );
    assert!(skipped >= 1, "skipped while open: {skipped}");

    // An invalidation Redis cannot take waits, pending.
    assert!(cache.entry("p", &1u64).invalidate().await.is_err());
    assert_eq!(
        recorded().gauge(ns, "tiercache_pending_invalidations"),
        Some(1.0)
    );
    let lost = support::eventually(Duration::from_secs(5), async || {
        recorded().total(ns, "tiercache_subscription_losses_total", &[]) >= 1
    })
    .await;
    assert!(lost, "the subscription loss counted");

    server.restart();
    poison(ns, "tiercache_pending_invalidations");
    let flushed = tokio::time::timeout(Duration::from_secs(10), async {
        while cache.flush_invalidations().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(flushed.is_ok(), "Redis took the pending invalidation");
    assert_eq!(
        recorded().gauge(ns, "tiercache_pending_invalidations"),
        Some(0.0)
    );
}

/// The README's table of series: its names and label names, read from the
/// README, against what the cache reported in this test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_table_lists_every_series_and_its_labels() {
    let _serial = serial().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table: BTreeMap<String, BTreeSet<String>> = readme
        .lines()
        .filter(|line| line.starts_with("| `tiercache_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let labels = backticked(cells[3]).into_iter().collect();
            (name, labels)
        })
        .collect();
    assert!(table.len() >= 11, "the README's table: {table:?}");

    // Drive every series once, in a namespace of this test.
    let mut server = support::RedisServer::start();
    let ns = "metrics-readme";
    let a = cache_on(&server.url(), ns).await;
    let b = cache_on(&server.url(), ns).await;
    let minute = Duration::from_secs(60);
    a.entry("t", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    b.entry("t", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    a.entry("t", &1u64).invalidate().await.unwrap();
    support::eventually(Duration::from_secs(3), async || {
        recorded().total(ns, "tiercache_invalidations_received_total", &[]) >= 1
    })
    .await;
    server.stop();
    for i in 0..5u64 {
        a.entry("t", &i)
            .ttl(minute)
            .get_with(move || async move { i })
            .await;
    }
    let _ = a.entry("t", &1u64).invalidate().await;
    support::eventually(Duration::from_secs(5), async || {
        recorded().total(ns, "tiercache_subscription_losses_total", &[]) >= 1
    })
    .await;

    let reported: BTreeMap<String, BTreeSet<String>> = recorded()
        .scheme()
        .into_iter()
        .filter(|(name, _)| name.starts_with("tiercache_"))
        .collect();
    let names = |m: &BTreeMap<String, BTreeSet<String>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&table), names(&reported), "the series");
    for (name, labels) in &reported {
        assert_eq!(&table[name], labels, "the labels of {name}");
    }
}

/// The backticked words of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// L1 hits reach the recorder without a flushing task of the runtime that
/// started it: every 1024 hits of a thread, and from a new task started by
/// the next call that is not an L1 hit, on the runtime that makes it.
#[test]
fn l1_hits_reach_the_recorder_after_their_runtime_ends() {
    let ns = "metrics-runtimes";
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = first.block_on(async {
        let _serial = serial().await;
        let cache = cache_on(&support::shared().url(), ns).await;
        cache
            .entry("rt", &0u64)
            .ttl(Duration::from_secs(60))
            .get_with(|| async { 0u64 })
            .await;
        cache
    });
    drop(first); // and with it, the flushing task
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let _serial = serial().await;
        let hit = || {
            cache
                .entry("rt", &0u64)
                .ttl(Duration::from_secs(60))
                .get_with(|| async { 1u64 })
        };
        for _ in 0..2048 {
            assert_eq!(hit().await, 0);
        }
        let told = requests(ns, "rt", "l1_hit");
        assert!(told >= 1024, "every 1024 hits of a thread: {told}");
        // A miss starts a flushing task on this runtime: the rest follow.
        cache
            .entry("rt", &1u64)
            .ttl(Duration::from_secs(60))
            .get_with(|| async { 1u64 })
            .await;
        for _ in 0..10 {
            assert_eq!(hit().await, 0);
        }
        let all = support::eventually(Duration::from_secs(3), async || {
            requests(ns, "rt", "l1_hit") == 2058
        })
        .await;
        assert!(all, "all told: {}", requests(ns, "rt", "l1_hit"));
    });
}

/// A value that does not decrypt counts in `tiercache_undecryptable_total`
/// as in `stats().undecryptable`.
#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_value_moves_its_counter() {
    let _serial = serial().await;
    recorded();
    let ns = "metrics-sealed";
    let sealed = |key: [u8; 32]| {
        Cache::builder()
            .namespace(ns)
            .redis(support::shared().url())
            .encryption_keys(tiercache::KeyRing::new(1, key))
            .encrypt_all(true)
            .build()
    };
    let minute = Duration::from_secs(60);
    let writer = sealed([1; 32]).await.unwrap();
    writer
        .entry("s", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    let before = recorded().total(ns, "tiercache_undecryptable_total", &[]);
    let reader = sealed([2; 32]).await.unwrap();
    reader
        .entry("s", &1u64)
        .ttl(minute)
        .get_with(|| async { 1u64 })
        .await;
    assert_eq!(reader.stats().undecryptable, 1);
    assert_eq!(
        recorded().total(ns, "tiercache_undecryptable_total", &[]),
        before + 1
    );
}
