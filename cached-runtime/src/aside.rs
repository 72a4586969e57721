//! Cache-aside: the life of a call of a `#[cache_aside]` function.
//!
//! 1. [`l1_get`]: a typed lookup in L1, inlined into the caller. A hit ends
//!    here: no deserialization, no Redis.
//! 2. [`load`]: join the key's flight. Its leader reads L2 (one round trip);
//!    on a miss it runs the body, then fills L1, hands the value to the
//!    waiters and writes L2 (one round trip). Waiters take the leader's
//!    value; if the leader failed they try again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Inner};
use crate::envelope::{self, Meta};
use crate::flight::{self, Landed, Role, Shared, Source};
use crate::l1::Entry;
use crate::shape::{Outcome, Shape};
use crate::stats::Counters;

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
    share: fn(&V) -> Shared,
    /// Clones a value out of L1 or a flight, if it is a `V`.
    unshare: fn(&Shared) -> Option<V>,
    /// Serializes a value into an envelope.
    encode: fn(&Meta, &V) -> Result<Vec<u8>, serde_json::Error>,
    /// Reads an envelope holding a `V`.
    decode: fn(&[u8]) -> Option<(Meta, V)>,
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
        }
    }
}

impl<V: Cacheable> Default for Codec<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call site of `#[cache_aside]` asks for; built by the macro.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    ttl: Duration,
}

impl Spec {
    /// `ttl_ms`: how long a loaded value stays fresh (checked by the macro to
    /// be above zero).
    #[must_use]
    pub const fn new(ttl_ms: u64) -> Self {
        Self {
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
    let value = (codec.unshare)(&cache.inner.l1.get(key)?)?;
    Counters::bump(&cache.inner.counters.l1_hits);
    Some(S::from_value(value))
}

/// Step 2: L2, then the body, single-flighted per key.
pub async fn load<S, R, F>(
    cache: Cache,
    spec: &'static Spec,
    codec: Codec<S::Value>,
    key: String,
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

    let redis_key = inner
        .l2
        .as_ref()
        .map(|_| format!("{}:{key}", inner.namespace));
    if let Some((value, fresh_for)) = read_l2(inner, redis_key.as_deref(), codec).await {
        let shared = (codec.share)(&value);
        inner
            .l1
            .insert(key, Entry::shared(shared.clone(), fresh_for.min(spec.ttl)));
        leader.land(Landed::Value(shared, Source::L2));
        count_answer(inner, Source::L2);
        return S::from_value(value);
    }

    Counters::bump(&inner.counters.loads);
    let started = Instant::now();
    let result = body.await;
    let load_time = started.elapsed();
    match S::outcome(&result) {
        Outcome::Value(value) => {
            let shared = (codec.share)(value);
            inner
                .l1
                .insert(key, Entry::shared(shared.clone(), spec.ttl));
            leader.land(Landed::Value(shared, Source::Load));
            count_answer(inner, Source::Load);
            if let Some(redis_key) = redis_key {
                let meta = Meta::fresh::<S::Value>(spec.ttl, load_time);
                write_l2(inner, &redis_key, (codec.encode)(&meta, value), spec).await;
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

/// Reads and decodes the L2 entry, with how long it stays fresh; anything
/// but a fresh value of type `T` (absent, foreign, corrupt, expired, Redis
/// down) is `None`.
async fn read_l2<V>(
    inner: &Inner,
    redis_key: Option<&str>,
    codec: Codec<V>,
) -> Option<(V, Duration)> {
    let (l2, redis_key) = (inner.l2.as_ref()?, redis_key?);
    let bytes = match l2.get(redis_key).await {
        Ok(bytes) => bytes?,
        Err(error) => {
            Counters::bump(&inner.counters.redis_errors);
            tracing::debug!(%error, key = redis_key, "L2 read failed; loading");
            return None;
        }
    };
    let Some((meta, value)) = (codec.decode)(&bytes) else {
        let expected = std::any::type_name::<V>();
        tracing::debug!(
            key = redis_key,
            expected,
            "L2 value does not decode; loading"
        );
        return None;
    };
    let fresh_for = meta.remaining(SystemTime::now())?;
    Some((value, fresh_for))
}

async fn write_l2(
    inner: &Inner,
    redis_key: &str,
    encoded: Result<Vec<u8>, serde_json::Error>,
    spec: &Spec,
) {
    let Some(l2) = &inner.l2 else { return };
    let bytes = match encoded {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, key = redis_key, "value does not serialize; kept in L1 only");
            return;
        }
    };
    if let Err(error) = l2.set(redis_key, &bytes, spec.ttl).await {
        Counters::bump(&inner.counters.redis_errors);
        tracing::debug!(%error, key = redis_key, "L2 write failed; value kept in L1");
    }
}
