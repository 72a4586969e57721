//! A circuit breaker in front of Redis.
//!
//! A Redis that is down answers at once (connection refused), but a Redis
//! that is slow or unreachable costs every call the full timeout. After
//! `threshold` consecutive failures the breaker opens: calls skip Redis (a
//! miss, a skipped write) without waiting. Once per `cooldown` one call goes
//! through as a probe; its success closes the breaker, its failure keeps it
//! open for another cooldown. Only failures of the connection count (I/O
//! errors, refusals, dropped connections, timeouts), not errors of a
//! command, so a foreign value under one key cannot turn L2 off.
//!
//! A timeout counts only if nothing succeeded while it waited (when other
//! operations were answered meanwhile, Redis is alive and the wait was this
//! process's own backlog: a burst of thousands of calls on one thread), and
//! only if it was sent after the last failure was counted: operations in
//! flight together that time out together are one piece of evidence, not
//! hundreds. So the breaker opens after `failures` timeouts in a row, one
//! after the other: a Redis that stays silent that long, not a thread
//! that was busy for one timeout.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

pub(crate) struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    origin: Instant,
    failures: AtomicU32,
    /// Milliseconds since `origin` until which calls skip Redis; 0 = closed.
    open_until: AtomicU64,
    /// Milliseconds since `origin` of the last success.
    last_success: AtomicU64,
    /// Milliseconds since `origin` when the last failure was counted.
    last_failure: AtomicU64,
    trips: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms: u64::try_from(cooldown.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            origin: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this call may use Redis: always while closed; while open,
    /// one call per cooldown (the probe).
    #[inline]
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(SeqCst);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(until, now.saturating_add(self.cooldown_ms), SeqCst, SeqCst)
                .is_ok()
    }

    /// The breaker's clock (ms), for [`Breaker::timed_out`].
    pub(crate) fn clock(&self) -> u64 {
        self.now_ms()
    }

    /// An operation sent at `sent` (see [`Breaker::clock`]) timed out: a
    /// failure unless another succeeded meanwhile. Whether the breaker
    /// opened now.
    pub(crate) fn timed_out(&self, sent: u64) -> bool {
        let answered_meanwhile = self.last_success.load(SeqCst) > sent;
        let counted_meanwhile = self.last_failure.load(SeqCst) > sent;
        !answered_meanwhile && !counted_meanwhile && self.failure()
    }

    #[inline]
    pub(crate) fn success(&self) {
        // At most one shared write per millisecond.
        let now = self.now_ms().saturating_add(1);
        if self.last_success.load(SeqCst) < now {
            self.last_success.fetch_max(now, SeqCst);
        }
        // Read before writing: a healthy hot path stays free of shared writes.
        if self.failures.load(SeqCst) != 0 {
            self.failures.store(0, SeqCst);
        }
        if self.open_until.load(SeqCst) != 0 {
            self.open_until.store(0, SeqCst);
            tracing::info!("Redis answers again: circuit breaker closed");
        }
    }

    /// A failure; whether the breaker opened now. An open breaker stays as
    /// it is: its probe re-armed it when it was let through (failures of
    /// operations that skip the breaker, invalidations, must not push the
    /// next probe back).
    pub(crate) fn failure(&self) -> bool {
        self.last_failure.fetch_max(self.now_ms(), SeqCst);
        let failures = self.failures.fetch_add(1, SeqCst).saturating_add(1);
        if failures < self.threshold {
            return false;
        }
        let until = self.now_ms().saturating_add(self.cooldown_ms).max(1);
        let opened = self
            .open_until
            .compare_exchange(0, until, SeqCst, SeqCst)
            .is_ok();
        if opened {
            self.trips.fetch_add(1, SeqCst);
            tracing::warn!(
                failures,
                "Redis keeps failing: circuit breaker open, calls skip it"
            );
        }
        opened
    }

    /// How many times the breaker opened.
    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(SeqCst)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(SeqCst) != 0
    }
}

/// Whether an error says the connection, not the command, failed.
pub(crate) fn is_connection_failure(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_once_per_cooldown() {
        let breaker = Breaker::new(3, Duration::from_millis(50));
        assert!(breaker.allow());
        breaker.failure();
        breaker.failure();
        assert!(breaker.allow(), "2 failures: still closed");
        breaker.failure();
        assert!(breaker.is_open() && !breaker.allow(), "3 failures: open");
        assert_eq!(breaker.trips(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "one probe per cooldown");
        breaker.failure();
        assert!(!breaker.allow(), "the probe failed: open again");
        assert_eq!(breaker.trips(), 1, "still the same trip");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow());
        breaker.success();
        assert!(
            !breaker.is_open() && breaker.allow(),
            "the probe succeeded: closed"
        );
    }

    #[test]
    fn a_timeout_counts_only_if_nothing_succeeded_while_it_waited() {
        let breaker = Breaker::new(1, Duration::from_secs(60));
        let sent = breaker.clock();
        std::thread::sleep(Duration::from_millis(5));
        breaker.success(); // another operation was answered meanwhile
        breaker.timed_out(sent);
        assert!(
            !breaker.is_open(),
            "Redis was answering: the backlog was ours"
        );
        std::thread::sleep(Duration::from_millis(5));
        let sent = breaker.clock();
        breaker.timed_out(sent);
        assert!(breaker.is_open(), "nothing answered since it was sent");
    }

    #[test]
    fn timeouts_in_flight_together_count_once() {
        let breaker = Breaker::new(3, Duration::from_secs(60));
        let wave = breaker.clock();
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..100 {
            breaker.timed_out(wave);
        }
        assert!(!breaker.is_open(), "one wave of timeouts is one failure");
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(2));
            let sent = breaker.clock();
            std::thread::sleep(Duration::from_millis(2));
            breaker.timed_out(sent);
        }
        assert!(
            breaker.is_open(),
            "three in a row, each sent after the last"
        );
    }
}
