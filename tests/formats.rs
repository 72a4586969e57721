//! What is stored (issue 16), against a real redis-server: every codec and
//! compression is read by an instance that writes another (a rolling
//! deploy keeps its hits), what is not compiled in or does not decode is a
//! miss, encrypted values are unreadable in Redis and bound to their key
//! and header, rotation works without a flush, and L1 keeps to its byte
//! budget.
//!
//! Needs every format feature: `cargo test --all-features` (what
//! `scripts/test` runs).
#![cfg(all(
    feature = "postcard",
    feature = "msgpack",
    feature = "lz4",
    feature = "zstd",
    feature = "encryption"
))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tiercache::{Cache, Codec, Compression, Error, KeyRing, cache_aside};

const MINUTE: Duration = Duration::from_secs(60);
const SECRET: &str = "ssn 078-05-1120, card 4111 1111 1111 1111";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    note: String,
    tags: Vec<String>,
}

fn record(id: u64, note_len: usize) -> Record {
    Record {
        id,
        note: "lorem ipsum dolor sit amet ".repeat(note_len / 27 + 1)[..note_len].to_owned(),
        tags: vec!["a".into(), "b".into()],
    }
}

/// The envelope's flag bits (see `envelope.rs`).
fn flags(stored: &[u8]) -> (u8, u8, bool) {
    let flags = stored[3];
    ((flags >> 1) & 3, (flags >> 3) & 3, flags & 0x20 != 0)
}

/// Where a sealed envelope's key id is: after the header and its versions.
fn key_id_at(stored: &[u8]) -> usize {
    33 + 8 * usize::from(stored[32])
}

fn builder(namespace: &str) -> tiercache::CacheBuilder {
    Cache::builder()
        .namespace(namespace)
        .redis(support::shared().url())
}

/// A cache that encrypts every value with `keys`.
async fn sealing(namespace: &str, keys: KeyRing) -> Cache {
    builder(namespace)
        .encryption_keys(keys)
        .encrypt_all(true)
        .build()
        .await
        .unwrap()
}

async fn stored(key: &str) -> Vec<u8> {
    let mut redis = support::raw(&support::shared().url()).await;
    let bytes: Option<Vec<u8>> = redis.get(key).await.unwrap();
    bytes.unwrap_or_else(|| panic!("{key} is in Redis"))
}

async fn put(key: &str, bytes: &[u8]) {
    let mut redis = support::raw(&support::shared().url()).await;
    let _: () = redis.set(key, bytes).await.unwrap();
}

/// Reads `id` through `cache`, loading `value` on a miss; whether it loaded.
async fn read(cache: &Cache, id: u64, value: &Record) -> bool {
    let loaded = AtomicUsize::new(0);
    let got = cache
        .entry("rec", &id)
        .ttl(MINUTE)
        .get_with(|| async {
            loaded.fetch_add(1, SeqCst);
            value.clone()
        })
        .await;
    assert_eq!(&got, value);
    loaded.load(SeqCst) == 1
}

#[tokio::test]
async fn every_codec_and_compression_is_read_by_an_instance_writing_another() {
    let codecs = [
        (Codec::Json, 0),
        (Codec::Postcard, 1),
        (Codec::MessagePack, 2),
    ];
    let compressions = [
        (Compression::None, 0),
        (Compression::Lz4, 1),
        (Compression::zstd(), 2),
    ];
    let value = record(1, 4000);
    let mut id = 0;
    for (codec, codec_id) in codecs {
        for (compression, compression_id) in compressions {
            id += 1;
            let ns = "formats-mix";
            let writer = builder(ns)
                .codec(codec)
                .compression(compression)
                .build()
                .await
                .unwrap();
            assert!(read(&writer, id, &value).await, "{codec:?}: loaded");
            let bytes = stored(&format!("{ns}:rec:{id}")).await;
            assert_eq!(
                flags(&bytes),
                (codec_id, compression_id, false),
                "{codec:?} {compression:?}"
            );
            // A reader writing the default (JSON, uncompressed) and one
            // writing something else both take it.
            for other in [Codec::Json, Codec::Postcard] {
                let reader = builder(ns).codec(other).build().await.unwrap();
                assert!(
                    !read(&reader, id, &value).await,
                    "{codec:?} {compression:?} read by {other:?}: an L2 hit"
                );
                assert_eq!(reader.stats().l2_hits, 1);
            }
        }
    }
}

#[tokio::test]
async fn compression_applies_from_the_threshold_and_only_when_it_shrinks() {
    let ns = "formats-threshold";
    let cache = builder(ns)
        .compression(Compression::zstd())
        .compress_above(2048)
        .build()
        .await
        .unwrap();
    let small = record(1, 500);
    let large = record(2, 20_000);
    read(&cache, 1, &small).await;
    read(&cache, 2, &large).await;
    let (small_bytes, large_bytes) = (
        stored(&format!("{ns}:rec:1")).await,
        stored(&format!("{ns}:rec:2")).await,
    );
    assert_eq!(flags(&small_bytes).1, 0, "below the threshold: as it is");
    assert_eq!(flags(&large_bytes).1, 2, "above it: zstd");
    let json_len = serde_json::to_vec(&large).unwrap().len();
    assert!(
        large_bytes.len() * 10 < json_len,
        "{} bytes stored for {json_len} of JSON",
        large_bytes.len()
    );

    // Random bytes do not compress: stored as they are, flag clear.
    let noise: Vec<u8> = (0..8192).map(|_| fastrand::u8(..)).collect();
    let got = cache
        .entry("noise", &1u64)
        .ttl(MINUTE)
        .codec(Codec::Postcard) // raw bytes (JSON's digits would compress)
        .get_with(|| async { noise.clone() })
        .await;
    assert_eq!(got, noise);
    assert_eq!(flags(&stored(&format!("{ns}:noise:1")).await).1, 0);
}

#[tokio::test]
async fn a_codec_or_compression_that_is_not_there_and_corrupt_payloads_are_misses() {
    let ns = "formats-unknown";
    let make = || async {
        builder(ns)
            .codec(Codec::Postcard)
            .compression(Compression::Lz4)
            .compress_above(0)
            .build()
            .await
            .unwrap()
    };
    let cache = make().await;
    let value = record(7, 3000);
    read(&cache, 7, &value).await;
    let key = format!("{ns}:rec:7");
    let good = stored(&key).await;
    let header = key_id_at(&good);
    let mut variants: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut unknown_codec = good.clone();
    unknown_codec[3] = (unknown_codec[3] & !0b110) | (3 << 1);
    variants.push(("codec 3, which no release writes", unknown_codec));
    let mut unknown_compression = good.clone();
    unknown_compression[3] |= 3 << 3;
    variants.push(("compression 3", unknown_compression));
    let mut as_json = good.clone();
    as_json[3] &= !0b110;
    variants.push(("postcard bytes flagged as JSON", as_json));
    let mut lying_size = good.clone();
    lying_size[header..header + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    variants.push(("an LZ4 size of 4 GiB", lying_size));
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 10);
    variants.push(("truncated", truncated));
    let mut trailing = good.clone();
    trailing[3] &= !(3 << 3); // uncompressed: the LZ4 block is read as postcard
    variants.push(("an LZ4 block flagged uncompressed", trailing));
    for (what, bytes) in variants {
        put(&key, &bytes).await;
        let fresh = make().await;
        assert!(read(&fresh, 7, &value).await, "{what}: a miss, reloaded");
        assert_eq!(stored(&key).await[..4], good[..4], "{what}: overwritten");
    }
}

#[tokio::test]
async fn the_macro_options_choose_the_format_per_function() {
    #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
    struct Profile {
        id: u64,
        secret: String,
    }
    struct Repo {
        cache: Cache,
    }
    impl Repo {
        #[cache_aside(prefix = "profile", ttl = "5m", key = "{id}", cache = self.cache,
            codec = "postcard", compress = "zstd", compress_above = 16, encrypt)]
        async fn profile(&self, id: u64) -> Profile {
            Profile {
                id,
                secret: SECRET.repeat(4),
            }
        }

        #[cache_aside(prefix = "plain", ttl = "5m", key = "{id}", cache = self.cache,
            codec = "msgpack", compress = "none")]
        async fn plain(&self, id: u64) -> String {
            format!("plain {id}").repeat(200)
        }
    }
    let ns = "formats-macro";
    let keys = KeyRing::new(1, [42; 32]);
    let repo = Repo {
        cache: builder(ns)
            .compression(Compression::Lz4)
            .encryption_keys(keys.clone())
            .build()
            .await
            .unwrap(),
    };
    repo.profile(1).await;
    repo.plain(1).await;
    let profile = stored(&format!("{ns}:profile:1")).await;
    assert_eq!(flags(&profile), (1, 2, true), "postcard, zstd, sealed");
    let plain = stored(&format!("{ns}:plain:1")).await;
    assert_eq!(flags(&plain), (2, 0, false), "msgpack, uncompressed");

    let other = Repo {
        cache: builder(ns).encryption_keys(keys).build().await.unwrap(),
    };
    assert_eq!(other.profile(1).await.secret, SECRET.repeat(4));
    assert_eq!(other.cache.stats().l2_hits, 1);
}

#[tokio::test]
async fn encrypted_values_do_not_show_in_redis_and_are_bound_to_their_key_and_header() {
    let ns = "formats-sealed";
    let cache = sealing(ns, KeyRing::new(1, [7; 32])).await;
    let secret = |id| Record {
        id,
        note: SECRET.into(),
        tags: vec!["secret-tag".into()],
    };
    read(&cache, 1, &secret(1)).await;
    read(&cache, 2, &secret(2)).await;
    let (one, two) = (format!("{ns}:rec:1"), format!("{ns}:rec:2"));
    let sealed = stored(&one).await;
    assert!(flags(&sealed).2, "sealed");
    for needle in [SECRET.as_bytes(), b"secret-tag", b"note"] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "the plaintext shows in Redis"
        );
    }
    assert_eq!(sealed[key_id_at(&sealed)], 1, "under key id 1");

    let reader = || async { sealing(ns, KeyRing::new(1, [7; 32])).await };
    let fresh = reader().await;
    assert!(!read(&fresh, 1, &secret(1)).await, "it decrypts: an L2 hit");

    // A bit flipped anywhere — magic and version aside, which make it
    // not ours at all — is a miss that counts as undecryptable.
    let at = key_id_at(&sealed);
    let places = [
        ("the flags' absent bit", 3, 0x01),
        ("the type fingerprint", 5, 0x10),
        ("the load time", 13, 0x01),
        ("the expiry", 25, 0x01),
        ("a tag version", 34, 0x01),
        ("the nonce", at + 5, 0x80),
        ("the ciphertext", at + 30, 0x01),
        ("the tag", sealed.len() - 1, 0x01),
    ];
    for (what, index, bit) in places {
        let mut tampered = sealed.clone();
        tampered[index] ^= bit;
        put(&one, &tampered).await;
        let fresh = reader().await;
        assert!(read(&fresh, 1, &secret(1)).await, "{what}: a miss");
        // Another type's value is not read far enough to be decrypted.
        let expected = u64::from(what != "the type fingerprint");
        assert_eq!(fresh.stats().undecryptable, expected, "{what}: counted");
    }

    // Entries swapped between two keys: each bound to its own.
    read(&cache, 1, &secret(1)).await;
    let (a, b) = (stored(&one).await, stored(&two).await);
    put(&one, &b).await;
    put(&two, &a).await;
    let fresh = reader().await;
    assert!(read(&fresh, 1, &secret(1)).await, "1 holds 2's ciphertext");
    assert!(read(&fresh, 2, &secret(2)).await, "2 holds 1's ciphertext");
    assert_eq!(fresh.stats().undecryptable, 2);

    // Plaintext planted where the function encrypts: refused.
    let plain = builder(ns).build().await.unwrap();
    plain
        .entry("rec", &3u64)
        .ttl(MINUTE)
        .set(&secret(3))
        .await
        .unwrap();
    assert!(!flags(&stored(&format!("{ns}:rec:3")).await).2);
    let fresh = reader().await;
    assert!(read(&fresh, 3, &secret(3)).await, "plaintext: a miss");
    assert_eq!(fresh.stats().undecryptable, 1);
    assert!(
        flags(&stored(&format!("{ns}:rec:3")).await).2,
        "rewritten sealed"
    );
}

#[tokio::test]
async fn keys_rotate_without_a_flush() {
    let ns = "formats-rotation";
    let (old, new) = ([1; 32], [2; 32]);
    let before = sealing(ns, KeyRing::new(1, old)).await;
    let value = record(1, 100);
    read(&before, 1, &value).await;

    let rotated = || async { sealing(ns, KeyRing::new(2, new).with_old_key(1, old)).await };
    let after = rotated().await;
    assert!(!read(&after, 1, &value).await, "the old key still decrypts");
    read(&after, 2, &value).await;
    let written = stored(&format!("{ns}:rec:2")).await;
    assert_eq!(written[key_id_at(&written)], 2, "new values: the new key");

    // An instance that never had key 2 (or a ring that dropped key 1).
    let stale = sealing(ns, KeyRing::new(1, old)).await;
    assert!(read(&stale, 2, &value).await, "an unknown key id: a miss");
    assert_eq!(stale.stats().undecryptable, 1);
    let dropped = sealing(ns, KeyRing::new(2, new)).await;
    // `stale` rewrote 2 under key 1; key 1 is gone from this ring.
    assert!(read(&dropped, 2, &value).await, "a removed key id: a miss");
    assert_eq!(dropped.stats().undecryptable, 1);
    // A wrong key under a known id.
    let wrong = sealing(ns, KeyRing::new(2, [9; 32])).await;
    assert!(read(&wrong, 2, &value).await, "a wrong key: a miss");
    assert_eq!(wrong.stats().undecryptable, 1);
    // `wrong` rewrote 2 under its key: the rotated ring cannot open that,
    // reloads, and rewrites it under the real key 2, which it then reads.
    let again = rotated().await;
    assert!(
        read(&again, 2, &value).await,
        "the wrong key's value: a miss"
    );
    assert!(!read(&rotated().await, 2, &value).await, "then an L2 hit");
}

#[tokio::test]
async fn an_encrypting_function_without_keys_keeps_its_values_out_of_redis() {
    let ns = "formats-no-keys";
    let cache = builder(ns).build().await.unwrap();
    let value = record(1, 100);
    let got = cache
        .entry("rec", &1u64)
        .ttl(MINUTE)
        .encrypt()
        .get_with(|| async { value.clone() })
        .await;
    assert_eq!(got, value, "the call succeeds");
    let mut redis = support::raw(&support::shared().url()).await;
    let exists: bool = redis.exists(format!("{ns}:rec:1")).await.unwrap();
    assert!(!exists, "nothing in Redis, plaintext least of all");
    assert_eq!(cache.stats().l1_hits, 0);
    let again = cache
        .entry("rec", &1u64)
        .ttl(MINUTE)
        .encrypt()
        .get_with(|| async { unreachable!("an L1 hit") as Record })
        .await;
    assert_eq!(again, value, "L1 still holds it");
}

#[tokio::test]
async fn settings_out_of_range_are_build_errors_and_debug_shows_no_key() {
    let key = [0xAB; 32];
    let builder =
        Cache::builder().encryption_keys(KeyRing::new(3, key).with_old_key(1, [0xCD; 32]));
    let shown = format!("{builder:?}");
    assert!(
        shown.contains("KeyRing { current: 3, old: [1] }"),
        "{shown}"
    );
    for leak in ["171", "ab", "AB", "205"] {
        assert!(!shown.contains(&format!("{leak}, {leak}")), "{shown}");
    }
    let refused = |result: Result<Cache, Error>, setting: &str| match result {
        Err(Error::InvalidSetting { setting: s, .. }) => assert_eq!(s, setting),
        other => panic!("{setting}: {other:?}"),
    };
    refused(
        Cache::builder().encrypt_all(true).build().await,
        "encrypt_all",
    );
    let twice = KeyRing::new(1, key).with_old_key(1, [0; 32]);
    refused(
        Cache::builder().encryption_keys(twice).build().await,
        "encryption_keys",
    );
    for level in [0, 20, -1] {
        let zstd = Compression::Zstd { level };
        refused(
            Cache::builder().compression(zstd).build().await,
            "compression",
        );
    }
    for bytes in [1000, u64::MAX] {
        refused(
            Cache::builder().l1_max_bytes(bytes).build().await,
            "l1_max_bytes",
        );
    }
}

#[tokio::test]
async fn l1_keeps_to_its_byte_budget_and_its_entry_count() {
    let budget = 1 << 20;
    let cache = Cache::builder()
        .l1_capacity(1_000_000)
        .l1_max_bytes(budget)
        .build()
        .await
        .unwrap();
    let value = Arc::new(record(0, 1000));
    for id in 0..20_000u64 {
        let value = value.clone();
        cache
            .entry("big", &id)
            .ttl(MINUTE)
            .get_with(|| async move { (*value).clone() })
            .await;
    }
    let stats = cache.stats();
    assert!(stats.l1_bytes <= budget, "{} bytes held", stats.l1_bytes);
    assert!(stats.l1_bytes > budget / 2, "{} bytes held", stats.l1_bytes);
    // About 1 KiB each: under a thousand entries of the 20,000.
    assert!(
        (500..1000).contains(&stats.l1_entries),
        "{} entries",
        stats.l1_entries
    );

    // Small values, a large budget: the entry count binds.
    let counted = Cache::builder()
        .l1_capacity(100)
        .l1_max_bytes(64 << 20)
        .build()
        .await
        .unwrap();
    for id in 0..10_000u64 {
        counted
            .entry("small", &id)
            .ttl(MINUTE)
            .get_with(|| async move { id })
            .await;
    }
    let entries = counted.stats().l1_entries;
    assert!((50..=110).contains(&entries), "{entries} entries");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    kids: Vec<Node>,
}

/// A recursive type's payload nested a million levels deep, planted in
/// Redis: a miss, not a stack overflow that aborts the process (postcard
/// and rmp-serde have no recursion limit of their own).
#[tokio::test]
async fn a_deeply_nested_payload_is_a_miss_not_a_stack_overflow() {
    let ns = "formats-deep";
    let leaf = Node { kids: vec![] };
    for codec in [Codec::Postcard, Codec::MessagePack] {
        let cache = builder(ns).codec(codec).build().await.unwrap();
        let entry = || cache.entry("node", &1u64).ttl(MINUTE);
        entry().set(&leaf).await.unwrap();
        let key = format!("{ns}:node:1");
        let good = stored(&key).await;
        let mut planted = good[..key_id_at(&good)].to_vec();
        match codec {
            // A `Vec` of one `Node`, a million times, then an empty one.
            Codec::Postcard => planted.extend(std::iter::repeat_n(1u8, 1_000_000)),
            // A map of one field `kids` holding an array of one, each level.
            _ => {
                for _ in 0..200_000 {
                    planted.extend_from_slice(b"\x81\xa4kids\x91");
                }
            }
        }
        planted.push(0);
        put(&key, &planted).await;
        let fresh = builder(ns).build().await.unwrap();
        let got = fresh
            .entry("node", &1u64)
            .ttl(MINUTE)
            .get_with(|| async { leaf.clone() })
            .await;
        assert_eq!(got, leaf, "{codec:?}: reloaded");
        assert_eq!(fresh.stats().loads, 1, "{codec:?}: a miss");
    }
}

/// Once a function that encrypts has used its prefix on an instance, the
/// other writers and readers of those entries there seal and refuse
/// plaintext too (a `set` that does not say `encrypt`, another function).
#[tokio::test]
async fn a_prefix_an_encrypting_function_uses_stays_sealed_for_its_siblings() {
    let ns = "formats-siblings";
    let cache = builder(ns)
        .encryption_keys(KeyRing::new(1, [4; 32]))
        .build()
        .await
        .unwrap();
    let value = record(1, 100);
    let got = cache
        .entry("rec", &1u64)
        .ttl(MINUTE)
        .encrypt()
        .get_with(|| async { value.clone() })
        .await;
    assert_eq!(got, value);
    cache
        .entry("rec", &2u64)
        .ttl(MINUTE)
        .set(&value)
        .await
        .unwrap();
    let written = stored(&format!("{ns}:rec:2")).await;
    assert!(flags(&written).2, "the plain set is sealed too");
    assert!(
        !written.windows(5).any(|w| w == b"lorem"),
        "no plaintext in Redis"
    );
    // A plaintext value planted under the prefix: refused by a reader
    // that does not say `encrypt` either.
    let plain = builder(ns).build().await.unwrap();
    plain
        .entry("rec", &3u64)
        .ttl(MINUTE)
        .set(&value)
        .await
        .unwrap();
    assert!(read(&cache, 3, &value).await, "planted plaintext: a miss");
    assert_eq!(cache.stats().undecryptable, 1);
}

/// postcard cannot read back a type that needs `deserialize_any` (here an
/// untagged enum): its values are written in JSON instead, so they are
/// hits, not a miss on every call.
#[tokio::test]
async fn a_type_postcard_cannot_read_back_is_written_in_json() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(u64),
        Text(String),
    }
    let ns = "formats-untagged";
    let writer = builder(ns).codec(Codec::Postcard).build().await.unwrap();
    let value = Loose::Text("hello".into());
    writer
        .entry("loose", &1u64)
        .ttl(MINUTE)
        .set(&value)
        .await
        .unwrap();
    assert_eq!(flags(&stored(&format!("{ns}:loose:1")).await).0, 0, "JSON");
    let reader = builder(ns).codec(Codec::Postcard).build().await.unwrap();
    let got = reader
        .entry("loose", &1u64)
        .ttl(MINUTE)
        .get_with(|| async { unreachable!("an L2 hit") as Loose })
        .await;
    assert_eq!(got, value);
    // A type postcard reads back stays postcard.
    writer
        .entry("strict", &1u64)
        .ttl(MINUTE)
        .set(&7u64)
        .await
        .unwrap();
    assert_eq!(flags(&stored(&format!("{ns}:strict:1")).await).0, 1);
}

/// Values postcard would read back as something else, or not at all, are
/// written in JSON, value by value: a field skipped only in some values
/// (which shifted the bytes into another value of the type), and an
/// `Option<serde_json::Value>` whose first value, `None`, reads back.
#[tokio::test]
async fn values_postcard_would_misread_are_written_in_json_each_time() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Tricky {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        a: Option<Vec<u8>>,
        b: Vec<u8>,
        c: Vec<u8>,
    }
    let ns = "formats-misread";
    let writer = builder(ns).codec(Codec::Postcard).build().await.unwrap();
    let whole = Tricky {
        a: Some(vec![9]),
        b: vec![],
        c: vec![],
    };
    let skipping = Tricky {
        a: None,
        b: vec![1],
        c: vec![0, 0],
    };
    writer
        .entry("t", &1u64)
        .ttl(MINUTE)
        .set(&whole)
        .await
        .unwrap();
    writer
        .entry("t", &2u64)
        .ttl(MINUTE)
        .set(&skipping)
        .await
        .unwrap();
    assert_eq!(flags(&stored(&format!("{ns}:t:1")).await).0, 1, "postcard");
    assert_eq!(flags(&stored(&format!("{ns}:t:2")).await).0, 0, "JSON");
    let reader = builder(ns).codec(Codec::Postcard).build().await.unwrap();
    let got = reader
        .entry("t", &2u64)
        .ttl(MINUTE)
        .get_with(|| async { unreachable!("an L2 hit") as Tricky })
        .await;
    assert_eq!(got, skipping, "the value written, not another");

    let values = [None, Some(serde_json::json!({"k": [1, 2]}))];
    for (id, value) in (1u64..).zip(values) {
        writer
            .entry("v", &id)
            .ttl(MINUTE)
            .set(&value)
            .await
            .unwrap();
        let fresh = builder(ns).build().await.unwrap();
        let got = fresh
            .entry("v", &id)
            .ttl(MINUTE)
            .get_with(|| async { unreachable!("an L2 hit") as Option<serde_json::Value> })
            .await;
        assert_eq!(got, value);
    }
}

/// A legal value as deep as JSON takes (100 links of `Option<Box<_>>`) is
/// read back in MessagePack and postcard too: the nesting bound is not
/// stricter than serde_json's for it.
#[tokio::test]
async fn a_deep_but_legal_value_reads_back_in_every_codec() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Chain {
        v: u8,
        next: Option<Box<Chain>>,
    }
    let chain = (0..100).fold(Chain { v: 0, next: None }, |next, v| Chain {
        v,
        next: Some(Box::new(next)),
    });
    let ns = "formats-chain";
    for codec in [Codec::Json, Codec::Postcard, Codec::MessagePack] {
        let writer = builder(ns).codec(codec).build().await.unwrap();
        writer
            .entry("c", &1u64)
            .ttl(MINUTE)
            .set(&chain)
            .await
            .unwrap();
        let fresh = builder(ns).build().await.unwrap();
        let got = fresh
            .entry("c", &1u64)
            .ttl(MINUTE)
            .get_with(|| async { unreachable!("{codec:?}: an L2 hit") as Chain })
            .await;
        assert_eq!(got, chain);
    }
}

/// Under a byte budget, a value postcard cannot write (it goes to Redis in
/// JSON) is weighed in JSON too, and kept in L1.
#[tokio::test]
async fn a_value_postcard_cannot_write_is_kept_in_l1_under_a_budget() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Flat {
        id: u64,
        #[serde(flatten)]
        rest: std::collections::BTreeMap<String, u64>,
    }
    let cache = Cache::builder()
        .codec(Codec::Postcard)
        .l1_max_bytes(1 << 20)
        .build()
        .await
        .unwrap();
    let value = Flat {
        id: 1,
        rest: [("x".to_owned(), 2)].into(),
    };
    for _ in 0..3 {
        let got = cache
            .entry("flat", &1u64)
            .ttl(MINUTE)
            .get_with(|| async { value.clone() })
            .await;
        assert_eq!(got, value);
    }
    assert_eq!(cache.stats().loads, 1, "kept in L1 after the first load");
}
