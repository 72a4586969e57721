//! The leader of a key's flight: L2, the cross-process lock, the body, the
//! writes.
//!
//! 1. **Snapshot** the generations the entry depends on (key stripe,
//!    prefix, tags, namespace) before anything is read: an invalidation
//!    applied here from then on keeps whatever this load finds out of L1.
//! 2. **Read L2** ([`L2Call::read`]). A fresh value is the answer. A value
//!    past its fresh period may be offered at once (`stale`, in the
//!    background only) and is kept as the fail-safe [`Fallback`].
//! 3. **Lock** across processes (unless off): taken, or the holder's value
//!    is awaited and read (back to 2), or the wait ends after `lock_wait`.
//! 4. **Run the body**, bounded by `hard_timeout` (and, in the background,
//!    by `background_load_timeout`); past `timeout` with a fallback at hand
//!    the callers take the fallback while the body goes on.
//! 5. **Land**: a value goes to L1, to the waiters, then to Redis with the
//!    versions read in 2 (conditional on the entry being as it was read);
//!    an error goes to this caller only, or is answered with the fallback.
//!
//! A fallback is served only while nothing invalidated it since it was
//! read, and never past the end of its fail-safe window, counted from the
//! end of its original fresh period (throttled re-serves included).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::body::Body;
use crate::cache::{Cache, Inner};
use crate::codec::{TypeCodec, answer, answer_owned, kept};
use crate::envelope;
use crate::flight::{Landed, Leader, Shared, Source};
use crate::generations::Snapshot;
use crate::l1::{Absent, Entry, Timing};
use crate::l2::{Acquired, WRITE_HORIZON};
use crate::l2call::ReadLock;
use crate::l2call::{Found, L2Call, L2Read, Seen, Write};
use crate::lock::Lease;
use crate::observe::{Answer, Call, Loading, Outcome, PrefixCounters};
use crate::shape::{Kept, Shape, Split};
use crate::spec::{MAX_TTL, Spec, later};
use crate::stats::Counters;

/// One call's unchanging parts.
pub(crate) struct Ctx<S: Shape<R>, R> {
    pub(crate) cache: Cache,
    /// Copied: a programmatic entry's is made at run time.
    pub(crate) spec: Spec,
    pub(crate) codec: TypeCodec<S::Value>,
    pub(crate) key: String,
    pub(crate) tags: Vec<String>,
    /// The function's error for a hard timeout (`hard_timeout`).
    pub(crate) timed_out: Option<fn() -> R>,
    /// Its prefix's counters and its span.
    pub(crate) call: Call,
}

impl<S: Shape<R>, R> Ctx<S, R> {
    pub(crate) fn new(
        cache: Cache,
        spec: Spec,
        codec: TypeCodec<S::Value>,
        key: String,
        tags: Vec<String>,
        timed_out: Option<fn() -> R>,
    ) -> Self {
        let call = Call::new(&cache.inner.observer, spec.prefix, &key);
        Self {
            cache,
            spec,
            codec,
            key,
            tags,
            timed_out,
            call,
        }
    }
}

impl<S: Shape<R>, R> Clone for Ctx<S, R> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            spec: self.spec,
            codec: self.codec,
            key: self.key.clone(),
            tags: self.tags.clone(),
            timed_out: self.timed_out,
            call: self.call.clone(),
        }
    }
}

/// An old value that may still be served when a load fails or is slow.
#[derive(Clone)]
pub(crate) struct Fallback {
    value: Shared,
    /// The end of its fresh period: its fail-safe window counts from here.
    expired_at: Instant,
    /// The same moment as its envelope records it.
    expires_at_ms: u64,
    /// What it depends on, as it was when it was read or loaded: an
    /// invalidation since makes it unservable.
    generations: Snapshot,
}

impl Fallback {
    /// A fallback from an L1 entry past its fresh period, found in L1 after
    /// its key's stripe read `stripe`: its key's stripe (shared with other
    /// keys, whose invalidations leave the entry alone in L1) counts from
    /// then, not from its load.
    pub(crate) fn from_l1(entry: Entry, timing: Timing, stripe: u64) -> Self {
        Self {
            generations: entry.generations().with_key_stripe(stripe),
            value: entry.value,
            expired_at: timing.expired_at,
            expires_at_ms: timing.expires_at_ms,
        }
    }

    fn past(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.expired_at)
    }

    /// When its fail-safe window ends.
    fn window_end(&self, spec: &Spec) -> Instant {
        later(self.expired_at, spec.fail_safe)
    }

    /// Whether it may be served now: not invalidated, within its window.
    fn servable(&self, spec: &Spec) -> bool {
        self.generations.is_current() && self.past(Instant::now()) <= spec.fail_safe
    }
}

/// Why a leader runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// For callers.
    Call,
    /// In the background, to replace a value whose fresh period ends at
    /// the given Unix ms: a value in Redis that outlives it is taken
    /// instead of loading.
    Refresh { expires_at_ms: u64 },
}

/// Leads a flight (or, with no `leader`, loads alone): Redis, the
/// cross-process lock, the body, the writes. A call always answers
/// (`Some`); a refresh answers `None` when it found nothing to do or
/// failed.
///
/// Three phases, each a method of [`Run`] whose result says what comes
/// next: [`Run::consult`] (L2 and the lock: [`Consulted`]),
/// [`Run::load`] (the body and its timers: [`Loaded`]), [`Run::settle`]
/// (land the value, or answer a failure).
pub(crate) async fn lead<S, R, B>(
    ctx: &Ctx<S, R>,
    leader: Option<Leader>,
    body: B,
    mode: Mode,
    fallback: Option<Fallback>,
) -> Option<R>
where
    S: Shape<R>,
    B: Body<S, Output = R>,
{
    let mut run = Run::new(ctx, leader, mode, fallback, body);
    if let Consulted::Answered(answer) = run.consult().await {
        return answer;
    }
    let loaded = run.load().await;
    let landing = match run.landing(loaded) {
        Ok(landing) => landing,
        Err(answer) => return answer,
    };
    run.settle(landing).await
}

/// What a load that returned leaves to store: the value or "nothing" it
/// returned, without the result (see `Run::offered`), and its ttl.
struct Landing<V, R> {
    kept: Kept<V, R>,
    ttl: Duration,
    load_time: Duration,
}

/// What consulting Redis (and the cross-process lock) decided.
enum Consulted<R> {
    /// Done without a load: a fresh value from Redis, a fail-safe value
    /// after waiting for another process, or, for callers that have their
    /// answer already (a refresh, a stale value offered), another process
    /// loads it.
    Answered(Option<R>),
    /// Load: with the lock, past a lock held too long, or without Redis.
    Load,
}

/// How the body ended.
enum Loaded<R> {
    /// It returned, after this long.
    Returned(R, Duration),
    /// It was cut off.
    Cut(Cut),
}

/// Why the body did not finish.
enum Cut {
    /// `hard_timeout`.
    Hard,
    /// `background_load_timeout`, with no caller waiting.
    Background,
}

/// One leader's run: what it knows so far.
struct Run<'a, S: Shape<R>, R, B> {
    ctx: &'a Ctx<S, R>,
    /// The body, until it runs. Owned, not borrowed across an `await`:
    /// the call's future is `Send` whenever the body's is, `Sync` or not.
    body: Option<B>,
    inner: &'a Inner,
    mode: Mode,
    leader: Option<Leader>,
    fallback: Option<Fallback>,
    /// What an L1 entry of this run depends on, taken before anything was
    /// read: an invalidation from then on outdates what it finds.
    generations: Snapshot,
    /// The same, taken even without L1 (where `generations` is empty):
    /// what the flight's later callers and a fail-safe value depend on.
    tracked: Snapshot,
    l2: Option<L2Call<'a>>,
    /// What this call's caller was answered with already (a stale or
    /// fail-safe value offered to the flight). Held as the value, not the
    /// result: nothing of type `R` lives across an `await` here, so the
    /// call's future is `Send` whenever the function's is (whatever its
    /// error type).
    offered: Option<Kept<S::Value, R>>,
    /// What the last L2 read saw, for the lock and the write.
    seen: Option<Seen>,
    lease: Option<Lease>,
    started: Instant,
    /// The body's run, from its start until it is counted.
    loading: Option<Loading>,
}

impl<'a, S: Shape<R>, R, B: Body<S, Output = R>> Run<'a, S, R, B> {
    fn new(
        ctx: &'a Ctx<S, R>,
        leader: Option<Leader>,
        mode: Mode,
        fallback: Option<Fallback>,
        body: B,
    ) -> Self {
        let inner = &*ctx.cache.inner;
        let (spec, key, tags) = (&ctx.spec, &ctx.key, &ctx.tags);
        let (generations, tracked) = inner.snapshots(spec.prefix, tags, key);
        if let Some(leader) = &leader {
            leader.depends_on(&tracked);
        }
        Self {
            ctx,
            body: Some(body),
            inner,
            mode,
            leader,
            fallback,
            generations,
            tracked,
            l2: L2Call::new(inner, spec, key, tags),
            offered: None,
            seen: None,
            lease: None,
            started: Instant::now(),
            loading: None,
        }
    }

    /// Whether the caller has its answer (a refresh has no caller).
    fn answered(&self) -> bool {
        self.mode != Mode::Call || self.offered.is_some()
    }

    /// Keeps a value this run found or loaded in L1, with the versions
    /// taken before anything was read (an invalidation since keeps it out).
    /// `size`: its serialized size, if known (read from Redis).
    fn keep_in_l1(
        &self,
        value: Shared,
        expires_at_ms: u64,
        load_time: Duration,
        size: Option<usize>,
    ) {
        let generations = self.generations.clone();
        let counters = &self.ctx.call.counters;
        let entry = l1_entry(
            &self.ctx.spec,
            counters,
            value,
            (expires_at_ms, load_time),
            generations,
        );
        if let Some(entry) = entry {
            let (spec, measure) = (&self.ctx.spec, self.ctx.codec.measure);
            let entry = self.inner.weighed(entry, spec, measure, size);
            self.inner.keep_in_l1(&self.ctx.key, entry);
        }
    }

    /// The answer the caller was offered already, if any.
    fn take_offered(&mut self) -> Option<R> {
        self.offered.take().map(Kept::rejoin::<S>)
    }

    /// Counts how a call was answered, unless it was answered before.
    fn count(&self, answer: Answer) {
        if !self.answered() {
            self.ctx.call.answered(answer);
        }
    }

    /// Counts how the body's run ended.
    fn loaded(&mut self, outcome: Outcome) {
        if let Some(loading) = self.loading.take() {
            loading.finish(outcome);
        }
    }

    /// Phase 1: read Redis; on a miss take the lock, or wait for its
    /// holder's value (and read again), or give up waiting.
    async fn consult(&mut self) -> Consulted<R> {
        let (ctx, inner, spec) = (self.ctx, self.inner, &self.ctx.spec);
        let Some(l2) = self.l2.take() else {
            return Consulted::Load;
        };
        // A relief loads at once: the lock is held by the leader it stands
        // in for, or by another process as slow.
        let lock = spec.lock.unwrap_or(inner.settings.lock)
            && !self.leader.as_ref().is_some_and(Leader::is_relief);
        // The first read takes the lock too when this function's reads
        // missed lately (a miss is then two round trips, not three), unless
        // every turn on the connection is taken: in a burst, the lock is
        // not prepared for calls that would only wait for their turn.
        let counters = &ctx.call.counters;
        let mut combine =
            lock && counters.found_nothing_lately() && !l2.l2.busy() && !l2.l2.breaker.is_open();
        // Made on the first miss only (or before a combined read): a hit
        // needs none of them.
        let mut watch = None;
        let mut lock_id: Option<(String, String)> = None;
        let give_up_at = later(self.started, inner.settings.lock_wait);
        let mut waited = false;
        // Past `timeout` with no fail-safe value to serve (it was
        // invalidated, or its window ended): wait for the lock alone.
        let mut soft_spent = false;
        let consulted = loop {
            let combined = std::mem::take(&mut combine);
            if !combined {
                if let Some(done) = self.take_read(l2.read(ctx.codec).await) {
                    break done;
                }
                if !lock {
                    break Consulted::Load;
                }
            }
            // Listening before the lock is tried: a landing in between is
            // not missed.
            let watch = watch.get_or_insert_with(|| inner.landings.watch(&ctx.key));
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (lock_key, token) =
                lock_id.get_or_insert_with(|| (inner.names.lock(&ctx.key), crate::lock::token()));
            let lease_time = inner.settings.lock_lease;
            // Released unless known not to be ours: see `Lease`.
            // One connection for the attempt and, should its outcome be
            // lost, its release (see `L2::release`).
            let conn = l2.l2.conn();
            let new_attempt = || {
                let id = (lock_key.clone(), token.clone(), ctx.key.clone());
                Lease::attempt(&ctx.cache, id, conn.clone())
            };
            let mut attempt = Some(new_attempt());
            let mut acquired = None;
            if combined {
                let request = crate::l2::Acquire {
                    lock_key,
                    token,
                    lease: lease_time,
                    conn: &conn,
                };
                let (read, lock) = l2.read_or_acquire(ctx.codec, request).await;
                if matches!(lock, ReadLock::NotTried)
                    && let Some(untried) = attempt.take()
                {
                    untried.not_taken(); // the entry was there, or nothing was sent
                }
                if let Some(done) = self.take_read(read) {
                    break done; // an attempt left, dropped, releases a lock taken
                }
                // Unknown: the attempt stays armed for the acquire below
                // (which finds the lock ours if the script took it).
                match lock {
                    ReadLock::Tried(lock) => acquired = Some(Ok(lock)),
                    ReadLock::Refused => counters.l2_read(false),
                    ReadLock::NotTried | ReadLock::Unknown => {}
                }
            }
            let attempt = attempt.unwrap_or_else(new_attempt);
            let acquired = match acquired {
                Some(acquired) => acquired,
                // Not tried: the entry was there, and no use.
                None => {
                    let seen_entry = self.seen.as_ref().map_or_else(String::new, Seen::digest);
                    l2.l2
                        .acquire(
                            lock_key,
                            token,
                            lease_time,
                            &l2.entry_key,
                            &seen_entry,
                            &conn,
                        )
                        .await
                }
            };
            let left = match acquired {
                Ok(Acquired::Taken) => {
                    self.lease = Some(attempt.taken(lease_time));
                    break Consulted::Load;
                }
                // Redis failing: load without the lock (the attempt, dropped,
                // releases it should the acquire have run after all).
                Err(_) => break Consulted::Load,
                Ok(other) => {
                    attempt.not_taken();
                    match other {
                        Acquired::Held(left) => left,
                        // Written since it was read: read it again (unless
                        // that has gone on for as long as a caller waits).
                        _ if Instant::now() >= give_up_at => break Consulted::Load,
                        _ => continue,
                    }
                }
            };
            if !waited {
                waited = true;
                Counters::bump(&inner.counters.lock_waits);
            }
            let now = Instant::now();
            let soft_at = self
                .fallback
                .as_ref()
                .and(spec.soft_timeout)
                .filter(|_| !self.answered() && !soft_spent)
                .map(|soft| later(self.started, soft));
            if now >= give_up_at || soft_at.is_some_and(|at| now >= at) {
                if self.answered() {
                    // Another process refreshes it.
                    break Consulted::Answered(self.take_offered());
                }
                let fallback = self.fallback.as_ref();
                if let Some(answer) = serve_fallback(ctx, &mut self.leader, fallback) {
                    break Consulted::Answered(Some(answer));
                }
                if now >= give_up_at {
                    Counters::bump(&inner.counters.lock_timeouts);
                    break Consulted::Load; // without the lock
                }
                soft_spent = true;
            }
            // The holder's lease may run out unrenewed: try again then.
            let wake = later(now, left + Duration::from_millis(1)).min(give_up_at);
            let soft_at = soft_at.filter(|_| !soft_spent);
            let wake = soft_at.map_or(wake, |at| wake.min(at));
            tokio::select! {
                () = until(Some(wake)) => {}
                () = notified => {}
            }
        };
        self.l2 = Some(l2);
        consulted
    }

    /// What a read found: the end of the consultation (an answer, or a
    /// load without the lock when Redis did not answer), or `None` to go
    /// on to the lock with what was seen.
    fn take_read(&mut self, read: L2Read<S::Value>) -> Option<Consulted<R>> {
        let counters = &self.ctx.call.counters;
        match read {
            // A cached "nothing" for a function that cannot return one
            // (another function's entry, or an older deployment's): a
            // miss, overwritten by this load.
            L2Read::Found(found) if found.value.is_none() && S::absent().is_none() => {
                counters.l2_read(false);
                self.seen = Some(found.seen);
            }
            L2Read::Found(found) => {
                counters.l2_read(false);
                if let Some(answer) = self.found(found) {
                    return Some(Consulted::Answered(answer));
                }
            }
            L2Read::Miss(missed) => {
                counters.l2_read(missed.found_nothing());
                self.seen = Some(missed);
            }
            L2Read::Unavailable => return Some(Consulted::Load),
        }
        None
    }

    /// A valid entry read from Redis: the answer if it is fresh (and, for
    /// a refresh, newer than the value it replaces); otherwise offered
    /// (`stale`) and kept as the fail-safe value, and the load goes on.
    fn found(&mut self, found: Found<S::Value>) -> Option<Option<R>> {
        let (ctx, inner, spec) = (self.ctx, self.inner, &self.ctx.spec);
        let now = SystemTime::now();
        let past = found.meta.past_expiry(now);
        let remaining = found.meta.remaining(now);
        let newer = match self.mode {
            Mode::Call => true,
            Mode::Refresh { expires_at_ms } => found.meta.expires_at_ms > expires_at_ms,
        };
        let size = Some(found.size);
        let shared = match found.value {
            Some(value) => (ctx.codec.own)(value),
            None => Arc::new(Absent),
        };
        let (expires_at_ms, load_time) = (found.meta.expires_at_ms, found.meta.load_time());
        if let Some(fresh_for) = remaining.filter(|_| newer) {
            self.keep_in_l1(shared.clone(), expires_at_ms, load_time, size);
            if let Some(leader) = self.leader.take() {
                let until = later(Instant::now(), fresh_for.min(spec.ttl));
                leader.land(Landed::Value(shared.clone(), Source::L2), until);
            }
            self.count(Answer::L2);
            let scale = load_time.mul_f64(spec.refresh_beta);
            if self.mode == Mode::Call
                && crate::spec::xfetch(fresh_for, scale)
                && self
                    .body
                    .as_ref()
                    .is_some_and(|body| body.refresh(ctx, expires_at_ms))
            {
                Counters::bump(&inner.counters.early_refreshes);
            }
            return Some(match self.take_offered() {
                Some(offered) => Some(offered),
                None => answer_owned::<S, R>(ctx.codec, shared),
            });
        }
        let stale = remaining.is_none() && past <= spec.stale;
        if stale
            && B::DETACHED
            && !self.answered()
            && let Some(leader) = &self.leader
            && let Some(answer) = kept::<S, R>(ctx.codec, &shared)
        {
            // Stale-while-revalidate: the callers take it now, this
            // (background) leader goes on to refresh it.
            self.keep_in_l1(shared.clone(), expires_at_ms, load_time, size);
            let until = later(Instant::now(), spec.stale.saturating_sub(past));
            leader.offer(Landed::Value(shared.clone(), Source::Stale), until);
            ctx.call.answered(Answer::L2Stale);
            self.offered = Some(answer);
        }
        if let Some(expired_at) = Instant::now().checked_sub(past)
            && past <= spec.fail_safe
            && self
                .fallback
                .as_ref()
                .is_none_or(|held| held.expired_at < expired_at)
        {
            self.fallback = Some(Fallback {
                value: shared,
                expired_at,
                expires_at_ms,
                generations: self.tracked.clone(),
            });
        }
        self.seen = Some(found.seen);
        None
    }

    /// Phase 2: run the body, bounded by `hard_timeout` (and, once no
    /// caller waits, by `background_load_timeout`); past `timeout`, with a
    /// fail-safe value at hand, the callers take that while it goes on.
    async fn load(&mut self) -> Loaded<R> {
        let (ctx, inner, spec) = (self.ctx, self.inner, &self.ctx.spec);
        let Some(body) = self.body.take() else {
            unreachable!("a run loads once")
        };
        let loading = Loading::of(&ctx.call, spec.prefix);
        // Made in the load's span too: a body that captures the current
        // span when it is made (a background body does) runs in it.
        let run = loading.span().in_scope(|| body.start());
        let run = tracing::Instrument::instrument(run, loading.span().clone());
        let started = Instant::now();
        self.loading = Some(loading);
        tokio::pin!(run);
        let mut soft_at = match (&self.fallback, spec.soft_timeout, &self.leader) {
            (Some(_), Some(soft), Some(_)) if !self.answered() => Some(later(started, soft)),
            _ => None,
        };
        let hard_at = spec
            .hard_timeout
            .filter(|_| ctx.timed_out.is_some())
            .map(|hard| later(started, hard));
        let background_at = B::DETACHED.then(|| later(started, inner.settings.background_timeout));
        loop {
            let unanswered = !self.answered();
            tokio::select! {
                result = &mut run => break Loaded::Returned(result, started.elapsed()),
                () = until(soft_at), if soft_at.is_some() => {
                    soft_at = None;
                    self.offer_fallback();
                }
                () = until(hard_at), if hard_at.is_some() => break Loaded::Cut(Cut::Hard),
                // Nobody waits for it: it may not hold the flight forever.
                () = until(background_at), if background_at.is_some() && !unanswered => {
                    break Loaded::Cut(Cut::Background);
                }
            }
        }
    }

    /// Slower than `timeout`: the callers take the fail-safe value, the
    /// load goes on.
    fn offer_fallback(&mut self) {
        let (ctx, spec) = (self.ctx, &self.ctx.spec);
        if let (Some(leader), Some(fallback)) = (&self.leader, &self.fallback)
            && fallback.servable(spec)
            && let Some(answer) = kept::<S, R>(ctx.codec, &fallback.value)
        {
            let until = fallback.window_end(spec);
            leader.offer(
                Landed::Value(fallback.value.clone(), Source::FailSafe),
                until,
            );
            ctx.call.answered(Answer::FailSafe);
            self.offered = Some(answer);
        }
    }

    /// How the load ended, answered at once unless there is something to
    /// store: a failure is answered with what the caller was offered, the
    /// fail-safe value, or the function's own error; a "nothing" not
    /// cached goes to the waiters only.
    fn landing(&mut self, loaded: Loaded<R>) -> Result<Landing<S::Value, R>, Option<R>> {
        let (ctx, inner, spec) = (self.ctx, self.inner, &self.ctx.spec);
        let (result, load_time) = match loaded {
            Loaded::Returned(result, load_time) => (result, load_time),
            Loaded::Cut(cut) => {
                self.loaded(Outcome::Timeout);
                return Err(self.failed(|| match (cut, ctx.timed_out) {
                    (Cut::Hard, Some(timed_out)) => timed_out(),
                    _ => unreachable!("only a hard timeout cuts off a load a caller waits for"),
                }));
            }
        };
        let split = S::split(result);
        self.loaded(match split {
            Split::Kept(_) => Outcome::Ok,
            Split::Failed(_) => Outcome::Err,
        });
        let (kept, ttl) = match split {
            Split::Kept(kept @ Kept::Value(_)) => {
                let own = kept.value().and_then(ctx.codec.fresh_for);
                let ttl = own.map_or(spec.ttl, |own| {
                    own.min(spec.ttl).max(Duration::from_millis(1))
                });
                (kept, inner.settings.jittered(ttl))
            }
            Split::Kept(Kept::Absent(absent)) => match spec.cache_none {
                Some(ttl) => (Kept::Absent(absent), ttl),
                None => {
                    // "Nothing", not cached: shared with the waiters only.
                    if let Some(leader) = self.leader.take() {
                        leader.land(Landed::Absent, Instant::now());
                    }
                    self.count(Answer::Load);
                    return Err(Some(absent()));
                }
            },
            Split::Failed(result) => return Err(self.failed(|| result)),
        };
        Ok(Landing {
            kept,
            ttl,
            load_time,
        })
    }

    /// Phase 3: a value goes to L1, to the waiters, then to Redis with the
    /// versions read before the load.
    async fn settle(mut self, landing: Landing<S::Value, R>) -> Option<R> {
        let ctx = self.ctx;
        let Landing {
            kept,
            ttl,
            load_time,
        } = landing;
        let value = kept.value();
        let shared: Shared = match value {
            Some(value) => (ctx.codec.share)(value),
            None => Arc::new(Absent),
        };
        let expires_at_ms = expiry(ttl);
        self.keep_in_l1(shared.clone(), expires_at_ms, load_time, None);
        if let Some(leader) = self.leader.take() {
            let until = later(Instant::now(), ttl);
            leader.land(Landed::Value(shared, Source::Load), until);
        }
        self.count(Answer::Load);
        // Without the versions read before the load, a write could outlive
        // an invalidation it raced with: skip it. So too for a load that
        // read so long ago that a tombstone it should meet may be gone.
        if let (Some(l2), Some(seen)) = (&self.l2, self.seen.take())
            && seen.at.elapsed() <= WRITE_HORIZON
        {
            let write = Write::IfUnchanged(seen, self.lease.as_mut());
            let _ = l2
                .write(ctx.codec, value, load_time, (ttl, expires_at_ms), write)
                .await;
        }
        Some(kept.rejoin::<S>())
    }

    /// The load failed (`error` makes what this caller gets if nothing
    /// else is at hand): the lock goes back at once; a caller answered
    /// already keeps its answer (and the key backs off), another gets the
    /// fail-safe value if there is one.
    fn failed(&mut self, error: impl FnOnce() -> R) -> Option<R> {
        let ctx = self.ctx;
        drop(self.lease.take());
        if self.answered() {
            throttle(ctx, self.fallback.as_ref());
            return self.take_offered();
        }
        if let Some(answer) = serve_fallback(ctx, &mut self.leader, self.fallback.as_ref()) {
            crate::observe::warn_throttled!(
                prefix = ctx.spec.prefix,
                key = ctx.cache.inner.observer.shown(&ctx.key),
                "the load failed; serving the fail-safe value"
            );
            return Some(answer);
        }
        ctx.call.answered(Answer::Load);
        Some(error())
    }
}

/// Answers with a fail-safe value, if there is one that nothing
/// invalidated and whose window has not ended, and keeps serving it from
/// L1 for the throttle period (no load is tried meanwhile), never past
/// that window.
pub(crate) fn serve_fallback<S: Shape<R>, R>(
    ctx: &Ctx<S, R>,
    leader: &mut Option<Leader>,
    fallback: Option<&Fallback>,
) -> Option<R> {
    let fallback = fallback.filter(|fallback| fallback.servable(&ctx.spec))?;
    let answer = answer::<S, R>(ctx.codec, &fallback.value)?;
    ctx.call.answered(Answer::FailSafe);
    keep_serving(ctx, fallback);
    if let Some(leader) = leader.take() {
        let until = fallback.window_end(&ctx.spec);
        leader.land(
            Landed::Value(fallback.value.clone(), Source::FailSafe),
            until,
        );
    }
    Some(answer)
}

/// A load whose callers were answered already (a stale or fail-safe value
/// offered) failed: no other background load of the key for the throttle
/// period, and the fail-safe value, if any, goes on being served from L1
/// meanwhile (within its window).
fn throttle<S: Shape<R>, R>(ctx: &Ctx<S, R>, fallback: Option<&Fallback>) {
    let inner = &*ctx.cache.inner;
    inner
        .flights
        .back_off(&ctx.key, inner.settings.fail_safe_throttle);
    if let Some(fallback) = fallback.filter(|fallback| fallback.servable(&ctx.spec)) {
        keep_serving(ctx, fallback);
    }
}

/// Serves a fail-safe value from L1 for the throttle period (no load is
/// tried meanwhile), never past its window, unless it was invalidated, or
/// L1 has a fresh value by now (another load's, newer).
fn keep_serving<S: Shape<R>, R>(ctx: &Ctx<S, R>, fallback: &Fallback) {
    let inner = &*ctx.cache.inner;
    let entry = timed_entry(
        &ctx.spec,
        &ctx.call.counters,
        fallback.value.clone(),
        (fallback.expired_at, fallback.expires_at_ms),
        Some(inner.settings.fail_safe_throttle),
        Duration::ZERO,
        fallback.generations.clone(),
    );
    if let Some(entry) = entry {
        let entry = inner.weighed(entry, &ctx.spec, ctx.codec.measure, None);
        inner.keep_in_l1_unless_filled(&ctx.key, entry);
    }
}

/// An L1 entry for a value whose fresh period ends at `expires_at_ms` (Unix
/// ms, as its envelope records it), kept through the function's stale and
/// fail-safe windows counted from then, never longer: `None` when that is
/// over already. Never fresher than a whole TTL from now (a year, for a
/// spec without one), whatever the envelope claims.
pub(crate) fn l1_entry(
    spec: &Spec,
    counters: &Arc<PrefixCounters>,
    value: Shared,
    (expires_at_ms, load_time): (u64, Duration),
    generations: Snapshot,
) -> Option<Entry> {
    let (now, now_ms) = (Instant::now(), envelope::unix_ms(SystemTime::now()));
    // A spec without a TTL of its own (an entry named only to be read):
    // as long as the writer said, within the longest TTL there is.
    let cap = if spec.ttl.is_zero() {
        MAX_TTL
    } else {
        spec.ttl
    };
    let ttl_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    let capped_ms = expires_at_ms.min(now_ms.saturating_add(ttl_ms));
    let expired_at = if capped_ms >= now_ms {
        later(now, Duration::from_millis(capped_ms - now_ms))
    } else {
        now.checked_sub(Duration::from_millis(now_ms - capped_ms))?
    };
    let at = (expired_at, expires_at_ms);
    timed_entry(spec, counters, value, at, None, load_time, generations)
}

/// As [`l1_entry`], for a value whose fresh period ends at `expired_at`
/// (`expires_at_ms` on the wall clock). With a `throttle`, it is served
/// without a load until then, within its fail-safe window.
fn timed_entry(
    spec: &Spec,
    counters: &Arc<PrefixCounters>,
    value: Shared,
    (expired_at, expires_at_ms): (Instant, u64),
    throttle: Option<Duration>,
    load_time: Duration,
    generations: Snapshot,
) -> Option<Entry> {
    let now = Instant::now();
    let ttl = later(expired_at, spec.keep()).saturating_duration_since(now);
    if ttl.is_zero() {
        return None;
    }
    let entry = Entry::shared(value, ttl, generations, counters.clone());
    if !spec.timed() {
        return Some(entry);
    }
    let fresh_until = match throttle {
        None => expired_at,
        Some(throttle) => later(now, throttle).min(later(expired_at, spec.fail_safe)),
    };
    Some(entry.timed(Some(Timing {
        fresh_until,
        expired_at,
        expires_at_ms,
        xfetch_scale: load_time.mul_f64(spec.refresh_beta),
    })))
}

/// The end of a fresh period starting now, as envelopes record it.
pub(crate) fn expiry(fresh_for: Duration) -> u64 {
    let millis = u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX);
    envelope::unix_ms(SystemTime::now()).saturating_add(millis)
}

/// Sleeps until `at`, or forever.
pub(crate) async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
