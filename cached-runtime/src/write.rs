//! Writes: `#[write_through]` and `#[invalidates]`.
//!
//! A write-through stores its value in Redis first and then in this L1; a
//! value that cannot reach Redis (Redis down or slow, the breaker open, the
//! caller cancelled after the body, a value that does not serialize), or
//! that raced with another write or an invalidation of its entry, turns
//! into a key invalidation instead, applied here at once and retried until
//! Redis confirms it (see [`crate::pending`]). Either way no instance goes
//! on serving the value it replaced.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, Inner};
use crate::codec::Codec;
use crate::l2call::{L2Call, Write};
use crate::lead::{expiry, l1_entry};
use crate::pending::Pending;
use crate::shape::{Kept, Shape, Split};
use crate::spec::Spec;
use crate::stats::Counters;
use crate::tags::Invalidation;

/// `#[write_through]`: runs the body; a value it returns replaces the entry
/// in Redis, then in this L1, and is announced so that other instances drop
/// their copy. A "nothing" (`None`, `Ok(None)`) invalidates the entry; an
/// error leaves it alone. The entry and its tag versions are read before
/// the body runs: the value is stored only if the entry is unchanged since
/// (otherwise another write or an invalidation raced with this one, and the
/// entry is invalidated instead), and with the versions read then, so a tag
/// invalidation that races with the write makes it a miss, never a stale
/// hit.
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
    let inner = &cache.inner;
    // Before anything is read or written: an invalidation of the entry
    // from now on keeps the written value out of L1.
    let before = inner.snapshot(spec.prefix, &tags, &key);
    let l2 = L2Call::new(inner, spec, &key, &tags);
    let seen = match &l2 {
        Some(l2) => l2.before_write().await,
        None => None,
    };
    let written = Invalidation {
        sender: inner.id,
        keys: vec![key.clone()],
        ..Invalidation::default()
    };
    // Until Redis has the value, a caller cancelled at any await (in the
    // body too: its write may have happened) leaves a key invalidation in
    // its place.
    let mut unwritten = InvalidateOnDrop::new(inner, written);
    // Taken apart at once (a `let`, so that nothing of the result lives
    // on): what follows holds the value, not the result, whose error type
    // need not be `Send`.
    let kept = match S::split(body.await) {
        Split::Kept(kept) => kept,
        Split::Failed(result) => {
            unwritten.disarm();
            return result;
        }
    };
    let value = match kept {
        Kept::Value(value) => value,
        Kept::Absent(absent) => {
            // Nothing to store: what is cached is outdated.
            let written = unwritten.disarm();
            invalidate_logged(&cache, written).await;
            return absent();
        }
    };
    Counters::bump(&inner.counters.writes);
    let expires_at_ms = expiry(spec.ttl);
    // Stored only if the entry is still as it was before the body: another
    // write or an invalidation since may carry newer data than this one.
    let stored = match (&l2, seen) {
        // A body longer than the horizon: a tombstone it should meet may be
        // gone (see `l2::WRITE_HORIZON`).
        (Some(_), Some(seen)) if seen.at.elapsed() > crate::l2::WRITE_HORIZON => false,
        (Some(l2), Some(seen)) => {
            let message = serde_json::to_vec(&unwritten.invalidation).unwrap_or_default();
            let write = Write::Announced(seen, message);
            let fresh = (spec.ttl, expires_at_ms);
            l2.write(codec, Some(&value), Duration::ZERO, fresh, write)
                .await
                .is_ok()
        }
        (Some(_), None) => false, // the read before the body failed
        (None, _) => true,
    };
    let written = unwritten.disarm();
    if !stored {
        tracing::debug!(
            key,
            "write-through not stored (Redis out of reach, or the entry changed meanwhile); the entry is invalidated instead"
        );
        // Returns once Redis has the tombstone (or after one bounded try,
        // then it is retried): a reader after this call never finds the
        // value this write raced with.
        invalidate_logged(&cache, written).await;
        return S::from_value(value);
    }
    // Loads of this key begun before this point can no longer put an older
    // value in L1; the written value goes there unless an invalidation of
    // the entry raced with the write.
    if let Some(generations) = inner.outdate_written_key(&key, &before) {
        let shared = (codec.share)(&value);
        if let Some(entry) = l1_entry(spec, shared, expires_at_ms, Duration::ZERO, generations) {
            inner.keep_in_l1(&key, entry);
        }
    }
    S::from_value(value)
}

/// Applies and queues an invalidation when dropped armed: for a caller
/// cancelled before the invalidation it owes was sent (a write-through
/// whose value did not reach Redis, an `#[invalidates]` body cut short).
struct InvalidateOnDrop<'a> {
    inner: &'a Arc<Inner>,
    invalidation: Invalidation,
    armed: bool,
}

impl<'a> InvalidateOnDrop<'a> {
    fn new(inner: &'a Arc<Inner>, invalidation: Invalidation) -> Self {
        Self {
            inner,
            invalidation,
            armed: true,
        }
    }

    /// The invalidation, now the caller's to send.
    fn disarm(&mut self) -> Invalidation {
        self.armed = false;
        std::mem::take(&mut self.invalidation)
    }
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.enqueue(std::mem::take(&mut self.invalidation));
            Pending::retry_in_background(self.inner);
        }
    }
}

/// When `#[invalidates]` invalidates, relative to the body (`when =
/// "always"` is [`invalidating_always`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// After the body succeeded (default).
    After,
    /// Before the body, and again after it succeeded.
    Before,
}

/// `#[invalidates]`: runs the body and invalidates `tags`, `keys` (rendered
/// `prefix:…` keys) and `prefixes` as `when` says (and when the caller is
/// cancelled during the body, which may have changed the data). An
/// invalidation Redis cannot take now is applied here at once and retried
/// until it does; it never turns into an error of the function.
///
/// `when = "always"` is [`invalidating_always`]: only there is an error
/// held while the invalidation is sent, so only there must it be `Send`
/// for the future to be.
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
    let invalidation = listed(tags, keys, prefixes);
    if when == When::Before {
        invalidate_logged(&cache, invalidation.clone()).await;
    }
    // A body cut short (the caller cancelled) may have changed the data:
    // invalidate as if it had succeeded.
    let mut owed = InvalidateOnDrop::new(&cache.inner, invalidation);
    // Taken apart at once, and held as the value, not the result: the
    // future is `Send` whenever the function's is.
    let kept = match S::split(body.await) {
        Split::Kept(kept) => kept,
        Split::Failed(result) => {
            owed.disarm();
            return result;
        }
    };
    invalidate_logged(&cache, owed.disarm()).await;
    kept.rejoin::<S>()
}

/// [`invalidating`] with `when = "always"`: after the body, whatever its
/// outcome.
pub async fn invalidating_always<R, F>(
    cache: Cache,
    tags: Vec<String>,
    keys: Vec<String>,
    prefixes: Vec<String>,
    body: F,
) -> R
where
    F: Future<Output = R>,
{
    let invalidation = listed(tags, keys, prefixes);
    let mut owed = InvalidateOnDrop::new(&cache.inner, invalidation);
    let result = body.await;
    invalidate_logged(&cache, owed.disarm()).await;
    result
}

/// What an `#[invalidates]` lists, as one invalidation.
fn listed(tags: Vec<String>, keys: Vec<String>, prefixes: Vec<String>) -> Invalidation {
    Invalidation {
        tags,
        keys,
        prefixes,
        ..Invalidation::default()
    }
}

async fn invalidate_logged(cache: &Cache, invalidation: Invalidation) {
    if let Err(error) = cache.inner.invalidate(invalidation).await {
        tracing::warn!(%error, "invalidation not confirmed by Redis yet: applied here, retried until it is");
    }
}
