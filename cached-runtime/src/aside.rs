//! Cache-aside: the life of a call of a `#[cache_aside]` function.
//!
//! 1. [`l1_get`]: a typed lookup in L1, inlined into the caller. A hit ends
//!    here: no deserialization, no Redis.
//! 2. [`load`] / [`load_detached`]: what L1 holds past its fresh period
//!    (served stale while a refresh runs, or kept as the fail-safe value),
//!    then the key's flight: one caller per key and process leads it
//!    ([`crate::lead`]); the others wait for what it lands. A waiter that
//!    waited `lock_wait` serves the fail-safe value, or, one per flight,
//!    loads meanwhile for the others.
//!
//! The other files of a call: [`crate::codec`] (the value's type),
//! [`crate::body`] (how the body runs), [`crate::lead`] (the leader),
//! [`crate::l2call`] (the L2 protocol), [`crate::write`] (write-through
//! and invalidation).

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use crate::body::{Background, Body, Detached, Inline};
use crate::cache::Cache;
use crate::codec::{TypeCodec, answer};
use crate::flight::{self, Landed, Leader, Role};
use crate::key::KeyWriter;
use crate::l2call::{L2Call, L2Read};
use crate::lead::{Ctx, Fallback, l1_entry, serve_fallback};
use crate::observe::Answer;
use crate::shape::Shape;
pub use crate::spec::Spec;
use crate::spec::later;
use crate::stats::Counters;

/// Step 1: the L1 fast path. `key` is the rendered `prefix:…` key. A hit
/// on a fresh entry ends here; anything else (stale, due for an early
/// refresh, absent) goes on to [`load`].
#[inline]
pub fn l1_get<S, R>(cache: &Cache, key: &str, codec: TypeCodec<S::Value>) -> Option<R>
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
pub fn l1_get_rendered<S, R>(
    cache: &Cache,
    key: &KeyWriter,
    codec: TypeCodec<S::Value>,
) -> Option<R>
where
    S: Shape<R>,
{
    l1_hit::<S, R>(cache, &key.as_key(), codec)
}

#[inline(always)]
fn l1_hit<S, R>(cache: &Cache, key: &[u8], codec: TypeCodec<S::Value>) -> Option<R>
where
    S: Shape<R>,
{
    let hit = cache.inner.l1.get(key)?;
    let answer = answer::<S, R>(codec, &hit)?;
    hit.counters().l1_hit();
    Some(answer)
}

/// Step 2, for functions whose body runs in the caller's task: L2, then
/// the body, single-flighted per key in the process and, with Redis, locked
/// across processes. `tags` are the rendered explicit tags; `timed_out`
/// makes the function's error for `hard_timeout`.
pub async fn load<S, R, F>(
    cache: Cache,
    spec: &'static Spec,
    codec: TypeCodec<S::Value>,
    key: String,
    tags: Vec<String>,
    body: F,
    timed_out: Option<fn() -> R>,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let ctx = Ctx::<S, R>::new(cache, *spec, codec, key, tags, timed_out);
    load_in(ctx, body).await
}

/// [`load`] for a call already described (a programmatic entry's).
pub(crate) async fn load_in<S, R, F>(ctx: Ctx<S, R>, body: F) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let span = ctx.call.span.clone();
    resolve(ctx, Inline(body)).instrument(span).await
}

/// Step 2, for functions with `stale`, `refresh_ahead` or `timeout`: as
/// [`load`], with the body run in the background when no caller needs to
/// wait for it.
pub async fn load_detached<S, R>(
    cache: Cache,
    spec: &'static Spec,
    codec: TypeCodec<S::Value>,
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
    let ctx = Ctx::<S, R>::new(cache, *spec, codec, key, tags, timed_out);
    load_detached_in(ctx, body).await
}

/// [`load_detached`] for a call already described.
pub(crate) async fn load_detached_in<S, R>(ctx: Ctx<S, R>, body: Detached<R>) -> R
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    let span = ctx.call.span.clone();
    resolve(ctx, Background::new(body)).instrument(span).await
}

/// What the cache holds for `key`, fresh, without a load: L1, then Redis
/// (an L2 hit fills L1). `None` for a miss, a cached "nothing", a value of
/// another type, or one past its fresh period. The L2 entry is checked
/// against the versions of `tags`: the tags it was written with.
pub async fn peek<V>(
    cache: &Cache,
    spec: &Spec,
    codec: TypeCodec<V>,
    key: &str,
    tags: &[String],
) -> Option<V> {
    let inner = &*cache.inner;
    if let Some(hit) = inner.l1.get(key) {
        let value = (codec.unshare)(&hit)?;
        hit.counters().l1_hit();
        return Some(value);
    }
    // Before the read: an invalidation from now on keeps what it finds out
    // of L1.
    let generations = inner.snapshot(spec.prefix, tags, key);
    let l2 = L2Call::new(inner, spec, key, tags)?;
    let L2Read::Found(found) = l2.read(codec).await else {
        return None;
    };
    found.meta.remaining(std::time::SystemTime::now())?;
    let value = found.value?;
    let size = found.size;
    let shared = (codec.share)(&value);
    let (expires_at_ms, load_time) = (found.meta.expires_at_ms, found.meta.load_time());
    let counters = inner.observer.prefix(spec.prefix);
    let timing = (expires_at_ms, load_time);
    if let Some(entry) = l1_entry(spec, &counters, shared, timing, generations) {
        let entry = inner.weighed(entry, spec, codec.measure, Some(size));
        inner.keep_in_l1(key, entry);
    }
    counters.answered(Answer::L2);
    Some(value)
}

/// Whether the flight ended before `deadline`.
async fn ended(slot: flight::Slot, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline.into(), flight::wait_done(slot))
        .await
        .is_ok()
}

/// After the fast path: what L1 holds (stale, due for an early refresh,
/// fail-safe), then the key's flight.
async fn resolve<S, R, B>(ctx: Ctx<S, R>, body: B) -> R
where
    S: Shape<R>,
    B: Body<S, Output = R>,
{
    let inner = &*ctx.cache.inner;
    let spec = &ctx.spec;
    let mut fallback = None;
    // Before the lookup: an entry found is in L1, so no invalidation of its
    // key came before this; one after it outdates it as a fail-safe value.
    let stripe = inner.generations.key_stripe(&ctx.key);
    if let Some(entry) = inner.l1.entry(&ctx.key)
        && let Some(answer) = answer::<S, R>(ctx.codec, &entry.value)
    {
        let now = Instant::now();
        let Some(timing) = entry.timing else {
            // Loaded since the fast path looked.
            ctx.call.answered(Answer::L1);
            return answer;
        };
        if timing.fresh_until > now {
            // Picked by XFetch (or loaded since the fast path looked).
            ctx.call.answered(Answer::L1);
            if body.refresh(&ctx, timing.expires_at_ms) {
                Counters::bump(&inner.counters.early_refreshes);
            }
            return answer;
        }
        let past = now.saturating_duration_since(timing.expired_at);
        if B::DETACHED && past <= spec.stale {
            // Served while a refresh runs: this call's, or one running
            // already (then `refresh` starts none).
            body.refresh(&ctx, timing.expires_at_ms);
            ctx.call.answered(Answer::L1Stale);
            return answer;
        }
        if past <= spec.fail_safe {
            fallback = Some(Fallback::from_l1(entry, timing, stripe));
        }
    }

    let lock_wait = inner.settings.lock_wait;
    let mut give_up_at = later(Instant::now(), lock_wait);
    loop {
        let slot = match inner.flights.join(&ctx.key) {
            Role::Leader(leader) => return B::lead(ctx, Some(leader), body, fallback).await,
            Role::Waiter(slot) => slot,
        };
        // With a fail-safe value at hand, wait no longer than `timeout`.
        let until = match (&fallback, spec.soft_timeout) {
            (Some(_), Some(soft)) => later(Instant::now(), soft).min(give_up_at),
            _ => give_up_at,
        };
        match tokio::time::timeout_at(until.into(), flight::wait(slot.clone())).await {
            Ok(Some(Landed::Value(shared, source))) => {
                if let Some(answer) = answer::<S, R>(ctx.codec, &shared) {
                    ctx.call.answered(source.answer());
                    return answer;
                }
                // Another function's value (another type under this key):
                // wait for the flight to end, then look again; past
                // `lock_wait`, load alone.
                if !ended(slot, give_up_at).await {
                    return B::lead(ctx, None, body, fallback).await;
                }
            }
            Ok(Some(Landed::Absent)) => {
                if let Some(absent) = S::absent() {
                    ctx.call.answered(Answer::Load);
                    return absent();
                }
                if !ended(slot, give_up_at).await {
                    return B::lead(ctx, None, body, fallback).await;
                }
            }
            Ok(None) => {}
            Err(_) => {
                if let Some(answer) = serve_fallback(&ctx, &mut None, fallback.as_ref()) {
                    return answer;
                }
                if Instant::now() < give_up_at {
                    continue; // past `timeout`, with no fallback to serve
                }
                if slot.relieve() {
                    // The leader is slower than `lock_wait`: this caller
                    // loads meanwhile, for the flight's other callers too.
                    Counters::bump(&inner.counters.lock_timeouts);
                    let relief = Leader::relief(&inner.flights, &ctx.key, slot);
                    return B::lead(ctx, Some(relief), body, fallback).await;
                }
                // Another caller loads meanwhile: wait for it, or the leader.
                give_up_at = later(Instant::now(), lock_wait);
                continue;
            }
        }
        // The leader failed, or landed a value of another type: the value
        // may be in L1 by now; otherwise lead the next flight.
        if let Some(hit) = l1_get::<S, R>(&ctx.cache, &ctx.key, ctx.codec) {
            ctx.call.record(Answer::L1); // counted by the hit itself
            return hit;
        }
    }
}
