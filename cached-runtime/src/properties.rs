//! Property tests: what no input may break.
//!
//! - An envelope of arbitrary bytes (or a valid one, cut, flipped or
//!   extended) decodes to a value or to nothing, never a panic; a valid one
//!   decodes to what was encoded.
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

use crate::envelope::{Meta, decode, encode, fingerprint};
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

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<User>(&bytes);
        let _ = decode::<u64>(&bytes);
        let _ = decode::<String>(&bytes);
    }

    #[test]
    fn valid_envelopes_round_trip_and_damaged_ones_never_panic(
        value in user(),
        tags in 0usize..8,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let meta = meta(tags);
        let bytes = encode(&meta, Some(&value)).expect("a User serializes");
        let (read, decoded) = decode::<User>(&bytes).expect("a valid envelope decodes");
        prop_assert_eq!(read, meta);
        prop_assert_eq!(decoded, Some(value));
        let _ = decode::<User>(&bytes[..cut.index(bytes.len())]);
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let _ = decode::<User>(&flipped);
        let mut longer = bytes;
        longer.extend_from_slice(&tail);
        let _ = decode::<User>(&longer);
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
