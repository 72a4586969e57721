//! The L2 envelope: what a value looks like in Redis.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "tc"
//! 2       1     format version (2)
//! 3       1     flags: bit 0 = "nothing" (a cached `None`, no payload)
//! 4       8     type fingerprint (u64 LE): SHA-1 of the value's type name
//! 12      8     load time, Unix ms (u64 LE)
//! 20      4     load duration, µs (u32 LE, saturating): XFetch's delta
//! 24      8     expiry, Unix ms (u64 LE): end of the fresh period
//! 32      1     tag count n
//! 33      8·n   tag versions (u64 LE each)
//! 33+8n   ...   payload (serde_json)
//! ```
//!
//! The Redis key outlives the fresh period by the function's stale and
//! fail-safe windows; the expiry field tells the reader which period it is
//! in.
//!
//! Anything that does not decode — another magic, another version, another
//! type, a short buffer, a payload serde rejects — is reported as `None`, a
//! miss, and the caller overwrites it with a fresh load.

use std::any::{TypeId, type_name};
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

const MAGIC: &[u8; 2] = b"tc";
/// Bumped whenever the layout above changes: old entries become misses.
const FORMAT_VERSION: u8 = 2;
const HEADER_LEN: usize = 33;
const ABSENT: u8 = 1;

/// Identifies the Rust type a payload was written from, so that a reader of
/// another type (another function sharing a prefix, a renamed struct, another
/// generic instance) sees a miss instead of a wrong value.
///
/// It is the SHA-1 of [`std::any::type_name`]: the fully qualified path with
/// generic arguments, stable across builds of one compiler. A compiler upgrade
/// that prints a type differently only costs a round of misses.
///
/// Computed once per type and process (a SHA-1 on every decode was a tenth
/// of an L2 hit's client time).
pub(crate) fn fingerprint<T: ?Sized + 'static>() -> u64 {
    static KNOWN: LazyLock<RwLock<HashMap<TypeId, u64>>> = LazyLock::new(RwLock::default);
    let id = TypeId::of::<T>();
    let known = KNOWN
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .copied();
    known.unwrap_or_else(|| {
        let fingerprint = stable_hash(type_name::<T>().as_bytes());
        KNOWN
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, fingerprint);
        fingerprint
    })
}

/// The first 8 bytes of the SHA-1 of `bytes`: the same on every build and
/// machine (unlike `std::hash`).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
    u64::from_le_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// The metadata stored beside a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) fingerprint: u64,
    pub(crate) loaded_at_ms: u64,
    pub(crate) load_micros: u32,
    pub(crate) expires_at_ms: u64,
    pub(crate) tag_versions: Vec<u64>,
    /// A cached "nothing" (`cache_none`): no payload.
    pub(crate) absent: bool,
}

impl Meta {
    /// Metadata for a value (of the type `fingerprint` identifies) loaded
    /// just now.
    pub(crate) fn fresh(fingerprint: u64, ttl: Duration, load_time: Duration) -> Self {
        let now = unix_ms(SystemTime::now());
        Self {
            fingerprint,
            loaded_at_ms: now,
            load_micros: u32::try_from(load_time.as_micros()).unwrap_or(u32::MAX),
            expires_at_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            tag_versions: Vec::new(),
            absent: false,
        }
    }

    /// How long a load took, as recorded.
    pub(crate) fn load_time(&self) -> Duration {
        Duration::from_micros(u64::from(self.load_micros))
    }

    /// How long ago the fresh period ended (zero while fresh).
    pub(crate) fn past_expiry(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.expires_at_ms))
    }

    /// How long the value stays fresh from `now`, if it still is.
    pub(crate) fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let now = unix_ms(now);
        (self.expires_at_ms > now).then(|| Duration::from_millis(self.expires_at_ms - now))
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The most versions an envelope records (a one-byte count): the
/// namespace's, the prefix's and up to 253 tags' (the macros refuse more).
pub(crate) const MAX_VERSIONS: usize = u8::MAX as usize;

/// Serializes `value` (`None`: a cached "nothing") with its metadata.
///
/// # Errors
///
/// When serde_json fails on the value, or `meta` holds more than
/// [`MAX_VERSIONS`] versions (the caller then keeps the value out of Redis).
pub(crate) fn encode<T: Serialize>(
    meta: &Meta,
    value: Option<&T>,
) -> Result<Vec<u8>, serde_json::Error> {
    let Ok(tags) = u8::try_from(meta.tag_versions.len()) else {
        return Err(serde::ser::Error::custom(format_args!(
            "an entry records at most {MAX_VERSIONS} versions (its namespace, its prefix and up to {} tags), not {}",
            MAX_VERSIONS - 2,
            meta.tag_versions.len()
        )));
    };
    let mut out = Vec::with_capacity(HEADER_LEN + 8 * meta.tag_versions.len() + 128);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(if value.is_none() { ABSENT } else { 0 });
    out.extend_from_slice(&meta.fingerprint.to_le_bytes());
    out.extend_from_slice(&meta.loaded_at_ms.to_le_bytes());
    out.extend_from_slice(&meta.load_micros.to_le_bytes());
    out.extend_from_slice(&meta.expires_at_ms.to_le_bytes());
    out.push(tags);
    for version in &meta.tag_versions {
        out.extend_from_slice(&version.to_le_bytes());
    }
    if let Some(value) = value {
        serde_json::to_writer(&mut out, value)?;
    }
    Ok(out)
}

/// Reads the metadata of an envelope; `None` if it is not one of ours in the
/// current format.
pub(crate) fn decode_meta(bytes: &[u8]) -> Option<(Meta, &[u8])> {
    let mut r = Reader(bytes);
    if r.take(2)? != MAGIC || r.take(1)?[0] != FORMAT_VERSION {
        return None;
    }
    let flags = r.take(1)?[0];
    if flags & !ABSENT != 0 {
        return None;
    }
    let fingerprint = r.u64()?;
    let loaded_at_ms = r.u64()?;
    let load_micros = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let expires_at_ms = r.u64()?;
    let tags = r.take(1)?[0];
    let tag_versions = (0..tags).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
    Some((
        Meta {
            fingerprint,
            loaded_at_ms,
            load_micros,
            expires_at_ms,
            tag_versions,
            absent: flags & ABSENT != 0,
        },
        r.0,
    ))
}

/// Decodes an envelope holding a `T` (`Some`) or a cached "nothing" of `T`
/// (`None`); `None` for anything else.
pub(crate) fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Option<(Meta, Option<T>)> {
    let (meta, payload) = decode_meta(bytes)?;
    if meta.fingerprint != fingerprint::<T>() {
        return None;
    }
    if meta.absent {
        return payload.is_empty().then_some((meta, None));
    }
    let value = serde_json::from_slice(payload).ok()?;
    Some((meta, Some(value)))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct User {
        id: u64,
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Other {
        id: u64,
        name: String,
    }

    fn user() -> User {
        User {
            id: 7,
            name: "Ada".into(),
        }
    }

    #[test]
    fn round_trips() {
        let mut meta = Meta::fresh(
            fingerprint::<User>(),
            Duration::from_secs(60),
            Duration::from_millis(3),
        );
        meta.tag_versions = vec![1, u64::MAX];
        let bytes = encode(&meta, Some(&user())).unwrap();
        let (read, value) = decode::<User>(&bytes).unwrap();
        assert_eq!(read, meta);
        assert_eq!(value, Some(user()));
        let nothing = encode::<User>(&meta, None).unwrap();
        let (read, value) = decode::<User>(&nothing).unwrap();
        assert!(read.absent && value.is_none());
        assert!(
            decode::<Other>(&nothing).is_none(),
            "another type's nothing"
        );
        assert_eq!(read.load_micros, 3000);
        assert!(read.remaining(SystemTime::now()).unwrap() > Duration::from_secs(59));
    }

    #[test]
    fn another_type_with_the_same_shape_is_a_miss() {
        let meta = Meta::fresh(
            fingerprint::<User>(),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        let bytes = encode(&meta, Some(&user())).unwrap();
        assert!(decode::<Other>(&bytes).is_none());
        assert_ne!(fingerprint::<User>(), fingerprint::<Other>());
        assert_ne!(fingerprint::<Vec<u8>>(), fingerprint::<Vec<i8>>());
    }

    #[test]
    fn garbage_never_panics() {
        let meta = Meta::fresh(
            fingerprint::<User>(),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        let good = encode(&meta, Some(&user())).unwrap();
        for len in 0..good.len() {
            assert!(
                decode::<User>(&good[..len]).is_none(),
                "prefix of {len} bytes"
            );
        }
        let mut old = good.clone();
        old[2] = 1;
        assert!(decode::<User>(&old).is_none(), "older format version");
        let mut flagged = good.clone();
        flagged[3] = 0x80;
        assert!(decode::<User>(&flagged).is_none(), "unknown flags");
        for bytes in [&b""[..], b"{\"id\":7}", b"tc\x01", &[0xff; 64]] {
            assert!(decode::<User>(bytes).is_none());
        }
        let mut tags = good;
        tags[32] = 200; // claims 200 tag versions that are not there
        assert!(decode::<User>(&tags).is_none());
    }

    #[test]
    fn too_many_versions_is_an_error_not_a_panic() {
        let mut meta = Meta::fresh(
            fingerprint::<User>(),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        meta.tag_versions = (0..MAX_VERSIONS as u64).collect();
        let bytes = encode(&meta, Some(&user())).unwrap();
        let (read, _) = decode::<User>(&bytes).unwrap();
        assert_eq!(read.tag_versions.len(), MAX_VERSIONS);
        meta.tag_versions.push(0);
        let error = encode(&meta, Some(&user())).unwrap_err();
        assert!(
            error.to_string().contains("at most 255 versions"),
            "{error}"
        );
        assert!(encode::<User>(&meta, None).is_err(), "a cached nothing too");
    }

    #[test]
    fn fingerprints_are_stable() {
        // A change here turns every stored entry into a miss: do it knowingly.
        assert_eq!(fingerprint::<u64>(), 0x3624_faaf_0c00_58ca);
    }
}
