//! Invalidation and L1 coherence across instances, against a real
//! redis-server: the explicit API (`invalidate_key`, `invalidate_prefix`,
//! `clear`), the stale-set race, O(1) work, and a lost subscription.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tiercache::{Cache, cache_aside};
use tokio::sync::{Notify, Semaphore};

/// Numbers loads across every instance of the test binary.
static LOAD_NUMBER: AtomicU64 = AtomicU64::new(1);

/// A row whose value changes on every load: a stale read shows as an old
/// number.
struct Source {
    cache: Cache,
    loads: AtomicU64,
    /// When closed, loads wait for one permit before they finish.
    gate: Semaphore,
    /// Notified when a gated load has started.
    started: Notify,
}

impl Source {
    fn new(cache: Cache) -> Arc<Self> {
        Arc::new(Self {
            cache,
            loads: AtomicU64::new(0),
            gate: support::open_gate(),
            started: Notify::new(),
        })
    }

    fn loads(&self) -> u64 {
        self.loads.load(SeqCst)
    }

    /// Returns a number no other load returns.
    #[cache_aside(prefix = "row", ttl = "10m", cache = self.cache)]
    async fn row(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, SeqCst);
        let n = LOAD_NUMBER.fetch_add(1, SeqCst);
        self.started.notify_one();
        drop(self.gate.acquire().await.expect("gate open"));
        n * 1000 + id
    }

    #[cache_aside(prefix = "other", ttl = "10m", cache = self.cache)]
    async fn other(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, SeqCst);
        LOAD_NUMBER.fetch_add(1, SeqCst) * 1000 + id
    }
}

/// Waits until `source` answers `id` with something else than `stale`.
async fn sees_change(source: &Source, id: u64, stale: u64) -> bool {
    support::eventually(Duration::from_secs(2), async || {
        source.row(id).await != stale
    })
    .await
}

#[tokio::test]
async fn invalidate_key_reaches_every_instance() {
    let a = Source::new(support::cache_in("inv-key").await);
    let b = Source::new(support::cache_in("inv-key").await);
    let first = a.row(1).await;
    assert_eq!(b.row(1).await, first, "b reads a's value from L2");
    assert_eq!(b.row(1).await, first, "and then from its L1");
    let other = a.row(2).await;

    a.cache.invalidate_key("row", "1").await.unwrap();
    let fresh = a.row(1).await;
    assert_ne!(fresh, first, "a reloads at once");
    assert!(sees_change(&b, 1, first).await, "b's L1 copy is dropped");
    assert_eq!(b.row(1).await, fresh, "and b reads a's new value from L2");
    assert_eq!(a.row(2).await, other, "other keys are untouched");
    assert!(b.cache.stats().remote_invalidations >= 1);
}

#[tokio::test]
async fn invalidate_prefix_forgets_one_function_everywhere() {
    let a = Source::new(support::cache_in("inv-prefix").await);
    let b = Source::new(support::cache_in("inv-prefix").await);
    let rows: Vec<u64> = [a.row(1).await, a.row(2).await].into();
    let other = a.other(1).await;
    for (id, row) in (1..).zip(&rows) {
        assert_eq!(b.row(id).await, *row);
    }

    b.cache.invalidate_prefix("row").await.unwrap();
    for (id, row) in (1..).zip(&rows) {
        assert!(sees_change(&a, id, *row).await, "row {id} reloaded on a");
    }
    assert_eq!(a.other(1).await, other, "another prefix is untouched");
    let fresh = Source::new(support::cache_in("inv-prefix").await);
    assert_eq!(fresh.other(1).await, other, "in Redis too");
    assert_eq!(fresh.loads(), 0);
}

#[tokio::test]
async fn clear_forgets_the_namespace_and_only_it() {
    let a = Source::new(support::cache_in("inv-clear").await);
    let neighbour = Source::new(support::cache_in("inv-clear-neighbour").await);
    let row = a.row(1).await;
    let other = a.other(1).await;
    let next_door = neighbour.row(1).await;

    a.cache.clear().await.unwrap();
    assert_ne!(a.row(1).await, row);
    assert_ne!(a.other(1).await, other);
    assert_eq!(
        neighbour.row(1).await,
        next_door,
        "another namespace is untouched"
    );
    let reader = Source::new(support::cache_in("inv-clear-neighbour").await);
    assert_eq!(reader.row(1).await, next_door);
    assert_eq!(reader.loads(), 0, "its Redis entries too");
}

/// A load that started before an invalidation must not be served after it,
/// however late it lands: not from L1, not from Redis.
#[tokio::test]
async fn a_load_that_raced_with_an_invalidation_is_never_served() {
    let a = Source::new(support::cache_in("race").await);
    let gate_closed = support::close(&a.gate).await;
    let loading = tokio::spawn({
        let a = a.clone();
        async move { a.row(1).await }
    });
    a.started.notified().await; // the load has read Redis and is running
    a.cache.invalidate_prefix("row").await.unwrap();
    drop(gate_closed); // now it finishes, with a value from before
    let raced = loading.await.unwrap();

    let next = a.row(1).await;
    assert_ne!(next, raced, "the raced value is not kept in L1");
    assert_eq!(a.loads(), 2);
    let reader = Source::new(support::cache_in("race").await);
    assert_eq!(reader.row(1).await, next, "Redis holds the reloaded value");
}

#[tokio::test]
async fn the_same_race_through_redis_only() {
    // Writer and reader are different instances: the raced value reaches
    // Redis (recorded with the old versions) and must be refused there.
    let loader = Source::new(support::cache_in("race-l2").await);
    let gate_closed = support::close(&loader.gate).await;
    let loading = tokio::spawn({
        let loader = loader.clone();
        async move { loader.row(1).await }
    });
    loader.started.notified().await;
    let other = Source::new(support::cache_in("race-l2").await);
    other.cache.invalidate_prefix("row").await.unwrap();
    drop(gate_closed);
    let raced = loading.await.unwrap();

    let reader = Source::new(support::cache_in("race-l2").await);
    assert_ne!(reader.row(1).await, raced, "Redis refuses the raced value");
    assert_eq!(reader.loads(), 1);
}

#[tokio::test]
async fn invalidation_is_the_same_work_for_1_or_1000_entries() {
    let server = support::RedisServer::start();
    let url = server.url();
    let mut redis = support::raw(&url).await;
    let mut work = Vec::new();
    for (namespace, entries) in [("one", 1u64), ("thousand", 1000)] {
        let a = Source::new(support::cache_on(&url, namespace).await);
        for id in 0..entries {
            a.row(id).await;
        }
        let last = a.row(entries - 1).await;
        let before = support::commands_executed(&mut redis).await;
        a.cache.invalidate_prefix("row").await.unwrap();
        let after = support::commands_executed(&mut redis).await;
        // Minus the INFO command of the first measurement.
        work.push(after - before - 1);
        assert_ne!(a.row(entries - 1).await, last, "invalidated");
    }
    assert_eq!(
        work[0], work[1],
        "Redis commands per invalidation: {work:?}"
    );
    assert!(work[0] <= 2, "one SET and one PUBLISH: {work:?}");
}

#[tokio::test]
async fn a_lost_subscription_drops_l1_before_it_can_serve_missed_changes() {
    let server = support::RedisServer::start();
    let url = server.url();
    let a = Source::new(support::cache_on(&url, "killed").await);
    let b = Source::new(support::cache_on(&url, "killed").await);
    let first = a.row(1).await;
    assert_eq!(a.row(1).await, first, "in a's L1");

    // Cut every pub/sub connection, then change the row while a may be
    // deaf: a must still not serve its old L1 copy.
    let mut admin = support::raw(&url).await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    b.cache.invalidate_key("row", "1").await.unwrap();
    let noticed = support::eventually(Duration::from_secs(2), async || {
        a.cache.stats().subscription_losses >= 1
    })
    .await;
    assert!(noticed, "a noticed the lost subscription");
    assert_ne!(
        a.row(1).await,
        first,
        "a dropped its L1 and read the new version"
    );

    // And it listens again: the next invalidation reaches it.
    let second = a.row(1).await;
    let resubscribed = support::eventually(Duration::from_secs(5), async || {
        b.cache.invalidate_key("row", "1").await.unwrap();
        a.row(1).await != second
    })
    .await;
    assert!(resubscribed, "a resubscribed");
}

/// How soon a listener notices a pub/sub connection gone silent: the bound
/// `coherence::LOSS_DETECTED_WITHIN` of the runtime documents (one PING
/// interval plus the time a PONG is waited for).
const LOSS_DETECTED_WITHIN: Duration = Duration::from_secs(3);

/// A silent partition: b's connections stay open but nothing crosses them,
/// no FIN, no RST. b's listener must notice within the bound, drop its L1,
/// and listen again once the network heals.
#[tokio::test]
async fn a_silent_partition_is_noticed_within_the_bound() {
    let server = support::RedisServer::start();
    let proxy = support::proxy::Proxy::start(server.port()).await;
    let a = Source::new(support::cache_on(&server.url(), "partition").await);
    let b = Source::new(support::cache_on(&proxy.url(), "partition").await);
    let first = a.row(1).await;
    assert_eq!(b.row(1).await, first, "b reads a's value from L2");
    assert_eq!(b.row(1).await, first, "and then from its L1");
    assert_eq!(b.loads(), 0);

    proxy.freeze();
    let frozen = std::time::Instant::now();
    a.cache.invalidate_key("row", "1").await.unwrap(); // b cannot hear it
    // Scheduling slack on a loaded machine, on top of the documented bound.
    let slack = Duration::from_secs(2);
    let noticed = support::eventually(LOSS_DETECTED_WITHIN + slack, async || {
        b.cache.stats().subscription_losses >= 1
    })
    .await;
    let detection = frozen.elapsed();
    assert!(
        noticed,
        "b noticed the silent partition (waited {detection:?})"
    );
    // b's Redis calls time out behind the partition: it loads the row itself.
    let during = b.row(1).await;
    assert_ne!(
        during, first,
        "b dropped its L1: the old value is not served"
    );
    assert_eq!(b.loads(), 1);

    proxy.thaw();
    // b listens again: a's next invalidations reach its L1.
    let resubscribed = support::eventually(Duration::from_secs(10), async || {
        let seen = b.row(1).await;
        a.cache.invalidate_key("row", "1").await.unwrap();
        support::eventually(Duration::from_millis(500), async || b.row(1).await != seen).await
    })
    .await;
    assert!(resubscribed, "b resubscribed after the thaw");
    let losses = b.cache.stats().subscription_losses;
    let settled = b.row(1).await;
    let loads = b.loads();
    // Healthy, the keepalive keeps the subscription through several PINGs.
    tokio::time::sleep(LOSS_DETECTED_WITHIN + Duration::from_secs(1)).await;
    assert_eq!(b.row(1).await, settled, "served from b's L1 all along");
    assert_eq!(b.loads(), loads);
    assert_eq!(
        b.cache.stats().subscription_losses,
        losses,
        "the keepalive does not drop a healthy subscription"
    );
    a.cache.invalidate_key("row", "1").await.unwrap();
    assert!(
        sees_change(&b, 1, settled).await,
        "a later invalidation reaches b's L1"
    );
    eprintln!("silent partition noticed after {detection:?}");
}

#[tokio::test]
async fn an_instance_ignores_its_own_messages() {
    let a = Source::new(support::cache_in("own").await);
    a.row(1).await;
    a.cache.invalidate_key("row", "1").await.unwrap();
    let row = a.row(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // its own message comes back
    assert_eq!(a.row(1).await, row, "not dropped again by its own message");
    assert_eq!(a.cache.stats().remote_invalidations, 0);
}

#[tokio::test]
async fn without_redis_invalidation_is_local_and_succeeds() {
    let a = Source::new(Cache::in_memory());
    let row = a.row(1).await;
    a.cache.invalidate_key("row", "1").await.unwrap();
    assert_ne!(a.row(1).await, row);
    let row = a.row(1).await;
    a.cache.clear().await.unwrap();
    assert_ne!(a.row(1).await, row);
}

#[tokio::test]
async fn invalidating_while_redis_is_down_reports_it_and_still_clears_l1() {
    let mut server = support::RedisServer::start();
    let a = Source::new(support::cache_on(&server.url(), "down").await);
    let row = a.row(1).await;
    server.stop();
    let result = a.cache.invalidate_key("row", "1").await;
    assert!(result.is_err(), "the caller learns that Redis was not told");
    assert_ne!(
        a.row(1).await,
        row,
        "this instance's L1 is invalidated anyway"
    );
}

/// Seen from another OS process: the child invalidates, the parent's L1
/// follows.
#[tokio::test]
async fn invalidation_crosses_processes() {
    if std::env::var_os("TIERCACHE_CHILD_URL").is_some() {
        return; // in the child, the work is done by `child_invalidates`
    }
    let url = support::shared().url();
    let a = Source::new(support::cache_in("processes").await);
    let first = a.row(1).await;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_invalidates", "--test-threads=1"])
        .env("TIERCACHE_CHILD_URL", &url)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child process ran");
    assert!(
        sees_change(&a, 1, first).await,
        "the parent's L1 followed the child"
    );
}

/// Runs in the child process of `invalidation_crosses_processes`.
#[tokio::test]
async fn child_invalidates() {
    let Some(url) = std::env::var_os("TIERCACHE_CHILD_URL") else {
        return; // run alone, it has nothing to do
    };
    let cache = support::cache_on(url.to_str().unwrap(), "processes").await;
    cache.invalidate_key("row", "1").await.unwrap();
}
