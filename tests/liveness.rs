//! No call hangs, no key is held forever, no failure is retried on every
//! call: the liveness cases a hostile review of issue 10's work found, each
//! a regression test. Two functions of different types sharing a flight, a
//! relief loader that fails, a relief's value outliving its TTL while the
//! leader hangs, a slow load that then fails, a refresh that panics, and a
//! command connection that goes silent.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tiercache::{Cache, cache_aside};

#[derive(Debug, Clone, PartialEq)]
struct DbError;

#[derive(Clone, Default)]
struct Svc {
    cache: Option<Cache>,
    slow: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    version: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Svc {
    fn new(cache: Cache) -> Self {
        Self {
            cache: Some(cache),
            version: Arc::new(AtomicU64::new(1)),
            ..Self::default()
        }
    }

    fn cache(&self) -> &Cache {
        self.cache.as_ref().expect("built with a cache")
    }

    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }

    #[cache_aside(prefix = "shared", ttl = "100ms", key = "{id}", fail_safe = "1h", timeout = "20ms", cache = self.cache())]
    async fn a(&self, id: u64) -> u64 {
        if self.slow.load(SeqCst) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        id
    }

    /// Another type under `a`'s key.
    #[cache_aside(prefix = "shared", ttl = "100ms", key = "{id}", cache = self.cache())]
    async fn b(&self, id: u64) -> String {
        format!("b{id}")
    }

    /// The first call hangs forever; later calls return the row's version.
    #[cache_aside(prefix = "relief", ttl = "100ms", key = "{id}", stale = "10ms", cache = self.cache())]
    async fn r(&self, id: u64) -> u64 {
        if self.calls.fetch_add(1, SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        self.version.load(SeqCst) * 1000 + id
    }

    /// The first call hangs forever; the second fails; later ones succeed.
    #[cache_aside(prefix = "relief2", ttl = "100ms", key = "{id}", stale = "10ms", cache = self.cache())]
    async fn r2(&self, id: u64) -> Result<u64, DbError> {
        match self.calls.fetch_add(1, SeqCst) {
            0 => std::future::pending::<Result<u64, DbError>>().await,
            1 => Err(DbError),
            _ => Ok(id),
        }
    }

    /// Slow and failing when `failing`.
    #[cache_aside(prefix = "slowfail", ttl = "100ms", key = "{id}", fail_safe = "1h", timeout = "20ms", cache = self.cache())]
    async fn slowfail(&self, id: u64) -> Result<u64, DbError> {
        self.calls.fetch_add(1, SeqCst);
        if self.failing.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(60)).await;
            return Err(DbError);
        }
        Ok(id)
    }

    #[cache_aside(prefix = "panicky", ttl = "100ms", key = "{id}", stale = "1h", cache = self.cache())]
    async fn panicky(&self, id: u64) -> u64 {
        assert!(self.calls.fetch_add(1, SeqCst) == 0, "refresh panics");
        id
    }

    /// The first call hangs forever.
    #[cache_aside(prefix = "hang", ttl = "1h", key = "{id}", stale = "10ms", cache = self.cache())]
    async fn hang(&self, id: u64) -> u64 {
        if self.calls.fetch_add(1, SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        id
    }

    #[cache_aside(prefix = "plain", ttl = "1h", key = "{id}", cache = self.cache())]
    async fn plain(&self, id: u64) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        id
    }
}

/// Two functions of different types sharing a prefix and key: the second
/// joins the first's flight, which holds an offered fail-safe value it
/// cannot take. It waits for the flight to end, without spinning: on a
/// current-thread runtime a spin would keep the leader from ever running.
#[test]
fn a_flight_offering_another_type_does_not_spin() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let svc = Svc::new(Cache::builder().ttl_jitter(0.0).build().await.unwrap());
            assert_eq!(svc.a(1).await, 1);
            tokio::time::sleep(Duration::from_millis(150)).await; // past the ttl
            svc.slow.store(true, SeqCst);
            assert_eq!(svc.a(1).await, 1, "fail-safe after 20 ms; the load goes on");
            let _ = tx.send("a answered");
            let b = svc.b(1).await;
            let _ = tx.send(if b == "b1" { "b answered" } else { "b wrong" });
        });
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("a answered"));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok("b answered"),
        "b() hung"
    );
}

/// A detached load whose caller was cancelled is cut off after
/// `background_load_timeout`, and a relief's value offered meanwhile is not
/// taken past its TTL.
#[tokio::test]
async fn a_relief_value_is_not_served_past_its_ttl_while_the_leader_hangs() {
    let cache = Cache::builder()
        .ttl_jitter(0.0)
        .lock_wait(Duration::from_millis(200))
        .background_load_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    // The caller gives up; the load (hung) goes on in its task.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), svc.r(1))
            .await
            .is_err()
    );
    assert_eq!(svc.r(1).await, 1001, "the relief loads after lock_wait");
    svc.version.store(2, SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await; // 20 TTLs, 4 background bounds
    assert_eq!(svc.r(1).await, 2001, "not the relief's value, 2 s old");
}

/// A relief that fails lets another waiter relieve the hung leader: nobody
/// waits forever.
#[tokio::test]
async fn a_failed_relief_leaves_no_waiter_waiting_forever() {
    let cache = Cache::builder()
        .ttl_jitter(0.0)
        .lock_wait(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), svc.r2(1))
            .await
            .is_err()
    );
    let (a, b) = (svc.clone(), svc.clone());
    let one = tokio::spawn(async move { a.r2(1).await });
    let two = tokio::spawn(async move { b.r2(1).await });
    let both = async { (one.await.unwrap(), two.await.unwrap()) };
    let answered = tokio::time::timeout(Duration::from_secs(3), both).await;
    assert!(
        answered.is_ok(),
        "a waiter still waits after 3 s (15 lock_waits)"
    );
}

/// A load that is slower than `timeout` and then fails (the usual outage):
/// its callers get the fail-safe value, and the failing database is tried
/// once per throttle period, not on every call.
#[tokio::test]
async fn a_slow_failing_load_is_throttled() {
    let cache = Cache::builder()
        .ttl_jitter(0.0)
        .fail_safe_throttle(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    assert_eq!(svc.slowfail(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(150)).await;
    svc.failing.store(true, SeqCst);
    for _ in 0..5 {
        assert_eq!(svc.slowfail(1).await, Ok(1), "the fail-safe value");
        tokio::time::sleep(Duration::from_millis(100)).await; // the load fails meanwhile
    }
    assert_eq!(svc.calls(), 2, "one failing load per throttle period");
}

/// A background refresh that panics is backed off like one that fails.
#[tokio::test]
async fn a_panicking_refresh_is_throttled() {
    let svc = Svc::new(Cache::builder().ttl_jitter(0.0).build().await.unwrap());
    assert_eq!(svc.panicky(1).await, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..5 {
        assert_eq!(svc.panicky(1).await, 1, "stale");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(svc.calls(), 2, "one refresh per throttle period");
}

/// Another type's caller of a key whose flight offers a value it cannot
/// take waits for that flight at most `lock_wait`, then loads alone (found
/// by a second review: it spun until the 3 s leader ended).
#[tokio::test(flavor = "current_thread")]
async fn another_types_waiter_waits_no_longer_than_lock_wait() {
    let cache = Cache::builder()
        .ttl_jitter(0.0)
        .lock_wait(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    assert_eq!(svc.a(1).await, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    svc.slow.store(true, SeqCst);
    assert_eq!(svc.a(1).await, 1, "fail-safe; the 2 s load goes on");
    let asked = std::time::Instant::now();
    assert_eq!(svc.b(1).await, "b1");
    let waited = asked.elapsed();
    assert!(waited < Duration::from_millis(1500), "b waited {waited:?}");
}

/// A detached leader that hangs, whose caller was answered by a relief's
/// value, is cut off after `background_load_timeout` and lets its Redis
/// lock go (found by a second review: it renewed the lock forever).
#[tokio::test]
async fn a_hung_leader_answered_by_a_relief_lets_the_lock_go() {
    let cache = Cache::builder()
        .namespace("live-hung")
        .redis(support::shared().url())
        .ttl_jitter(0.0)
        .lock_wait(Duration::from_millis(200))
        .lock_lease(Duration::from_secs(1))
        .background_load_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    let first = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.hang(1).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(svc.hang(1).await, 1, "the relief's load");
    let answered = tokio::time::timeout(Duration::from_secs(1), first).await;
    assert!(
        answered.is_ok(),
        "the first caller takes the relief's value"
    );
    let mut redis = support::raw(&support::shared().url()).await;
    let released = support::eventually(Duration::from_secs(4), async || {
        let held: bool = redis::cmd("EXISTS")
            .arg("live-hung:#lock:hang:1")
            .query_async(&mut redis)
            .await
            .unwrap();
        !held
    })
    .await;
    assert!(released, "the hung leader still holds (renews) the lock");
}

/// Invalidations while Redis is silent: each caller waits about one
/// timeout, not one per caller queued before it (found by a second review:
/// the 30th waited 3 s with a 100 ms timeout).
#[tokio::test]
async fn concurrent_invalidations_behind_a_silent_redis_are_bounded() {
    let proxy = support::proxy::Proxy::start(support::shared().port()).await;
    let cache = Cache::builder()
        .namespace("live-silent-inv")
        .redis(proxy.url())
        .redis_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    cache.invalidate_key("p", "warm").await.unwrap();
    proxy.freeze();
    let calls = (0..30).map(|i| {
        let cache = cache.clone();
        tokio::spawn(async move {
            let asked = std::time::Instant::now();
            let result = cache.invalidate_key("p", &i.to_string()).await;
            (asked.elapsed(), result.is_err())
        })
    });
    let mut worst = Duration::ZERO;
    for call in calls.collect::<Vec<_>>() {
        let (waited, failed) = call.await.unwrap();
        assert!(failed, "Redis is silent: not confirmed");
        worst = worst.max(waited);
    }
    assert!(
        worst < Duration::from_secs(1),
        "worst {worst:?} with a 100 ms timeout"
    );
    assert_eq!(cache.stats().pending_invalidations, 30);
    proxy.thaw();
    let sent = support::eventually(Duration::from_secs(5), async || {
        cache.stats().pending_invalidations == 0
    })
    .await;
    assert!(sent, "retried once Redis answers");
}

/// A command connection that goes silent (existing connections blackholed,
/// new ones fine): both connections (reads, and writes and locks) are
/// replaced, and L2 is used again for both. redis-rs alone does not
/// reconnect after a timeout.
#[tokio::test]
async fn a_silent_command_connection_is_replaced() {
    let proxy = support::proxy::Proxy::start(support::shared().port()).await;
    let cache = Cache::builder()
        .namespace("live-silent")
        .redis(proxy.url())
        .ttl_jitter(0.0)
        .l1_capacity(0)
        .build()
        .await
        .unwrap();
    let svc = Svc::new(cache);
    assert_eq!(svc.plain(1).await, 1);
    assert_eq!(svc.plain(1).await, 1);
    let before = svc.cache().stats();
    assert_eq!(before.l2_hits, 1, "{before:?}");
    proxy.cut();
    let back = support::eventually(Duration::from_secs(10), async || {
        assert_eq!(svc.plain(1).await, 1, "every call answers");
        svc.cache().stats().l2_hits > before.l2_hits
    })
    .await;
    let after = svc.cache().stats();
    assert!(
        back,
        "10 s after the cut, L2 reads are still unused: {after:?}"
    );
    // Writes go over the other connection: they reach Redis again too.
    let mut redis = support::raw(&support::shared().url()).await;
    let mut id = 1000;
    let written = support::eventually(Duration::from_secs(10), async || {
        id += 1;
        assert_eq!(svc.plain(id).await, id, "every call answers");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("live-silent:*{id}*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        !keys.is_empty()
    })
    .await;
    assert!(
        written,
        "10 s after the cut, L2 writes are still lost: {:?}",
        svc.cache().stats()
    );
}

#[cache_aside(prefix = "held", ttl = "5m", cache = cache, skip(cache))]
async fn held(cache: &Cache, id: u64) -> u64 {
    id
}

/// A lock key with no TTL (set by something else) is waited on until
/// `lock_wait`, not polled: `PTTL` says -1, which was a 1 ms retry.
#[tokio::test]
async fn a_lock_without_a_ttl_is_not_polled() {
    let server = support::shared();
    let cache = Cache::builder()
        .namespace("pttl")
        .redis(server.url())
        .lock_wait(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut redis = support::raw(&server.url()).await;
    let _: () = redis::cmd("SET")
        .arg("pttl:#lock:held:7")
        .arg("someone")
        .query_async(&mut redis)
        .await
        .unwrap();
    let before = support::command_calls(&mut redis, "evalsha").await;
    assert_eq!(held(&cache, 7).await, 7, "loads past lock_wait");
    let acquires = support::command_calls(&mut redis, "evalsha").await - before;
    assert!(acquires < 10, "{acquires} scripts run in 300 ms of waiting");
}
