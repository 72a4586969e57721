//! Cache-aside: the life of a call of a `#[cache_aside]` function.
//!
//! 1. [`l1_get`]: a typed lookup in L1, inlined into the caller. A hit ends
//!    here: no deserialization, no Redis.
//! 2. [`load`]: join the key's flight. Its leader reads L2 (one round trip);
//!    on a miss it runs the body, then fills L1, hands the value to the
//!    waiters and writes L2 (one round trip). Waiters take the leader's
//!    value; if the leader failed they try again.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Inner};
use crate::envelope::{self, Meta};
use crate::flight::{self, Landed, Role, Source};
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
pub fn l1_get<S, R>(cache: &Cache, key: &str) -> Option<R>
where
    S: Shape<R>,
    S::Value: Clone + 'static,
{
    let value = cache.inner.l1.get::<S::Value>(key)?;
    Counters::bump(&cache.inner.counters.l1_hits);
    Some(S::from_value(value))
}

/// Step 2: L2, then the body, single-flighted per key.
pub async fn load<S, R, F>(cache: Cache, spec: &'static Spec, key: String, body: F) -> R
where
    S: Shape<R>,
    S::Value: Cacheable,
    F: Future<Output = R>,
{
    let inner = &*cache.inner;
    let leader = loop {
        let slot = match inner.flights.join(&key) {
            Role::Leader(leader) => break leader,
            Role::Waiter(slot) => slot,
        };
        match flight::wait(slot).await {
            Some(Landed::Value(value, source)) => {
                if let Some(value) = value.downcast_ref::<S::Value>() {
                    count_answer(inner, source);
                    return S::from_value(value.clone());
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
        if let Some(hit) = l1_get::<S, R>(&cache, &key) {
            return hit;
        }
    };

    let redis_key = inner
        .l2
        .as_ref()
        .map(|_| format!("{}:{key}", inner.namespace));
    if let Some((value, fresh_for)) = read_l2::<S::Value>(inner, redis_key.as_deref()).await {
        let shared: Arc<dyn Any + Send + Sync> = Arc::new(value.clone());
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
            let shared: Arc<dyn Any + Send + Sync> = Arc::new(value.clone());
            inner
                .l1
                .insert(key, Entry::shared(shared.clone(), spec.ttl));
            leader.land(Landed::Value(shared, Source::Load));
            count_answer(inner, Source::Load);
            if let Some(redis_key) = redis_key {
                write_l2(inner, &redis_key, value, spec, load_time).await;
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
async fn read_l2<T: Cacheable>(inner: &Inner, redis_key: Option<&str>) -> Option<(T, Duration)> {
    let (l2, redis_key) = (inner.l2.as_ref()?, redis_key?);
    let bytes = match l2.get(redis_key).await {
        Ok(bytes) => bytes?,
        Err(error) => {
            Counters::bump(&inner.counters.redis_errors);
            tracing::debug!(%error, key = redis_key, "L2 read failed; loading");
            return None;
        }
    };
    let Some((meta, value)) = envelope::decode::<T>(&bytes) else {
        tracing::debug!(
            key = redis_key,
            "L2 value does not decode as {}; loading",
            std::any::type_name::<T>()
        );
        return None;
    };
    let fresh_for = meta.remaining(SystemTime::now())?;
    Some((value, fresh_for))
}

async fn write_l2<T: Cacheable>(
    inner: &Inner,
    redis_key: &str,
    value: &T,
    spec: &Spec,
    load_time: Duration,
) {
    let Some(l2) = &inner.l2 else { return };
    let meta = Meta::fresh::<T>(spec.ttl, load_time);
    let bytes = match envelope::encode(&meta, value) {
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
