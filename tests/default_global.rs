//! Without `set_global`, cached functions run on `Cache::in_memory()`, and a
//! late `set_global` is refused instead of silently splitting the cache.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tiercache::{Cache, Error, cache_aside, set_global};

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cache_aside(prefix = "double", ttl = "1m")]
async fn double(n: u64) -> u64 {
    LOADS.fetch_add(1, SeqCst);
    n * 2
}

#[tokio::test]
async fn the_default_global_is_in_memory() {
    assert_eq!(double(2).await, 4);
    assert_eq!(double(2).await, 4);
    assert_eq!(LOADS.load(SeqCst), 1, "cached without any set-up");
    let late = set_global(Cache::in_memory());
    assert!(matches!(late, Err(Error::GlobalAlreadySet)), "{late:?}");
}
