//! Single-flight when the leader fails, panics or is cancelled: the waiters
//! never hang and never see another caller's error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tiercache::{Cache, cache_aside};
use tokio::sync::Notify;

struct Loader {
    cache: Cache,
    runs: AtomicUsize,
    /// The first run waits for this before it finishes.
    release: Notify,
}

impl Loader {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            cache: Cache::in_memory(),
            runs: AtomicUsize::new(0),
            release: Notify::new(),
        })
    }

    /// The first run fails, later runs succeed.
    #[cache_aside(prefix = "fails-once", ttl = "1m", cache = self.cache)]
    async fn fails_once(&self, id: u64) -> Result<u64, String> {
        if self.runs.fetch_add(1, SeqCst) == 0 {
            self.release.notified().await;
            return Err("first run fails".into());
        }
        Ok(id)
    }

    /// The first run panics, later runs succeed.
    #[cache_aside(prefix = "panics-once", ttl = "1m", cache = self.cache)]
    async fn panics_once(&self, id: u64) -> u64 {
        if self.runs.fetch_add(1, SeqCst) == 0 {
            self.release.notified().await;
            panic!("first run panics");
        }
        id
    }

    /// Every run takes until released.
    #[cache_aside(prefix = "blocks", ttl = "1m", cache = self.cache)]
    async fn blocks(&self, id: u64) -> u64 {
        self.runs.fetch_add(1, SeqCst);
        self.release.notified().await;
        id
    }
}

/// Starts `n` waiters behind a leader that is already running.
async fn waiters<F, T>(n: usize, call: F) -> Vec<tokio::task::JoinHandle<T>>
where
    F: Fn() -> tokio::task::JoinHandle<T>,
{
    let handles = (0..n).map(|_| call()).collect();
    tokio::time::sleep(Duration::from_millis(50)).await; // they have joined the flight
    handles
}

#[tokio::test]
async fn a_failed_leader_keeps_its_error_and_a_waiter_loads_again() {
    let loader = Loader::new();
    let leader = tokio::spawn({
        let loader = loader.clone();
        async move { loader.fails_once(1).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = waiters(10, || {
        let loader = loader.clone();
        tokio::spawn(async move { loader.fails_once(1).await })
    })
    .await;
    assert_eq!(
        loader.runs.load(SeqCst),
        1,
        "waiters wait, they do not load"
    );
    loader.release.notify_one();
    assert_eq!(leader.await.unwrap(), Err("first run fails".into()));
    for waiter in waiting {
        assert_eq!(
            waiter.await.unwrap(),
            Ok(1),
            "a waiter never gets another's error"
        );
    }
    assert_eq!(
        loader.runs.load(SeqCst),
        2,
        "one retry serves all the waiters"
    );
}

#[tokio::test]
async fn a_panicking_leader_does_not_poison_the_key() {
    let loader = Loader::new();
    let leader = tokio::spawn({
        let loader = loader.clone();
        async move { loader.panics_once(2).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = waiters(10, || {
        let loader = loader.clone();
        tokio::spawn(async move { loader.panics_once(2).await })
    })
    .await;
    loader.release.notify_one();
    assert!(leader.await.unwrap_err().is_panic());
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap(), 2);
    }
    assert_eq!(loader.panics_once(2).await, 2);
    assert_eq!(loader.runs.load(SeqCst), 2);
}

#[tokio::test]
async fn a_cancelled_leader_does_not_strand_its_waiters() {
    let loader = Loader::new();
    let leader = tokio::spawn({
        let loader = loader.clone();
        async move { loader.blocks(3).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = waiters(10, || {
        let loader = loader.clone();
        tokio::spawn(async move { loader.blocks(3).await })
    })
    .await;
    leader.abort(); // the leader's caller goes away mid-load
    assert!(leader.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(loader.runs.load(SeqCst), 2, "one waiter took over");
    loader.release.notify_one();
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap(), 3);
    }
    assert_eq!(loader.runs.load(SeqCst), 2);
}

/// The same loader behind options that run loads in the background
/// (`stale`): the load is a task of its own.
#[derive(Clone)]
struct Background(Arc<Loader>);

impl Background {
    #[cache_aside(prefix = "bg-panics-once", ttl = "1m", stale = "1m", cache = self.0.cache)]
    async fn panics_once(&self, id: u64) -> u64 {
        if self.0.runs.fetch_add(1, SeqCst) == 0 {
            self.0.release.notified().await;
            panic!("first run panics");
        }
        id
    }

    #[cache_aside(prefix = "bg-blocks", ttl = "1m", stale = "1m", cache = self.0.cache)]
    async fn blocks(&self, id: u64) -> u64 {
        self.0.runs.fetch_add(1, SeqCst);
        self.0.release.notified().await;
        id
    }
}

#[tokio::test]
async fn a_panic_in_a_background_load_reaches_its_caller_and_not_the_waiters() {
    let loader = Background(Loader::new());
    let leader = tokio::spawn({
        let loader = loader.clone();
        async move { loader.panics_once(4).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = waiters(10, || {
        let loader = loader.clone();
        tokio::spawn(async move { loader.panics_once(4).await })
    })
    .await;
    loader.0.release.notify_one();
    assert!(
        leader.await.unwrap_err().is_panic(),
        "the caller sees the panic"
    );
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap(), 4);
    }
    assert_eq!(loader.0.runs.load(SeqCst), 2);
}

#[tokio::test]
async fn a_background_load_outlives_its_cancelled_caller() {
    let loader = Background(Loader::new());
    let leader = tokio::spawn({
        let loader = loader.clone();
        async move { loader.blocks(5).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = waiters(10, || {
        let loader = loader.clone();
        tokio::spawn(async move { loader.blocks(5).await })
    })
    .await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(50)).await;
    loader.0.release.notify_one();
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap(), 5);
    }
    assert_eq!(
        loader.0.runs.load(SeqCst),
        1,
        "the load went on without its caller: no second run"
    );
}
