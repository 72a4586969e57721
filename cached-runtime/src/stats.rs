//! Counters of what the cache did.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use thread_local::ThreadLocal;

/// A snapshot of a [`Cache`](crate::Cache)'s counters, from
/// [`Cache::stats`](crate::Cache::stats).
///
/// Every call of a cached function counts once in `l1_hits`, `l2_hits` or
/// `misses`; `loads` counts the runs of function bodies (fewer than `misses`
/// when concurrent callers share one load), `errors` the loads that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls answered from the in-process cache.
    pub l1_hits: u64,
    /// Calls answered from Redis.
    pub l2_hits: u64,
    /// Calls answered by a load, their own or one they waited for.
    pub misses: u64,
    /// Runs of a function body.
    pub loads: u64,
    /// Loads that returned an error (`Err`), timed out, panicked or were
    /// cancelled.
    pub errors: u64,
    /// Redis operations that failed or timed out (the calls still succeeded).
    pub redis_errors: u64,
    /// Redis operations skipped because the circuit breaker was open, or
    /// because this process had so many in flight that they could not be
    /// sent within the Redis timeout (a burst; not counted as a failure).
    pub redis_skipped: u64,
    /// Times the circuit breaker opened.
    pub breaker_trips: u64,
    /// Whether the circuit breaker is open now (calls skip Redis).
    pub breaker_open: bool,
    /// Calls answered with a value past its fresh period, within `stale`,
    /// while a refresh ran (counted in `l1_hits` or `l2_hits` too).
    pub stale_served: u64,
    /// Background refreshes started before expiry (`refresh_ahead`).
    pub early_refreshes: u64,
    /// Calls answered with a fail-safe value: the load failed, timed out,
    /// or was slower than `timeout` (counted in `misses` too).
    pub fail_safe: u64,
    /// Loads cut off by `hard_timeout` or, with no caller waiting, by
    /// `background_load_timeout` (counted in `errors` too).
    pub load_timeouts: u64,
    /// Loads that waited for another process holding the key's lock.
    pub lock_waits: u64,
    /// Waits for another caller's load that gave up after the cache's
    /// `lock_wait` and loaded alone.
    pub lock_timeouts: u64,
    /// Values stored by `#[write_through]`.
    pub writes: u64,
    /// Invalidations this instance made (explicit calls and
    /// `#[invalidates]`), whether or not Redis could be told.
    pub invalidations: u64,
    /// Invalidations received from other instances and applied to L1.
    pub remote_invalidations: u64,
    /// Times the invalidation subscription was lost (each time L1 was
    /// dropped, since messages may have been missed).
    pub subscription_losses: u64,
    /// Invalidations (and write-throughs) this instance applied locally
    /// that Redis has not confirmed yet: they are retried, in order, until
    /// it does. While one is pending this instance serves no L2 entry it
    /// covers.
    pub pending_invalidations: u64,
    /// Values read from Redis that were larger than the cache's
    /// `max_value_size` and were treated as misses without being decoded,
    /// plus values not written to Redis for the same reason.
    pub oversized_values: u64,
    /// Values read from Redis that did not decrypt — sealed under a key id
    /// the [`KeyRing`](crate::CacheBuilder) does not list, under a wrong
    /// key, or tampered with — or that an encrypting function found
    /// unencrypted: each a miss, reloaded and overwritten.
    pub undecryptable: u64,
    /// Entries L1 holds now (expired and invalidated ones included, until
    /// they are found or evicted).
    pub l1_entries: u64,
    /// With [`l1_max_bytes`](crate::CacheBuilder::l1_max_bytes), the bytes
    /// L1's entries hold by its estimate; 0 without.
    pub l1_bytes: u64,
}

impl Stats {
    /// The share of calls answered from a cache layer, `0.0` before any call.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        hit_ratio(self.l1_hits + self.l2_hits, self.misses)
    }
}

/// `hits` over all calls, `0.0` before any call.
pub(crate) fn hit_ratio(hits: u64, misses: u64) -> f64 {
    let calls = hits.saturating_add(misses);
    if calls == 0 {
        0.0
    } else {
        hits as f64 / calls as f64
    }
}

/// The counters of what a cache does beside answering calls and running
/// loads (those are counted per prefix: [`crate::observe`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) redis_errors: AtomicU64,
    pub(crate) redis_skipped: AtomicU64,
    pub(crate) early_refreshes: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) remote_invalidations: AtomicU64,
    pub(crate) subscription_losses: AtomicU64,
    pub(crate) oversized_values: AtomicU64,
    pub(crate) undecryptable: AtomicU64,
}

impl Counters {
    /// Counts one.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a failed or skipped Redis operation (skipped: the breaker
    /// is open, or this process is too busy; see `L2Error::skipped`).
    pub(crate) fn redis_failed(&self, error: &crate::l2::L2Error) {
        let counter = if error.skipped() {
            &self.redis_skipped
        } else {
            &self.redis_errors
        };
        Self::bump(counter);
    }

    /// With `calls`: the totals of every prefix's counters.
    pub(crate) fn snapshot(&self, calls: &crate::PrefixStats) -> Stats {
        Stats {
            l1_hits: calls.l1_hits,
            l2_hits: calls.l2_hits,
            misses: calls.misses,
            loads: calls.loads,
            errors: calls.errors,
            redis_errors: self.redis_errors.load(Relaxed),
            redis_skipped: self.redis_skipped.load(Relaxed),
            breaker_trips: 0,
            breaker_open: false,
            stale_served: calls.stale_served,
            early_refreshes: self.early_refreshes.load(Relaxed),
            fail_safe: calls.fail_safe,
            load_timeouts: calls.load_timeouts,
            lock_waits: self.lock_waits.load(Relaxed),
            lock_timeouts: self.lock_timeouts.load(Relaxed),
            writes: self.writes.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            remote_invalidations: self.remote_invalidations.load(Relaxed),
            subscription_losses: self.subscription_losses.load(Relaxed),
            pending_invalidations: 0,
            oversized_values: self.oversized_values.load(Relaxed),
            undecryptable: self.undecryptable.load(Relaxed),
            l1_entries: 0,
            l1_bytes: 0,
        }
    }
}

/// A counter bumped on every L1 hit, kept per thread and summed when read.
/// With one shared `AtomicU64`, threads hitting at once would pass its cache
/// line back and forth on every hit, and each bump would be a locked
/// read-modify-write; here a thread bumps its own counter, on a line of its
/// own, with a plain load and store.
#[derive(Debug, Default)]
pub(crate) struct PerThread(ThreadLocal<Padded>);

/// One thread's count, alone on its cache line (128 bytes: x86 fetches lines
/// in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl PerThread {
    /// Counts one, and returns this thread's count.
    #[inline]
    pub(crate) fn bump(&self) -> u64 {
        let own = &self.0.get_or_default().0;
        // Only this thread writes its count (a thread's id, and so its
        // count, is reused only once the thread is gone): a load and a store
        // lose nothing.
        let count = own.load(Relaxed) + 1;
        own.store(count, Relaxed);
        count
    }

    /// The sum over every thread, the gone ones included.
    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|own| own.0.load(Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_counts_add_up_exactly() {
        let hits = PerThread::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    (0..10_000).for_each(|_| {
                        hits.bump();
                    })
                });
            }
        });
        // The threads are gone; their counts stay, and new threads reusing
        // their ids add to them.
        std::thread::scope(|s| {
            s.spawn(|| hits.bump());
        });
        hits.bump();
        assert_eq!(hits.sum(), 80_002);
    }
}
