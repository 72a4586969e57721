//! Cases a third hostile review of issue 10's work found, one regression
//! test each: a write-through that lost its race, a waiter whose fail-safe
//! value was invalidated while another process held the lock, an acquire
//! that timed out while Redis still ran it, and the task a detached miss
//! left behind.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tiercache::{Cache, cache_aside, write_through};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq)]
struct DbError;

struct Table {
    version: AtomicU64,
    loads: AtomicUsize,
    /// Loads wait here after reading the row (closed with `support::close`).
    gate: Semaphore,
    /// Write-through bodies wait here (no permits: one per `add_permits`)
    /// before they commit.
    commit: Semaphore,
}

#[derive(Clone)]
struct Db {
    cache: Cache,
    table: Arc<Table>,
}

impl Db {
    fn new(cache: Cache) -> Self {
        Self {
            cache,
            table: Arc::new(Table {
                version: AtomicU64::new(0),
                loads: AtomicUsize::new(0),
                gate: support::open_gate(),
                commit: Semaphore::new(0),
            }),
        }
    }

    fn beside(cache: Cache, other: &Db) -> Self {
        Self {
            cache,
            table: other.table.clone(),
        }
    }

    fn loads(&self) -> usize {
        self.table.loads.load(SeqCst)
    }

    async fn query(&self) -> u64 {
        self.table.loads.fetch_add(1, SeqCst);
        let row = self.table.version.load(SeqCst);
        drop(self.table.gate.acquire().await);
        row
    }

    #[cache_aside(prefix = "w", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn get(&self, id: u64) -> u64 {
        self.query().await
    }

    /// Commits at the end of its body, as `UPDATE … RETURNING` does.
    #[write_through(prefix = "w", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn save(&self, id: u64) -> u64 {
        self.table.commit.acquire().await.expect("open").forget();
        self.table.version.fetch_add(1, SeqCst) + 1
    }

    #[cache_aside(
        prefix = "spin",
        ttl = "300ms",
        fail_safe = "1m",
        timeout = "100ms",
        key = "{id}",
        tags = ["spin:{id}"],
        cache = self.cache
    )]
    async fn spin(&self, id: u64) -> Result<u64, DbError> {
        assert!(id > 0, "ids start at 1");
        Ok(self.query().await)
    }

    #[cache_aside(prefix = "orphan", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn failing(&self, id: u64) -> Result<u64, DbError> {
        self.table.loads.fetch_add(1, SeqCst);
        Err(DbError)
    }

    #[cache_aside(prefix = "timers", ttl = "10m", stale = "1m", key = "{id}", cache = self.cache)]
    async fn swr(&self, id: u64) -> u64 {
        id
    }
}

async fn cache_with(
    namespace: &str,
    tune: impl FnOnce(tiercache::CacheBuilder) -> tiercache::CacheBuilder,
) -> Cache {
    let builder = Cache::builder()
        .namespace(namespace)
        .redis(support::shared().url())
        .ttl_jitter(0.0);
    tune(builder).build().await.expect("valid settings")
}

async fn cache(namespace: &str) -> Cache {
    cache_with(namespace, |b| b).await
}

async fn exists(raw: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(raw)
        .await
        .expect("EXISTS")
        == 1
}

/// A write-through that finds its entry changed (here: a load that read
/// the row before the write committed stored it meanwhile) returns only
/// once Redis holds a tombstone in its place: a reader right after the
/// write never finds the older value.
///
/// Interleaving: W plants its marker (entry absent); B misses on the
/// marker, loads the row before W commits, stores it (digest = marker); W
/// commits, its script sees B's value and refuses; W invalidates the entry
/// and returns. A synchronous GET right then finds the tombstone.
#[tokio::test]
async fn a_write_through_that_lost_its_race_returns_only_once_redis_dropped_the_older_value() {
    let ns = "races-wt-changed";
    let url = support::shared().url();
    let writer = Db::new(cache(ns).await);
    let loader = Db::beside(cache(ns).await, &writer);
    let reader = Db::beside(cache(ns).await, &writer);
    let entry = format!("{ns}:w:1");
    let mut raw = support::raw(&url).await;
    let mut sync = redis::Client::open(url.as_str())
        .expect("url")
        .get_connection()
        .expect("sync connection");

    let (saved, loaded) = tokio::join!(writer.save(1), async {
        // The writer's `before_write` planted its marker.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !exists(&mut raw, &entry).await {
            assert!(Instant::now() < deadline, "no marker planted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let loaded = loader.get(1).await; // the row before the commit
        writer.table.commit.add_permits(1);
        loaded
    });
    // No await between the write's return and this look.
    let in_redis: Option<Vec<u8>> = redis::cmd("GET").arg(&entry).query(&mut sync).unwrap();
    assert_eq!((saved, loaded), (1, 0));
    let in_redis = in_redis.expect("an entry or a tombstone");
    let is_tombstone = in_redis.len() == 11 && in_redis.starts_with(b"tc\0");
    assert!(
        is_tombstone,
        "save() returned while Redis still held the value it replaced: an instance reading now serves the pre-write row"
    );
    assert_eq!(reader.get(1).await, 1, "a reader after the write loads it");
}

/// A leader with a fail-safe value and `timeout` that waits for another
/// process's lock, and whose fail-safe value became unservable during the
/// wait (invalidated, or past its window), waits for the lock's landing or
/// lease: it does not read and retry the lock back to back.
#[tokio::test]
async fn a_waiter_whose_fail_safe_value_was_invalidated_does_not_spin_on_redis() {
    let ns = "races-spin";
    let tune = |b: tiercache::CacheBuilder| b.lock_wait(Duration::from_secs(2));
    let a = Db::new(cache_with(ns, tune).await);
    let p = Db::beside(cache_with(ns, tune).await, &a);
    let mut raw = support::raw(&support::shared().url()).await;

    assert_eq!(a.spin(1).await, Ok(0));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the ttl: a fail-safe value
    let gate = support::close(&a.table.gate).await;
    // Another process takes the lock and loads (slowly).
    let holder = tokio::spawn({
        let p = p.clone();
        async move { p.spin(1).await }
    });
    assert!(support::eventually(Duration::from_secs(2), async || a.loads() == 2).await);
    // This process's caller: its leader finds the lock held and waits.
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.spin(1).await }
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Its fail-safe value is invalidated before its `timeout` (100 ms).
    a.cache.invalidate_tags(["spin:1"]).await.expect("Redis up");
    tokio::time::sleep(Duration::from_millis(150)).await; // past `timeout`
    // An L2 read is a `GET` (versions known) or an `MGET` (not yet).
    let before = support::command_calls(&mut raw, "mget").await
        + support::command_calls(&mut raw, "get").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads = support::command_calls(&mut raw, "mget").await
        + support::command_calls(&mut raw, "get").await
        - before;
    drop(gate);
    let _ = waiter.await;
    let _ = holder.await;
    assert!(
        reads < 20,
        "{reads} L2 reads in 500 ms: the waiter spins on Redis"
    );
}

/// An acquire that times out (or whose caller is cancelled) while Redis
/// still runs it would take the lock with a token nobody holds: no
/// renewal, no release, every caller of the key in every process waiting
/// `lock_wait` for a load that never lands. The attempt releases it.
#[tokio::test]
async fn a_lock_taken_by_an_acquire_that_timed_out_is_released() {
    let ns = "races-orphan";
    // Its own server: the pause below would stall the other tests.
    let server = support::RedisServer::start();
    let url = server.url();
    let build = || {
        Cache::builder()
            .namespace(ns)
            .redis(url.as_str())
            .redis_timeout(Duration::from_millis(100))
            .lock_wait(Duration::from_secs(1))
            .build()
    };
    let a = Db::new(build().await.expect("valid"));
    let c = Db::beside(build().await.expect("valid"), &a);
    let mut raw = support::raw(&url).await;
    // Warm up: the scripts are loaded, the version keys exist.
    assert_eq!(a.failing(2).await, Err(DbError));
    tokio::time::sleep(Duration::from_millis(200)).await; // its lock released

    // Scripts wait (they may write); reads do not.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query_async(&mut raw)
        .await
        .expect("CLIENT PAUSE");
    assert_eq!(a.failing(1).await, Err(DbError)); // its ACQUIRE timed out
    tokio::time::sleep(Duration::from_millis(500)).await; // the pause is over: the ACQUIRE ran

    let locks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:#lock:*"))
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    let started = Instant::now();
    assert_eq!(c.failing(1).await, Err(DbError));
    let waited = started.elapsed();
    assert!(
        locks.is_empty() && waited < Duration::from_millis(500),
        "a lock nobody holds ({locks:?}) held another process's caller up for {waited:?}"
    );
}

/// A miss of a `stale` / `refresh_ahead` / `timeout` function with Redis
/// leaves no task behind: its caller is answered as the value lands, while
/// the load's task still writes Redis, and the watch that bounds that task
/// ends with it, not `background_load_timeout` later.
#[tokio::test]
async fn a_detached_miss_leaves_no_task_behind() {
    let db = Db::new(cache("races-timers").await);
    assert_eq!(db.swr(0).await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for id in 1..=300 {
        assert_eq!(db.swr(id).await, id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = metrics.num_alive_tasks().saturating_sub(baseline);
    assert!(left < 30, "{left} tasks left alive by 300 finished misses");
}
