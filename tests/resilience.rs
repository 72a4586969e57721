//! Stampedes and failures, against a real redis-server: the cross-process
//! lock (two caches in this process stand for two processes; the
//! multi-process and killed-holder tests spawn this test binary again),
//! stale-while-revalidate, early refresh, fail-safe, load timeouts,
//! `cache_none`, and Redis stopped and restarted under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tiercache::{Cache, LoadTimeout, cache_aside};

#[derive(Debug, Clone, PartialEq)]
enum DbError {
    Down,
    Timeout(LoadTimeout),
}

impl From<LoadTimeout> for DbError {
    fn from(timeout: LoadTimeout) -> Self {
        Self::Timeout(timeout)
    }
}

/// What the loaders read: a version to tell old values from new, a switch
/// to make them fail, a delay to make them slow.
#[derive(Default)]
struct State {
    loads: AtomicUsize,
    version: AtomicU64,
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

/// A repository whose methods are cached; `Clone` so that the options
/// that load in the background can copy it.
#[derive(Clone)]
struct Db {
    cache: Cache,
    state: Arc<State>,
}

impl Db {
    fn new(cache: Cache) -> Self {
        Self {
            cache,
            state: Arc::default(),
        }
    }

    /// Shares `other`'s data (another "process" on the same database).
    fn beside(cache: Cache, other: &Db) -> Self {
        Self {
            cache,
            state: other.state.clone(),
        }
    }

    fn loads(&self) -> usize {
        self.state.loads.load(SeqCst)
    }

    fn set_version(&self, version: u64) {
        self.state.version.store(version, SeqCst);
    }

    fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(ms, SeqCst);
    }

    /// The "query": `version * 1000 + id` after the delay, or an error if
    /// the database was failing when the query started.
    async fn query(&self, id: u64) -> Result<u64, DbError> {
        self.state.loads.fetch_add(1, SeqCst);
        let failing = self.state.failing.load(SeqCst);
        let delay = self.state.delay_ms.load(SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if failing {
            return Err(DbError::Down);
        }
        Ok(self.state.version.load(SeqCst) * 1000 + id)
    }

    #[cache_aside(prefix = "locked", ttl = "1m", cache = self.cache)]
    async fn locked(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[cache_aside(prefix = "swr", ttl = "300ms", stale = "1m", cache = self.cache)]
    async fn swr(&self, id: u64) -> u64 {
        self.query(id).await.unwrap_or_default()
    }

    #[cache_aside(prefix = "hot", ttl = "500ms", refresh_ahead = 2.0, cache = self.cache)]
    async fn hot(&self, id: u64) -> u64 {
        self.query(id).await.unwrap_or_default()
    }

    #[cache_aside(prefix = "safe", ttl = "200ms", fail_safe = "1m", cache = self.cache)]
    async fn safe(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[cache_aside(
        prefix = "soft",
        ttl = "200ms",
        fail_safe = "1m",
        timeout = "100ms",
        cache = self.cache
    )]
    async fn soft(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[cache_aside(prefix = "hard", ttl = "1m", hard_timeout = "100ms", cache = self.cache)]
    async fn hard(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    /// `None` while the version is 0: "not found yet".
    #[cache_aside(prefix = "maybe", ttl = "1m", cache_none = "300ms", cache = self.cache)]
    async fn maybe(&self, id: u64) -> Option<u64> {
        let found = self.query(id).await.ok()?;
        (found >= 1000).then_some(found)
    }
}

/// A cache with settings for timing tests: no TTL jitter.
async fn cache(namespace: &str) -> Cache {
    cache_with(namespace, |b| b).await
}

async fn cache_with(
    namespace: &str,
    configure: impl FnOnce(tiercache::CacheBuilder) -> tiercache::CacheBuilder,
) -> Cache {
    let builder = Cache::builder()
        .namespace(namespace)
        .redis(support::shared().url())
        .ttl_jitter(0.0);
    configure(builder).build().await.expect("valid settings")
}

/// Runs `calls` concurrent calls of `f`, returning each result and latency.
async fn concurrently<T, F, Fut>(calls: usize, f: F) -> Vec<(T, Duration)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    let started = Instant::now();
    let calls = (0..calls).map(|_| {
        let call = f();
        async move {
            let value = call.await;
            (value, started.elapsed())
        }
    });
    futures_util::future::join_all(calls).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

// ---------------------------------------------------------------- the lock

#[tokio::test]
async fn one_instance_loads_while_the_others_wait_for_its_value() {
    let a = Db::new(cache("lock-one").await);
    let b = Db::beside(cache("lock-one").await, &a);
    a.set_delay(Duration::from_millis(200));
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(a.locked(1), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.locked(1).await
    });
    let elapsed = started.elapsed();
    assert_eq!((from_a, from_b), (Ok(1), Ok(1)));
    assert_eq!(a.loads(), 1, "one load across both instances");
    let (sa, sb) = (a.cache.stats(), b.cache.stats());
    assert_eq!(
        (sa.lock_waits, sb.lock_waits),
        (0, 1),
        "b waited for a's lock"
    );
    assert_eq!(sb.l2_hits, 1, "and read a's value from Redis");
    // Told by pub/sub, not by polling: b answers right after a's load.
    assert!(elapsed < Duration::from_millis(260), "{elapsed:?}");
}

#[tokio::test]
async fn a_holder_that_fails_releases_the_lock_at_once() {
    let a = Db::new(cache("lock-fail").await);
    let b = Db::beside(cache("lock-fail").await, &a);
    a.set_delay(Duration::from_millis(150));
    a.set_failing(true);
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(a.locked(2), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The database recovers while a's load fails.
        let b_result = b.locked(2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.set_failing(false);
        b_result.await
    });
    assert_eq!(from_a, Err(DbError::Down), "a gets its own error");
    assert_eq!(from_b, Ok(2), "b loads as soon as a gives up");
    assert_eq!(a.loads(), 2);
    // Far below the 10 s lease: the release woke b.
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

/// 4 OS processes × 250 concurrent callers of one cold key, 200 ms loader:
/// one load in all, and the waiters answered right after it.
#[tokio::test]
async fn four_processes_of_250_callers_load_a_cold_key_once() {
    if std::env::var_os("TIERCACHE_STAMPEDE").is_some() {
        return; // in a child, the work is done by `stampede_child`
    }
    const PROCESSES: usize = 4;
    let url = support::shared().url();
    let namespace = format!("stampede-{}", std::process::id());
    let mut redis = support::raw(&url).await;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stampede_child",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env("TIERCACHE_STAMPEDE", format!("{url} {namespace}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let ready = format!("{namespace}-ready");
    let all_ready = support::eventually(Duration::from_secs(30), async || {
        redis.get::<_, Option<usize>>(&ready).await.unwrap() == Some(PROCESSES)
    })
    .await;
    assert!(all_ready, "the children started");
    let _: () = redis.set(format!("{namespace}-go"), 1).await.unwrap();
    let mut lines = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed");
        let stdout = String::from_utf8(output.stdout).unwrap();
        lines.extend(stdout.lines().filter_map(|l| {
            l.split_once("STAMPEDE")
                .map(|(_, rest)| rest.trim().to_owned())
        }));
    }
    let loads: usize = redis.get(format!("{namespace}-loads")).await.unwrap();
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), PROCESSES, "{lines:?}");
    assert_eq!(loads, 1, "one load across {PROCESSES} processes: {lines:?}");
    for line in &lines {
        let p99: u64 = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("p99_ms="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        // The loader takes 200 ms; a waiter's answer comes a landing
        // message and one read later.
        assert!(p99 < 260, "{line}");
    }
}

/// Runs in each child of `four_processes_of_250_callers_load_a_cold_key_once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_child() {
    let Some(setup) = std::env::var("TIERCACHE_STAMPEDE").ok() else {
        return; // run alone, it has nothing to do
    };
    let (url, namespace) = setup.split_once(' ').unwrap();
    let cache = support::cache_on(url, namespace).await;
    let loads_key = format!("{namespace}-loads");
    let redis = support::raw(url).await;

    #[cache_aside(prefix = "report", ttl = "1m", key = "{day}", skip(cache, redis, loads_key), cache = cache)]
    async fn report(
        cache: &Cache,
        redis: &redis::aio::MultiplexedConnection,
        loads_key: &str,
        day: u32,
    ) -> u64 {
        let _ = cache;
        let mut redis = redis.clone();
        let _: u64 = redis.incr(loads_key, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        u64::from(day) * 7
    }

    let mut control = support::raw(url).await;
    let _: u64 = control.incr(format!("{namespace}-ready"), 1).await.unwrap();
    let go = format!("{namespace}-go");
    while control.get::<_, Option<u64>>(&go).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let results = concurrently(250, || report(&cache, &redis, &loads_key, 3)).await;
    assert!(results.iter().all(|(value, _)| *value == 21));
    let mut latencies: Vec<Duration> = results.into_iter().map(|(_, d)| d).collect();
    latencies.sort();
    let stats = cache.stats();
    println!(
        "STAMPEDE pid={} loads={} lock_waits={} p50_ms={} p99_ms={} max_ms={}",
        std::process::id(),
        stats.loads,
        stats.lock_waits,
        percentile(&latencies, 0.5).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
        latencies.last().unwrap().as_millis(),
    );
}

/// The lock holder is killed (SIGKILL) mid-load: the waiting instance goes
/// on within the holder's lease, not the whole lock wait.
#[tokio::test]
async fn a_killed_holder_delays_the_others_by_its_lease_at_most() {
    if std::env::var_os("TIERCACHE_HOLDER").is_some() {
        return;
    }
    let url = support::shared().url();
    let namespace = format!("killed-{}", std::process::id());
    let mut redis = support::raw(&url).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder_child", "--test-threads=1"])
        .env("TIERCACHE_HOLDER", format!("{url} {namespace}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = format!("{namespace}:#lock:locked:9");
    let locked = support::eventually(Duration::from_secs(30), async || {
        redis.exists::<_, bool>(&lock).await.unwrap()
    })
    .await;
    assert!(locked, "the child holds the lock");

    let db = Db::new(cache_with(&namespace, |b| b.lock_wait(Duration::from_secs(30))).await);
    let waiter = tokio::spawn({
        let db = db.clone();
        async move { db.locked(9).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL: no release, no more renewals
    child.wait().unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(9));
    let after_kill = killed.elapsed();
    println!("the waiter answered {after_kill:?} after the holder was killed");
    assert_eq!(db.loads(), 1, "the waiter loaded once the lease ran out");
    assert_eq!(db.cache.stats().lock_waits, 1);
    // The child's lease is 1 s, renewed every third of it.
    assert!(after_kill < Duration::from_millis(1300), "{after_kill:?}");
}

/// Runs in the child of `a_killed_holder_delays_the_others_by_its_lease_at_most`:
/// takes the lock with a 1 s lease and loads for a minute.
#[tokio::test]
async fn holder_child() {
    let Some(setup) = std::env::var("TIERCACHE_HOLDER").ok() else {
        return;
    };
    let (url, namespace) = setup.split_once(' ').unwrap();
    let cache = Cache::builder()
        .namespace(namespace)
        .redis(url)
        .lock_lease(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let db = Db::new(cache);
    db.set_delay(Duration::from_secs(60));
    let _ = db.locked(9).await;
}

// ------------------------------------------------- stale-while-revalidate

#[tokio::test]
async fn stale_values_are_served_at_once_while_one_refresh_runs() {
    let a = Db::new(cache("swr").await);
    let b = Db::beside(cache("swr").await, &a);
    assert_eq!(a.swr(1).await, 1);
    assert_eq!(b.swr(1).await, 1, "from Redis");
    assert_eq!(a.loads(), 1);

    a.set_version(1);
    a.set_delay(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(350)).await; // past the 300 ms ttl
    let served = concurrently(100, || async {
        let (x, y) = tokio::join!(a.swr(1), b.swr(1));
        (x, y)
    })
    .await;
    for ((x, y), latency) in &served {
        assert_eq!((*x, *y), (1, 1), "the stale value");
        assert!(
            *latency < Duration::from_millis(100),
            "at once: {latency:?}"
        );
    }
    let (sa, sb) = (a.cache.stats(), b.cache.stats());
    assert_eq!(sa.stale_served + sb.stale_served, 200);
    let refreshed = support::eventually(Duration::from_secs(2), async || {
        a.swr(1).await == 1001 && b.swr(1).await == 1001
    })
    .await;
    assert!(refreshed, "the refresh landed in both instances");
    assert_eq!(a.loads(), 2, "one refresh across both instances");
}

// --------------------------------------------------------- early refresh

/// A hot key under steady load never expires in front of its callers:
/// across 10 expiries, only the very first call waits for a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_leaves_no_miss_across_10_expiries() {
    let db = Db::new(cache("hot").await);
    db.set_delay(Duration::from_millis(5));
    let stop = Instant::now() + Duration::from_millis(5_200); // ttl 500 ms
    let slowest = Arc::new(AtomicU64::new(0));
    assert_eq!(db.hot(1).await, 1);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (db, slowest) = (db.clone(), slowest.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let started = Instant::now();
                    assert_eq!(db.hot(1).await, 1);
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap();
                    slowest.fetch_max(micros, SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = db.cache.stats();
    println!("{stats:?}, slowest call {} µs", slowest.load(SeqCst));
    assert_eq!(stats.misses, 1, "only the first call: {stats:?}");
    assert!(stats.early_refreshes >= 10, "{stats:?}");
    // Refreshed once per period, a little before its end: not on every hit.
    let loads = db.loads();
    assert!((11..=20).contains(&loads), "{loads} loads in 10 periods");
}

// ------------------------------------------------------------- fail-safe

#[tokio::test]
async fn fail_safe_serves_the_old_value_when_the_load_fails_and_throttles_retries() {
    let db = Db::new(
        cache_with("fail-safe", |b| {
            b.fail_safe_throttle(Duration::from_millis(400))
        })
        .await,
    );
    assert_eq!(db.safe(1).await, Ok(1));
    db.set_failing(true);
    tokio::time::sleep(Duration::from_millis(250)).await; // past the ttl
    assert_eq!(db.safe(1).await, Ok(1), "the old value");
    assert_eq!(db.loads(), 2);
    for _ in 0..20 {
        assert_eq!(db.safe(1).await, Ok(1));
    }
    assert_eq!(db.loads(), 2, "no retry within the throttle");
    let stats = db.cache.stats();
    assert_eq!((stats.fail_safe, stats.errors), (1, 1), "{stats:?}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(db.safe(1).await, Ok(1), "retried, failed, old value again");
    assert_eq!(db.loads(), 3);
    db.set_failing(false);
    db.set_version(1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(db.safe(1).await, Ok(1001), "recovered");

    // Without an old value, the error is the caller's.
    db.set_failing(true);
    assert_eq!(db.safe(2).await, Err(DbError::Down));
}

#[tokio::test]
async fn an_invalidated_value_is_never_served_by_fail_safe() {
    let db = Db::new(cache("fail-safe-invalidated").await);
    assert_eq!(db.safe(1).await, Ok(1));
    db.cache.invalidate_key("safe", "1").await.unwrap();
    db.set_failing(true);
    assert_eq!(db.safe(1).await, Err(DbError::Down));
    assert_eq!(db.cache.stats().fail_safe, 0);
}

#[tokio::test]
async fn a_slow_load_is_answered_with_the_old_value_and_lands_later() {
    let db = Db::new(cache("soft-timeout").await);
    assert_eq!(db.soft(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(250)).await; // past the ttl
    db.set_version(1);
    db.set_delay(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(db.soft(1).await, Ok(1), "the old value");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(300),
        "after the 100 ms timeout: {waited:?}"
    );
    assert_eq!(db.cache.stats().fail_safe, 1);
    // The load was not cancelled: it lands and is served from then on.
    let landed = support::eventually(Duration::from_secs(2), async || {
        db.soft(1).await == Ok(1001)
    })
    .await;
    assert!(landed);
    assert_eq!(db.loads(), 2, "the slow load finished in the background");
}

#[tokio::test]
async fn hard_timeout_returns_the_functions_own_error() {
    let db = Db::new(cache("hard-timeout").await);
    db.set_delay(Duration::from_millis(500));
    let started = Instant::now();
    let result = db.hard(1).await;
    let timeout = LoadTimeout {
        after: Duration::from_millis(100),
    };
    assert_eq!(result, Err(DbError::Timeout(timeout)));
    assert!(started.elapsed() < Duration::from_millis(400));
    let stats = db.cache.stats();
    assert_eq!((stats.load_timeouts, stats.errors), (1, 1));
    db.set_delay(Duration::ZERO);
    assert_eq!(db.hard(1).await, Ok(1), "nothing was cached");
}

// ----------------------------------------------------------- cache_none

#[tokio::test]
async fn cache_none_keeps_a_none_for_its_own_ttl() {
    let a = Db::new(cache("cache-none").await);
    let b = Db::beside(cache("cache-none").await, &a);
    assert_eq!(a.maybe(1).await, None);
    assert_eq!(a.maybe(1).await, None);
    assert_eq!(b.maybe(1).await, None, "from Redis");
    assert_eq!(a.loads(), 1, "the None was cached");
    a.set_version(1);
    tokio::time::sleep(Duration::from_millis(350)).await; // past cache_none
    assert_eq!(a.maybe(1).await, Some(1001));
    assert_eq!(a.loads(), 2);
}

// ------------------------------------------------------------ Redis faults

/// A steady load for ~20 s while Redis is stopped and restarted twice:
/// no call fails, and L2 hits resume soon after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_twice_under_load_fails_no_call() {
    let mut server = support::RedisServer::start();
    let cache = Cache::builder()
        .namespace("faults")
        .redis(server.url())
        .l1_capacity(0) // every call goes to Redis
        .build()
        .await
        .unwrap();
    let db = Db::new(cache);
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let (db, stop, calls, failed) =
                (db.clone(), stop.clone(), calls.clone(), failed.clone());
            tokio::spawn(async move {
                let mut id = worker;
                while !stop.load(SeqCst) {
                    id = (id + 7) % 50;
                    match db.locked(id).await {
                        Ok(value) if value == id => {}
                        _ => {
                            failed.fetch_add(1, SeqCst);
                        }
                    }
                    calls.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let l2_hits = || db.cache.stats().l2_hits;
    let mut resumed = Vec::new();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for _ in 0..2 {
        server.stop();
        tokio::time::sleep(Duration::from_secs(4)).await;
        server.restart();
        let restarted = Instant::now();
        let before = l2_hits();
        let back = support::eventually(Duration::from_secs(10), async || l2_hits() > before).await;
        assert!(back, "L2 hits resumed");
        resumed.push(restarted.elapsed());
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    stop.store(true, SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let stats = db.cache.stats();
    println!(
        "calls={} failed={} resumed_after={resumed:?} {stats:?}",
        calls.load(SeqCst),
        failed.load(SeqCst)
    );
    assert_eq!(failed.load(SeqCst), 0, "no call failed");
    assert!(stats.breaker_trips >= 2, "the breaker opened each time");
    for after in resumed {
        assert!(after < Duration::from_secs(3), "L2 back after {after:?}");
    }
}

#[tokio::test]
async fn an_uncontended_miss_publishes_no_landing() {
    let mut redis = support::raw(&support::shared().url()).await;
    let db = Db::new(cache("quiet-landing").await);
    let before = support::command_calls(&mut redis, "publish").await;
    for id in 100..110 {
        assert_eq!(db.locked(id).await, Ok(id));
    }
    assert_eq!(db.loads(), 10);
    // Other tests on this server may publish meanwhile: at most a few.
    let published = support::command_calls(&mut redis, "publish").await - before;
    assert!(
        published < 5,
        "{published} PUBLISH for 10 uncontended misses"
    );
}
