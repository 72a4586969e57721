//! How a value is written as bytes for Redis: the [`Codec`] that serializes
//! it and the [`Compression`] applied above a size, chosen for the whole
//! cache on the builder and per function in the attribute; what an entry
//! was written with is recorded in its envelope, so a reader decodes any
//! codec and compression compiled into it, whatever its own choice (see
//! [`crate::envelope`]). Encryption is [`crate::crypt`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How values are serialized in Redis (L1 holds them unserialized).
///
/// A reader decodes what any codec compiled into it wrote, whichever it
/// writes itself: a deploy that changes the codec keeps its hits. A value
/// of a codec it does not have is a miss, reloaded and overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// serde_json: readable in `redis-cli`, self-describing (a field added
    /// with `#[serde(default)]` still decodes). The default.
    #[default]
    Json,
    /// postcard (feature `postcard`): the smallest and fastest, not
    /// self-describing: a struct whose fields changed does not decode (a
    /// miss, never a wrong value, since the type's name is checked too).
    #[cfg(feature = "postcard")]
    Postcard,
    /// MessagePack through rmp-serde (feature `msgpack`), structs as maps:
    /// self-describing like JSON, smaller, readable by other languages.
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl Codec {
    /// Its number in an envelope's flags (2 bits).
    pub(crate) const fn id(self) -> u8 {
        match self {
            Self::Json => 0,
            #[cfg(feature = "postcard")]
            Self::Postcard => 1,
            #[cfg(feature = "msgpack")]
            Self::MessagePack => 2,
        }
    }

    /// Appends `value`, serialized, to `out`.
    pub(crate) fn write<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Self::Json => serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string()),
            #[cfg(feature = "postcard")]
            Self::Postcard => {
                let taken = std::mem::take(out);
                *out = postcard::to_extend(value, taken).map_err(|e| e.to_string())?;
                Ok(())
            }
            #[cfg(feature = "msgpack")]
            Self::MessagePack => {
                rmp_serde::encode::write_named(&mut *out, value).map_err(|e| e.to_string())
            }
        }
    }
}

/// Reads a payload written by the codec numbered `id`; `None` when it does
/// not decode as a `T` exactly (trailing bytes included), or that codec is
/// not compiled in.
pub(crate) fn read<T: DeserializeOwned>(id: u8, payload: &[u8]) -> Option<T> {
    match id {
        0 => serde_json::from_slice(payload).ok(),
        // Neither bounds its recursion as serde_json does: through
        // `depth`, so that a deeply nested payload planted in Redis is a
        // miss, not a stack overflow.
        #[cfg(feature = "postcard")]
        1 => {
            let mut de = postcard::Deserializer::from_bytes(payload);
            let value = crate::depth::deserialize(&mut de, crate::depth::MAX_DEPTH).ok()?;
            de.finalize().ok()?.is_empty().then_some(value)
        }
        #[cfg(feature = "msgpack")]
        2 => {
            let mut rest = payload;
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            let value = crate::depth::deserialize(&mut de, crate::depth::MAX_DEPTH).ok()?;
            rest.is_empty().then_some(value)
        }
        _ => None,
    }
}

/// How payloads at or above a size are compressed in Redis.
///
/// Like the codec, what an entry was compressed with is recorded in it: a
/// reader decompresses either algorithm compiled into it. A payload that
/// compression would not make smaller is stored as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as serialized. The default.
    #[default]
    None,
    /// LZ4 (lz4_flex, feature `lz4`): fast both ways, a modest ratio.
    #[cfg(feature = "lz4")]
    Lz4,
    /// Zstandard (feature `zstd`) at `level`, from 1 (fastest) to 19; 3 is
    /// zstd's default and [`Compression::zstd`]'s.
    #[cfg(feature = "zstd")]
    Zstd {
        /// 1 to 19 (checked by `build()`).
        level: i32,
    },
}

/// The size at and above which payloads are compressed, unless the
/// builder or the function says otherwise: below it, compression saves few
/// bytes and costs more time than it saves on the wire (see the README's
/// "Formats").
pub const DEFAULT_COMPRESS_ABOVE: usize = 1024;

/// zstd's level for [`Compression::zstd`] and `compress = "zstd"`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// Zstandard at its default level ([`DEFAULT_ZSTD_LEVEL`]).
    #[cfg(feature = "zstd")]
    #[must_use]
    pub const fn zstd() -> Self {
        Self::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Its number in an envelope's flags (2 bits).
    pub(crate) const fn id(self) -> u8 {
        match self {
            Self::None => 0,
            #[cfg(feature = "lz4")]
            Self::Lz4 => 1,
            #[cfg(feature = "zstd")]
            Self::Zstd { .. } => 2,
        }
    }

    /// Why the builder refuses it, if it does.
    pub(crate) fn invalid(self) -> Option<&'static str> {
        match self {
            #[cfg(feature = "zstd")]
            Self::Zstd { level } if !(1..=19).contains(&level) => {
                Some("zstd's level must be from 1 to 19 (3 is its default)")
            }
            _ => None,
        }
    }

    /// `input`, compressed; `None` when that fails (the payload is then
    /// stored as it is).
    pub(crate) fn compress(self, input: &[u8]) -> Option<Vec<u8>> {
        let _ = input; // without either feature
        match self {
            Self::None => None,
            #[cfg(feature = "lz4")]
            Self::Lz4 => Some(lz4_flex::block::compress_prepend_size(input)),
            #[cfg(feature = "zstd")]
            // The builder refuses a level out of range; an `Entry`'s is
            // brought into it.
            Self::Zstd { level } => zstd_contexts::compress(input, level.clamp(1, 19)),
        }
    }
}

/// A payload compressed by the algorithm numbered `id`, decompressed;
/// `None` when it does not decompress, would be larger than `max_len`, or
/// that algorithm is not compiled in. The size is read from the payload's
/// own header and checked before anything is allocated: a corrupt or
/// hostile size costs nothing.
pub(crate) fn decompress(id: u8, input: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let _ = (input, max_len);
    match id {
        #[cfg(feature = "lz4")]
        1 => {
            let (size, block) = input.split_first_chunk::<4>()?;
            let size = usize::try_from(u32::from_le_bytes(*size)).ok()?;
            if size > max_len {
                return None;
            }
            let out = lz4_flex::block::decompress(block, size).ok()?;
            (out.len() == size).then_some(out)
        }
        #[cfg(feature = "zstd")]
        2 => {
            let size = zstd::zstd_safe::get_frame_content_size(input).ok()??;
            let size = usize::try_from(size).ok().filter(|size| *size <= max_len)?;
            let out = zstd_contexts::decompress(input, size)?;
            (out.len() == size).then_some(out)
        }
        _ => None,
    }
}

/// zstd through one compression and one decompression context per thread,
/// reused: creating a context costs about 10 µs, which was most of the
/// time zstd spent on a 200-byte value.
#[cfg(feature = "zstd")]
mod zstd_contexts {
    use std::cell::RefCell;

    /// The largest payload compressed or decompressed through the
    /// thread's kept contexts.
    const KEEP_FOR: usize = 256 << 10;

    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }

    /// `input` at `level`, with its size in the frame (`decompress` reads
    /// it to allocate once, exactly).
    pub(super) fn compress(input: &[u8], level: i32) -> Option<Vec<u8>> {
        // A context sized for a large input (tens of MiB at high levels)
        // is not kept for the thread's life: large ones are one-shot.
        if input.len() > KEEP_FOR {
            return zstd::bulk::compress(input, level).ok();
        }
        // `try_with`: a thread being torn down has no context left (the
        // value is then stored as it is).
        COMPRESSOR
            .try_with(|cell| {
                let mut cell = cell.try_borrow_mut().ok()?;
                let (at, compressor) = match cell.take() {
                    Some(held) => held,
                    None => (level, zstd::bulk::Compressor::new(level).ok()?),
                };
                let mut compressor = compressor;
                if at != level {
                    compressor.set_compression_level(level).ok()?;
                }
                let out = compressor.compress(input).ok();
                *cell = Some((level, compressor));
                out
            })
            .ok()
            .flatten()
    }

    /// A frame of `size` bytes, decompressed.
    pub(super) fn decompress(input: &[u8], size: usize) -> Option<Vec<u8>> {
        if size > KEEP_FOR {
            return zstd::bulk::decompress(input, size).ok();
        }
        DECOMPRESSOR
            .try_with(|cell| {
                let mut cell = cell.try_borrow_mut().ok()?;
                let mut decompressor = match cell.take() {
                    Some(held) => held,
                    None => zstd::bulk::Decompressor::new().ok()?,
                };
                let out = decompressor.decompress(input, size).ok();
                *cell = Some(decompressor);
                out
            })
            .ok()
            .flatten()
    }
}

/// A function's own choices (`None`: the cache's), from the attribute or
/// an [`Entry`](crate::Entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub(crate) codec: Option<Codec>,
    pub(crate) compression: Option<Compression>,
    pub(crate) compress_above: Option<usize>,
    /// Encrypt its values (`encrypt`), whatever the cache's default.
    pub(crate) encrypt: bool,
}

/// What one entry is written with: a function's choices over the cache's
/// defaults (the builder's, where `encrypt` is `encrypt_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) codec: Codec,
    pub(crate) compression: Compression,
    pub(crate) compress_above: usize,
    pub(crate) encrypt: bool,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            codec: Codec::Json,
            compression: Compression::None,
            compress_above: DEFAULT_COMPRESS_ABOVE,
            encrypt: false,
        }
    }
}

impl Format {
    pub(crate) fn of(chosen: Chosen, defaults: Self) -> Self {
        Self {
            codec: chosen.codec.unwrap_or(defaults.codec),
            compression: chosen.compression.unwrap_or(defaults.compression),
            compress_above: chosen.compress_above.unwrap_or(defaults.compress_above),
            encrypt: chosen.encrypt || defaults.encrypt,
        }
    }
}

/// The prefixes a function that encrypts has used on this instance: every
/// entry under them is then sealed and read sealed only, whoever writes or
/// reads it (a `set` or another function that does not say `encrypt`
/// neither writes one in plaintext nor takes a plaintext one). Prefixes
/// are `'static` names from the code: the set is bounded by it.
#[derive(Default)]
pub(crate) struct SealedPrefixes {
    /// Whether any is: until then, no lookup.
    any: AtomicBool,
    prefixes: RwLock<HashSet<&'static str>>,
}

impl SealedPrefixes {
    /// The format of an entry of `prefix` that a function choosing
    /// `chosen` writes or reads.
    pub(crate) fn format(&self, prefix: &'static str, chosen: Chosen, defaults: Format) -> Format {
        let mut format = Format::of(chosen, defaults);
        if chosen.encrypt {
            self.note(prefix);
        } else if !format.encrypt && self.any.load(Ordering::Acquire) {
            let prefixes = self.prefixes.read().unwrap_or_else(PoisonError::into_inner);
            format.encrypt = prefixes.contains(prefix);
        }
        format
    }

    fn note(&self, prefix: &'static str) {
        let known = self.prefixes.read().unwrap_or_else(PoisonError::into_inner);
        if known.contains(prefix) {
            return;
        }
        drop(known);
        let mut prefixes = self
            .prefixes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        prefixes.insert(prefix);
        self.any.store(true, Ordering::Release);
    }
}

/// The names the attribute's options expand to, defined whether or not
/// their feature is on: without it, using one is a compile error that
/// names the feature (a `const fn` that panics where it is evaluated, in
/// the function's `const` spec and in a `const` item `cargo check` sees).
#[doc(hidden)]
pub mod names {
    use super::{Codec, Compression};

    /// `pub const fn NAME() -> TYPE`, the value with `FEATURE` on, else a
    /// panic that says which feature OPTION needs.
    macro_rules! gated {
        ($($name:ident -> $ty:ty = $value:expr, $feature:literal, $option:literal;)*) => {$(
            #[doc = concat!("`", $option, "`.")]
            #[must_use]
            pub const fn $name() -> $ty {
                #[cfg(feature = $feature)]
                return $value;
                #[cfg(not(feature = $feature))]
                panic!(concat!(
                    "`", $option, "` needs tiercache's `", $feature,
                    "` feature: tiercache = {{ version = \"…\", features = [\"", $feature, "\"] }}"
                ))
            }
        )*};
    }

    gated! {
        postcard -> Codec = Codec::Postcard, "postcard", "codec = \"postcard\"";
        msgpack -> Codec = Codec::MessagePack, "msgpack", "codec = \"msgpack\"";
        lz4 -> Compression = Compression::Lz4, "lz4", "compress = \"lz4\"";
        zstd -> Compression = Compression::zstd(), "zstd", "compress = \"zstd\"";
        encrypt -> bool = true, "encryption", "encrypt";
    }

    /// `codec = "json"`.
    #[must_use]
    pub const fn json() -> Codec {
        Codec::Json
    }

    /// `compress = "none"`.
    #[must_use]
    pub const fn none() -> Compression {
        Compression::None
    }
}
