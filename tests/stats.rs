//! Per-prefix stats (issue 13): each call counts once, in its prefix, by
//! how it was answered, and each load by how it ended, whoever answers and
//! however the load ends; the totals of `stats()` are their sums.

mod support;

use std::time::Duration;

use tiercache::Cache;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn calls_are_counted_per_prefix_and_add_up_to_the_totals() {
    let cache = Cache::in_memory();
    for id in [1u64, 2, 1, 1] {
        cache
            .entry("users", &id)
            .ttl(MINUTE)
            .get_with(|| async { id })
            .await;
    }
    let failed: Result<u64, &str> = cache
        .entry("orders", &1u64)
        .ttl(MINUTE)
        .try_get_with(|| async { Err("down") })
        .await;
    assert!(failed.is_err());
    let by_prefix = cache.prefix_stats();
    let users = by_prefix["users"];
    assert_eq!(
        (users.l1_hits, users.misses, users.loads, users.errors),
        (2, 2, 2, 0)
    );
    assert!(users.load_time > Duration::ZERO);
    let orders = by_prefix["orders"];
    assert_eq!((orders.misses, orders.loads, orders.errors), (1, 1, 1));
    let stats = cache.stats();
    assert_eq!(stats.l1_hits, users.l1_hits + orders.l1_hits);
    assert_eq!(stats.misses, users.misses + orders.misses);
    assert_eq!((stats.loads, stats.errors), (3, 1));
}

/// A caller whose background leader is slow gives up after `lock_wait`
/// and loads meanwhile, for the flight's other callers too: the slow
/// leader's caller is answered with that value. Both calls count once;
/// the slow load, cut off by `background_load_timeout` once nobody waits
/// for it, counts as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_by_a_relief_counts_once_and_the_cut_load_as_a_timeout() {
    let cache = Cache::builder()
        .lock_wait(Duration::from_millis(100))
        .background_load_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let entry = |value: u64, pause: Duration| {
        let cache = cache.clone();
        async move {
            cache
                .entry("relief", &1u64)
                .ttl(MINUTE)
                .timeout(Duration::from_secs(30))
                .get_with(move || async move {
                    tokio::time::sleep(pause).await;
                    value
                })
                .await
        }
    };
    let slow = tokio::spawn(entry(1, Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(entry(2, Duration::ZERO).await, 2, "the relief's own value");
    assert_eq!(slow.await.unwrap(), 2, "the slow leader's caller takes it");
    let settled = support::eventually(Duration::from_secs(3), async || {
        cache.prefix_stats()["relief"].load_timeouts == 1
    })
    .await;
    let stats = cache.prefix_stats()["relief"];
    assert!(settled, "the slow load was cut off: {stats:?}");
    assert_eq!(stats.l1_hits + stats.l2_hits + stats.misses, 2, "{stats:?}");
    assert_eq!((stats.loads, stats.errors), (2, 1), "{stats:?}");
}

/// A batch counts each key once: found in L1, found absent in Redis (a
/// cached "nothing"), or loaded; a failed batch load answers each of its
/// keys with the error.
#[tokio::test]
async fn a_batch_counts_each_key_once() {
    let server = support::shared();
    let a = support::cache_on(&server.url(), "stats-batch").await;
    let b = support::cache_on(&server.url(), "stats-batch").await;
    let keys = [1u64, 2, 3];
    let load = |keys: Vec<u64>| async move { keys.into_iter().filter(|k| *k != 3).map(|k| (k, k)) };
    let found = a
        .entries("batch", &keys)
        .ttl(MINUTE)
        .cache_none(MINUTE)
        .get_many_with(load)
        .await;
    assert_eq!(found.len(), 2);
    assert_eq!(a.prefix_stats()["batch"].misses, 3);
    // From Redis, the absent key included.
    b.entries("batch", &keys)
        .ttl(MINUTE)
        .cache_none(MINUTE)
        .get_many_with(load)
        .await;
    let stats = b.prefix_stats()["batch"];
    assert_eq!((stats.l2_hits, stats.misses), (3, 0), "{stats:?}");
    let failed: Result<std::collections::HashMap<u64, u64>, &str> = b
        .entries("batch-failed", &keys)
        .ttl(MINUTE)
        .try_get_many_with(|_| async { Err::<Vec<(u64, u64)>, _>("down") })
        .await;
    assert!(failed.is_err());
    let stats = b.prefix_stats()["batch-failed"];
    assert_eq!(
        (stats.misses, stats.loads, stats.errors),
        (3, 1, 1),
        "{stats:?}"
    );
}
