//! Cache-aside: the life of a call of a `#[cache_aside]` function.
//!
//! 1. [`l1_get`]: a typed lookup in L1, inlined into the caller. A hit ends
//!    here: no deserialization, no Redis.
//! 2. [`load`]: join the key's flight. Its leader reads L2 with the current
//!    versions of the entry's tags (one round trip); a value whose recorded
//!    versions all match is a hit. Otherwise it runs the body, fills L1,
//!    hands the value to the waiters and writes L2 with the versions it read
//!    *before* loading (one round trip). Waiters take the leader's value; if
//!    the leader failed they try again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Inner};
use crate::envelope::{self, Meta};
use crate::flight::{self, Landed, Leader, Role, Shared, Source};
use crate::key::KeyWriter;
use crate::l1::{Absent, Entry, Timing};
use crate::l2::Acquired;
use crate::lock::Lease;
use crate::shape::{Outcome, Shape};
pub use crate::spec::Spec;
use crate::stats::Counters;
use crate::tags::{Invalidation, version_ttl};

/// What a cached value must be: stored typed in L1, serialized in L2, shared
/// between tasks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "the cached value is `{Self}`",
    note = "a cached value must implement `Serialize`, `DeserializeOwned`, `Clone`, `Send` and `Sync`, and own its data (`'static`)"
)]
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Cacheable for T {}

/// Everything the cache does with a value, as plain function pointers built
/// where `V: Cacheable` is checked. The cache paths take a `Codec` instead of
/// the bound, so a type that cannot be cached is reported once, at the
/// return type, not again at every generated call.
pub struct Codec<V> {
    /// Wraps a value for L1 and for the flight's waiters.
    pub(crate) share: fn(&V) -> Shared,
    /// Wraps a value the cache owns (read from L2) without cloning it.
    pub(crate) own: fn(V) -> Shared,
    /// Clones a value out of L1 or a flight, if it is a `V`.
    pub(crate) unshare: fn(&Shared) -> Option<V>,
    /// Takes a value out of its `Arc` if nothing else holds it (no L1, no
    /// waiter), else clones it; `None` if it is no `V`.
    pub(crate) take: fn(Shared) -> Option<V>,
    /// Serializes a value (`None`: a cached "nothing") into an envelope.
    pub(crate) encode: fn(&Meta, Option<&V>) -> Result<Vec<u8>, serde_json::Error>,
    /// Reads an envelope holding a `V` or a cached "nothing" of `V`.
    pub(crate) decode: fn(&[u8]) -> Option<Decoded<V>>,
    /// Identifies `V` in envelopes.
    pub(crate) fingerprint: fn() -> u64,
}

/// An envelope's metadata and value (`None`: a cached "nothing").
pub(crate) type Decoded<V> = (Meta, Option<V>);

impl<V> Clone for Codec<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Codec<V> {}

impl<V: Cacheable> Codec<V> {
    /// The codec of a cacheable type.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            share: |value| Arc::new(value.clone()),
            own: |value| Arc::new(value),
            unshare: |shared| shared.downcast_ref::<V>().cloned(),
            take: |shared| {
                let shared = shared.downcast::<V>().ok()?;
                Some(Arc::try_unwrap(shared).unwrap_or_else(|shared| V::clone(&shared)))
            },
            encode: envelope::encode::<V>,
            decode: envelope::decode::<V>,
            fingerprint: envelope::fingerprint::<V>,
        }
    }
}

impl<V: Cacheable> Default for Codec<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Step 1: the L1 fast path. `key` is the rendered `prefix:…` key. A hit
/// on a fresh entry ends here; anything else (stale, due for an early
/// refresh, absent) goes on to [`load`].
#[inline]
pub fn l1_get<S, R>(cache: &Cache, key: &str, codec: Codec<S::Value>) -> Option<R>
where
    S: Shape<R>,
{
    l1_hit::<S, R>(cache, key.as_bytes(), codec)
}

/// Step 1 as generated code takes it: the key still in its writer, so that a
/// hit never makes the key's `String`. Inlined whole into the caller, where
/// the codec is a constant: the downcast and the clone are then direct calls
/// that write the value where the caller returns it.
#[inline(always)]
pub fn l1_get_rendered<S, R>(cache: &Cache, key: &KeyWriter, codec: Codec<S::Value>) -> Option<R>
where
    S: Shape<R>,
{
    l1_hit::<S, R>(cache, &key.as_key(), codec)
}

#[inline(always)]
fn l1_hit<S, R>(cache: &Cache, key: &[u8], codec: Codec<S::Value>) -> Option<R>
where
    S: Shape<R>,
{
    let hit = cache.inner.l1.get(key)?;
    let answer = answer::<S, R>(codec, &hit)?;
    Counters::bump(&cache.inner.counters.l1_hits);
    Some(answer)
}

/// A cached value (or cached "nothing") as the function's return value;
/// `None` for a value of another type.
#[inline]
fn answer<S: Shape<R>, R>(codec: Codec<S::Value>, shared: &Shared) -> Option<R> {
    match (codec.unshare)(shared) {
        Some(value) => Some(S::from_value(value)),
        None if shared.is::<Absent>() => S::absent(),
        None => None,
    }
}

/// As [`answer`], for the last holder of `shared` but maybe L1 and the
/// flight's waiters: without them, the value is moved out, not cloned.
fn answer_owned<S: Shape<R>, R>(codec: Codec<S::Value>, shared: Shared) -> Option<R> {
    if shared.is::<Absent>() {
        return S::absent();
    }
    (codec.take)(shared).map(S::from_value)
}

/// How the body of a cached function is run.
///
/// `#[cache_aside]` without `stale`, `refresh_ahead` or `timeout` runs the
/// body in the caller's task ([`load`]). With them, the macro builds a
/// [`Detached`] loader from owned copies of the arguments, so that the body
/// can run in the background: a refresh no caller waits for, or a load that
/// goes on after a slow one was answered with a fail-safe value
/// ([`load_detached`]).
trait Body<S: Shape<R>, R>: Sized {
    /// Whether the body can run in the background.
    const DETACHED: bool;

    /// Starts the body.
    fn start(self) -> impl Future<Output = R>;

    /// Starts a background refresh of the entry unless one runs already;
    /// whether it started. `expires_at_ms`: the end of the fresh period of
    /// the value it replaces.
    fn refresh(&self, ctx: &Ctx<S, R>, expires_at_ms: u64) -> bool;

    /// Leads the flight for the caller (or, without a leader, loads
    /// alone: a caller that waited past the bound).
    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R;
}

struct Inline<F>(F);

impl<S: Shape<R>, R, F: Future<Output = R>> Body<S, R> for Inline<F> {
    const DETACHED: bool = false;

    fn start(self) -> impl Future<Output = R> {
        self.0
    }

    fn refresh(&self, _: &Ctx<S, R>, _: u64) -> bool {
        false
    }

    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R {
        let result = lead(&ctx, leader, body, Mode::Call, fallback).await;
        result.expect("a caller's load answers")
    }
}

/// A loader that runs the function's body on owned copies of its arguments,
/// as often as needed; built by the macro.
pub struct Detached<R>(Arc<dyn Fn() -> Pin<Box<dyn Future<Output = R> + Send>> + Send + Sync>);

impl<R> Clone for Detached<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R> Detached<R> {
    /// Wraps a function that starts a run of the body.
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(make())))
    }
}

impl<S, R> Body<S, R> for Detached<R>
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    const DETACHED: bool = true;

    fn start(self) -> impl Future<Output = R> {
        (self.0)()
    }

    fn refresh(&self, ctx: &Ctx<S, R>, expires_at_ms: u64) -> bool {
        let inner = &ctx.cache.inner;
        if inner.flights.busy(&ctx.key) {
            return false;
        }
        let Role::Leader(leader) = inner.flights.join(&ctx.key) else {
            return false;
        };
        let (ctx, body) = (ctx.clone(), self.clone());
        tokio::spawn(async move {
            let mode = Mode::Refresh { expires_at_ms };
            lead(&ctx, Some(leader), body, mode, None).await;
        });
        true
    }

    /// The load runs in its own task: it goes on when this caller stops
    /// waiting (a fail-safe value offered after `timeout`, a stale value
    /// offered at once, or the caller cancelled) and lands its value for
    /// the callers after.
    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R {
        let slot = leader.as_ref().map(Leader::slot);
        let offered_before = slot.clone();
        let task_ctx = ctx.clone();
        let mut task =
            tokio::spawn(async move { lead(&task_ctx, leader, body, Mode::Call, fallback).await });
        let offered = async {
            match slot {
                Some(slot) => match flight::wait(slot).await {
                    Some(Landed::Value(shared, source)) => {
                        answer::<S, R>(ctx.codec, &shared).map(|answer| (answer, source))
                    }
                    _ => None,
                },
                None => None,
            }
        };
        tokio::select! {
            biased;
            finished = &mut task => match finished {
                Ok(Some(result)) => result,
                // It offered a stale value, then left the refresh to
                // another process.
                Ok(None) => {
                    let slot = offered_before.expect("only a leader offers");
                    match flight::wait(slot).await {
                        Some(Landed::Value(shared, _)) => answer::<S, R>(ctx.codec, &shared)
                            .expect("the offered value is the function's"),
                        _ => unreachable!("a load that answers nobody offered a value"),
                    }
                }
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            },
            Some((answer, _)) = offered => answer,
        }
    }
}

/// One call's unchanging parts.
struct Ctx<S: Shape<R>, R> {
    cache: Cache,
    spec: &'static Spec,
    codec: Codec<S::Value>,
    key: String,
    tags: Vec<String>,
    /// The function's error for a hard timeout (`hard_timeout`).
    timed_out: Option<fn() -> R>,
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
struct Fallback {
    value: Shared,
    /// How long past its fresh period it is.
    past: Duration,
}

/// Why a leader runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// For callers.
    Call,
    /// In the background, to replace a value whose fresh period ends at
    /// the given Unix ms: a value in Redis that outlives it is taken
    /// instead of loading.
    Refresh { expires_at_ms: u64 },
}

/// Step 2, for functions whose body runs in the caller's task: L2, then
/// the body, single-flighted per key in the process and, with Redis, locked
/// across processes. `tags` are the rendered explicit tags; `timed_out`
/// makes the function's error for `hard_timeout`.
pub async fn load<S, R, F>(
    cache: Cache,
    spec: &'static Spec,
    codec: Codec<S::Value>,
    key: String,
    tags: Vec<String>,
    body: F,
    timed_out: Option<fn() -> R>,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let ctx = Ctx::<S, R> {
        cache,
        spec,
        codec,
        key,
        tags,
        timed_out,
    };
    resolve(ctx, Inline(body)).await
}

/// Step 2, for functions with `stale`, `refresh_ahead` or `timeout`: as
/// [`load`], with the body run in the background when no caller needs to
/// wait for it.
pub async fn load_detached<S, R>(
    cache: Cache,
    spec: &'static Spec,
    codec: Codec<S::Value>,
    key: String,
    tags: Vec<String>,
    body: Detached<R>,
    timed_out: Option<fn() -> R>,
) -> R
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    let ctx = Ctx::<S, R> {
        cache,
        spec,
        codec,
        key,
        tags,
        timed_out,
    };
    resolve(ctx, body).await
}

/// After the fast path: what L1 holds (stale, due for an early refresh,
/// fail-safe), then the key's flight.
async fn resolve<S, R, B>(ctx: Ctx<S, R>, body: B) -> R
where
    S: Shape<R>,
    B: Body<S, R>,
{
    let inner = &*ctx.cache.inner;
    let spec = ctx.spec;
    let mut fallback = None;
    if let Some(entry) = inner.l1.entry(&ctx.key)
        && let Some(answer) = answer::<S, R>(ctx.codec, &entry.value)
    {
        let now = Instant::now();
        let (fresh, past, expires_at_ms) = match entry.timing {
            None => (true, Duration::ZERO, 0),
            Some(timing) => (
                timing.fresh_until > now,
                now.saturating_duration_since(timing.fresh_until),
                timing.expires_at_ms,
            ),
        };
        if fresh {
            // Picked by XFetch (or loaded since the fast path looked).
            Counters::bump(&inner.counters.l1_hits);
            if body.refresh(&ctx, expires_at_ms) {
                Counters::bump(&inner.counters.early_refreshes);
            }
            return answer;
        }
        if B::DETACHED && past <= spec.stale {
            // Served while a refresh runs: this call's, or one running
            // already (then `refresh` starts none).
            body.refresh(&ctx, expires_at_ms);
            Counters::bump(&inner.counters.l1_hits);
            Counters::bump(&inner.counters.stale_served);
            return answer;
        }
        if past <= spec.fail_safe {
            fallback = Some(Fallback {
                value: entry.value,
                past,
            });
        }
    }

    let give_up_at = Instant::now() + inner.settings.lock_wait;
    loop {
        let slot = match inner.flights.join(&ctx.key) {
            Role::Leader(leader) => return B::lead(ctx, Some(leader), body, fallback).await,
            Role::Waiter(slot) => slot,
        };
        // With a fail-safe value at hand, wait no longer than `timeout`.
        let until = match (&fallback, spec.soft_timeout) {
            (Some(_), Some(soft)) => (Instant::now() + soft).min(give_up_at),
            _ => give_up_at,
        };
        match tokio::time::timeout_at(until.into(), flight::wait(slot)).await {
            Ok(Some(Landed::Value(shared, source))) => {
                if let Some(answer) = answer::<S, R>(ctx.codec, &shared) {
                    count_answer(inner, source);
                    return answer;
                }
            }
            Ok(Some(Landed::Absent)) => {
                if let Some(absent) = S::absent() {
                    Counters::bump(&inner.counters.misses);
                    return absent;
                }
            }
            Ok(None) => {}
            Err(_) => {
                if let Some(answer) = serve_fallback(&ctx, &mut None, fallback.as_ref()) {
                    return answer;
                }
                // Waited long enough for another caller: load alone.
                Counters::bump(&inner.counters.lock_timeouts);
                return B::lead(ctx, None, body, fallback).await;
            }
        }
        // The leader failed, or landed a value of another type: the value
        // may be in L1 by now; otherwise lead the next flight.
        if let Some(hit) = l1_get::<S, R>(&ctx.cache, &ctx.key, ctx.codec) {
            return hit;
        }
    }
}

/// Answers with a fail-safe value, if there is one, and keeps serving it
/// from L1 for the throttle period (no load is tried meanwhile).
fn serve_fallback<S: Shape<R>, R>(
    ctx: &Ctx<S, R>,
    leader: &mut Option<Leader>,
    fallback: Option<&Fallback>,
) -> Option<R> {
    let fallback = fallback?;
    let answer = answer::<S, R>(ctx.codec, &fallback.value)?;
    let inner = &*ctx.cache.inner;
    Counters::bump(&inner.counters.fail_safe);
    Counters::bump(&inner.counters.misses);
    let throttle = inner.settings.fail_safe_throttle;
    let generations = inner.snapshot(ctx.spec.prefix, &ctx.tags);
    let fresh = (throttle, expiry(throttle));
    let entry = l1_entry(
        ctx.spec,
        fallback.value.clone(),
        fresh,
        Duration::ZERO,
        generations,
    );
    inner.keep_in_l1(&ctx.key, entry, inner.epoch());
    if let Some(leader) = leader.take() {
        leader.land(Landed::Value(fallback.value.clone(), Source::FailSafe));
    }
    Some(answer)
}

/// An L1 entry fresh for `fresh_for` from now (zero for a value already
/// stale), kept through the function's stale and fail-safe windows.
/// `expires_at_ms` is the end of its fresh period as its envelope records
/// it: a refresh compares it with what Redis holds.
fn l1_entry(
    spec: &Spec,
    value: Shared,
    (fresh_for, expires_at_ms): (Duration, u64),
    load_time: Duration,
    generations: crate::generations::Snapshot,
) -> Entry {
    if !spec.timed() {
        return Entry::shared(value, fresh_for, generations);
    }
    let now = Instant::now();
    let timing = Timing {
        fresh_until: now + fresh_for,
        expires_at_ms,
        xfetch_scale: load_time.mul_f64(spec.refresh_beta),
    };
    Entry::shared(value, fresh_for + spec.keep(), generations).timed(Some(timing))
}

/// The end of a fresh period starting now, as envelopes record it.
fn expiry(fresh_for: Duration) -> u64 {
    let millis = u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX);
    envelope::unix_ms(SystemTime::now()).saturating_add(millis)
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Leads a flight (or, with no `leader`, loads alone): Redis, the
/// cross-process lock, the body, the writes. `None` only for a refresh
/// that found nothing to do.
async fn lead<S, R, B>(
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
    // Before anything is read: an invalidation from now on outdates them.
    let epoch = inner.epoch();
    let generations = inner.snapshot(spec.prefix, &ctx.tags);
    let l2 = L2Call::new(inner, spec, &ctx.key, &ctx.tags);
    // Whether the caller has its answer (a stale value, or no caller).
    let mut answered = mode != Mode::Call;
    let mut seen = None;
    let mut lease = None;
    if let Some(l2) = &l2 {
        let lock = spec.lock.unwrap_or(inner.settings.lock);
        // Made on the first miss only: a hit needs none of them.
        let mut watch = None;
        let mut lock_id: Option<(String, String)> = None;
        let give_up_at = started + inner.settings.lock_wait;
        let mut waited = false;
        loop {
            match l2.read(ctx.codec).await {
                L2Read::Found(found) => {
                    let now = SystemTime::now();
                    let past = found.meta.past_expiry(now);
                    let newer = match mode {
                        Mode::Call => true,
                        Mode::Refresh { expires_at_ms } => found.meta.expires_at_ms > expires_at_ms,
                    };
                    let fresh_for = found.meta.remaining(now).filter(|_| newer);
                    let shared = match found.value {
                        Some(value) => (ctx.codec.own)(value),
                        None => Arc::new(Absent),
                    };
                    if let Some(fresh_for) = fresh_for {
                        let fresh = (fresh_for.min(spec.ttl), found.meta.expires_at_ms);
                        let load_time = found.meta.load_time();
                        let entry = l1_entry(spec, shared.clone(), fresh, load_time, generations);
                        inner.keep_in_l1(&ctx.key, entry, epoch);
                        if let Some(leader) = leader {
                            leader.land(Landed::Value(shared.clone(), Source::L2));
                        }
                        if !answered {
                            count_answer(inner, Source::L2);
                        }
                        let scale = load_time.mul_f64(spec.refresh_beta);
                        if mode == Mode::Call
                            && crate::spec::xfetch(fresh_for, scale)
                            && body.refresh(ctx, found.meta.expires_at_ms)
                        {
                            Counters::bump(&inner.counters.early_refreshes);
                        }
                        return answer_owned::<S, R>(ctx.codec, shared);
                    }
                    let stale = found.meta.remaining(now).is_none() && past <= spec.stale;
                    if stale && B::DETACHED && !answered && leader.is_some() && mode == Mode::Call {
                        // Stale-while-revalidate: the callers take it now,
                        // this (background) leader goes on to refresh it.
                        if let Some(leader) = &leader {
                            let entry = l1_entry(
                                spec,
                                shared.clone(),
                                (Duration::ZERO, found.meta.expires_at_ms),
                                found.meta.load_time(),
                                generations.clone(),
                            );
                            inner.keep_in_l1(&ctx.key, entry, epoch);
                            leader.offer(Landed::Value(shared.clone(), Source::L2));
                            answered = true;
                            count_answer(inner, Source::L2);
                            Counters::bump(&inner.counters.stale_served);
                        }
                    }
                    if past <= spec.fail_safe
                        && fallback.as_ref().is_none_or(|held| held.past > past)
                    {
                        fallback = Some(Fallback {
                            value: shared,
                            past,
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
                    let held = Lease::start(&ctx.cache, lock_key, token, key, lease_time);
                    lease = Some(held);
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
                        .filter(|_| !answered)
                        .map(|soft| started + soft);
                    if now >= give_up_at || soft_at.is_some_and(|at| now >= at) {
                        if mode != Mode::Call || answered {
                            return None; // another process refreshes it
                        }
                        if !answered
                            && let Some(answer) =
                                serve_fallback(ctx, &mut leader, fallback.as_ref())
                        {
                            return Some(answer);
                        }
                        if now >= give_up_at {
                            Counters::bump(&inner.counters.lock_timeouts);
                            break; // load without the lock
                        }
                    }
                    // The holder's lease may run out unrenewed: try again then.
                    let wake = (now + left + Duration::from_millis(1)).min(give_up_at);
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
        (Some(_), Some(soft), Some(_)) if !answered => Some(started + soft),
        _ => None,
    };
    let hard_at = spec.hard_timeout.map(|hard| started + hard);
    let ran = loop {
        tokio::select! {
            result = &mut run => break Some(result),
            () = until(soft_at), if soft_at.is_some() => {
                // Slow: the callers take the fail-safe value, the load goes on.
                soft_at = None;
                if let (Some(leader), Some(fallback)) = (&leader, &fallback) {
                    leader.offer(Landed::Value(fallback.value.clone(), Source::FailSafe));
                    Counters::bump(&inner.counters.fail_safe);
                    answered = true;
                    Counters::bump(&inner.counters.misses);
                }
            }
            () = until(hard_at), if hard_at.is_some() => break None,
        }
    };
    let load_time = started.elapsed();
    let Some(result) = ran else {
        Counters::bump(&inner.counters.load_timeouts);
        Counters::bump(&inner.counters.errors);
        drop(lease);
        if !answered && let Some(answer) = serve_fallback(ctx, &mut leader, fallback.as_ref()) {
            return Some(answer);
        }
        let timed_out = ctx
            .timed_out
            .expect("the macro gives `hard_timeout` its error");
        return Some(timed_out());
    };
    let none_ttl = spec.cache_none;
    let stored = match S::outcome(&result) {
        Outcome::Value(value) => Some((Some(value), inner.settings.jittered(spec.ttl))),
        Outcome::Absent => none_ttl.map(|ttl| (None, ttl)),
        Outcome::Failed => {
            Counters::bump(&inner.counters.errors);
            drop(lease);
            if !answered && let Some(answer) = serve_fallback(ctx, &mut leader, fallback.as_ref()) {
                tracing::warn!(
                    key = ctx.key,
                    "the load failed; serving the fail-safe value"
                );
                return Some(answer);
            }
            if !answered {
                Counters::bump(&inner.counters.misses);
            }
            return Some(result);
        }
    };
    let Some((value, ttl)) = stored else {
        // "Nothing", not cached: shared with the waiters only.
        if let Some(leader) = leader {
            leader.land(Landed::Absent);
        }
        if !answered {
            Counters::bump(&inner.counters.misses);
        }
        return Some(result);
    };
    let shared: Shared = match value {
        Some(value) => (ctx.codec.share)(value),
        None => Arc::new(Absent),
    };
    let expires_at_ms = expiry(ttl);
    let entry = l1_entry(
        spec,
        shared.clone(),
        (ttl, expires_at_ms),
        load_time,
        generations,
    );
    inner.keep_in_l1(&ctx.key, entry, epoch);
    if let Some(leader) = leader {
        leader.land(Landed::Value(shared, Source::Load));
    }
    if !answered {
        count_answer(inner, Source::Load);
    }
    // Without the versions read before the load, a write could outlive an
    // invalidation it raced with: skip it.
    if let (Some(l2), Some(seen)) = (l2, seen) {
        let write = Write::IfUnchanged(seen, lease.as_mut());
        let fresh = (ttl, expires_at_ms);
        l2.write(ctx.codec, value, load_time, fresh, write).await;
    }
    Some(result)
}

fn count_answer(inner: &Inner, source: Source) {
    let counter = match source {
        Source::L2 => &inner.counters.l2_hits,
        Source::Load | Source::FailSafe => &inner.counters.misses,
    };
    Counters::bump(counter);
}

/// What an L2 read found.
pub(crate) enum L2Read<V> {
    /// A value of type `V` (or a cached "nothing") that no invalidation
    /// outdated: fresh or not, see its `meta`.
    Found(Found<V>),
    /// No valid value.
    Miss(Seen),
    /// Redis did not answer.
    Unavailable,
}

/// A valid entry read from L2.
pub(crate) struct Found<V> {
    pub(crate) meta: Meta,
    /// `None`: a cached "nothing".
    pub(crate) value: Option<V>,
    /// For the write after a load.
    pub(crate) seen: Seen,
}

/// What a read saw, for the lock and the write that follow a load.
pub(crate) struct Seen {
    /// The current versions of the entry's tags.
    versions: Vec<u64>,
    /// The entry's bytes as read, if any. Hashed (see [`crate::l2::seen`])
    /// only when the lock or the write compares them: a hit never does.
    entry: Option<Vec<u8>>,
}

impl Seen {
    /// The digest the lock and write scripts compare with.
    fn digest(&self) -> String {
        crate::l2::seen(self.entry.as_deref())
    }
}

/// How an entry is written.
pub(crate) enum Write<'a> {
    /// After a cache-aside load: only if the entry is still as it was seen;
    /// releases the lock if the loader holds it.
    IfUnchanged(Seen, Option<&'a mut Lease>),
    /// A write-through: always, announced to the other instances, with the
    /// tag versions read before the write.
    Announced(Vec<u64>, Vec<u8>),
}

/// One entry's L2 operations: its Redis key and tag version keys.
pub(crate) struct L2Call<'a> {
    inner: &'a Inner,
    pub(crate) l2: &'a crate::l2::L2,
    spec: &'a Spec,
    pub(crate) entry_key: String,
    version_keys: Vec<String>,
}

impl<'a> L2Call<'a> {
    pub(crate) fn new(
        inner: &'a Inner,
        spec: &'a Spec,
        key: &str,
        tags: &[String],
    ) -> Option<Self> {
        Some(Self {
            inner,
            l2: inner.l2.as_ref()?,
            spec,
            entry_key: inner.names.entry(key),
            version_keys: inner.names.versions_of(spec.prefix, tags),
        })
    }

    fn redis_failed(&self, error: &crate::l2::L2Error, what: &str) {
        self.inner.counters.redis_failed(error);
        tracing::debug!(%error, key = self.entry_key, "L2 {what} failed");
    }

    /// How long version keys live: past the entry's last servable moment.
    fn version_ttl(&self) -> Duration {
        version_ttl(self.spec.ttl + self.spec.keep())
    }

    /// Reads the entry and the current versions of its tags: one round trip.
    /// Anything but a value of type `V` whose recorded versions all match
    /// (absent, foreign, corrupt, invalidated) is a miss; whether it is
    /// still fresh is for the caller to see.
    pub(crate) async fn read<V>(&self, codec: Codec<V>) -> L2Read<V> {
        let read = match self
            .l2
            .read(&self.entry_key, &self.version_keys, self.version_ttl())
            .await
        {
            Ok(read) => read,
            Err(error) => {
                self.redis_failed(&error, "read");
                return L2Read::Unavailable;
            }
        };
        let seen = |versions, entry| Seen { versions, entry };
        let Some(bytes) = read.entry else {
            return L2Read::Miss(seen(read.versions, None));
        };
        let Some((meta, value)) = (codec.decode)(&bytes) else {
            let expected = std::any::type_name::<V>();
            tracing::debug!(
                key = self.entry_key,
                expected,
                "L2 value does not decode; loading"
            );
            return L2Read::Miss(seen(read.versions, Some(bytes)));
        };
        if meta.tag_versions != read.versions {
            return L2Read::Miss(seen(read.versions, Some(bytes))); // invalidated
        }
        let seen = seen(read.versions, Some(bytes));
        L2Read::Found(Found { meta, value, seen })
    }

    /// The current versions of the entry's tags, before a write-through.
    pub(crate) async fn versions(&self) -> Option<Vec<u64>> {
        let versions = self
            .l2
            .versions(&self.version_keys, self.version_ttl())
            .await;
        versions
            .map_err(|error| self.redis_failed(&error, "version read"))
            .ok()
    }

    /// Writes the value (`None`: a cached "nothing"), fresh for `fresh`
    /// (until the Unix ms given) and kept through the stale and fail-safe
    /// windows, with the tag versions read before it was loaded or written:
    /// one round trip.
    pub(crate) async fn write<V>(
        &self,
        codec: Codec<V>,
        value: Option<&V>,
        load_time: Duration,
        (fresh, expires_at_ms): (Duration, u64),
        how: Write<'_>,
    ) {
        let versions = match &how {
            Write::IfUnchanged(seen, _) => seen.versions.clone(),
            Write::Announced(versions, _) => versions.clone(),
        };
        let meta = Meta {
            tag_versions: versions,
            expires_at_ms,
            ..Meta::fresh((codec.fingerprint)(), fresh, load_time)
        };
        let bytes = match (codec.encode)(&meta, value) {
            Ok(bytes) => bytes,
            Err(error) => {
                let key = &self.entry_key;
                tracing::warn!(%error, key, "value does not serialize; kept in L1 only");
                return;
            }
        };
        let (ttl, version_ttl) = (fresh + self.spec.keep(), self.version_ttl());
        let written = match how {
            Write::IfUnchanged(seen, lease) => {
                let channel = self.inner.names.landed_channel();
                let held = lease.map(|lease| lease.held(&channel));
                self.l2
                    .write_if_unchanged(
                        &self.entry_key,
                        &seen.digest(),
                        &bytes,
                        ttl,
                        &self.version_keys,
                        version_ttl,
                        held,
                    )
                    .await
                    .map(|stored| {
                        if !stored {
                            tracing::debug!(
                                key = self.entry_key,
                                "entry changed while loading; not overwritten"
                            );
                        }
                    })
            }
            Write::Announced(_, message) => {
                let channel = self.inner.names.channel();
                let announce = Some((channel.as_str(), message.as_slice()));
                self.l2
                    .write(
                        &self.entry_key,
                        &bytes,
                        ttl,
                        &self.version_keys,
                        version_ttl,
                        announce,
                    )
                    .await
            }
        };
        if let Err(error) = written {
            self.redis_failed(&error, "write");
        }
    }
}

/// `#[write_through]`: runs the body; a value it returns replaces the entry
/// in L1 and L2 and is announced so that other instances drop their copy.
/// The tag versions are read before the body runs, so an invalidation that
/// races with the write makes the stored value a miss, never a stale hit.
pub async fn write_through<S, R, F>(
    cache: Cache,
    spec: &'static Spec,
    codec: Codec<S::Value>,
    key: String,
    tags: Vec<String>,
    body: F,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let inner = &*cache.inner;
    let generations = inner.snapshot(spec.prefix, &tags);
    let l2 = L2Call::new(inner, spec, &key, &tags);
    let versions = match &l2 {
        Some(l2) => l2.versions().await,
        None => None,
    };
    let result = body.await;
    let Outcome::Value(value) = S::outcome(&result) else {
        return result;
    };
    Counters::bump(&inner.counters.writes);
    // Readers of this key that are loading now loaded the old value: make
    // them leave it out of L1, here and (through the message) elsewhere.
    let written = Invalidation {
        sender: inner.id,
        keys: vec![key.clone()],
        ..Invalidation::default()
    };
    inner.apply_locally(&written);
    let epoch = inner.epoch();
    let shared = (codec.share)(value);
    let expires_at_ms = expiry(spec.ttl);
    let fresh = (spec.ttl, expires_at_ms);
    let entry = l1_entry(spec, shared, fresh, Duration::ZERO, generations);
    inner.keep_in_l1(&key, entry, epoch);
    if let (Some(l2), Some(versions)) = (l2, versions) {
        let message = serde_json::to_vec(&written).expect("an invalidation serializes");
        let write = Write::Announced(versions, message);
        let fresh = (spec.ttl, expires_at_ms);
        l2.write(codec, Some(value), Duration::ZERO, fresh, write)
            .await;
    }
    result
}

/// When `#[invalidates]` invalidates, relative to the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// After the body succeeded (default).
    After,
    /// Before the body, and again after it succeeded.
    Before,
    /// After the body, whatever its outcome.
    Always,
}

/// `#[invalidates]`: runs the body and invalidates `tags`, `keys` (rendered
/// `prefix:…` keys) and `prefixes` as `when` says. A failed invalidation is
/// logged and counted, never turned into an error of the function.
pub async fn invalidating<S, R, F>(
    cache: Cache,
    when: When,
    tags: Vec<String>,
    keys: Vec<String>,
    prefixes: Vec<String>,
    body: F,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let invalidation = Invalidation {
        tags,
        keys,
        prefixes,
        ..Invalidation::default()
    };
    if when == When::Before {
        invalidate_logged(&cache, invalidation.clone()).await;
    }
    let result = body.await;
    let failed = matches!(S::outcome(&result), Outcome::Failed);
    if !failed || when == When::Always {
        invalidate_logged(&cache, invalidation).await;
    }
    result
}

async fn invalidate_logged(cache: &Cache, invalidation: Invalidation) {
    if let Err(error) = cache.inner.invalidate(invalidation).await {
        tracing::warn!(%error, "invalidation did not reach Redis; other instances may serve old values until they expire");
    }
}
