//! The L2 envelope: what a value looks like in Redis.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "tc"
//! 2       1     format version (2)
//! 3       1     flags: bit 0     "nothing" (a cached `None`, no value)
//!                      bits 1-2  codec: 0 serde_json, 1 postcard, 2 MessagePack
//!                      bits 3-4  compression: 0 none, 1 LZ4, 2 zstd
//!                      bit 5     sealed (encrypted)
//!                      bits 6-7  zero
//! 4       8     type fingerprint (u64 LE): SHA-1 of the value's type name
//! 12      8     load time, Unix ms (u64 LE)
//! 20      4     load duration, µs (u32 LE, saturating): XFetch's delta
//! 24      8     expiry, Unix ms (u64 LE): end of the fresh period
//! 32      1     tag count n
//! 33      8·n   tag versions (u64 LE each)
//! sealed only:
//! 33+8n   1     key id
//! 34+8n   24    nonce
//! then          payload: serialized, then compressed, then encrypted (each
//!               if its flag says so); a sealed "nothing" seals no bytes
//! ```
//!
//! The codec, compression and seal bits were added without a new format
//! version: an envelope with them all zero is byte for byte what the
//! previous release wrote and reads, and that release treats any other
//! flag as a miss. So a rolling deploy keeps its hits both ways for
//! serde_json values, and a reader of this release decodes whatever codec
//! and compression compiled into it wrote.
//!
//! The Redis key outlives the fresh period by the function's stale and
//! fail-safe windows; the expiry field tells the reader which period it is
//! in.
//!
//! Anything that does not decode — another magic, another version, another
//! type, unknown flags, a codec or compression not compiled in, a short
//! buffer, a payload the codec rejects, a seal that does not open — is a
//! miss, and the caller overwrites it with a fresh load.

use std::any::{TypeId, type_name};
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypt::{KeyRing, NONCE_LEN};
use crate::format::{self, Format};

const MAGIC: &[u8; 2] = b"tc";
/// Bumped whenever the layout above changes incompatibly: old entries
/// become misses.
const FORMAT_VERSION: u8 = 2;
const HEADER_LEN: usize = 33;
const ABSENT: u8 = 1;
const CODEC_SHIFT: u8 = 1;
const COMPRESSION_SHIFT: u8 = 3;
const TWO_BITS: u8 = 0b11;
const SEALED: u8 = 1 << 5;
/// Flags no release writes: an envelope with one is not ours to read.
const UNKNOWN_FLAGS: u8 = 0b1100_0000;

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

/// How one entry is written and read: its format, and what sealing and
/// decompression need.
#[derive(Clone, Copy)]
pub(crate) struct Framing<'a> {
    /// Written in it; read in any codec and compression compiled in, but
    /// sealed only when `format.encrypt` (a plaintext envelope, another
    /// release's or planted, is then refused).
    pub(crate) format: Format,
    /// The cache's keys, if it has any.
    pub(crate) keys: Option<&'a KeyRing>,
    /// The entry's Redis key: a sealed value opens only under the key it
    /// was written to.
    pub(crate) redis_key: &'a [u8],
    /// The largest serialized payload (before compression) written, and
    /// decoded (after decompression).
    pub(crate) max_len: usize,
}

/// Why a value was not encoded: it is then kept out of Redis.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The codec failed on it.
    #[error("it does not serialize: {0}")]
    Serialize(String),
    /// Its serialized payload is larger than `max_value_size`.
    #[error("its serialized size, {0} bytes, is over max_value_size")]
    Oversized(usize),
    /// The function encrypts its values and the cache has no keys.
    #[error(
        "the function encrypts its values and the cache has no keys (CacheBuilder::encryption_keys)"
    )]
    NoKeys,
    /// Sealing failed.
    #[error("it could not be encrypted: {0}")]
    Seal(&'static str),
    /// More versions than an envelope records.
    #[error(
        "an entry records at most {MAX_VERSIONS} versions (its namespace, its prefix and up to 253 tags), not {0}"
    )]
    TooManyVersions(usize),
}

/// Why an envelope was not decoded: a miss either way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Undecoded {
    /// Not ours, another type's, corrupt, or of a codec or compression not
    /// compiled in.
    Foreign,
    /// Sealed under a key id the ring does not list, a wrong key, or
    /// tampered with; or plaintext where the function encrypts.
    Undecryptable,
}

/// Serializes `value` (`None`: a cached "nothing") with its metadata, in
/// `how`'s format.
pub(crate) fn encode<T: Serialize + ?Sized>(
    meta: &Meta,
    value: Option<&T>,
    how: &Framing<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let Ok(tags) = u8::try_from(meta.tag_versions.len()) else {
        return Err(EncodeError::TooManyVersions(meta.tag_versions.len()));
    };
    let keys = match (how.format.encrypt, how.keys) {
        (false, _) => None,
        (true, Some(keys)) => Some(keys),
        (true, None) => return Err(EncodeError::NoKeys),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + 8 * meta.tag_versions.len() + 128);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(0); // the flags, once known
    out.extend_from_slice(&meta.fingerprint.to_le_bytes());
    out.extend_from_slice(&meta.loaded_at_ms.to_le_bytes());
    out.extend_from_slice(&meta.load_micros.to_le_bytes());
    out.extend_from_slice(&meta.expires_at_ms.to_le_bytes());
    out.push(tags);
    for version in &meta.tag_versions {
        out.extend_from_slice(&version.to_le_bytes());
    }
    let header_end = out.len();
    let mut flags = 0;
    match value {
        None => flags |= ABSENT,
        Some(value) => {
            let codec = how.format.codec;
            flags |= codec.id() << CODEC_SHIFT;
            codec
                .write(value, &mut out)
                .map_err(EncodeError::Serialize)?;
            let len = out.len() - header_end;
            if len > how.max_len {
                return Err(EncodeError::Oversized(len));
            }
            let compression = how.format.compression;
            if len >= how.format.compress_above
                && let Some(compressed) = compression.compress(&out[header_end..])
                && compressed.len() < len
            {
                out.truncate(header_end);
                out.extend_from_slice(&compressed);
                flags |= compression.id() << COMPRESSION_SHIFT;
            }
        }
    }
    if keys.is_some() {
        flags |= SEALED;
    }
    out[3] = flags;
    if let Some(keys) = keys {
        let plaintext = out.split_off(header_end);
        keys.seal(how.redis_key, &mut out, plaintext)
            .map_err(EncodeError::Seal)?;
    }
    Ok(out)
}

/// An envelope's parts, as [`decode_meta`] reads them.
pub(crate) struct Parts<'a> {
    pub(crate) meta: Meta,
    flags: u8,
    /// Every byte before the payload (the key id and nonce included).
    header: &'a [u8],
    /// The key id and nonce, if sealed.
    seal: Option<(u8, &'a [u8; NONCE_LEN])>,
    payload: &'a [u8],
}

/// Reads the metadata of an envelope; `None` if it is not one of ours in
/// the current format.
pub(crate) fn decode_meta(bytes: &[u8]) -> Option<Parts<'_>> {
    let mut r = Reader(bytes);
    if r.take(2)? != MAGIC || r.take(1)?[0] != FORMAT_VERSION {
        return None;
    }
    let flags = r.take(1)?[0];
    if flags & UNKNOWN_FLAGS != 0 {
        return None;
    }
    let fingerprint = r.u64()?;
    let loaded_at_ms = r.u64()?;
    let load_micros = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let expires_at_ms = r.u64()?;
    let tags = r.take(1)?[0];
    let tag_versions = (0..tags).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
    let seal = if flags & SEALED != 0 {
        let key_id = r.take(1)?[0];
        let nonce: &[u8; NONCE_LEN] = r.take(NONCE_LEN)?.try_into().ok()?;
        Some((key_id, nonce))
    } else {
        None
    };
    let header = &bytes[..bytes.len() - r.0.len()];
    Some(Parts {
        meta: Meta {
            fingerprint,
            loaded_at_ms,
            load_micros,
            expires_at_ms,
            tag_versions,
            absent: flags & ABSENT != 0,
        },
        flags,
        header,
        seal,
        payload: r.0,
    })
}

/// Decodes an envelope holding a `T` (`Some`) or a cached "nothing" of `T`
/// (`None`), with the size of its serialized payload (uncompressed,
/// decrypted); `Err` for anything else.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    how: &Framing<'_>,
) -> Result<(Meta, Option<T>, usize), Undecoded> {
    let parts = decode_meta(bytes).ok_or(Undecoded::Foreign)?;
    if parts.meta.fingerprint != fingerprint::<T>() {
        return Err(Undecoded::Foreign);
    }
    let opened;
    let mut payload = parts.payload;
    match parts.seal {
        Some((key_id, nonce)) => {
            let keys = how.keys.ok_or(Undecoded::Undecryptable)?;
            opened = keys
                .open(how.redis_key, parts.header, key_id, nonce, payload)
                .ok_or(Undecoded::Undecryptable)?;
            payload = &opened;
        }
        None if how.format.encrypt => return Err(Undecoded::Undecryptable),
        None => {}
    }
    let codec = (parts.flags >> CODEC_SHIFT) & TWO_BITS;
    let compression = (parts.flags >> COMPRESSION_SHIFT) & TWO_BITS;
    if parts.meta.absent {
        return if payload.is_empty() && codec == 0 && compression == 0 {
            Ok((parts.meta, None, 0))
        } else {
            Err(Undecoded::Foreign)
        };
    }
    let inflated;
    if compression != 0 {
        inflated =
            format::decompress(compression, payload, how.max_len).ok_or(Undecoded::Foreign)?;
        payload = &inflated;
    }
    let value = format::read(codec, payload).ok_or(Undecoded::Foreign)?;
    Ok((parts.meta, Some(value), payload.len()))
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

    const PLAIN: Framing<'static> = Framing {
        format: Format {
            codec: crate::format::Codec::Json,
            compression: crate::format::Compression::None,
            compress_above: 1024,
            encrypt: false,
        },
        keys: None,
        redis_key: b"ns:user:7",
        max_len: 1 << 20,
    };

    fn enc<T: Serialize>(meta: &Meta, value: Option<&T>) -> Result<Vec<u8>, EncodeError> {
        encode(meta, value, &PLAIN)
    }

    fn dec<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Option<(Meta, Option<T>)> {
        decode(bytes, &PLAIN)
            .ok()
            .map(|(meta, value, _)| (meta, value))
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
        let bytes = enc(&meta, Some(&user())).unwrap();
        let (read, value) = dec::<User>(&bytes).unwrap();
        assert_eq!(read, meta);
        assert_eq!(value, Some(user()));
        let nothing = enc::<User>(&meta, None).unwrap();
        let (read, value) = dec::<User>(&nothing).unwrap();
        assert!(read.absent && value.is_none());
        assert!(dec::<Other>(&nothing).is_none(), "another type's nothing");
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
        let bytes = enc(&meta, Some(&user())).unwrap();
        assert!(dec::<Other>(&bytes).is_none());
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
        let good = enc(&meta, Some(&user())).unwrap();
        for len in 0..good.len() {
            assert!(dec::<User>(&good[..len]).is_none(), "prefix of {len} bytes");
        }
        let mut old = good.clone();
        old[2] = 1;
        assert!(dec::<User>(&old).is_none(), "older format version");
        let mut flagged = good.clone();
        flagged[3] = 0x80;
        assert!(dec::<User>(&flagged).is_none(), "unknown flags");
        flagged[3] = 3 << CODEC_SHIFT;
        assert!(dec::<User>(&flagged).is_none(), "an unknown codec");
        flagged[3] = 3 << COMPRESSION_SHIFT;
        assert!(dec::<User>(&flagged).is_none(), "an unknown compression");
        flagged[3] = SEALED;
        assert!(dec::<User>(&flagged).is_none(), "sealed, without keys");
        for bytes in [&b""[..], b"{\"id\":7}", b"tc\x01", &[0xff; 64]] {
            assert!(dec::<User>(bytes).is_none());
        }
        let mut tags = good;
        tags[32] = 200; // claims 200 tag versions that are not there
        assert!(dec::<User>(&tags).is_none());
    }

    #[test]
    fn too_many_versions_is_an_error_not_a_panic() {
        let mut meta = Meta::fresh(
            fingerprint::<User>(),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        meta.tag_versions = (0..MAX_VERSIONS as u64).collect();
        let bytes = enc(&meta, Some(&user())).unwrap();
        let (read, _) = dec::<User>(&bytes).unwrap();
        assert_eq!(read.tag_versions.len(), MAX_VERSIONS);
        meta.tag_versions.push(0);
        let error = enc(&meta, Some(&user())).unwrap_err();
        assert!(
            error.to_string().contains("at most 255 versions"),
            "{error}"
        );
        assert!(enc::<User>(&meta, None).is_err(), "a cached nothing too");
    }

    #[test]
    fn fingerprints_are_stable() {
        // A change here turns every stored entry into a miss: do it knowingly.
        assert_eq!(fingerprint::<u64>(), 0x3624_faaf_0c00_58ca);
    }
}
