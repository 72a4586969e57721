//! Redis Sentinel: a cache built with `redis_sentinel` follows a failover,
//! against a real master, replica and sentinel started here.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use support::Sentinels;
use tiercache::{Cache, Error, cache_aside};

const NAMESPACE: &str = "failover";

/// A load that never fails: a call that returns anything but `Ok` with
/// the right value failed because of the cache.
#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

struct Source {
    cache: Cache,
    loads: AtomicU64,
}

impl Source {
    fn new(cache: Cache) -> Arc<Self> {
        Arc::new(Self {
            cache,
            loads: AtomicU64::new(0),
        })
    }

    fn loads(&self) -> u64 {
        self.loads.load(SeqCst)
    }

    #[cache_aside(prefix = "row", ttl = "10m", cache = self.cache)]
    async fn row(&self, id: u64) -> Result<u64, Never> {
        self.loads.fetch_add(1, SeqCst);
        Ok(id * 7)
    }
}

async fn cache_on(sentinels: &Sentinels) -> Cache {
    Cache::builder()
        .namespace(NAMESPACE)
        .redis_sentinel([sentinels.url()], Sentinels::MASTER)
        .build()
        .await
        .expect("valid settings")
}

/// Whether the entry of `id` is on the Redis at `url`.
async fn stored(url: &str, id: u64) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("{NAMESPACE}:row:{id}"))
        .query_async(&mut support::raw(url).await)
        .await
        .expect("EXISTS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_fails_no_call_and_the_cache_follows_the_new_master() {
    let started = Instant::now();
    let sentinels = Sentinels::start().await;
    let (a, b) = (
        Source::new(cache_on(&sentinels).await),
        Source::new(cache_on(&sentinels).await),
    );
    // Before: one shared L2, on the master.
    assert_eq!(a.row(1).await.unwrap(), 7);
    assert_eq!(b.row(1).await.unwrap(), 7);
    assert_eq!((a.loads(), b.loads()), (1, 0), "B read A's value from L2");
    assert!(stored(&sentinels.master.url(), 1).await);

    // Load: both instances, two tasks each, over keys that come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for (n, source) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (source, stop, calls, failed) =
            (source.clone(), stop.clone(), calls.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = n as u64;
            while !stop.load(SeqCst) {
                let id = 100 + i % 200;
                match source.row(id).await {
                    Ok(value) if value == id * 7 => {}
                    _ => {
                        failed.fetch_add(1, SeqCst);
                    }
                }
                calls.fetch_add(1, SeqCst);
                if i.is_multiple_of(50) {
                    let _ = source.cache.invalidate_key("row", &id.to_string()).await;
                }
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = calls.load(SeqCst);
    let failover = Instant::now();
    sentinels.fail_over().await;
    let promoted_after = failover.elapsed();
    let new_master = sentinels.replica.url();

    // Both instances write to the new master again.
    let fresh = AtomicU64::new(10_000);
    for (name, source) in [("A", &a), ("B", &b)] {
        let moved = support::eventually(Duration::from_secs(20), async || {
            let id = fresh.fetch_add(1, SeqCst);
            source.row(id).await.is_ok() && stored(&new_master, id).await
        })
        .await;
        assert!(moved, "{name} does not write to the new master");
    }
    let followed_after = failover.elapsed();
    // A moment more of load on the new master, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, SeqCst);
    for task in tasks {
        task.await.expect("no load task panicked");
    }
    let during = calls.load(SeqCst) - before;
    assert!(during > 100, "calls ran during the failover: {during}");
    assert_eq!(failed.load(SeqCst), 0, "no call failed");
    assert_eq!(a.cache.stats().errors + b.cache.stats().errors, 0);

    // L2 is shared again: what A loads now, B reads from the new master.
    let id = fresh.fetch_add(1, SeqCst);
    assert_eq!(a.row(id).await.unwrap(), id * 7);
    assert!(stored(&new_master, id).await);
    let (loads, hits) = (b.loads(), b.cache.stats().l2_hits);
    assert_eq!(b.row(id).await.unwrap(), id * 7);
    assert_eq!(b.loads(), loads, "B did not load it");
    assert_eq!(b.cache.stats().l2_hits, hits + 1, "an L2 hit");

    // Invalidations reach B over the new master: B's L1 drops the entry
    // and B loads it again.
    let heard = b.cache.stats().remote_invalidations;
    a.cache
        .invalidate_key("row", &id.to_string())
        .await
        .expect("the new master takes the invalidation");
    let reached = support::eventually(Duration::from_secs(5), async || {
        b.cache.stats().remote_invalidations > heard
    })
    .await;
    assert!(reached, "B heard A's invalidation");
    assert_eq!(b.row(id).await.unwrap(), id * 7);
    assert_eq!(b.loads(), loads + 1, "B loaded it again");
    let subscribers: (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{NAMESPACE}:#events"))
        .query_async(&mut support::raw(&new_master).await)
        .await
        .expect("PUBSUB NUMSUB");
    assert_eq!(subscribers.1, 2, "both listeners are on the new master");
    eprintln!(
        "promoted after {promoted_after:?}, followed after {followed_after:?}, {during} calls meanwhile, test {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_sentinel_settings_fail_build() {
    let no_sentinels: [&str; 0] = [];
    let empty = Cache::builder()
        .redis_sentinel(no_sentinels, "mymaster")
        .build()
        .await;
    assert!(
        matches!(
            empty,
            Err(Error::InvalidSetting {
                setting: "redis_sentinel",
                ..
            })
        ),
        "{empty:?}"
    );
    let bad = Cache::builder()
        .redis_sentinel(["redis://127.0.0.1:26379", "nope://:secret@x"], "mymaster")
        .build()
        .await;
    match bad {
        Err(Error::InvalidRedisUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
        other => panic!("{other:?}"),
    }
    let unnamed = Cache::builder()
        .redis_sentinel(["redis://127.0.0.1:26379"], "")
        .build()
        .await;
    assert!(
        matches!(unnamed, Err(Error::InvalidSetting { .. })),
        "{unnamed:?}"
    );
    let auth_alone = Cache::builder()
        .redis("redis://127.0.0.1:6379")
        .redis_sentinel_master_auth("app", "secret")
        .build()
        .await;
    assert!(
        matches!(auth_alone, Err(Error::InvalidSetting { .. })),
        "{auth_alone:?}"
    );
}

/// Sentinels that do not answer are no error: the cache runs on L1.
#[tokio::test]
async fn unreachable_sentinels_do_not_fail_build() {
    let nobody = support::RedisServer::reserve();
    let builder = Cache::builder()
        .namespace("nosentinel")
        .redis_sentinel(
            [format!("redis://:sentinelpw@127.0.0.1:{}", nobody.port())],
            "mymaster",
        )
        .redis_sentinel_master_auth("app", "masterpw")
        .redis_timeout(Duration::from_millis(100));
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains("sentinelpw") && !shown.contains("masterpw"),
        "{shown}"
    );
    let cache = builder.build().await.expect("built without Redis");
    let source = Source::new(cache);
    assert_eq!(source.row(1).await.unwrap(), 7);
    assert_eq!(source.row(1).await.unwrap(), 7);
    assert_eq!(source.loads(), 1, "served from L1");
}

/// Credentials the master refuses are a configuration mistake: `build()`
/// says so, as it does for a plain Redis URL, rather than running on L1.
#[tokio::test]
async fn credentials_the_master_refuses_fail_build() {
    let sentinels = Sentinels::start().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right")
        .query_async(&mut support::raw(&sentinels.master.url()).await)
        .await
        .expect("CONFIG SET requirepass");
    let built = Cache::builder()
        .namespace("sentinel-auth")
        .redis_sentinel([sentinels.url()], Sentinels::MASTER)
        .redis_sentinel_master_auth("default", "wrong")
        .build()
        .await;
    assert!(matches!(built, Err(Error::RedisAuth { .. })), "{built:?}");
    let built = Cache::builder()
        .namespace("sentinel-auth")
        .redis_sentinel([sentinels.url()], Sentinels::MASTER)
        .redis_sentinel_master_auth("default", "right")
        .build()
        .await;
    assert!(built.is_ok(), "{built:?}");
}
