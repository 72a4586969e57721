//! Property tests: what no input may break.
//!
//! - An envelope of arbitrary bytes (or a valid one, cut, flipped or
//!   extended) decodes to a value or to nothing, never a panic; a valid one
//!   decodes to what was encoded, in every codec, compression and seal
//!   compiled in; a sealed one flipped anywhere never decodes.
//! - Keys are injective: two different argument lists never render the same
//!   key, whatever the values hold (separators, escapes, `{`, newlines).
//!
//! `cargo test -p tiercache-runtime properties` runs each with proptest's
//! default of 256 cases; the bench-style run takes a million:
//! `PROPTEST_CASES=1000000 cargo test --release -p tiercache-runtime properties`.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::envelope::{Framing, Meta, decode, encode, fingerprint};
use crate::format::{Codec, Compression, Format};
use crate::key::KeyWriter;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<i32>,
}

fn user() -> impl Strategy<Value = User> {
    (
        any::<u64>(),
        ".*",
        proptest::collection::vec(".*", 0..4),
        any::<Option<i32>>(),
    )
        .prop_map(|(id, name, tags, score)| User {
            id,
            name,
            tags,
            score,
        })
}

fn meta(tags: usize) -> Meta {
    let mut meta = Meta::fresh(
        fingerprint::<User>(),
        Duration::from_secs(60),
        Duration::from_millis(3),
    );
    meta.tag_versions = (0..tags as u64).collect();
    meta
}

/// Every format compiled in: each codec, each compression (from the
/// first byte), sealed or not.
fn formats() -> Vec<Format> {
    let codecs = [
        Codec::Json,
        #[cfg(feature = "postcard")]
        Codec::Postcard,
        #[cfg(feature = "msgpack")]
        Codec::MessagePack,
    ];
    let compressions = [
        Compression::None,
        #[cfg(feature = "lz4")]
        Compression::Lz4,
        #[cfg(feature = "zstd")]
        Compression::zstd(),
    ];
    let seals: &[bool] = if cfg!(feature = "encryption") {
        &[false, true]
    } else {
        &[false]
    };
    let mut all = Vec::new();
    for codec in codecs {
        for compression in compressions {
            for &encrypt in seals {
                all.push(Format {
                    codec,
                    compression,
                    compress_above: 0,
                    encrypt,
                });
            }
        }
    }
    all
}

#[cfg(feature = "encryption")]
fn keys() -> Option<crate::crypt::KeyRing> {
    Some(crate::crypt::KeyRing::new(1, [5; 32]))
}

#[cfg(not(feature = "encryption"))]
fn keys() -> Option<crate::crypt::KeyRing> {
    None
}

const REDIS_KEY: &[u8] = b"ns:user:1";

/// `format`, with the keys, for the entry at [`REDIS_KEY`].
fn framing(format: Format, keys: Option<&crate::crypt::KeyRing>) -> Framing<'_> {
    Framing {
        format,
        keys,
        redis_key: REDIS_KEY,
        max_len: 1 << 20,
    }
}

fn read<T: serde::de::DeserializeOwned + 'static>(
    bytes: &[u8],
    keys: Option<&crate::crypt::KeyRing>,
) -> Option<(Meta, Option<T>)> {
    decode::<T>(bytes, &framing(Format::default(), keys))
        .ok()
        .map(|(meta, value, _)| (meta, value))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let keys = keys();
        let _ = read::<User>(&bytes, keys.as_ref());
        let _ = read::<u64>(&bytes, keys.as_ref());
        let _ = read::<String>(&bytes, keys.as_ref());
    }

    #[test]
    fn valid_envelopes_round_trip_and_damaged_ones_never_panic(
        value in user(),
        tags in 0usize..8,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        format in any::<prop::sample::Index>(),
    ) {
        let meta = meta(tags);
        let formats = formats();
        let format = formats[format.index(formats.len())];
        let keys = keys();
        let bytes = encode(&meta, Some(&value), &framing(format, keys.as_ref())).expect("a User serializes");
        let (got, decoded) = read::<User>(&bytes, keys.as_ref()).expect("a valid envelope decodes");
        prop_assert_eq!(got, meta);
        prop_assert_eq!(decoded, Some(value));
        let _ = read::<User>(&bytes[..cut.index(bytes.len())], keys.as_ref());
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let damaged = read::<User>(&flipped, keys.as_ref());
        prop_assert!(!format.encrypt || damaged.is_none(), "a sealed envelope flipped at {} decodes", at);
        let mut longer = bytes;
        longer.extend_from_slice(&tail);
        let longer = read::<User>(&longer, keys.as_ref());
        prop_assert!(!format.encrypt || tail.is_empty() || longer.is_none());
    }

    #[test]
    fn keys_are_injective(
        a in (".*", any::<Option<u64>>(), proptest::collection::vec(".*", 0..3)),
        b in (".*", any::<Option<u64>>(), proptest::collection::vec(".*", 0..3)),
    ) {
        let render = |(s, n, v): &(String, Option<u64>, Vec<String>)| {
            let mut key = KeyWriter::new("p");
            key.arg(0, s);
            key.arg(1, n);
            key.arg(2, v);
            key.finish()
        };
        prop_assert_eq!(render(&a) == render(&b), a == b, "{:?} / {:?}", a, b);
    }

    #[test]
    fn maps_and_nested_options_are_injective(
        a in (proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..3), any::<Option<Option<bool>>>()),
        b in (proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..3), any::<Option<Option<bool>>>()),
    ) {
        let render = |(m, o): &(BTreeMap<String, String>, Option<Option<bool>>)| {
            let mut key = KeyWriter::new("p");
            key.arg(0, m);
            key.arg(1, o);
            key.finish()
        };
        prop_assert_eq!(render(&a) == render(&b), a == b, "{:?} / {:?}", a, b);
    }
}
