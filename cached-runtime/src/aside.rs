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
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Inner};
use crate::envelope::{self, Meta};
use crate::flight::{self, Landed, Role, Shared, Source};
use crate::key::KeyWriter;
use crate::l1::Entry;
use crate::shape::{Outcome, Shape};
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
    /// Clones a value out of L1 or a flight, if it is a `V`.
    pub(crate) unshare: fn(&Shared) -> Option<V>,
    /// Serializes a value into an envelope.
    pub(crate) encode: fn(&Meta, &V) -> Result<Vec<u8>, serde_json::Error>,
    /// Reads an envelope holding a `V`.
    pub(crate) decode: fn(&[u8]) -> Option<(Meta, V)>,
    /// Identifies `V` in envelopes.
    pub(crate) fingerprint: fn() -> u64,
}

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
            unshare: |shared| shared.downcast_ref::<V>().cloned(),
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

/// What one call site asks for; built by the macro.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub(crate) prefix: &'static str,
    pub(crate) ttl: Duration,
}

impl Spec {
    /// `prefix` as in the key; `ttl_ms`: how long a value stays fresh
    /// (checked by the macro to be above zero).
    #[must_use]
    pub const fn new(prefix: &'static str, ttl_ms: u64) -> Self {
        Self {
            prefix,
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    /// How long a loaded value stays fresh.
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Step 1: the L1 fast path. `key` is the rendered `prefix:…` key.
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
    let value = (codec.unshare)(&hit)?;
    Counters::bump(&cache.inner.counters.l1_hits);
    Some(S::from_value(value))
}

/// Step 2: L2, then the body, single-flighted per key. `tags` are the
/// rendered explicit tags.
pub async fn load<S, R, F>(
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
    let leader = loop {
        let slot = match inner.flights.join(&key) {
            Role::Leader(leader) => break leader,
            Role::Waiter(slot) => slot,
        };
        match flight::wait(slot).await {
            Some(Landed::Value(shared, source)) => {
                if let Some(value) = (codec.unshare)(&shared) {
                    count_answer(inner, source);
                    return S::from_value(value);
                }
            }
            Some(Landed::Absent) => {
                if let Some(absent) = S::absent() {
                    Counters::bump(&inner.counters.misses);
                    return absent;
                }
            }
            None => {}
        }
        // The leader failed, or landed a value of another type: the value
        // may be in L1 by now; otherwise lead the next flight.
        if let Some(hit) = l1_get::<S, R>(&cache, &key, codec) {
            return hit;
        }
    };

    // Before anything is read: an invalidation from now on outdates them.
    let epoch = inner.epoch();
    let generations = inner.generations.snapshot(spec.prefix, &tags);
    let l2 = L2Call::new(inner, spec, &key, &tags);
    let seen = match &l2 {
        Some(l2) => match l2.read(codec).await {
            L2Read::Hit(value, fresh_for) => {
                let shared = (codec.share)(&value);
                let ttl = fresh_for.min(spec.ttl);
                inner.keep_in_l1(key, Entry::shared(shared.clone(), ttl, generations), epoch);
                leader.land(Landed::Value(shared, Source::L2));
                count_answer(inner, Source::L2);
                return S::from_value(value);
            }
            L2Read::Miss(seen) => Some(seen),
            L2Read::Unavailable => None,
        },
        None => None,
    };

    Counters::bump(&inner.counters.loads);
    let started = Instant::now();
    let result = body.await;
    let load_time = started.elapsed();
    match S::outcome(&result) {
        Outcome::Value(value) => {
            let shared = (codec.share)(value);
            inner.keep_in_l1(
                key,
                Entry::shared(shared.clone(), spec.ttl, generations),
                epoch,
            );
            leader.land(Landed::Value(shared, Source::Load));
            count_answer(inner, Source::Load);
            // Without the versions read before the load, a write could
            // outlive an invalidation it raced with: skip it.
            if let (Some(l2), Some(seen)) = (l2, seen) {
                l2.write(codec, value, load_time, Write::IfUnchanged(seen))
                    .await;
            }
        }
        Outcome::Absent => {
            leader.land(Landed::Absent);
            Counters::bump(&inner.counters.misses);
        }
        Outcome::Failed => {
            drop(leader);
            Counters::bump(&inner.counters.misses);
            Counters::bump(&inner.counters.errors);
        }
    }
    result
}

fn count_answer(inner: &Inner, source: Source) {
    let counter = match source {
        Source::L2 => &inner.counters.l2_hits,
        Source::Load => &inner.counters.misses,
    };
    Counters::bump(counter);
}

/// What an L2 read found.
pub(crate) enum L2Read<V> {
    /// A valid value, and how long it stays fresh.
    Hit(V, Duration),
    /// No valid value.
    Miss(Seen),
    /// Redis did not answer.
    Unavailable,
}

/// What a miss saw, for the write that follows the load.
pub(crate) struct Seen {
    /// The current versions of the entry's tags.
    versions: Vec<u64>,
    /// The entry as it was (see [`crate::l2::seen`]).
    entry: String,
}

/// How an entry is written.
pub(crate) enum Write {
    /// After a cache-aside load: only if the entry is still as it was seen.
    IfUnchanged(Seen),
    /// A write-through: always, announced to the other instances, with the
    /// tag versions read before the write.
    Announced(Vec<u64>, Vec<u8>),
}

/// One entry's L2 operations: its Redis key and tag version keys.
pub(crate) struct L2Call<'a> {
    inner: &'a Inner,
    l2: &'a crate::l2::L2,
    spec: &'a Spec,
    entry_key: String,
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

    /// Reads the entry and the current versions of its tags: one round trip.
    /// Anything but a fresh value of type `V` whose recorded versions all
    /// match (absent, foreign, corrupt, expired, invalidated) is a miss.
    pub(crate) async fn read<V>(&self, codec: Codec<V>) -> L2Read<V> {
        let read = match self
            .l2
            .read(
                &self.entry_key,
                &self.version_keys,
                version_ttl(self.spec.ttl),
            )
            .await
        {
            Ok(read) => read,
            Err(error) => {
                self.redis_failed(&error, "read");
                return L2Read::Unavailable;
            }
        };
        let miss = |versions, entry: Option<&[u8]>| {
            L2Read::Miss(Seen {
                versions,
                entry: crate::l2::seen(entry),
            })
        };
        let Some(bytes) = read.entry else {
            return miss(read.versions, None);
        };
        let Some((meta, value)) = (codec.decode)(&bytes) else {
            let expected = std::any::type_name::<V>();
            tracing::debug!(
                key = self.entry_key,
                expected,
                "L2 value does not decode; loading"
            );
            return miss(read.versions, Some(&bytes));
        };
        if meta.tag_versions != read.versions {
            return miss(read.versions, Some(&bytes)); // invalidated
        }
        match meta.remaining(SystemTime::now()) {
            Some(fresh_for) => L2Read::Hit(value, fresh_for),
            None => miss(read.versions, Some(&bytes)),
        }
    }

    /// The current versions of the entry's tags, before a write-through.
    pub(crate) async fn versions(&self) -> Option<Vec<u64>> {
        let versions = self
            .l2
            .versions(&self.version_keys, version_ttl(self.spec.ttl))
            .await;
        versions
            .map_err(|error| self.redis_failed(&error, "version read"))
            .ok()
    }

    /// Writes the value with the tag versions read before it was loaded or
    /// written: one round trip.
    pub(crate) async fn write<V>(
        &self,
        codec: Codec<V>,
        value: &V,
        load_time: Duration,
        how: Write,
    ) {
        let versions = match &how {
            Write::IfUnchanged(seen) => seen.versions.clone(),
            Write::Announced(versions, _) => versions.clone(),
        };
        let meta = Meta {
            tag_versions: versions,
            ..Meta::fresh((codec.fingerprint)(), self.spec.ttl, load_time)
        };
        let bytes = match (codec.encode)(&meta, value) {
            Ok(bytes) => bytes,
            Err(error) => {
                let key = &self.entry_key;
                tracing::warn!(%error, key, "value does not serialize; kept in L1 only");
                return;
            }
        };
        let (ttl, version_ttl) = (self.spec.ttl, version_ttl(self.spec.ttl));
        let written = match how {
            Write::IfUnchanged(seen) => self
                .l2
                .write_if_unchanged(
                    &self.entry_key,
                    &seen.entry,
                    &bytes,
                    ttl,
                    &self.version_keys,
                    version_ttl,
                )
                .await
                .map(|stored| {
                    if !stored {
                        tracing::debug!(
                            key = self.entry_key,
                            "entry changed while loading; not overwritten"
                        );
                    }
                }),
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
    let generations = inner.generations.snapshot(spec.prefix, &tags);
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
    inner.keep_in_l1(key, Entry::shared(shared, spec.ttl, generations), epoch);
    if let (Some(l2), Some(versions)) = (l2, versions) {
        let message = serde_json::to_vec(&written).expect("an invalidation serializes");
        l2.write(
            codec,
            value,
            Duration::ZERO,
            Write::Announced(versions, message),
        )
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
