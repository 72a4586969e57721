//! Free functions on the global cache, and `set_global`'s contract. One test
//! per binary: the global is process-wide.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tiercache::{Cache, Error, cache_aside, set_global};

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cache_aside(prefix = "square", ttl = 60)]
async fn square(n: u64) -> u64 {
    LOADS.fetch_add(1, SeqCst);
    n * n
}

#[tokio::test]
async fn free_functions_use_the_global_cache() {
    let cache = Cache::builder()
        .namespace("global")
        .redis(support::shared().url())
        .build()
        .await
        .unwrap();
    set_global(cache.clone()).expect("the first set_global wins");
    let again = set_global(Cache::in_memory());
    assert!(matches!(again, Err(Error::GlobalAlreadySet)), "{again:?}");

    assert_eq!(square(3).await, 9);
    assert_eq!(square(3).await, 9);
    assert_eq!(square(4).await, 16);
    assert_eq!(LOADS.load(SeqCst), 2);
    let stats = cache.stats();
    assert_eq!(
        (stats.l1_hits, stats.misses),
        (1, 2),
        "the global is the cache set"
    );
}
