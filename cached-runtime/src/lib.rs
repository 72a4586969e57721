//! The engine behind [tiercache](https://docs.rs/tiercache): keys, the L2
//! envelope, L1 (quick_cache), L2 (Redis), single-flight and stats.
//!
//! Depend on `tiercache`, not on this crate: it re-exports everything here
//! that is public, with the macros. Items under `__private` exist for the
//! code the macros generate and are not part of the API.

mod aside;
mod batch;
mod body;
mod breaker;
mod cache;
mod codec;
mod coherence;
mod copy;
mod crypt;
mod depth;
pub mod entry;
mod envelope;
mod error;
mod flight;
mod format;
mod generations;
#[cfg(feature = "http")]
pub mod http;
pub mod key;
mod l1;
mod l2;
mod l2call;
mod lead;
mod lock;
mod metrics;
mod observe;
mod options;
mod pending;
#[cfg(test)]
mod properties;
mod sentinel;
mod shape;
mod shape_check;
mod skips;
mod spec;
mod stats;
pub mod tags;
mod target;
mod tracking;
pub mod warm;
mod write;

pub use batch::Entries;
pub use cache::{
    Cache, CacheBuilder, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES, DEFAULT_L1_CAPACITY,
    DEFAULT_NAMESPACE, DEFAULT_REDIS_TIMEOUT, global, set_global,
};
#[cfg(feature = "encryption")]
pub use crypt::KeyRing;
pub use entry::Entry;
pub use error::{Error, LoadTimeout};
pub use format::{Codec, Compression, DEFAULT_COMPRESS_ABOVE, DEFAULT_ZSTD_LEVEL};
pub use key::{EntryKey, Key, KeyPart, KeyWriter};
pub use observe::{MAX_PREFIXES, OTHER_PREFIXES, PrefixStats};
pub use spec::{
    DEFAULT_BACKGROUND_TIMEOUT, DEFAULT_FAIL_SAFE_THROTTLE, DEFAULT_LOCK_LEASE, DEFAULT_LOCK_WAIT,
    DEFAULT_MAX_VALUE_SIZE, DEFAULT_TTL_JITTER, MAX_SETTING, MAX_TTL,
};
pub use stats::Stats;

/// For generated code only: not part of the API, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::aside::{Spec, l1_get, l1_get_rendered, load, load_detached, peek};
    pub use crate::batch::{batch, batch_infallible};
    pub use crate::body::Detached;
    pub use crate::cache::{Cache, global};
    pub use crate::codec::{Cacheable, CodecProbe, ProbeCacheable, ProbeUncacheable, TypeCodec};
    pub use crate::copy::{
        NotThreadSafe, Owned, ProbeNotThreadSafe, ProbeThreadSafe, SendProbe, Shared, ThreadSafe,
        Unused,
    };
    pub use crate::error::{Error, LoadTimeout};
    pub use crate::format::names as formats;
    pub use crate::key::{KeyPart, KeyWriter, TagPart, is_valid_prefix};
    pub use crate::shape::{Fallible, FallibleOptional, Kept, Optional, Plain, Shape, Split};
    pub use crate::shape_check::{
        ErrOf, HardTimeoutError, IsOption, IsPlain, IsResult, NotAResult, NotAStoredOkOption,
        NotAStoredOption, NotAStoredResult, NotAnInvalidatingResult, NotAnOkOption, NotAnOption,
        ProbeOption, ProbePlain, ProbeResult, Probed, ShapeProbe,
    };
    pub use crate::target::{Target, WrittenAs};
    pub use crate::write::{
        When, invalidate_entry, invalidating, invalidating_always, set, write_through,
    };

    /// An envelope of `value` (no tags), as an L2 write makes it: for the
    /// benchmarks of codecs, compression and encryption.
    ///
    /// # Errors
    ///
    /// What keeps a value out of Redis, shown.
    #[cfg(feature = "encryption")]
    pub fn envelope_of<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
        value: &T,
        (codec, compression, compress_above): (crate::Codec, crate::Compression, usize),
        keys: Option<&crate::KeyRing>,
        redis_key: &[u8],
    ) -> Result<Vec<u8>, String> {
        let meta = crate::envelope::Meta::fresh(
            crate::envelope::fingerprint::<T>(),
            std::time::Duration::from_secs(60),
            std::time::Duration::ZERO,
        );
        let format = crate::format::Format {
            codec,
            compression,
            compress_above,
            encrypt: keys.is_some(),
        };
        let how = crate::envelope::Framing {
            format,
            keys,
            redis_key,
            max_len: usize::MAX,
        };
        crate::codec::encode(&meta, Some(value), &how).map_err(|e| e.to_string())
    }

    /// The value of an envelope [`envelope_of`] made, as an L2 read decodes
    /// it: for the benchmarks.
    #[cfg(feature = "encryption")]
    pub fn value_of<T: serde::de::DeserializeOwned + 'static>(
        bytes: &[u8],
        keys: Option<&crate::KeyRing>,
        redis_key: &[u8],
    ) -> Option<T> {
        let how = crate::envelope::Framing {
            format: crate::format::Format::default(),
            keys,
            redis_key,
            max_len: usize::MAX,
        };
        crate::envelope::decode::<T>(bytes, &how).ok()?.1
    }

    /// The codec of a cached `Arc<T>` (see `TypeCodec::arc`), spanned like
    /// [`codec`].
    #[must_use]
    pub const fn arc_codec<T: crate::codec::CacheableShared>() -> TypeCodec<std::sync::Arc<T>> {
        TypeCodec::arc()
    }

    /// Checks that a cached value's type can be cached and returns what the
    /// cache paths need of it; spanned on the return type so that the error
    /// points there, once.
    #[must_use]
    pub const fn codec<T: Cacheable>() -> TypeCodec<T> {
        TypeCodec::new()
    }
}
