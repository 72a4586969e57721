//! The `metrics` feature: the series a cache reports through the `metrics`
//! crate, to whatever recorder the program installed (Prometheus, StatsD,
//! OpenTelemetry...). Without the feature every type here is empty and
//! every method does nothing, so the L1 hit path carries no cost at all.
//!
//! Handles are registered once, when a cache is built (its own series) or
//! a prefix is first used (the prefix's): no call looks a series up by
//! name. So the recorder must be installed before the cache is built. A
//! fresh L1 hit does not touch the recorder at all: it is counted per
//! thread, and told every [`FLUSH_EVERY`](crate::observe::FLUSH_EVERY)
//! (see [`crate::observe::PrefixCounters::l1_hit`]).
//!
//! The scheme (every series also has a `namespace` label, the cache's):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `tiercache_requests_total` | counter | `prefix`, `result` = `l1_hit` \| `l2_hit` \| `stale` \| `miss` \| `fail_safe` |
//! | `tiercache_loads_total` | counter | `prefix`, `outcome` = `ok` \| `err` \| `timeout` \| `panic` \| `cancelled` |
//! | `tiercache_load_duration_seconds` | histogram | `prefix` |
//! | `tiercache_redis_duration_seconds` | histogram | `op` |
//! | `tiercache_redis_errors_total` | counter | `kind` = `timeout` \| `connection` \| `server` \| `busy` \| `breaker_open` |
//! | `tiercache_breaker_open` | gauge | |
//! | `tiercache_pending_invalidations` | gauge | |
//! | `tiercache_l1_entries` | gauge | |
//! | `tiercache_invalidations_sent_total` | counter | |
//! | `tiercache_invalidations_received_total` | counter | |
//! | `tiercache_subscription_losses_total` | counter | |
//! | `tiercache_undecryptable_total` | counter | |

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// Why a Redis operation did not happen: the `kind` label of
/// `tiercache_redis_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum ErrorKind {
    /// No answer within the Redis timeout.
    Timeout,
    /// The connection failed or could not be made.
    Connection,
    /// Redis answered with an error (a refused command, a script error,
    /// `READONLY`, `OOM`), or with a reply of the wrong shape.
    Server,
    /// More operations in flight than one cache sends at once, for longer
    /// than the timeout: this process is overloaded.
    Busy,
    /// Skipped: the circuit breaker is open.
    BreakerOpen,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl ErrorKind {
    const ALL: [ErrorKind; 5] = [
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Server,
        ErrorKind::Busy,
        ErrorKind::BreakerOpen,
    ];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Server => "server",
            ErrorKind::Busy => "busy",
            ErrorKind::BreakerOpen => "breaker_open",
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, Unit};

    use super::ErrorKind;
    use crate::l2::Op;
    use crate::observe::{Answer, Outcome};

    /// Describes the series to the recorder (their help text and units),
    /// once per process.
    fn describe() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            metrics::describe_counter!(
                "tiercache_requests_total",
                "Calls of cached functions, by how they were answered."
            );
            metrics::describe_counter!(
                "tiercache_loads_total",
                "Runs of cached functions' bodies, by how they ended."
            );
            metrics::describe_histogram!(
                "tiercache_load_duration_seconds",
                Unit::Seconds,
                "How long runs of cached functions' bodies took."
            );
            metrics::describe_histogram!(
                "tiercache_redis_duration_seconds",
                Unit::Seconds,
                "How long Redis operations took, failed ones included."
            );
            metrics::describe_counter!(
                "tiercache_redis_errors_total",
                "Redis operations that failed or were skipped (calls still succeed)."
            );
            metrics::describe_gauge!(
                "tiercache_breaker_open",
                "1 while the circuit breaker is open (calls skip Redis), else 0."
            );
            metrics::describe_gauge!(
                "tiercache_pending_invalidations",
                "Invalidations applied here that Redis has not confirmed yet."
            );
            metrics::describe_gauge!("tiercache_l1_entries", "Entries held in L1.");
            metrics::describe_counter!(
                "tiercache_invalidations_sent_total",
                "Invalidations this instance made."
            );
            metrics::describe_counter!(
                "tiercache_invalidations_received_total",
                "Invalidations received from other instances and applied to L1."
            );
            metrics::describe_counter!(
                "tiercache_subscription_losses_total",
                "Times the invalidation subscription was lost (L1 dropped each time)."
            );
            metrics::describe_counter!(
                "tiercache_undecryptable_total",
                "Values read from Redis that did not decrypt (unknown key id, wrong key, tampered) or were unencrypted where encryption is required."
            );
        });
    }

    /// One prefix's series.
    pub(crate) struct PrefixMetrics {
        requests: [Counter; Answer::ALL.len()],
        /// The L1 hits told to the recorder so far.
        l1_reported: AtomicU64,
        loads: [Counter; Outcome::ALL.len()],
        load_duration: Histogram,
    }

    impl PrefixMetrics {
        pub(crate) fn new(namespace: &str, prefix: &'static str) -> Self {
            let namespace = namespace.to_owned();
            let requests = Answer::ALL.map(|answer| {
                metrics::counter!(
                    "tiercache_requests_total",
                    "namespace" => namespace.clone(),
                    "prefix" => prefix,
                    "result" => answer.result(),
                )
            });
            let loads = Outcome::ALL.map(|outcome| {
                metrics::counter!(
                    "tiercache_loads_total",
                    "namespace" => namespace.clone(),
                    "prefix" => prefix,
                    "outcome" => outcome.label(),
                )
            });
            let load_duration = metrics::histogram!(
                "tiercache_load_duration_seconds",
                "namespace" => namespace,
                "prefix" => prefix,
            );
            Self {
                requests,
                l1_reported: AtomicU64::new(0),
                loads,
                load_duration,
            }
        }

        /// A call answered otherwise than by a fresh L1 hit (those are
        /// counted per thread and told in [`PrefixMetrics::l1_hits_total`]).
        pub(crate) fn request(&self, answer: Answer) {
            self.requests[answer as usize].increment(1);
        }

        /// The prefix's fresh L1 hits so far, `total`: what is new since
        /// the last call goes to the recorder (flushes may race: each hit
        /// is told once).
        pub(crate) fn l1_hits_total(&self, total: u64) {
            let before = self.l1_reported.fetch_max(total, Relaxed);
            if total > before {
                self.requests[Answer::L1 as usize].increment(total - before);
            }
        }

        pub(crate) fn load(&self, outcome: Outcome, took: Duration) {
            self.loads[outcome.index()].increment(1);
            self.load_duration.record(took.as_secs_f64());
        }
    }

    /// A cache's own series.
    pub(crate) struct CacheMetrics {
        pending: Gauge,
        l1_entries: Gauge,
        sent: Counter,
        received: Counter,
        losses: Counter,
        undecryptable: Counter,
    }

    impl CacheMetrics {
        pub(crate) fn new(namespace: &str) -> Self {
            describe();
            let ns = || namespace.to_owned();
            Self {
                pending: metrics::gauge!("tiercache_pending_invalidations", "namespace" => ns()),
                l1_entries: metrics::gauge!("tiercache_l1_entries", "namespace" => ns()),
                sent: metrics::counter!("tiercache_invalidations_sent_total", "namespace" => ns()),
                received: metrics::counter!(
                    "tiercache_invalidations_received_total",
                    "namespace" => ns()
                ),
                losses: metrics::counter!(
                    "tiercache_subscription_losses_total",
                    "namespace" => ns()
                ),
                undecryptable: metrics::counter!(
                    "tiercache_undecryptable_total",
                    "namespace" => ns()
                ),
            }
        }

        pub(crate) fn pending(&self, pending: impl FnOnce() -> u64) {
            self.pending.set(pending() as f64);
        }

        pub(crate) fn l1_entries(&self, entries: impl FnOnce() -> usize) {
            self.l1_entries.set(entries() as f64);
        }

        pub(crate) fn invalidation_sent(&self) {
            self.sent.increment(1);
        }

        pub(crate) fn invalidation_received(&self) {
            self.received.increment(1);
        }

        pub(crate) fn subscription_lost(&self) {
            self.losses.increment(1);
        }

        pub(crate) fn undecryptable(&self) {
            self.undecryptable.increment(1);
        }
    }

    /// The series of a cache's Redis operations.
    pub(crate) struct RedisMetrics {
        durations: [Histogram; Op::ALL.len()],
        errors: [Counter; ErrorKind::ALL.len()],
        breaker_open: Gauge,
    }

    impl RedisMetrics {
        pub(crate) fn new(namespace: &str) -> Self {
            describe();
            let ns = || namespace.to_owned();
            Self {
                durations: Op::ALL.map(|op| {
                    metrics::histogram!(
                        "tiercache_redis_duration_seconds",
                        "namespace" => ns(),
                        "op" => op.name(),
                    )
                }),
                errors: ErrorKind::ALL.map(|kind| {
                    metrics::counter!(
                        "tiercache_redis_errors_total",
                        "namespace" => ns(),
                        "kind" => kind.label(),
                    )
                }),
                breaker_open: metrics::gauge!("tiercache_breaker_open", "namespace" => ns()),
            }
        }

        pub(crate) fn took(&self, op: Op, took: Duration) {
            self.durations[op as usize].record(took.as_secs_f64());
        }

        pub(crate) fn failed(&self, kind: ErrorKind) {
            self.errors[kind as usize].increment(1);
        }

        pub(crate) fn breaker(&self, open: bool) {
            self.breaker_open.set(if open { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    use std::time::Duration;

    use super::ErrorKind;
    use crate::observe::{Answer, Outcome};

    /// Nothing, without the `metrics` feature.
    pub(crate) struct PrefixMetrics;

    impl PrefixMetrics {
        pub(crate) fn new(_: &str, _: &'static str) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn request(&self, _: Answer) {}

        #[inline(always)]
        pub(crate) fn load(&self, _: Outcome, _: Duration) {}
    }

    /// Nothing, without the `metrics` feature.
    pub(crate) struct CacheMetrics;

    impl CacheMetrics {
        pub(crate) fn new(_: &str) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn pending(&self, _: impl FnOnce() -> u64) {}

        #[inline(always)]
        pub(crate) fn l1_entries(&self, _: impl FnOnce() -> usize) {}

        #[inline(always)]
        pub(crate) fn invalidation_sent(&self) {}

        #[inline(always)]
        pub(crate) fn invalidation_received(&self) {}

        #[inline(always)]
        pub(crate) fn subscription_lost(&self) {}

        #[inline(always)]
        pub(crate) fn undecryptable(&self) {}
    }

    /// Nothing, without the `metrics` feature.
    pub(crate) struct RedisMetrics;

    impl RedisMetrics {
        pub(crate) fn new(_: &str) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn failed(&self, _: ErrorKind) {}

        #[inline(always)]
        pub(crate) fn breaker(&self, _: bool) {}
    }
}
