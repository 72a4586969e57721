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
use crate::codec::TypeCodec;
use crate::error::Error;
use crate::generations::Snapshot;
use crate::l2call::{L2Call, NotWritten, Seen, Write};
use crate::lead::{expiry, l1_entry};
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
    spec: &Spec,
    codec: TypeCodec<S::Value>,
    key: String,
    tags: Vec<String>,
    body: F,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let writing = Writing::begin(&cache.inner, spec, &key, &tags).await;
    // Taken apart at once (a `let`, so that nothing of the result lives
    // on): what follows holds the value, not the result, whose error type
    // need not be `Send`.
    let kept = match S::split(body.await) {
        Split::Kept(kept) => kept,
        Split::Failed(result) => {
            writing.abandon();
            return result;
        }
    };
    match kept {
        Kept::Value(value) => {
            // Not stored: invalidated instead, and logged.
            let _ = writing.store(codec, &value).await;
            S::from_value(value)
        }
        Kept::Absent(absent) => {
            // Nothing to store: what is cached is outdated.
            writing.invalidate().await;
            absent()
        }
    }
}

/// A `_set` companion, and [`Entry::set`](crate::Entry::set): stores
/// `value` under `key` as a write-through does.
///
/// # Errors
///
/// [`Error::NotStored`]: the entry was invalidated in its place.
pub async fn set<V>(
    cache: &Cache,
    spec: &Spec,
    codec: TypeCodec<V>,
    key: &str,
    tags: &[String],
    value: &V,
) -> Result<(), Error> {
    Writing::begin(&cache.inner, spec, key, tags)
        .await
        .store(codec, value)
        .await
}

/// An `_invalidate` companion, and [`Entry::invalidate`](crate::Entry::invalidate):
/// forgets the entry under `key` (the rendered `prefix:key`).
///
/// # Errors
///
/// As [`Cache::invalidate_tags`].
pub async fn invalidate_entry(cache: &Cache, key: String) -> Result<(), Error> {
    cache
        .inner
        .invalidate(Invalidation {
            keys: vec![key],
            ..Invalidation::default()
        })
        .await
}

/// A write of one entry, from before its value is known to its end: the
/// entry read, the value stored if the entry is unchanged since, or the
/// entry invalidated instead.
pub(crate) struct Writing<'a> {
    inner: &'a Arc<Inner>,
    spec: &'a Spec,
    key: &'a str,
    /// What an L1 entry depends on, taken before anything was read.
    before: Snapshot,
    l2: Option<L2Call<'a>>,
    /// The entry as it was before the value was made (`None` with Redis:
    /// the read failed).
    seen: Option<Seen>,
    /// Until Redis has the value, a caller cancelled at any await (in the
    /// body too: its write may have happened) leaves a key invalidation in
    /// its place.
    unwritten: Owed,
    /// A read-only write-through's invalidation (see
    /// [`read_only`](Self::read_only)): announced with its write, sent only
    /// when that write may have landed without being confirmed.
    announced: Vec<(Arc<Inner>, Invalidation)>,
}

impl<'a> Writing<'a> {
    /// Reads the entry before its value is made.
    pub(crate) async fn begin(
        inner: &'a Arc<Inner>,
        spec: &'a Spec,
        key: &'a str,
        tags: &'a [String],
    ) -> Self {
        // Before anything is read or written: an invalidation of the entry
        // from now on keeps the written value out of L1.
        let before = inner.snapshot(spec.prefix, tags, key);
        let l2 = L2Call::new(inner, spec, key, tags);
        let seen = match &l2 {
            Some(l2) => l2.before_write().await,
            None => None,
        };
        let written = Invalidation {
            sender: inner.id,
            keys: vec![key.to_owned()],
            ..Invalidation::default()
        };
        Self {
            inner,
            spec,
            key,
            before,
            l2,
            seen,
            unwritten: Owed::one(inner, written),
            announced: Vec::new(),
        }
    }

    /// For a body that changes no data (the HTTP layer's refresh runs a
    /// `GET`): cancelled, or refused because the entry changed meanwhile,
    /// it leaves the entry alone instead of invalidating it, so that a
    /// client that closes early, or two refreshes at once, cannot drop a
    /// page everywhere.
    #[cfg(feature = "http")]
    pub(crate) fn read_only(mut self) -> Self {
        self.announced = self.unwritten.disarm();
        self
    }

    /// Nothing was written (the body failed): the entry stays as it is.
    pub(crate) fn abandon(mut self) {
        self.unwritten.disarm();
    }

    /// Nothing to store: the entry is invalidated.
    pub(crate) async fn invalidate(mut self) {
        let mut owed = self.unwritten.disarm();
        owed.append(&mut self.announced);
        send_all(owed).await;
    }

    /// Stores `value` in Redis if the entry is unchanged since it was read,
    /// then in L1; otherwise invalidates the entry (and returns once Redis
    /// has the tombstone, or after one bounded try; it is retried then).
    pub(crate) async fn store<V>(self, codec: TypeCodec<V>, value: &V) -> Result<(), Error> {
        let ttl = self.spec.ttl;
        self.store_fresh(codec, value, ttl).await
    }

    /// As [`store`](Self::store), fresh for `ttl` (at most the entry's):
    /// an HTTP response whose handler said a shorter `max-age`.
    pub(crate) async fn store_fresh<V>(
        mut self,
        codec: TypeCodec<V>,
        value: &V,
        ttl: Duration,
    ) -> Result<(), Error> {
        let (inner, spec, key) = (self.inner, self.spec, self.key);
        let ttl = ttl.min(spec.ttl);
        Counters::bump(&inner.counters.writes);
        let expires_at_ms = expiry(ttl);
        // Stored only if the entry is still as it was before the value was
        // made: another write or an invalidation since may carry newer data.
        let stored = match (&self.l2, self.seen.take()) {
            // A body longer than the horizon: a tombstone it should meet may
            // be gone (see `l2::WRITE_HORIZON`).
            (Some(_), Some(seen)) if seen.at.elapsed() > crate::l2::WRITE_HORIZON => {
                Err(NotStored::TooLong)
            }
            (Some(l2), Some(seen)) => {
                let first = (self.unwritten.first())
                    .or_else(|| self.announced.first().map(|(_, invalidation)| invalidation));
                let message = serde_json::to_vec(&first).unwrap_or_default();
                let write = Write::Announced(seen, message);
                let fresh = (ttl, expires_at_ms);
                l2.write(codec, Some(value), Duration::ZERO, fresh, write)
                    .await
                    .map_err(NotStored::Write)
            }
            // The read before the body failed: nothing is sent.
            (Some(_), None) => Err(NotStored::Unread),
            (None, _) => Ok(()),
        };
        let mut written = self.unwritten.disarm();
        if matches!(stored, Err(NotStored::Write(NotWritten::Failed))) {
            // Sent, and Redis may have taken it: a read-only write
            // invalidates too (not when it was never sent).
            written.append(&mut self.announced);
        }
        if let Err(why) = stored {
            tracing::debug!(
                prefix = spec.prefix,
                key = inner.observer.shown(key),
                "write not stored ({}); the entry is invalidated instead",
                why.reason()
            );
            // A reader after this call never finds the value this write
            // raced with.
            send_all(written).await;
            return Err(Error::NotStored {
                key: key.to_owned(),
                reason: why.reason(),
            });
        }
        // Loads of this key begun before this point can no longer put an
        // older value in L1; the written value goes there unless an
        // invalidation of the entry raced with the write.
        if let Some(generations) = inner.outdate_written_key(key, &self.before) {
            let shared = (codec.share)(value);
            let counters = inner.observer.prefix(spec.prefix);
            let timing = (expires_at_ms, Duration::ZERO);
            if let Some(entry) = l1_entry(spec, &counters, shared, timing, generations) {
                inner.keep_in_l1(key, inner.weighed(entry, spec, codec.measure, None));
            }
        }
        Ok(())
    }
}

/// Why a write did not store its value.
enum NotStored {
    /// The value was made so long after the entry was read that a
    /// tombstone it should meet may be gone.
    TooLong,
    /// The entry could not be read before the value was made.
    Unread,
    Write(NotWritten),
}

impl NotStored {
    fn reason(&self) -> &'static str {
        match self {
            Self::TooLong => "the value was made too long after the entry was read",
            Self::Unread => "Redis was out of reach when the entry was read",
            Self::Write(NotWritten::Changed) => {
                "the entry changed since it was read: another write or an invalidation raced with this one"
            }
            Self::Write(NotWritten::Refused) => {
                "the value does not serialize, or is over max_value_size"
            }
            Self::Write(NotWritten::Failed) => "Redis is out of reach or did not answer in time",
        }
    }
}

/// Invalidations owed to one or more caches, applied and queued when
/// dropped before they were taken: for a caller cancelled before it sent
/// them (a write-through whose value did not reach Redis, an
/// `#[invalidates]` body cut short). The retrier sends them.
struct Owed(Vec<(Arc<Inner>, Invalidation)>);

impl Owed {
    fn one(inner: &Arc<Inner>, invalidation: Invalidation) -> Self {
        Self(vec![(inner.clone(), invalidation)])
    }

    /// The first invalidation owed.
    fn first(&self) -> Option<&Invalidation> {
        self.0.first().map(|(_, invalidation)| invalidation)
    }

    /// The invalidations, now the caller's to send.
    fn disarm(&mut self) -> Vec<(Arc<Inner>, Invalidation)> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        // Each queued, unsent: its drop starts the retrier.
        for (inner, invalidation) in self.disarm() {
            drop(inner.queue(invalidation));
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
/// cancelled during the body, which may have changed the data), and the
/// entries of the `readers` it names (each in its own cache, with the
/// rendered `prefix:…` key). An invalidation Redis cannot take now is
/// applied here at once and retried until it does; it never turns into an
/// error of the function.
///
/// `when = "always"` is [`invalidating_always`]: only there is an error
/// held while the invalidation is sent, so only there must it be `Send`
/// for the future to be.
#[allow(clippy::too_many_arguments)]
pub async fn invalidating<S, R, F>(
    cache: Cache,
    when: When,
    tags: Vec<String>,
    keys: Vec<String>,
    prefixes: Vec<String>,
    readers: Vec<(Cache, String)>,
    body: F,
) -> R
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let owed = per_cache(&cache, listed(tags, keys, prefixes), readers);
    if when == When::Before {
        send_all(owed.clone()).await;
    }
    // A body cut short (the caller cancelled) may have changed the data:
    // invalidate as if it had succeeded.
    let mut owed = Owed(owed);
    // Taken apart at once, and held as the value, not the result: the
    // future is `Send` whenever the function's is.
    let kept = match S::split(body.await) {
        Split::Kept(kept) => kept,
        Split::Failed(result) => {
            owed.disarm();
            return result;
        }
    };
    send_all(owed.disarm()).await;
    kept.rejoin::<S>()
}

/// [`invalidating`] with `when = "always"`: after the body, whatever its
/// outcome.
pub async fn invalidating_always<R, F>(
    cache: Cache,
    tags: Vec<String>,
    keys: Vec<String>,
    prefixes: Vec<String>,
    readers: Vec<(Cache, String)>,
    body: F,
) -> R
where
    F: Future<Output = R>,
{
    let mut owed = Owed(per_cache(&cache, listed(tags, keys, prefixes), readers));
    let result = body.await;
    send_all(owed.disarm()).await;
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

/// One invalidation per cache: what the attribute lists in `cache`, and
/// each reader's key in its own.
fn per_cache(
    cache: &Cache,
    listed: Invalidation,
    readers: Vec<(Cache, String)>,
) -> Vec<(Arc<Inner>, Invalidation)> {
    let mut owed = vec![(cache.inner.clone(), listed)];
    for (reader, key) in readers {
        match owed
            .iter_mut()
            .find(|(inner, _)| Arc::ptr_eq(inner, &reader.inner))
        {
            Some((_, invalidation)) => invalidation.keys.push(key),
            None => owed.push((
                reader.inner,
                Invalidation {
                    keys: vec![key],
                    ..Invalidation::default()
                },
            )),
        }
    }
    owed
}

/// Applies and queues every invalidation before any is sent (a caller
/// cancelled while one is sent leaves the others queued, for the
/// retrier), then sends them together.
async fn send_all(owed: Vec<(Arc<Inner>, Invalidation)>) {
    let (inners, invalidations): (Vec<_>, Vec<_>) = owed.into_iter().unzip();
    let queued: Vec<_> = inners
        .iter()
        .zip(invalidations)
        .map(|(inner, invalidation)| inner.queue(invalidation))
        .collect();
    let sends = queued.into_iter().map(|queuing| async move {
        if let Err(error) = queuing.send().await {
            crate::observe::warn_throttled!(
                %error,
                "invalidation not confirmed by Redis yet: applied here, retried until it is"
            );
        }
    });
    futures_util::future::join_all(sends).await;
}
