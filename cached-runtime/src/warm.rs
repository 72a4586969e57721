//! Warming a cache at start-up or after a deploy: a list of calls or keys
//! run with bounded concurrency, a progress report, and cancellation.
//!
//! ```no_run
//! # use std::time::Duration;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User;
//! # #[derive(Debug)] struct DbError;
//! # async fn get_user_peek(id: u64) -> Option<User> { None }
//! # async fn get_user(id: u64) -> Result<User, DbError> { Ok(User) }
//! # async fn run(shutdown: tokio::sync::oneshot::Receiver<()>) {
//! use tiercache_runtime::warm::{Warm, unless_cached};
//!
//! let ids: Vec<u64> = (1..=10_000).collect();
//! let progress = Warm::new(ids)
//!     .concurrency(16)
//!     .on_progress(|p| {
//!         if p.done % 1000 == 0 {
//!             println!("{} of {:?} warmed", p.done, p.total);
//!         }
//!     })
//!     .until(async { let _ = shutdown.await; })
//!     // A `#[cache_aside]` function: its `_peek` companion, then itself.
//!     .run(|id| unless_cached(get_user_peek(id), move || get_user(id)))
//!     .await;
//! assert!(progress.failed == 0 || progress.cancelled);
//! # }
//! ```
//!
//! Each item is warmed by the function given to [`Warm::run`], whose
//! output says what happened ([`Outcome`]): a [`Warmed`] tally, or a
//! result (`Ok` loaded, `Err` failed). [`unless_cached`] warms one call
//! (already cached, or loaded), [`Entries::warm_with`](crate::Entries::warm_with)
//! a batch of keys in one load. The library prints nothing: progress goes
//! to the callback, and a `tracing` event (`tiercache::warm`, info) ends
//! each run.

use std::future::Future;

use futures_util::StreamExt;

/// What warming one item (or one batch of keys) did: how many entries were
/// loaded, found cached already, or failed to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Warmed {
    /// Loaded and stored.
    pub loaded: usize,
    /// Found in L1 or Redis: nothing to do.
    pub cached: usize,
    /// The load failed.
    pub failed: usize,
}

impl Warmed {
    /// One entry loaded.
    pub const LOADED: Self = Self {
        loaded: 1,
        cached: 0,
        failed: 0,
    };
    /// One entry found cached.
    pub const CACHED: Self = Self {
        loaded: 0,
        cached: 1,
        failed: 0,
    };
    /// One entry whose load failed.
    pub const FAILED: Self = Self {
        loaded: 0,
        cached: 0,
        failed: 1,
    };
}

/// What a warm function's output says about the entries it warmed.
pub trait Outcome {
    /// The tally.
    fn warmed(self) -> Warmed;
}

impl Outcome for Warmed {
    fn warmed(self) -> Warmed {
        self
    }
}

/// `Ok`: loaded; `Err`: failed.
impl<T, E> Outcome for Result<T, E> {
    fn warmed(self) -> Warmed {
        match self {
            Ok(_) => Warmed::LOADED,
            Err(_) => Warmed::FAILED,
        }
    }
}

/// Loaded (a `None` is a successful "nothing").
impl<T> Outcome for Option<T> {
    fn warmed(self) -> Warmed {
        Warmed::LOADED
    }
}

/// Loaded.
impl Outcome for () {
    fn warmed(self) -> Warmed {
        Warmed::LOADED
    }
}

/// Warms one call: nothing to do when `peek` finds it cached (a
/// function's `_peek` companion, [`Entry::get`](crate::Entry::get)),
/// otherwise `load` (the function itself, an entry's `try_get_with`),
/// whose output says whether it loaded. (A `_refresh` companion loads too,
/// but as a write: concurrent writes of keys that share an invalidation
/// stripe keep each other's values out of L1, to be safe.)
pub async fn unless_cached<V, L, Fut>(peek: impl Future<Output = Option<V>>, load: L) -> Warmed
where
    L: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    if peek.await.is_some() {
        return Warmed::CACHED;
    }
    load().await.warmed()
}

/// Where a warm run stands: passed to the progress callback after each item,
/// and returned at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The number of items, when the list knows it.
    pub total: Option<usize>,
    /// Items finished.
    pub done: usize,
    /// Entries loaded.
    pub loaded: usize,
    /// Entries found cached already.
    pub cached: usize,
    /// Entries whose load failed.
    pub failed: usize,
    /// Whether the run was stopped by [`Warm::until`] before the end.
    pub cancelled: bool,
}

impl Progress {
    fn record(&mut self, warmed: Warmed) {
        self.done += 1;
        self.loaded += warmed.loaded;
        self.cached += warmed.cached;
        self.failed += warmed.failed;
    }
}

/// A warm run over `items`: see the [module docs](self).
#[must_use = "a warm run does nothing until `run` is awaited"]
pub struct Warm<I, P = fn(&Progress), U = std::future::Pending<()>> {
    items: I,
    concurrency: usize,
    progress: P,
    until: U,
}

impl<I: IntoIterator> Warm<I> {
    /// A run over `items` (ids, keys, chunks of keys: whatever the warm
    /// function takes), four at a time, reporting to nobody, until done.
    pub fn new(items: I) -> Self {
        Self {
            items,
            concurrency: 4,
            progress: |_| {},
            until: std::future::pending(),
        }
    }
}

impl<I: IntoIterator, P: FnMut(&Progress), U: Future<Output = ()>> Warm<I, P, U> {
    /// How many items are warmed at once (at least 1; default 4): a bound
    /// on the load put on the database.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Called after each item with where the run stands.
    pub fn on_progress<P2: FnMut(&Progress)>(self, progress: P2) -> Warm<I, P2, U> {
        Warm {
            items: self.items,
            concurrency: self.concurrency,
            progress,
            until: self.until,
        }
    }

    /// Stops the run when `signal` completes (a shutdown, a deadline:
    /// `tokio::time::sleep(d)`): no item starts after it, and the items
    /// under way are dropped (cancelled at their next `await`, which the
    /// cache's calls are safe against). Dropping the run's future does the
    /// same.
    pub fn until<U2: Future<Output = ()>>(self, signal: U2) -> Warm<I, P, U2> {
        Warm {
            items: self.items,
            concurrency: self.concurrency,
            progress: self.progress,
            until: signal,
        }
    }

    /// Warms every item with `warm`, `concurrency` at a time; the final
    /// progress.
    pub async fn run<F, Fut>(self, warm: F) -> Progress
    where
        F: FnMut(I::Item) -> Fut,
        Fut: Future,
        Fut::Output: Outcome,
    {
        let Self {
            items,
            concurrency,
            mut progress,
            until,
        } = self;
        let items = items.into_iter();
        let mut report = Progress {
            total: match items.size_hint() {
                (low, Some(high)) if low == high => Some(low),
                _ => None,
            },
            ..Progress::default()
        };
        let mut runs = futures_util::stream::iter(items)
            .map(warm)
            .buffer_unordered(concurrency);
        let until = std::pin::pin!(until);
        let mut until = until;
        loop {
            tokio::select! {
                biased;
                () = &mut until => {
                    report.cancelled = true;
                    break;
                }
                next = runs.next() => match next {
                    Some(outcome) => {
                        report.record(outcome.warmed());
                        progress(&report);
                    }
                    None => break,
                },
            }
        }
        tracing::info!(
            target: "tiercache::warm",
            done = report.done,
            loaded = report.loaded,
            cached = report.cached,
            failed = report.failed,
            cancelled = report.cancelled,
            "cache warming ended"
        );
        report
    }
}
