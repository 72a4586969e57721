//! The guarantees of issue 10, each tried by the interleaving that broke
//! it, driven by gates rather than sleeps where an order must be forced:
//! two functions sharing a key, an invalidation landing between a load's
//! read and its write, a fail-safe value invalidated during the load, a
//! write-through whose Redis is out of reach, an invalidation refused by an
//! open breaker or cancelled mid-way, a stale L2 value in L1, key
//! invalidations of other keys, waiters of a slow leader, hanging and
//! failing refreshes, settings out of range, oversized values.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, Error, cache_aside, write_through};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
struct DbError;

/// A table of versioned rows: a load returns `version * 1000 + id`, so an
/// old answer shows as an old version.
#[derive(Default)]
struct Table {
    version: AtomicU64,
    loads: AtomicUsize,
    failing: AtomicBool,
    /// When closed (write-locked), loads wait for it after reading the row.
    gate: tokio::sync::RwLock<()>,
    /// Notified (`notify_waiters`: no permit is kept for later) each time a
    /// load has read the row.
    read: Notify,
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
            table: Arc::default(),
        }
    }

    /// Another instance over the same table.
    fn beside(cache: Cache, other: &Db) -> Self {
        Self {
            cache,
            table: other.table.clone(),
        }
    }

    fn loads(&self) -> usize {
        self.table.loads.load(SeqCst)
    }

    /// An update of the row (then the caller invalidates or writes).
    fn update(&self) -> u64 {
        self.table.version.fetch_add(1, SeqCst) + 1
    }

    fn current(&self, id: u64) -> u64 {
        self.table.version.load(SeqCst) * 1000 + id
    }

    async fn query(&self, id: u64) -> Result<u64, DbError> {
        self.table.loads.fetch_add(1, SeqCst);
        let row = self.table.version.load(SeqCst) * 1000 + id;
        let failing = self.table.failing.load(SeqCst);
        self.table.read.notify_waiters();
        drop(self.table.gate.read().await);
        if failing { Err(DbError) } else { Ok(row) }
    }

    #[cache_aside(prefix = "row", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn row(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[cache_aside(prefix = "row", ttl = "10m", key = "{id}", cache_none = "10m", cache = self.cache)]
    async fn find_row(&self, id: u64) -> Option<u64> {
        self.query(id).await.ok().filter(|_| id != 0)
    }

    #[write_through(prefix = "row", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn save(&self, id: u64) -> Result<u64, DbError> {
        self.update();
        Ok(self.current(id))
    }

    /// Updates the row, then waits at the gate before it returns.
    #[write_through(prefix = "row", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn save_slowly(&self, id: u64) -> Result<u64, DbError> {
        self.update();
        let saved = self.current(id);
        self.table.read.notify_waiters();
        drop(self.table.gate.read().await);
        Ok(saved)
    }

    #[write_through(prefix = "row", ttl = "10m", key = "{id}", cache = self.cache)]
    async fn delete(&self, id: u64) -> Option<u64> {
        self.update();
        None
    }

    #[cache_aside(
        prefix = "safe",
        ttl = "300ms",
        fail_safe = "1m",
        key = "{id}",
        tags = ["safe:{id}"],
        cache = self.cache
    )]
    async fn safe(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[write_through(prefix = "safe", ttl = "300ms", key = "{id}", tags = ["safe:{id}"], cache = self.cache)]
    async fn save_safe_slowly(&self, id: u64) -> Result<u64, DbError> {
        let saved = self.current(id);
        self.table.read.notify_waiters();
        drop(self.table.gate.read().await);
        Ok(saved)
    }

    #[cache_aside(prefix = "brief", ttl = "100ms", fail_safe = "700ms", key = "{id}", cache = self.cache)]
    async fn brief(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }

    #[cache_aside(prefix = "swr", ttl = "400ms", stale = "1s", key = "{id}", cache = self.cache)]
    async fn swr(&self, id: u64) -> Result<u64, DbError> {
        self.query(id).await
    }
}

/// Runs `call` in a task, and returns once its load has read the row (it
/// then waits at the gate, if closed).
async fn start<T: Send + 'static>(
    db: &Db,
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let read = db.table.read.notified(); // `notify_waiters` reaches it from now on
    let task = tokio::spawn(call);
    read.await;
    task
}

/// Whether `db` answers `row(id)` with `expected` within 3 s (another
/// instance's L1 hears of a write through pub/sub).
async fn sees(db: &Db, id: u64, expected: u64) -> bool {
    support::eventually(Duration::from_secs(3), async || {
        db.row(id).await == Ok(expected)
    })
    .await
}

/// Closes the gate: loads wait after reading the row until it is dropped.
async fn close(db: &Db) -> tokio::sync::RwLockWriteGuard<'_, ()> {
    db.table.gate.write().await
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

/// A body that holds a value that is `Send` but not `Sync` across an
/// `await` (a `Cell`, a boxed future of a client library): the cached
/// call's future is `Send` all the same, as the uncached one is. The
/// engine owns the body; it never holds a reference to it across an
/// `await` (found by the history checker, whose bodies await redis-rs).
mod not_sync {
    use std::cell::Cell;

    use tiercache::{Cache, cache_aside, invalidates, write_through};

    async fn io() {
        tokio::task::yield_now().await;
    }

    #[cache_aside(prefix = "ns", ttl = "1m", skip(cache), cache = cache)]
    pub async fn plain(cache: &Cache, id: u64) -> u64 {
        let held = Cell::new(id);
        io().await;
        held.get()
    }

    #[cache_aside(prefix = "ns-stale", ttl = "1m", stale = "1m", skip(cache), cache = cache)]
    pub async fn stale(cache: &Cache, id: u64) -> u64 {
        let held = Cell::new(id);
        io().await;
        held.get() + u64::from(cache.has_redis()) - 1
    }

    #[write_through(prefix = "ns", ttl = "1m", key = "{id}", skip(cache), cache = cache)]
    pub async fn write(cache: &Cache, id: u64) -> u64 {
        let held = Cell::new(id);
        io().await;
        held.get()
    }

    #[invalidates(keys = ["ns:{id}"], cache = cache)]
    pub async fn forget(cache: &Cache, id: u64) {
        let held = Cell::new(id);
        io().await;
        held.set(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_sync_still_makes_a_send_future() {
    let cache = cache("c-not-sync").await;
    let spawned = tokio::spawn({
        let cache = cache.clone();
        async move {
            let plain = not_sync::plain(&cache, 1).await;
            let stale = not_sync::stale(&cache, 2).await;
            let written = not_sync::write(&cache, 1).await;
            not_sync::forget(&cache, 1).await;
            (plain, stale, written)
        }
    });
    assert_eq!(spawned.await.unwrap(), (1, 2, 1));
}

/// Item 1: a cached "nothing" of `find_row -> Option<u64>` (with
/// `cache_none`) under the key `get_row -> Result<u64, _>` reads is a miss
/// for the latter, never a panic; present values stay shared.
#[tokio::test]
async fn a_cached_nothing_is_a_miss_for_a_function_that_cannot_return_none() {
    let db = Db::new(cache("c-absent").await);
    assert_eq!(db.find_row(0).await, None, "cached as a nothing");
    let other = Db::beside(cache("c-absent").await, &db);
    assert_eq!(other.row(0).await, Ok(0), "a load, not a panic");
    assert_eq!(db.row(0).await, Ok(0), "through L1 too");
    // A present value written by one shape is a hit for the other.
    assert_eq!(db.row(5).await, Ok(5));
    let loads = db.loads();
    assert_eq!(other.find_row(5).await, Some(5));
    assert_eq!(db.loads(), loads, "shared, not loaded again");
}

/// Item 2: a load that read the row before `invalidate_key` returned never
/// writes its old value to Redis after it.
#[tokio::test]
async fn a_load_that_raced_with_a_key_invalidation_is_never_served() {
    let db = Db::new(cache("c-key-race").await);
    let gate = close(&db).await;
    let loading = start(&db, {
        let db = db.clone();
        async move { db.row(1).await }
    })
    .await; // the load read version 0 and waits
    db.update();
    let key = tiercache::key::render(&1u64);
    db.cache
        .invalidate_key("row", &key)
        .await
        .expect("Redis up");
    drop(gate);
    assert_eq!(
        loading.await.unwrap(),
        Ok(1),
        "its caller gets what it loaded"
    );
    let fresh = Db::beside(cache("c-key-race").await, &db);
    assert_eq!(fresh.row(1).await, Ok(1001), "Redis refused the old value");
    assert_eq!(db.row(1).await, Ok(1001), "and L1 did not keep it");
}

/// Found by the history checker: a caller arriving after an invalidation
/// does not join a flight that began before it (and take its old value).
#[tokio::test]
async fn a_caller_after_an_invalidation_does_not_join_an_older_flight() {
    let db = Db::new(cache("c-old-flight").await);
    let gate = close(&db).await;
    let before = start(&db, {
        let db = db.clone();
        async move { db.row(20).await }
    })
    .await; // the flight's leader read version 0
    db.update();
    let key = tiercache::key::render(&20u64);
    db.cache
        .invalidate_key("row", &key)
        .await
        .expect("Redis up");
    let after = start(&db, {
        let db = db.clone();
        async move { db.row(20).await }
    })
    .await; // a new flight: it read version 1
    drop(gate);
    assert_eq!(
        before.await.unwrap(),
        Ok(20),
        "concurrent with the invalidation"
    );
    assert_eq!(after.await.unwrap(), Ok(1020), "began after it");
}

/// Item 3: a fail-safe value invalidated while the load that fails runs is
/// not served, and a fail-safe value is never served past its window.
#[tokio::test]
async fn fail_safe_never_serves_an_invalidated_value() {
    let db = Db::new(cache("c-failsafe").await);
    assert_eq!(db.safe(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the ttl
    db.table.failing.store(true, SeqCst);
    let gate = close(&db).await;
    let calling = start(&db, {
        let db = db.clone();
        async move { db.safe(1).await }
    })
    .await; // the fail-safe value is at hand, the load runs
    db.update();
    db.cache
        .invalidate_tags(["safe:1"])
        .await
        .expect("Redis up");
    drop(gate);
    assert_eq!(
        calling.await.unwrap(),
        Err(DbError),
        "not the invalidated value"
    );
    assert_eq!(db.safe(1).await, Err(DbError), "nor later");
}

/// Item 3 without L1 (found by review): the fail-safe value read from
/// Redis is checked against the invalidations since, like one from L1.
#[tokio::test]
async fn fail_safe_without_l1_never_serves_an_invalidated_value() {
    let db = Db::new(cache_with("c-failsafe-l1off", |b| b.l1_capacity(0)).await);
    assert_eq!(db.safe(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the ttl
    db.table.failing.store(true, SeqCst);
    let gate = close(&db).await;
    let calling = start(&db, {
        let db = db.clone();
        async move { db.safe(1).await }
    })
    .await;
    db.update();
    db.cache
        .invalidate_tags(["safe:1"])
        .await
        .expect("Redis up");
    drop(gate);
    assert_eq!(
        calling.await.unwrap(),
        Err(DbError),
        "not the invalidated value"
    );
}

/// A tag invalidated while a write-through's body runs (found by review):
/// Redis refuses the value (old versions), and so does this L1.
#[tokio::test]
async fn a_write_through_that_raced_with_a_tag_invalidation_stays_out_of_l1() {
    for (namespace, redis) in [("c-wt-tag", true), ("c-wt-tag-local", false)] {
        let cache = match redis {
            true => cache(namespace).await,
            false => Cache::builder().ttl_jitter(0.0).build().await.unwrap(),
        };
        let db = Db::new(cache);
        let gate = close(&db).await;
        let saving = start(&db, {
            let db = db.clone();
            async move { db.save_safe_slowly(9).await }
        })
        .await;
        db.update();
        db.cache.invalidate_tags(["safe:9"]).await.unwrap();
        drop(gate);
        assert_eq!(saving.await.unwrap(), Ok(9));
        assert_eq!(
            db.safe(9).await,
            Ok(1009),
            "{namespace}: loaded, not the raced write"
        );
    }
}

/// A fail-safe value in L1 survives invalidations of other keys (found by
/// a second review: their striped counters made it unservable).
#[tokio::test]
async fn fail_safe_survives_invalidations_of_other_keys() {
    let db = Db::new(Cache::builder().ttl_jitter(0.0).build().await.unwrap());
    assert_eq!(db.safe(1).await, Ok(1));
    for id in 0..20_000u64 {
        let key = tiercache::key::render(&id);
        db.cache.invalidate_key("other", &key).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // past the ttl
    db.table.failing.store(true, SeqCst);
    assert_eq!(db.safe(1).await, Ok(1), "the fail-safe value");
}

#[tokio::test]
async fn fail_safe_is_a_hard_bound_from_the_original_expiry() {
    let db = Db::new(
        cache_with("c-bound", |b| {
            b.fail_safe_throttle(Duration::from_millis(150))
        })
        .await,
    );
    let loaded = Instant::now();
    assert_eq!(db.brief(1).await, Ok(1));
    db.table.failing.store(true, SeqCst);
    // ttl 100 ms + fail_safe 700 ms: served until 800 ms after the load at
    // most, however often the throttle re-serves it.
    let mut last_served = None;
    while loaded.elapsed() < Duration::from_millis(1600) {
        let asked = loaded.elapsed();
        if db.brief(1).await == Ok(1) {
            last_served = Some(asked);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let last = last_served.expect("served within the window");
    assert!(
        last >= Duration::from_millis(100),
        "served past the ttl: {last:?}"
    );
    assert!(
        last <= Duration::from_millis(800),
        "served {last:?} after the load"
    );
}

/// Item 4: a write-through whose version read and write cannot reach Redis
/// leaves no instance serving the value it replaced, once Redis is back.
#[tokio::test]
async fn a_write_through_that_cannot_reach_redis_invalidates_the_entry() {
    let server = support::RedisServer::start();
    let on = |namespace: &'static str| {
        let url = server.url();
        async move {
            Cache::builder()
                .namespace(namespace)
                .redis(url)
                .build()
                .await
                .expect("valid settings")
        }
    };
    let writer = Db::new(on("c-write").await);
    let reader = Db::beside(on("c-write").await, &writer);
    assert_eq!(
        reader.row(1).await,
        Ok(1),
        "cached in Redis and the reader's L1"
    );
    let stalled = support::stall(&server.url(), 0.6).await;
    assert_eq!(writer.save(1).await, Ok(1001));
    assert_eq!(
        writer.row(1).await,
        Ok(1001),
        "the writer serves what it wrote"
    );
    stalled.await.unwrap();
    let confirmed = support::eventually(Duration::from_secs(5), async || {
        writer.cache.stats().pending_invalidations == 0
    })
    .await;
    assert!(confirmed, "retried until Redis confirmed it");
    let seen = sees(&reader, 1, 1001).await;
    assert!(seen, "the reader no longer serves the replaced value");
}

#[tokio::test]
async fn a_write_through_returning_nothing_invalidates_the_entry() {
    let writer = Db::new(cache("c-delete").await);
    let reader = Db::beside(cache("c-delete").await, &writer);
    assert_eq!(reader.row(3).await, Ok(3));
    assert_eq!(writer.delete(3).await, None);
    let fresh = Db::beside(cache("c-delete").await, &writer);
    assert_eq!(
        fresh.row(3).await,
        Ok(1003),
        "Redis no longer has the old value"
    );
    let seen = sees(&reader, 3, 1003).await;
    assert!(seen, "nor the other instance's L1");
}

/// Item 4: a write-through cancelled after its body changed the row (but
/// before it returned) leaves no instance serving the old value.
#[tokio::test]
async fn a_cancelled_write_through_invalidates_the_entry() {
    let writer = Db::new(cache("c-write-cancel").await);
    let reader = Db::beside(cache("c-write-cancel").await, &writer);
    assert_eq!(reader.row(4).await, Ok(4));
    let gate = close(&writer).await;
    let writing = start(&writer, {
        let writer = writer.clone();
        async move { writer.save_slowly(4).await }
    })
    .await; // the row is updated; the write-through waits
    writing.abort();
    assert!(writing.await.unwrap_err().is_cancelled());
    drop(gate);
    let seen = sees(&reader, 4, 1004).await;
    assert!(
        seen,
        "the reader no longer serves the old row: {:?} {:?} {:?}",
        reader.row(4).await,
        writer.cache.stats(),
        reader.cache.stats()
    );
    assert_eq!(writer.row(4).await, Ok(1004));
}

/// Found by the history checker: a write-through whose entry was
/// invalidated (after a newer update) while it ran does not leave its older
/// value, in Redis or in its own L1.
#[tokio::test]
async fn a_write_through_that_raced_with_an_invalidation_leaves_nothing() {
    let writer = Db::new(cache("c-write-race").await);
    let gate = close(&writer).await;
    let writing = start(&writer, {
        let writer = writer.clone();
        async move { writer.save_slowly(6).await }
    })
    .await; // saved version 1, not yet stored
    writer.update(); // a newer update, and its invalidation
    let key = tiercache::key::render(&6u64);
    writer
        .cache
        .invalidate_key("row", &key)
        .await
        .expect("Redis up");
    drop(gate);
    assert_eq!(writing.await.unwrap(), Ok(1006));
    assert_eq!(writer.row(6).await, Ok(2006), "not kept in its L1");
    let fresh = Db::beside(cache("c-write-race").await, &writer);
    assert_eq!(fresh.row(6).await, Ok(2006), "nor in Redis");
}

/// Item 5: an open breaker does not refuse an invalidation.
#[tokio::test]
async fn an_open_breaker_does_not_refuse_an_invalidation() {
    let server = support::RedisServer::start();
    let url = server.url();
    let writer_cache = Cache::builder()
        .namespace("c-breaker")
        .redis(&url)
        .circuit_breaker(1, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let reader_cache = Cache::builder()
        .namespace("c-breaker")
        .redis(&url)
        .build()
        .await
        .unwrap();
    let writer = Db::new(writer_cache);
    let reader = Db::beside(reader_cache, &writer);
    assert_eq!(reader.row(7).await, Ok(7));
    let stalled = support::stall(&url, 0.5).await;
    assert_eq!(writer.row(8).await, Ok(8), "a load past a stalled Redis");
    stalled.await.unwrap();
    assert!(writer.cache.stats().breaker_open, "one failure opened it");
    writer.update();
    let key = tiercache::key::render(&7u64);
    writer
        .cache
        .invalidate_key("row", &key)
        .await
        .expect("sent past the breaker");
    let fresh = Db::beside(
        Cache::builder()
            .namespace("c-breaker")
            .redis(&url)
            .build()
            .await
            .unwrap(),
        &writer,
    );
    assert_eq!(fresh.row(7).await, Ok(1007), "Redis has it");
    let seen = sees(&reader, 7, 1007).await;
    assert!(seen, "and the other instance");
}

/// Item 5: an invalidating caller cancelled at its first await leaves the
/// invalidation applied here and sent to Redis in the background.
#[tokio::test]
async fn a_cancelled_invalidation_is_applied_and_retried() {
    let db = Db::new(cache("c-cancel").await);
    let other = Db::beside(cache("c-cancel").await, &db);
    assert_eq!(db.row(2).await, Ok(2));
    assert_eq!(other.row(2).await, Ok(2));
    db.update();
    let key = tiercache::key::render(&2u64);
    // Polled once, then dropped: the caller is cancelled at its first await.
    let polled = futures_util::FutureExt::now_or_never(db.cache.invalidate_key("row", &key));
    assert!(polled.is_none(), "it waits for Redis");
    assert_eq!(db.row(2).await, Ok(1002), "applied here at once");
    let seen = sees(&other, 2, 1002).await;
    assert!(seen, "and sent to Redis by the background retrier");
    assert_eq!(db.cache.stats().pending_invalidations, 0);
}

/// Item 5: a burst of 20,000 concurrent loads on a current-thread runtime
/// against a healthy Redis does not open the breaker.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_does_not_open_the_breaker_of_a_healthy_redis() {
    let db = Db::new(cache("c-burst").await);
    let calls = (0..20_000u64).map(|id| {
        let db = db.clone();
        async move { db.row(id).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    let stats = db.cache.stats();
    assert_eq!(stats.breaker_trips, 0, "{stats:?}");
}

/// Item 7: a stale value read from Redis is served from L1 no longer than
/// its envelope's windows, counted from its original expiry.
#[tokio::test]
async fn l1_never_outlives_the_windows_of_a_stale_l2_value() {
    let writer = Db::new(cache("c-stale-l1").await);
    let loaded = Instant::now();
    assert_eq!(writer.swr(1).await, Ok(1));
    writer.table.failing.store(true, SeqCst); // refreshes fail from now on
    tokio::time::sleep(Duration::from_millis(900)).await; // 500 ms into `stale`
    let reader = Db::beside(cache("c-stale-l1").await, &writer);
    assert_eq!(
        reader.swr(1).await,
        Ok(1),
        "stale from Redis, served at once"
    );
    // The value's windows end 1400 ms after its load.
    let wake = loaded + Duration::from_millis(1700);
    tokio::time::sleep_until(wake.into()).await;
    assert_eq!(
        reader.swr(1).await,
        Err(DbError),
        "no longer served from L1"
    );
}

/// Item 8: a write-through of one key does not keep a concurrent load of
/// another key out of L1.
#[tokio::test]
async fn a_write_to_one_key_leaves_other_loads_in_l1() {
    let db = Db::new(cache("c-stripes").await);
    let gate = close(&db).await;
    let loading = start(&db, {
        let db = db.clone();
        async move { db.row(10).await }
    })
    .await;
    // Other keys are invalidated while the load of 10 runs, here and by
    // another instance.
    let writer = Db::beside(cache("c-stripes").await, &db);
    writer.cache.invalidate_key("row", "11").await.unwrap();
    db.cache.invalidate_key("row", "12").await.unwrap();
    let heard = support::eventually(Duration::from_secs(2), async || {
        db.cache.stats().remote_invalidations >= 1
    })
    .await;
    assert!(heard);
    drop(gate);
    assert_eq!(loading.await.unwrap(), Ok(10));
    let hits = db.cache.stats().l1_hits;
    assert_eq!(db.row(10).await, Ok(10));
    assert_eq!(db.cache.stats().l1_hits, hits + 1, "kept in L1");
}

/// Item 8: a key invalidation removes that key from L1, and no other: the
/// striped counters it bumps hold back loads in flight, not entries in L1.
#[tokio::test]
async fn key_invalidations_leave_other_l1_entries_alone() {
    let db = Db::new(Cache::builder().l1_capacity(50_000).build().await.unwrap());
    for id in 0..10_000 {
        assert_eq!(db.row(id).await, Ok(id));
    }
    for id in 20_000..20_100 {
        let key = tiercache::key::render(&id);
        db.cache.invalidate_key("row", &key).await.unwrap();
    }
    let hits = db.cache.stats().l1_hits;
    for id in 0..10_000 {
        assert_eq!(db.row(id).await, Ok(id));
    }
    assert_eq!(
        db.cache.stats().l1_hits - hits,
        10_000,
        "every entry stayed in L1"
    );
}

/// Item 9: after `lock_wait`, one waiter per process loads while the
/// leader is slow, not every waiter.
#[tokio::test]
async fn waiters_of_a_slow_leader_do_not_all_load() {
    let db = Db::new(cache_with("c-herd", |b| b.lock_wait(Duration::from_millis(300))).await);
    let gate = close(&db).await;
    let leader = start(&db, {
        let db = db.clone();
        async move { db.row(1).await }
    })
    .await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.row(1).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(db.loads(), 2, "the leader and one relief");
    drop(gate);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Ok(1));
    }
    assert_eq!(leader.await.unwrap(), Ok(1));
}

/// Item 9: a holder whose write fails (here: its breaker opened while it
/// loaded) still releases the lock at once, not after its whole lease.
#[tokio::test]
async fn a_holder_whose_write_fails_releases_the_lock() {
    let server = support::RedisServer::start();
    let url = server.url();
    let cache = Cache::builder()
        .namespace("c-release")
        .redis(&url)
        .ttl_jitter(0.0)
        .lock_lease(Duration::from_secs(20))
        .circuit_breaker(1, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let db = Db::new(cache);
    let gate = close(&db).await;
    let holding = start(&db, {
        let db = db.clone();
        async move { db.row(1).await }
    })
    .await; // it holds the lock and loads
    let mut redis = support::raw(&url).await;
    let lock = "c-release:#lock:row:1";
    let held: bool = redis::cmd("EXISTS")
        .arg(lock)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(held);
    let stalled = support::stall(&url, 0.5).await;
    assert!(db.cache.ping().await.is_err(), "Redis stalled: a timeout");
    stalled.await.unwrap();
    assert!(db.cache.stats().breaker_open, "its write will be refused");
    drop(gate);
    assert_eq!(holding.await.unwrap(), Ok(1));
    let released = support::eventually(Duration::from_secs(2), async || {
        let held: bool = redis::cmd("EXISTS")
            .arg(lock)
            .query_async(&mut redis)
            .await
            .unwrap();
        !held
    })
    .await;
    assert!(released, "the lock is held until its 20 s lease runs out");
}

/// Item 9: a failing background refresh is retried once per throttle, not
/// on every stale hit.
#[tokio::test]
async fn failed_refreshes_are_throttled() {
    let db = Db::new(
        cache_with("c-refresh-fail", |b| {
            b.fail_safe_throttle(Duration::from_secs(10))
        })
        .await,
    );
    assert_eq!(db.swr(1).await, Ok(1));
    db.table.failing.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await; // stale
    for _ in 0..20 {
        assert_eq!(db.swr(1).await, Ok(1), "stale, served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(db.loads() <= 2, "{} loads for 20 stale hits", db.loads());
}

/// Item 9: a background refresh whose body hangs lets go of its key after
/// `background_load_timeout`.
#[tokio::test]
async fn a_hanging_refresh_is_cut_off() {
    let db = Db::new(
        cache_with("c-refresh-hang", |b| {
            b.background_load_timeout(Duration::from_millis(300))
                .fail_safe_throttle(Duration::from_millis(100))
        })
        .await,
    );
    assert_eq!(db.swr(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(450)).await; // stale
    let gate = close(&db).await;
    assert_eq!(db.swr(1).await, Ok(1), "stale; a refresh starts and hangs");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(db.swr(1).await, Ok(1), "stale; another refresh may start");
    let started = support::eventually(Duration::from_secs(2), async || db.loads() >= 3).await;
    drop(gate);
    assert!(
        started,
        "the hung refresh still holds the key: {} loads",
        db.loads()
    );
}

/// Item 10: settings that would overflow or starve the lease are `build()`
/// errors that say what to set.
#[tokio::test]
async fn settings_out_of_range_are_build_errors() {
    type Tune = fn(tiercache::CacheBuilder) -> tiercache::CacheBuilder;
    let cases: [(&str, Tune); 5] = [
        ("lock_wait", |b| b.lock_wait(Duration::MAX)),
        ("fail_safe_throttle", |b| {
            b.fail_safe_throttle(Duration::MAX)
        }),
        ("lock_lease", |b| b.lock_lease(Duration::from_millis(100))),
        ("background_load_timeout", |b| {
            b.background_load_timeout(Duration::ZERO)
        }),
        ("max_value_size", |b| b.max_value_size(10)),
    ];
    for (setting, tune) in cases {
        match tune(Cache::builder()).build().await {
            Err(Error::InvalidSetting {
                setting: named,
                reason,
            }) => {
                assert_eq!(named, setting, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
struct Blob(String);

#[cache_aside(prefix = "blob", ttl = "10m", skip(cache), cache = cache)]
async fn blob(cache: &Cache, len: usize) -> Blob {
    Blob("x".repeat(len))
}

/// Item 12: a value over `max_value_size` in Redis is a miss, not decoded,
/// and a loaded one over it stays out of Redis.
#[tokio::test]
async fn oversized_values_are_neither_decoded_nor_written() {
    let cache = cache_with("c-size", |b| b.max_value_size(64 << 10)).await;
    let mut redis = support::raw(&support::shared().url()).await;
    let huge = vec![b'x'; 1 << 20];
    let key = "c-size:blob:10";
    let () = redis::cmd("SET")
        .arg(key)
        .arg(&huge)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        blob(&cache, 10).await,
        Blob("x".repeat(10)),
        "a miss, loaded"
    );
    assert_eq!(cache.stats().oversized_values, 1);
    assert_eq!(blob(&cache, 100_000).await.0.len(), 100_000, "kept in L1");
    assert_eq!(cache.stats().oversized_values, 2);
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg("c-size:blob:100000")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored, None, "not written");
}
