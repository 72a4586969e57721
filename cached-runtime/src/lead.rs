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
use crate::codec::{Codec, answer, answer_owned};
use crate::envelope;
use crate::flight::{Landed, Leader, Shared, Source};
use crate::generations::Snapshot;
use crate::l1::{Absent, Entry, Timing};
use crate::l2::{Acquired, WRITE_HORIZON};
use crate::l2call::{L2Call, L2Read, Seen, Write};
use crate::lock::Lease;
use crate::shape::{Outcome, Shape};
use crate::spec::{Spec, later};
use crate::stats::Counters;

/// One call's unchanging parts.
pub(crate) struct Ctx<S: Shape<R>, R> {
    pub(crate) cache: Cache,
    pub(crate) spec: &'static Spec,
    pub(crate) codec: Codec<S::Value>,
    pub(crate) key: String,
    pub(crate) tags: Vec<String>,
    /// The function's error for a hard timeout (`hard_timeout`).
    pub(crate) timed_out: Option<fn() -> R>,
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
    /// A fallback from an L1 entry past its fresh period.
    pub(crate) fn from_l1(entry: Entry, timing: Timing) -> Self {
        Self {
            generations: entry.generations().clone(),
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

/// Why the body did not finish.
enum Cut {
    /// `hard_timeout`.
    Hard,
    /// `background_load_timeout`, with no caller waiting.
    Background,
}

/// Leads a flight (or, with no `leader`, loads alone): Redis, the
/// cross-process lock, the body, the writes. A call always answers
/// (`Some`); a refresh answers `None` when it found nothing to do or
/// failed.
pub(crate) async fn lead<S, R, B>(
    ctx: &Ctx<S, R>,
    mut leader: Option<Leader>,
    body: B,
    mode: Mode,
    mut fallback: Option<Fallback>,
) -> Option<R>
where
    S: Shape<R>,
    B: Body<S, R>,
{
    let inner = &*ctx.cache.inner;
    let spec = ctx.spec;
    let started = Instant::now();
    // Before anything is read: an invalidation from now on outdates it, in
    // L1 and for callers who would join the flight after it.
    let generations = inner.snapshot(spec.prefix, &ctx.tags, &ctx.key);
    // The same, taken even without L1 (where `generations` is empty): what
    // the flight's later callers and a fail-safe value depend on.
    let tracked = if inner.l1.enabled() {
        generations.clone()
    } else {
        inner.generations.snapshot(spec.prefix, &ctx.tags, &ctx.key)
    };
    if let Some(leader) = &leader {
        leader.depends_on(&tracked);
    }
    let l2 = L2Call::new(inner, spec, &ctx.key, &ctx.tags);
    // What this call's caller was answered with already (a stale or
    // fail-safe value offered to the flight). A refresh has no caller.
    let mut offered: Option<R> = None;
    let answered = |offered: &Option<R>| mode != Mode::Call || offered.is_some();
    let mut seen: Option<Seen> = None;
    let mut lease = None;
    if let Some(l2) = &l2 {
        // A relief loads at once: the lock is held by the leader it
        // stands in for, or by another process as slow.
        let lock = spec.lock.unwrap_or(inner.settings.lock)
            && !leader.as_ref().is_some_and(Leader::is_relief);
        // Made on the first miss only: a hit needs none of them.
        let mut watch = None;
        let mut lock_id: Option<(String, String)> = None;
        let give_up_at = later(started, inner.settings.lock_wait);
        let mut waited = false;
        loop {
            match l2.read(ctx.codec).await {
                // A cached "nothing" for a function that cannot return one
                // (another function's entry, or an older deployment's): a
                // miss, overwritten by this load.
                L2Read::Found(found) if found.value.is_none() && S::absent().is_none() => {
                    seen = Some(found.seen);
                }
                L2Read::Found(found) => {
                    let now = SystemTime::now();
                    let past = found.meta.past_expiry(now);
                    let newer = match mode {
                        Mode::Call => true,
                        Mode::Refresh { expires_at_ms } => found.meta.expires_at_ms > expires_at_ms,
                    };
                    let fresh = found.meta.remaining(now).is_some();
                    let shared = match found.value {
                        Some(value) => (ctx.codec.own)(value),
                        None => Arc::new(Absent),
                    };
                    let expires_at_ms = found.meta.expires_at_ms;
                    let load_time = found.meta.load_time();
                    if fresh && newer {
                        let entry =
                            l1_entry(spec, shared.clone(), expires_at_ms, load_time, generations);
                        if let Some(entry) = entry {
                            inner.keep_in_l1(&ctx.key, entry);
                        }
                        let fresh_for = found.meta.remaining(now).unwrap_or_default();
                        if let Some(leader) = leader {
                            let until = later(Instant::now(), fresh_for.min(spec.ttl));
                            leader.land(Landed::Value(shared.clone(), Source::L2), until);
                        }
                        if !answered(&offered) {
                            count_answer(inner, Source::L2);
                        }
                        let scale = load_time.mul_f64(spec.refresh_beta);
                        if mode == Mode::Call
                            && crate::spec::xfetch(fresh_for, scale)
                            && body.refresh(ctx, expires_at_ms)
                        {
                            Counters::bump(&inner.counters.early_refreshes);
                        }
                        return match offered {
                            Some(offered) => Some(offered),
                            None => answer_owned::<S, R>(ctx.codec, shared),
                        };
                    }
                    let stale = !fresh && past <= spec.stale;
                    if stale
                        && B::DETACHED
                        && !answered(&offered)
                        && let Some(leader) = &leader
                        && let Some(answer) = answer::<S, R>(ctx.codec, &shared)
                    {
                        // Stale-while-revalidate: the callers take it now,
                        // this (background) leader goes on to refresh it.
                        let (value, at) = (shared.clone(), expires_at_ms);
                        let entry = l1_entry(spec, value, at, load_time, generations.clone());
                        if let Some(entry) = entry {
                            inner.keep_in_l1(&ctx.key, entry);
                        }
                        let until = later(Instant::now(), spec.stale.saturating_sub(past));
                        leader.offer(Landed::Value(shared.clone(), Source::L2), until);
                        offered = Some(answer);
                        count_answer(inner, Source::L2);
                        Counters::bump(&inner.counters.stale_served);
                    }
                    let expired_at = Instant::now().checked_sub(past);
                    if let Some(expired_at) = expired_at
                        && past <= spec.fail_safe
                        && fallback
                            .as_ref()
                            .is_none_or(|held| held.expired_at < expired_at)
                    {
                        fallback = Some(Fallback {
                            value: shared,
                            expired_at,
                            expires_at_ms,
                            generations: tracked.clone(),
                        });
                    }
                    seen = Some(found.seen);
                }
                L2Read::Miss(missed) => seen = Some(missed),
                L2Read::Unavailable => break,
            }
            if !lock {
                break;
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
            let seen_entry = seen.as_ref().map_or_else(String::new, Seen::digest);
            match l2
                .l2
                .acquire(lock_key, token, lease_time, &l2.entry_key, &seen_entry)
                .await
            {
                Ok(Acquired::Taken) => {
                    let (key, (lock_key, token)) =
                        (ctx.key.clone(), lock_id.take().unwrap_or_default());
                    lease = Some(Lease::start(&ctx.cache, lock_key, token, key, lease_time));
                    break;
                }
                Ok(Acquired::Landed) => {
                    // Written since it was read: read it again (unless that
                    // has gone on for as long as a caller waits).
                    if Instant::now() >= give_up_at {
                        break;
                    }
                }
                Ok(Acquired::Held(left)) => {
                    if !waited {
                        waited = true;
                        Counters::bump(&inner.counters.lock_waits);
                    }
                    let now = Instant::now();
                    let soft_at = fallback
                        .as_ref()
                        .and(spec.soft_timeout)
                        .filter(|_| !answered(&offered))
                        .map(|soft| later(started, soft));
                    if now >= give_up_at || soft_at.is_some_and(|at| now >= at) {
                        if answered(&offered) {
                            return offered; // another process refreshes it
                        }
                        if let Some(answer) = serve_fallback(ctx, &mut leader, fallback.as_ref()) {
                            return Some(answer);
                        }
                        if now >= give_up_at {
                            Counters::bump(&inner.counters.lock_timeouts);
                            break; // load without the lock
                        }
                    }
                    // The holder's lease may run out unrenewed: try again then.
                    let wake = later(now, left + Duration::from_millis(1)).min(give_up_at);
                    let wake = soft_at.map_or(wake, |at| wake.min(at));
                    tokio::select! {
                        () = until(Some(wake)) => {}
                        () = notified => {}
                    }
                }
                Err(_) => break, // Redis failing: load without the lock
            }
        }
    }

    Counters::bump(&inner.counters.loads);
    let started = Instant::now();
    let run = body.start();
    tokio::pin!(run);
    let mut soft_at = match (&fallback, spec.soft_timeout, &leader) {
        (Some(_), Some(soft), Some(_)) if !answered(&offered) => Some(later(started, soft)),
        _ => None,
    };
    let hard = spec.hard_timeout.zip(ctx.timed_out);
    let hard_at = hard.map(|(hard, _)| later(started, hard));
    let background_at = B::DETACHED.then(|| later(started, inner.settings.background_timeout));
    let ran = loop {
        tokio::select! {
            result = &mut run => break Ok(result),
            () = until(soft_at), if soft_at.is_some() => {
                // Slow: the callers take the fail-safe value, the load goes on.
                soft_at = None;
                if let (Some(leader), Some(fallback)) = (&leader, &fallback)
                    && fallback.servable(spec)
                    && let Some(answer) = answer::<S, R>(ctx.codec, &fallback.value)
                {
                    let until = fallback.window_end(spec);
                    leader.offer(Landed::Value(fallback.value.clone(), Source::FailSafe), until);
                    offered = Some(answer);
                    Counters::bump(&inner.counters.fail_safe);
                    Counters::bump(&inner.counters.misses);
                }
            }
            () = until(hard_at), if hard_at.is_some() => break Err(Cut::Hard),
            // Nobody waits for it: it may not hold the flight forever.
            () = until(background_at), if background_at.is_some() && answered(&offered) => {
                break Err(Cut::Background);
            }
        }
    };
    let load_time = started.elapsed();
    let result = match ran {
        Ok(result) => result,
        Err(cut) => {
            Counters::bump(&inner.counters.load_timeouts);
            Counters::bump(&inner.counters.errors);
            drop(lease);
            if answered(&offered) {
                throttle(ctx, fallback.as_ref());
                return offered;
            }
            if let Some(answer) = serve_fallback(ctx, &mut leader, fallback.as_ref()) {
                return Some(answer);
            }
            return match (cut, hard) {
                (Cut::Hard, Some((_, timed_out))) => Some(timed_out()),
                _ => unreachable!("only a hard timeout cuts off a load a caller waits for"),
            };
        }
    };
    let stored = match S::outcome(&result) {
        Outcome::Value(value) => Some((Some(value), inner.settings.jittered(spec.ttl))),
        Outcome::Absent => spec.cache_none.map(|ttl| (None, ttl)),
        Outcome::Failed => {
            Counters::bump(&inner.counters.errors);
            drop(lease);
            if answered(&offered) {
                throttle(ctx, fallback.as_ref());
                return offered;
            }
            if let Some(answer) = serve_fallback(ctx, &mut leader, fallback.as_ref()) {
                tracing::warn!(
                    key = ctx.key,
                    "the load failed; serving the fail-safe value"
                );
                return Some(answer);
            }
            Counters::bump(&inner.counters.misses);
            return Some(result);
        }
    };
    let Some((value, ttl)) = stored else {
        // "Nothing", not cached: shared with the waiters only.
        if let Some(leader) = leader {
            leader.land(Landed::Absent, Instant::now());
        }
        if !answered(&offered) {
            Counters::bump(&inner.counters.misses);
        }
        return Some(result);
    };
    let shared: Shared = match value {
        Some(value) => (ctx.codec.share)(value),
        None => Arc::new(Absent),
    };
    let expires_at_ms = expiry(ttl);
    if let Some(entry) = l1_entry(spec, shared.clone(), expires_at_ms, load_time, generations) {
        inner.keep_in_l1(&ctx.key, entry);
    }
    if let Some(leader) = leader {
        leader.land(
            Landed::Value(shared, Source::Load),
            later(Instant::now(), ttl),
        );
    }
    if !answered(&offered) {
        count_answer(inner, Source::Load);
    }
    // Without the versions read before the load, a write could outlive an
    // invalidation it raced with: skip it. So too for a load that read so
    // long ago that a tombstone it should meet may be gone.
    if let (Some(l2), Some(seen)) = (l2, seen)
        && seen.at.elapsed() <= WRITE_HORIZON
    {
        let write = Write::IfUnchanged(seen, lease.as_mut());
        let _ = l2
            .write(ctx.codec, value, load_time, (ttl, expires_at_ms), write)
            .await;
    }
    Some(result)
}

pub(crate) fn count_answer(inner: &Inner, source: Source) {
    let counter = match source {
        Source::L2 => &inner.counters.l2_hits,
        Source::Load | Source::FailSafe => &inner.counters.misses,
    };
    Counters::bump(counter);
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
    let fallback = fallback.filter(|fallback| fallback.servable(ctx.spec))?;
    let answer = answer::<S, R>(ctx.codec, &fallback.value)?;
    let inner = &*ctx.cache.inner;
    Counters::bump(&inner.counters.fail_safe);
    Counters::bump(&inner.counters.misses);
    keep_serving(ctx, fallback);
    if let Some(leader) = leader.take() {
        let until = fallback.window_end(ctx.spec);
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
    if let Some(fallback) = fallback.filter(|fallback| fallback.servable(ctx.spec)) {
        keep_serving(ctx, fallback);
    }
}

/// Serves a fail-safe value from L1 for the throttle period (no load is
/// tried meanwhile), never past its window, unless it was invalidated.
fn keep_serving<S: Shape<R>, R>(ctx: &Ctx<S, R>, fallback: &Fallback) {
    let inner = &*ctx.cache.inner;
    let entry = timed_entry(
        ctx.spec,
        fallback.value.clone(),
        (fallback.expired_at, fallback.expires_at_ms),
        Some(inner.settings.fail_safe_throttle),
        Duration::ZERO,
        fallback.generations.clone(),
    );
    if let Some(entry) = entry {
        inner.keep_in_l1(&ctx.key, entry);
    }
}

/// An L1 entry for a value whose fresh period ends at `expires_at_ms` (Unix
/// ms, as its envelope records it), kept through the function's stale and
/// fail-safe windows counted from then, never longer: `None` when that is
/// over already. Never fresher than a whole TTL from now, whatever the
/// envelope claims.
pub(crate) fn l1_entry(
    spec: &Spec,
    value: Shared,
    expires_at_ms: u64,
    load_time: Duration,
    generations: Snapshot,
) -> Option<Entry> {
    let (now, now_ms) = (Instant::now(), envelope::unix_ms(SystemTime::now()));
    let ttl_ms = u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX);
    let capped_ms = expires_at_ms.min(now_ms.saturating_add(ttl_ms));
    let expired_at = if capped_ms >= now_ms {
        later(now, Duration::from_millis(capped_ms - now_ms))
    } else {
        now.checked_sub(Duration::from_millis(now_ms - capped_ms))?
    };
    let at = (expired_at, expires_at_ms);
    timed_entry(spec, value, at, None, load_time, generations)
}

/// As [`l1_entry`], for a value whose fresh period ends at `expired_at`
/// (`expires_at_ms` on the wall clock). With a `throttle`, it is served
/// without a load until then, within its fail-safe window.
fn timed_entry(
    spec: &Spec,
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
    let entry = Entry::shared(value, ttl, generations);
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
