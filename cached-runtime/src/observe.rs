//! What a cache tells about what it did, per prefix: the counters behind
//! [`Cache::prefix_stats`](crate::Cache::prefix_stats) and the totals of
//! [`Cache::stats`](crate::Cache::stats), the `metrics` feature's series
//! ([`crate::metrics`]), and the spans of calls and loads.
//!
//! Every call of a cached function is answered one way ([`Answer`]), and
//! every run of a body ends one way ([`Outcome`]). Both are recorded in the
//! prefix's [`PrefixCounters`], found once per call that is not an L1 hit
//! (a map lookup) and, for an L1 hit, held by the L1 entry itself: a hit
//! bumps a per-thread counter and, with `metrics`, one handle registered
//! when the prefix was first used. Nothing is looked up by name on a hit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::metrics::PrefixMetrics;
use crate::stats::{Counters, PerThread};

/// How a call was answered; each call counts once, in one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A fresh value from L1.
    L1,
    /// A value past its fresh period from L1, while a refresh runs.
    L1Stale,
    /// A fresh value from Redis.
    L2,
    /// A value past its fresh period from Redis, while a refresh runs.
    L2Stale,
    /// A load: this call's, or one it waited for (its value or its error).
    Load,
    /// A fail-safe value: the load failed, timed out or was too slow.
    FailSafe,
}

impl Answer {
    pub(crate) const ALL: [Answer; 6] = [
        Answer::L1,
        Answer::L1Stale,
        Answer::L2,
        Answer::L2Stale,
        Answer::Load,
        Answer::FailSafe,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// The `result` label of `tiercache_requests_total`, and the call
    /// span's `outcome`.
    pub(crate) const fn result(self) -> &'static str {
        match self {
            Answer::L1 => "l1_hit",
            Answer::L1Stale | Answer::L2Stale => "stale",
            Answer::L2 => "l2_hit",
            Answer::Load => "miss",
            Answer::FailSafe => "fail_safe",
        }
    }

    /// Where the answer came from: the call span's `tier`.
    const fn tier(self) -> &'static str {
        match self {
            Answer::L1 | Answer::L1Stale => "l1",
            Answer::L2 | Answer::L2Stale => "l2",
            Answer::Load | Answer::FailSafe => "load",
        }
    }

    /// Whether a cache layer answered: the call span's `cache.hit`.
    const fn hit(self) -> bool {
        matches!(
            self,
            Answer::L1 | Answer::L1Stale | Answer::L2 | Answer::L2Stale
        )
    }
}

/// How a run of a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned a value (or a "nothing").
    Ok,
    /// It returned an error.
    Err,
    /// It was cut off by `hard_timeout` or `background_load_timeout`.
    Timeout,
    /// It panicked.
    Panic,
    /// It was dropped before it finished (its caller was cancelled).
    Cancelled,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Err,
        Outcome::Timeout,
        Outcome::Panic,
        Outcome::Cancelled,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The `outcome` label of `tiercache_loads_total`, and the load span's.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Err => "err",
            Outcome::Timeout => "timeout",
            Outcome::Panic => "panic",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What one prefix's calls did, in one [`Cache`](crate::Cache), from
/// [`Cache::prefix_stats`](crate::Cache::prefix_stats). The fields mean
/// what [`Stats`](crate::Stats)'s of the same names do, for this prefix's
/// calls only; the totals of `Stats` are their sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrefixStats {
    /// Calls answered from the in-process cache (stale values included).
    pub l1_hits: u64,
    /// Calls answered from Redis (stale values included).
    pub l2_hits: u64,
    /// Calls answered by a load, their own or one they waited for
    /// (fail-safe values included).
    pub misses: u64,
    /// Calls answered with a value past its fresh period while a refresh
    /// ran (counted in `l1_hits` or `l2_hits` too).
    pub stale_served: u64,
    /// Calls answered with a fail-safe value (counted in `misses` too).
    pub fail_safe: u64,
    /// Runs of a function body.
    pub loads: u64,
    /// Runs that returned an error, timed out, panicked or were cancelled.
    pub errors: u64,
    /// Runs cut off by `hard_timeout` (counted in `errors` too).
    pub load_timeouts: u64,
    /// The time the runs took, all added up: `load_time / loads` is the
    /// mean.
    pub load_time: Duration,
}

impl PrefixStats {
    /// The share of calls answered from a cache layer, `0.0` before any call.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        crate::stats::hit_ratio(self.l1_hits + self.l2_hits, self.misses)
    }

    fn add(&mut self, other: &PrefixStats) {
        self.l1_hits += other.l1_hits;
        self.l2_hits += other.l2_hits;
        self.misses += other.misses;
        self.stale_served += other.stale_served;
        self.fail_safe += other.fail_safe;
        self.loads += other.loads;
        self.errors += other.errors;
        self.load_timeouts += other.load_timeouts;
        self.load_time += other.load_time;
    }
}

/// One prefix's counters in one cache.
pub(crate) struct PrefixCounters {
    /// Fresh L1 hits, counted per thread (see [`PerThread`]).
    l1_hits: PerThread,
    /// The other answers, by [`Answer::index`] (the first is unused).
    answers: [AtomicU64; Answer::ALL.len()],
    /// Finished runs, by [`Outcome::index`].
    loads: [AtomicU64; Outcome::ALL.len()],
    /// Their time, in ns, saturating (at 584 years of load time, which a
    /// busy service can spend in months: then it stays there).
    load_nanos: AtomicU64,
    metrics: PrefixMetrics,
    /// Whether the leader's last L2 read found nothing (see
    /// [`PrefixCounters::found_nothing_lately`]).
    found_nothing: AtomicBool,
}

impl PrefixCounters {
    fn new(metrics: PrefixMetrics) -> Self {
        Self {
            l1_hits: PerThread::default(),
            answers: Default::default(),
            loads: Default::default(),
            load_nanos: AtomicU64::new(0),
            metrics,
            // A new process is as likely to find the cache cold.
            found_nothing: AtomicBool::new(true),
        }
    }

    /// Whether this prefix's last leader's L2 read found nothing to serve:
    /// the next one then takes the lock as it reads (read-or-lock, a miss
    /// in two round trips); one likely to hit is a plain `GET` (a script
    /// costs Redis more).
    pub(crate) fn found_nothing_lately(&self) -> bool {
        self.found_nothing.load(Relaxed)
    }

    /// What a leader's L2 read found (see [`Self::found_nothing_lately`]).
    pub(crate) fn l2_read(&self, found_nothing: bool) {
        if self.found_nothing.load(Relaxed) != found_nothing {
            self.found_nothing.store(found_nothing, Relaxed);
        }
    }

    /// A fresh L1 hit: the fast path's one count, on this thread's own
    /// cache line. With `metrics`, the hits reach the recorder from here
    /// ([`Observer::flush`], every [`FLUSH_EVERY`]): a counter the recorder
    /// shares between threads would cost every hit a contended atomic
    /// (half the throughput of two threads hitting at once, measured).
    #[inline]
    pub(crate) fn l1_hit(&self) {
        let _count = self.l1_hits.bump();
        // And every 1024 hits of a thread, at once: hits keep reaching the
        // recorder where no flushing task runs (no runtime, or its runtime
        // ended and only hits came since).
        #[cfg(feature = "metrics")]
        if _count.is_multiple_of(1024) {
            self.flush();
        }
    }

    /// Counts how a call was answered (see [`Call::answered`] for a call
    /// with a span).
    pub(crate) fn answered(&self, answer: Answer) {
        if answer == Answer::L1 {
            return self.l1_hit();
        }
        Counters::bump(&self.answers[answer.index()]);
        self.metrics.request(answer);
    }

    /// Counts a run of a body that ended after `took`.
    fn loaded(&self, outcome: Outcome, took: Duration) {
        Counters::bump(&self.loads[outcome.index()]);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .load_nanos
            .fetch_update(Relaxed, Relaxed, |sum| Some(sum.saturating_add(nanos)));
        self.metrics.load(outcome, took);
    }

    /// Tells the recorder of the L1 hits since the last time.
    #[cfg(feature = "metrics")]
    fn flush(&self) {
        self.metrics.l1_hits_total(self.l1_hits.sum());
    }

    fn snapshot(&self) -> PrefixStats {
        let answer = |a: Answer| self.answers[a.index()].load(Relaxed);
        // Each read once: a load that ends between two reads of a counter
        // would make the difference below negative.
        let loads_by = Outcome::ALL.map(|o| self.loads[o.index()].load(Relaxed));
        let load = |o: Outcome| loads_by[o.index()];
        let loads: u64 = loads_by.iter().sum();
        PrefixStats {
            l1_hits: self.l1_hits.sum() + answer(Answer::L1Stale),
            l2_hits: answer(Answer::L2) + answer(Answer::L2Stale),
            misses: answer(Answer::Load) + answer(Answer::FailSafe),
            stale_served: answer(Answer::L1Stale) + answer(Answer::L2Stale),
            fail_safe: answer(Answer::FailSafe),
            loads,
            errors: loads - load(Outcome::Ok),
            load_timeouts: load(Outcome::Timeout),
            load_time: Duration::from_nanos(self.load_nanos.load(Relaxed)),
        }
    }
}

/// The most prefixes one cache counts apart. Prefixes are `&'static str`,
/// so a program has a fixed number of them, unless it leaks strings to make
/// them; past this many, the rest are counted together under
/// [`OTHER_PREFIXES`], and metrics keep a bounded number of series.
pub const MAX_PREFIXES: usize = 1000;

/// The name prefixes past [`MAX_PREFIXES`] are counted under.
pub const OTHER_PREFIXES: &str = "(other)";

type ByPrefix = HashMap<&'static str, Arc<PrefixCounters>, foldhash::fast::RandomState>;

/// How often, with `metrics`, the L1 hits counted per thread are told to
/// the recorder (by a task of the cache's, started with its first prefix).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The counters of one cache's prefixes, and how its calls are traced.
pub(crate) struct Observer {
    by_prefix: Arc<RwLock<ByPrefix>>,
    /// Whether the task that flushes L1 hits to the recorder runs: cleared
    /// when it ends (its runtime shut down), so that the next call that is
    /// not an L1 hit starts another.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    flushing: Arc<AtomicBool>,
    namespace: Arc<str>,
    /// Whether spans and warnings name keys (`CacheBuilder::trace_keys`).
    pub(crate) trace_keys: bool,
}

impl Observer {
    pub(crate) fn new(namespace: &str, trace_keys: bool) -> Self {
        Self {
            by_prefix: Arc::default(),
            flushing: Arc::default(),
            namespace: namespace.into(),
            trace_keys,
        }
    }

    /// The counters of `prefix`, made on its first call.
    pub(crate) fn prefix(&self, prefix: &'static str) -> Arc<PrefixCounters> {
        let known = self
            .by_prefix
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Past the bound, a prefix not counted apart is counted under
        // OTHER_PREFIXES (which no valid prefix can be): found under the
        // read lock too, not by taking the write lock on every call.
        let found = known.get(prefix).or_else(|| {
            (known.len() > MAX_PREFIXES)
                .then(|| known.get(OTHER_PREFIXES))
                .flatten()
        });
        if let Some(counters) = found {
            let counters = counters.clone();
            drop(known);
            #[cfg(feature = "metrics")]
            self.start_flushing();
            return counters;
        }
        drop(known);
        let mut known = self
            .by_prefix
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = if known.len() < MAX_PREFIXES || known.contains_key(prefix) {
            prefix
        } else {
            OTHER_PREFIXES
        };
        let counters = known
            .entry(name)
            .or_insert_with(|| {
                Arc::new(PrefixCounters::new(PrefixMetrics::new(
                    &self.namespace,
                    name,
                )))
            })
            .clone();
        drop(known);
        #[cfg(feature = "metrics")]
        self.start_flushing();
        counters
    }

    /// Starts the task that tells the recorder of L1 hits, once, from
    /// within a runtime (a prefix's first call is in one); it ends with
    /// the cache.
    #[cfg(feature = "metrics")]
    fn start_flushing(&self) {
        if self.flushing.load(Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.flushing.swap(true, Relaxed) {
            return;
        }
        /// Clears the flag however the task ends (dropped with its runtime).
        struct Running(Arc<AtomicBool>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.store(false, Relaxed);
            }
        }
        let running = Running(self.flushing.clone());
        let by_prefix = Arc::downgrade(&self.by_prefix);
        runtime.spawn(async move {
            let _running = running;
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(by_prefix) = by_prefix.upgrade() else {
                    return;
                };
                flush(&by_prefix);
            }
        });
    }

    /// Tells the recorder of every prefix's L1 hits now (nothing to tell
    /// without `metrics`).
    pub(crate) fn flush(&self) {
        #[cfg(feature = "metrics")]
        flush(&self.by_prefix);
    }

    /// Each prefix's counts, by name.
    pub(crate) fn prefix_stats(&self) -> BTreeMap<&'static str, PrefixStats> {
        let known = self
            .by_prefix
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known
            .iter()
            .map(|(&prefix, counters)| (prefix, counters.snapshot()))
            .collect()
    }

    /// The sums over every prefix.
    pub(crate) fn totals(&self) -> PrefixStats {
        let mut totals = PrefixStats::default();
        for stats in self.prefix_stats().values() {
            totals.add(stats);
        }
        totals
    }

    /// The span of a call that is not an L1 hit: its prefix, and, once it
    /// is answered, its `outcome` ([`Answer::result`]), `cache.hit` and
    /// `tier`. The key only with `trace_keys`.
    pub(crate) fn call_span(&self, prefix: &'static str, key: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "tiercache.call",
            prefix,
            outcome = tracing::field::Empty,
            cache.hit = tracing::field::Empty,
            tier = tracing::field::Empty,
            cache.key = tracing::field::Empty,
        );
        if self.trace_keys {
            span.record("cache.key", key);
        }
        span
    }

    /// `key` as warnings may show it: only with `trace_keys`.
    pub(crate) fn shown<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.trace_keys.then_some(key)
    }
}

#[cfg(feature = "metrics")]
fn flush(by_prefix: &RwLock<ByPrefix>) {
    let known = by_prefix
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for counters in known.values() {
        counters.flush();
    }
}

impl Drop for Observer {
    /// The last hits, told before the cache goes.
    fn drop(&mut self) {
        self.flush();
    }
}

/// What a call that is not an L1 hit records its answer in: its prefix's
/// counters, its span, and whether (and how) it was answered, shared with
/// the leader that may run for it in the background.
pub(crate) struct Call {
    pub(crate) counters: Arc<PrefixCounters>,
    /// `Span::none()` in a background leader: the caller's span stays with
    /// the caller (see [`Call::in_background`]).
    pub(crate) span: tracing::Span,
    state: State,
}

/// A call's state: its own until a background leader shares it (an
/// allocation only the calls that run a body in the background make).
enum State {
    Own(CallState),
    Shared(Arc<CallState>),
}

impl std::ops::Deref for State {
    type Target = CallState;

    fn deref(&self) -> &CallState {
        match self {
            State::Own(state) => state,
            State::Shared(state) => state,
        }
    }
}

/// A clone of a shared call shares its state; a clone of a call of its
/// own counts apart, from the answer so far ([`Call::in_background`]
/// shares a call's state).
impl Clone for Call {
    fn clone(&self) -> Self {
        let state = match &self.state {
            State::Shared(state) => State::Shared(state.clone()),
            State::Own(own) => State::Own(CallState {
                answer: AtomicU8::new(own.answer.load(Relaxed)),
                cut: AtomicBool::new(own.cut.load(Relaxed)),
            }),
        };
        Self {
            counters: self.counters.clone(),
            span: self.span.clone(),
            state,
        }
    }
}

#[derive(Default)]
struct CallState {
    /// 0 until the call is answered, then its [`Answer::index`] + 1.
    answer: AtomicU8,
    /// The load was cut off by the watchdog of a background load.
    cut: AtomicBool,
}

impl Call {
    pub(crate) fn new(observer: &Observer, prefix: &'static str, key: &str) -> Self {
        Self {
            counters: observer.prefix(prefix),
            span: observer.call_span(prefix, key),
            state: State::Own(CallState::default()),
        }
    }

    /// Counts how the call was answered and records it on its span: once
    /// per call, whoever answers first (the caller, or its leader in the
    /// background).
    pub(crate) fn answered(&self, answer: Answer) {
        #[allow(clippy::cast_possible_truncation)] // 6 answers
        let code = answer.index() as u8 + 1;
        if self
            .state
            .answer
            .compare_exchange(0, code, Relaxed, Relaxed)
            .is_ok()
        {
            self.counters.answered(answer);
            self.record(answer);
        }
    }

    /// Records `answer` on the span only (the call was counted elsewhere).
    pub(crate) fn record(&self, answer: Answer) {
        self.span.record("outcome", answer.result());
        self.span.record("cache.hit", answer.hit());
        self.span.record("tier", answer.tier());
    }

    /// Records on the span how the call was answered, by whoever answered.
    pub(crate) fn record_answer(&self) {
        let code = usize::from(self.state.answer.load(Relaxed));
        if let Some(answer) = code.checked_sub(1).and_then(Answer::from_index) {
            self.record(answer);
        }
    }

    /// The call as the leader that runs for it in the background sees it:
    /// the same answer (counted once), no span. Holding the caller's span,
    /// the task would keep it open (and its parents) after the caller was
    /// answered (a stale or fail-safe value), until the load ends.
    pub(crate) fn in_background(&mut self) -> Self {
        let shared = match &self.state {
            State::Shared(state) => state.clone(),
            State::Own(own) => {
                let state = Arc::new(CallState {
                    answer: AtomicU8::new(own.answer.load(Relaxed)),
                    cut: AtomicBool::new(own.cut.load(Relaxed)),
                });
                self.state = State::Shared(state.clone());
                state
            }
        };
        Self {
            counters: self.counters.clone(),
            span: tracing::Span::none(),
            state: State::Shared(shared),
        }
    }

    /// A call of its own, for a refresh a call started (which answers
    /// nobody), with no span.
    pub(crate) fn detached(&self) -> Self {
        Self {
            counters: self.counters.clone(),
            span: tracing::Span::none(),
            state: State::Own(CallState::default()),
        }
    }

    /// The call's load is cut off (`background_load_timeout`): it counts as
    /// a timeout, not as cancelled.
    pub(crate) fn cut_off(&self) {
        self.state.cut.store(true, Relaxed);
    }
}

/// A run of a body, from its start: counted once it ends, however it ends.
/// Dropped before [`Loading::finish`] (the body panicked, or its caller
/// was cancelled), it counts as [`Outcome::Panic`] or
/// [`Outcome::Cancelled`].
pub(crate) struct Loading {
    counters: Option<Arc<PrefixCounters>>,
    started: Instant,
    span: tracing::Span,
    /// The call's, for a load cut off by a watchdog ([`Call::cut_off`]).
    state: Option<Arc<CallState>>,
}

impl Loading {
    /// Starts timing a run of one of `counters`' prefix's bodies; its span
    /// (`tiercache.load`) is the body's.
    pub(crate) fn start(counters: Arc<PrefixCounters>, prefix: &'static str) -> Self {
        Self {
            counters: Some(counters),
            started: Instant::now(),
            span: tracing::info_span!("tiercache.load", prefix, outcome = tracing::field::Empty),
            state: None,
        }
    }

    /// [`Loading::start`], for `call`'s load.
    pub(crate) fn of(call: &Call, prefix: &'static str) -> Self {
        let mut loading = Self::start(call.counters.clone(), prefix);
        // Only a shared call's load can be cut off by a watchdog.
        if let State::Shared(state) = &call.state {
            loading.state = Some(state.clone());
        }
        loading
    }

    /// The span the body runs in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// How long it has run.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts how it ended.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if let Some(counters) = self.counters.take() {
            counters.loaded(outcome, self.started.elapsed());
            self.span.record("outcome", outcome.label());
        }
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        let cut = self.state.as_ref().is_some_and(|s| s.cut.load(Relaxed));
        let outcome = if std::thread::panicking() {
            Outcome::Panic
        } else if cut {
            Outcome::Timeout
        } else {
            Outcome::Cancelled
        };
        self.record(outcome);
    }
}

/// At most one warning per call site every [`Throttle::EVERY`]; the ones
/// held back are counted in the next (`suppressed`). For what loses
/// freshness and can repeat on every call while it lasts (Redis refusing
/// writes, a lost subscription): a log that says it once in a while says
/// as much, and does not flood.
pub(crate) struct Throttle {
    /// When the next warning may go, in ms since [`Throttle::epoch`].
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    pub(crate) const fn new() -> Self {
        Self {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// `Some(held back since the last)` when a warning may go now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(Self::epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        let every = u64::try_from(Self::EVERY.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(every), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// `tracing::warn!`, at most once per call site every [`Throttle::EVERY`]
/// (with `suppressed`: how many were held back since the last).
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::observe::Throttle = $crate::observe::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_once_and_add_up_as_stats_say() {
        let observer = Observer::new("ns", false);
        let counters = observer.prefix("p");
        for answer in Answer::ALL {
            counters.answered(answer);
        }
        Loading::start(counters.clone(), "p").finish(Outcome::Ok);
        Loading::start(counters.clone(), "p").finish(Outcome::Timeout);
        drop(Loading::start(counters, "p"));
        let stats = observer.prefix_stats()["p"];
        assert_eq!((stats.l1_hits, stats.l2_hits, stats.misses), (2, 2, 2));
        assert_eq!((stats.stale_served, stats.fail_safe), (2, 1));
        assert_eq!((stats.loads, stats.errors, stats.load_timeouts), (3, 2, 1));
        assert_eq!(observer.totals(), stats);
    }

    #[test]
    fn prefixes_past_the_bound_are_counted_together() {
        let observer = Observer::new("ns", false);
        for i in 0..MAX_PREFIXES + 5 {
            let prefix: &'static str = Box::leak(format!("p{i}").into_boxed_str());
            observer.prefix(prefix).answered(Answer::Load);
        }
        let stats = observer.prefix_stats();
        assert_eq!(stats.len(), MAX_PREFIXES + 1);
        assert_eq!(stats[OTHER_PREFIXES].misses, 5);
        // A prefix counted apart stays apart.
        observer.prefix("p0").answered(Answer::Load);
        assert_eq!(observer.prefix_stats()["p0"].misses, 2);
        // Another prefix past the bound is found under the read lock: with
        // a reader holding it, a call that took the write lock would block.
        let reading = observer.by_prefix.read().unwrap();
        let (sent, got) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                observer.prefix("past-the-bound").answered(Answer::Load);
                sent.send(()).unwrap();
            });
            let found = got.recv_timeout(Duration::from_secs(5));
            drop(reading);
            assert!(found.is_ok(), "the write lock was taken");
        });
        assert_eq!(observer.prefix_stats()[OTHER_PREFIXES].misses, 6);
    }

    /// A snapshot reads each load counter once: a load that ends between
    /// two reads could make `errors` negative.
    #[test]
    fn a_snapshot_while_loads_finish_stays_consistent() {
        let observer = Observer::new("ns", false);
        let counters = observer.prefix("p");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Relaxed) {
                    counters.loaded(Outcome::Ok, Duration::ZERO);
                }
            });
            for _ in 0..200_000 {
                let stats = counters.snapshot();
                assert_eq!(stats.errors, 0, "{stats:?}");
            }
            stop.store(true, Relaxed);
        });
    }

    #[test]
    fn a_call_is_counted_once_whoever_answers_it() {
        let observer = Observer::new("ns", false);
        let mut call = Call::new(&observer, "p", "p:1");
        let background = call.in_background();
        background.answered(Answer::L2Stale);
        call.answered(Answer::Load);
        let stats = observer.prefix_stats()["p"];
        assert_eq!((stats.l2_hits, stats.misses, stats.stale_served), (1, 0, 1));
        // A clone of a shared call shares it (a watchdog's cut-off reaches
        // the load's count).
        let watchdog = background.clone();
        watchdog.cut_off();
        assert!(call.state.cut.load(Relaxed));
        // A refresh's call is its own, and counts nothing of the caller's.
        let refresh = call.detached();
        refresh.answered(Answer::Load);
        assert_eq!(observer.prefix_stats()["p"].misses, 1);
    }

    #[test]
    fn a_throttle_lets_one_warning_through_per_period() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed.load(Relaxed), 2);
    }
}
