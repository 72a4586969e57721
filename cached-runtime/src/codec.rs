//! What the cache does with a function's value type: wrap it for L1 and
//! the flight's waiters, turn it back into the function's return value,
//! and encode it for Redis. Built where `V: Cacheable` is checked, so the
//! rest of the crate needs no bound on `V`.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, EncodeError, Framing, Meta, Undecoded};
use crate::flight::Shared;
use crate::format::Codec;
use crate::l1::Absent;
use crate::shape::{Kept, Shape};

/// What a cached value must be: stored typed in L1, serialized in L2, shared
/// between tasks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "the cached value is `{Self}`",
    note = "a cached value must implement `Serialize`, `DeserializeOwned`, `Clone`, `Send` and `Sync`, and own its data (`'static`): for a type of your own, `#[derive(Clone, serde::Serialize, serde::Deserialize)]`; to share a large value instead of cloning it, return `Arc<T>`: a function's `Arc<T>` is cached as its `T`, and an `Arc<str>`, an `Arc<[T]>` or a programmatic entry's `Arc<T>` needs serde's `rc` feature (`serde = {{ version = \"1\", features = [\"rc\"] }}`); a type of another crate may have a `serde` feature"
)]
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Cacheable for T {}

/// Everything the cache does with a value, as plain function pointers built
/// where `V: Cacheable` is checked. The cache paths take a `TypeCodec` instead of
/// the bound, so a type that cannot be cached is reported once, at the
/// return type, not again at every generated call.
pub struct TypeCodec<V> {
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
    pub(crate) encode: Encode<V>,
    /// Reads an envelope holding a `V` or a cached "nothing" of `V`.
    pub(crate) decode: fn(&[u8], &Framing<'_>) -> Result<Decoded<V>, Undecoded>,
    /// Identifies `V` in envelopes.
    pub(crate) fingerprint: fn() -> u64,
    /// The serialized size of a shared `V` in a codec (JSON counted
    /// without being written): what an L1 byte budget weighs a loaded
    /// value by; 0 for another type, `None` when it does not serialize.
    pub(crate) measure: Measure,
    /// How long a loaded value says it stays fresh, when it says so (an
    /// HTTP response's `max-age`): at most the entry's TTL. `None` for
    /// every type but the HTTP layer's.
    pub(crate) fresh_for: fn(&V) -> Option<std::time::Duration>,
}

/// The serialized size of a shared value in a codec: see
/// [`TypeCodec::measure`].
pub(crate) type Measure = fn(&Shared, Codec) -> Option<usize>;

/// [`envelope::encode`], in JSON instead of postcard for a value postcard
/// would not read back as itself.
///
/// postcard is not self-describing: a value that skips a field
/// (`#[serde(skip_serializing_if)]`) shifts
/// the bytes after it, which may read back as another value of the same
/// type; one whose `Deserialize` needs `deserialize_any` (an untagged
/// enum, `#[serde(flatten)]`, `serde_json::Value`) does not read back at
/// all, and would be a miss on every call. So each value written as
/// postcard is checked — no field skipped, and its bytes read back —
/// and written in JSON otherwise, with a warning. (Any reader takes
/// either.) The check is on the write path only: a load or a write.
pub(crate) fn encode<T: Serialize + DeserializeOwned + 'static>(
    meta: &Meta,
    value: Option<&T>,
    how: &Framing<'_>,
) -> Result<Vec<u8>, EncodeError> {
    #[cfg(feature = "postcard")]
    if how.format.codec == Codec::Postcard
        && let Some(value) = value
        && !postcard_reads_back(value)
    {
        let type_name = std::any::type_name::<T>();
        crate::observe::warn_throttled!(
            type_name,
            "postcard would not read this value back as itself (a skipped field, an untagged enum, #[serde(flatten)], serde_json::Value?); written in JSON"
        );
        let mut json = *how;
        json.format.codec = Codec::Json;
        return envelope::encode(meta, Some(value), &json);
    }
    envelope::encode(meta, value, how)
}

/// Whether postcard reads `value` back as itself, as far as can be told
/// without `PartialEq`: no field is skipped, and its bytes decode.
#[cfg(feature = "postcard")]
fn postcard_reads_back<T: Serialize + DeserializeOwned + 'static>(value: &T) -> bool {
    if crate::skips::skips_a_field(value) {
        return false;
    }
    let mut bytes = Vec::new();
    Codec::Postcard.write(value, &mut bytes).is_ok()
        && crate::format::read::<T>(Codec::Postcard.id(), &bytes).is_some()
}

/// The size of `value` serialized by `codec`.
fn measured<T: Serialize + 'static>(shared: &Shared, codec: Codec) -> Option<usize> {
    let Some(value) = shared.downcast_ref::<T>() else {
        return Some(0);
    };
    match codec {
        Codec::Json => json_len(value),
        #[allow(unreachable_patterns)] // only JSON without the codec features
        _ => {
            let mut out = Vec::new();
            // As `encode`: a value its codec cannot write goes in JSON.
            match codec.write(value, &mut out) {
                Ok(()) => Some(out.len()),
                Err(_) => json_len(value),
            }
        }
    }
}

/// The length of `value` as JSON, counted without writing it anywhere.
fn json_len<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).ok()?;
    Some(count.0)
}

/// Serializes a value (`None`: a cached "nothing") into an envelope.
pub(crate) type Encode<V> = fn(&Meta, Option<&V>, &Framing<'_>) -> Result<Vec<u8>, EncodeError>;

/// An envelope's metadata, value (`None`: a cached "nothing") and
/// serialized size.
pub(crate) type Decoded<V> = (Meta, Option<V>, usize);

impl<V> Clone for TypeCodec<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for TypeCodec<V> {}

impl<V: Cacheable> TypeCodec<V> {
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
            encode: encode::<V>,
            decode: envelope::decode::<V>,
            fingerprint: envelope::fingerprint::<V>,
            measure: measured::<V>,
            fresh_for: |_| None,
        }
    }
}

/// What the value in a cached `Arc<T>` must be: as [`Cacheable`], without
/// `Clone` (a hit clones the `Arc`, not the value).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached in an `Arc`",
    label = "the cached value is an `Arc` of `{Self}`",
    note = "a value in a cached `Arc` must implement `Serialize`, `DeserializeOwned`, `Send` and `Sync`, and own its data (`'static`): for a type of your own, `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait CacheableShared: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> CacheableShared for T {}

impl<T: CacheableShared> TypeCodec<Arc<T>> {
    /// The codec of an `Arc<T>`, without serde's `rc` feature: L1 and the
    /// flights hold the `T` itself in its `Arc`, so a hit is a reference
    /// count increment, never a deep clone; Redis holds `T`, so a function
    /// returning `T` and one returning `Arc<T>` share their entries.
    #[must_use]
    pub const fn arc() -> Self {
        Self {
            share: |value| value.clone(),
            own: |value| value,
            unshare: |shared| shared.clone().downcast::<T>().ok(),
            take: |shared| shared.downcast::<T>().ok(),
            encode: |meta, value, how| encode::<T>(meta, value.map(|value| &**value), how),
            decode: |bytes, how| {
                let (meta, value, size) = envelope::decode::<T>(bytes, how)?;
                Ok((meta, value.map(Arc::new), size))
            },
            fingerprint: envelope::fingerprint::<T>,
            measure: measured::<T>,
            fresh_for: |_| None,
        }
    }
}

impl<V: Cacheable> Default for TypeCodec<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A cached value (or cached "nothing") as the function's return value;
/// `None` for a value of another type. [`kept`] then `rejoin`, written
/// out: it is the L1 hit's path.
#[inline]
pub(crate) fn answer<S: Shape<R>, R>(codec: TypeCodec<S::Value>, shared: &Shared) -> Option<R> {
    match (codec.unshare)(shared) {
        Some(value) => Some(S::from_value(value)),
        None if shared.is::<Absent>() => S::absent().map(|absent| absent()),
        None => None,
    }
}

/// What [`answer`] would make of `shared`, kept apart for an answer later:
/// not yet the function's return value, which need not be `Send`.
#[inline]
pub(crate) fn kept<S: Shape<R>, R>(
    codec: TypeCodec<S::Value>,
    shared: &Shared,
) -> Option<Kept<S::Value, R>> {
    match (codec.unshare)(shared) {
        Some(value) => Some(Kept::Value(value)),
        None if shared.is::<Absent>() => S::absent().map(Kept::Absent),
        None => None,
    }
}

/// As [`answer`], for the last holder of `shared` but maybe L1 and the
/// flight's waiters: without them, the value is moved out, not cloned.
pub(crate) fn answer_owned<S: Shape<R>, R>(
    codec: TypeCodec<S::Value>,
    shared: Shared,
) -> Option<R> {
    if shared.is::<Absent>() {
        return S::absent().map(|absent| absent());
    }
    (codec.take)(shared).map(S::from_value)
}

/// The codec a function's companions use (`get_user_peek`, …): the real
/// one when the value type is [`Cacheable`], which the function itself
/// requires, else an inert codec, by autoref specialization:
/// `(&CodecProbe::<V>::new()).codec()`. So a value type that cannot be
/// cached is reported once, by the function, not again by each companion
/// (whose errors rustc would not merge with the function's); the inert
/// codec is never used by a program that compiles.
pub struct CodecProbe<V>(PhantomData<fn() -> V>);

impl<V> CodecProbe<V> {
    /// The probe.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<V> Default for CodecProbe<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe's answer for a cacheable value: its codec.
pub trait ProbeCacheable<V> {
    /// The codec.
    fn codec(&self) -> TypeCodec<V>;
}

impl<V: Cacheable> ProbeCacheable<V> for CodecProbe<V> {
    fn codec(&self) -> TypeCodec<V> {
        TypeCodec::new()
    }
}

/// The probe's answer for any other value: an inert codec.
pub trait ProbeUncacheable<V> {
    /// The codec.
    fn codec(&self) -> TypeCodec<V>;
}

impl<V> ProbeUncacheable<V> for &CodecProbe<V> {
    fn codec(&self) -> TypeCodec<V> {
        TypeCodec::inert()
    }
}

impl<V> TypeCodec<V> {
    /// A codec that stores nothing and finds nothing, for a type that
    /// cannot be cached (see [`CodecProbe`]).
    const fn inert() -> Self {
        Self {
            share: |_| Arc::new(Absent),
            own: |_| Arc::new(Absent),
            unshare: |_| None,
            take: |_| None,
            encode: |_, _, _| Err(EncodeError::Serialize("this type cannot be cached".into())),
            decode: |_, _| Err(Undecoded::Foreign),
            fingerprint: || 0,
            measure: |_, _| Some(0),
            fresh_for: |_| None,
        }
    }
}
