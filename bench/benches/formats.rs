//! Case 8: what each codec, compression and encryption costs and saves, on
//! a 200-byte, a 20 KB and a 1 MB value, through the envelope code an L2
//! write and read run (`envelope_of` / `value_of`): the bytes stored, and
//! the time to write (serialize, compress, seal) and to read (open,
//! decompress, deserialize), beside serde_json uncompressed, in one run.
//!
//! The values are records of words drawn from a fixed vocabulary with a
//! fixed seed: text that compresses like real text, not a repeated string.
//! Sizes go to `target/tiercache-bench/formats.json` for `report`; times
//! are criterion's (`formats/{size}/{format}/{write|read}`).
//!
//! `cargo bench -p tiercache-bench --bench formats`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tiercache::{Codec, Compression, KeyRing};
use tiercache_bench::out_dir;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    title: String,
    tags: Vec<String>,
    scores: Vec<u32>,
    body: Vec<Paragraph>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Paragraph {
    heading: String,
    text: String,
    views: u64,
}

const WORDS: &[&str] = &[
    "cache",
    "order",
    "user",
    "product",
    "price",
    "stock",
    "ship",
    "region",
    "account",
    "status",
    "pending",
    "active",
    "billing",
    "invoice",
    "total",
    "discount",
    "review",
    "rating",
    "return",
    "warehouse",
    "supplier",
    "catalog",
    "session",
    "token",
    "limit",
    "window",
    "result",
    "query",
    "index",
    "value",
    "record",
    "update",
    "delete",
    "create",
    "batch",
    "stream",
    "event",
    "metric",
];

fn words(rng: &mut fastrand::Rng, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
        if rng.u8(..10) == 0 {
            out.push_str(&rng.u32(..100_000).to_string());
        }
    }
    out
}

/// A record whose JSON is about `bytes` long.
fn record(bytes: usize) -> Record {
    let mut rng = fastrand::Rng::with_seed(16);
    let mut record = Record {
        id: 7,
        title: words(&mut rng, 4),
        tags: (0..3).map(|_| words(&mut rng, 1)).collect(),
        scores: (0..4).map(|_| rng.u32(..1000)).collect(),
        body: Vec::new(),
    };
    while serde_json::to_vec(&record).unwrap().len() < bytes {
        let text_words = ((bytes / 8).clamp(1, 120)).min(120);
        record.body.push(Paragraph {
            heading: words(&mut rng, 2),
            text: words(&mut rng, text_words),
            views: rng.u64(..1_000_000),
        });
    }
    record
}

/// The formats compared: (name, codec, compression, sealed).
fn formats() -> Vec<(&'static str, Codec, Compression, bool)> {
    vec![
        ("json", Codec::Json, Compression::None, false),
        ("json+lz4", Codec::Json, Compression::Lz4, false),
        ("json+zstd", Codec::Json, Compression::zstd(), false),
        ("postcard", Codec::Postcard, Compression::None, false),
        ("postcard+lz4", Codec::Postcard, Compression::Lz4, false),
        ("postcard+zstd", Codec::Postcard, Compression::zstd(), false),
        ("msgpack", Codec::MessagePack, Compression::None, false),
        ("msgpack+lz4", Codec::MessagePack, Compression::Lz4, false),
        (
            "msgpack+zstd",
            Codec::MessagePack,
            Compression::zstd(),
            false,
        ),
        ("json+sealed", Codec::Json, Compression::None, true),
        (
            "postcard+zstd+sealed",
            Codec::Postcard,
            Compression::zstd(),
            true,
        ),
    ]
}

const SIZES: [(&str, usize); 3] = [("200B", 200), ("20KB", 20_000), ("1MB", 1_000_000)];
const REDIS_KEY: &[u8] = b"bench:record:7";

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .configure_from_args();
    let keys = KeyRing::new(1, [3; 32]);
    let mut sizes = serde_json::Map::new();
    for (size_name, bytes) in SIZES {
        let value = record(bytes);
        let json_len = serde_json::to_vec(&value).unwrap().len();
        let mut group = criterion.benchmark_group(format!("formats/{size_name}"));
        for (name, codec, compression, sealed) in formats() {
            let keys = sealed.then_some(&keys);
            // Compressed from the first byte: the threshold is what the
            // table helps choose.
            let how = (codec, compression, 0);
            let stored = tiercache::__private::envelope_of(&value, how, keys, REDIS_KEY).unwrap();
            let back: Record = tiercache::__private::value_of(&stored, keys, REDIS_KEY).unwrap();
            assert_eq!(back, value, "{name} round-trips");
            sizes.insert(
                format!("{size_name}/{name}"),
                json!({ "stored": stored.len(), "json": json_len }),
            );
            group.bench_function(format!("{name}/write"), |b| {
                b.iter(|| {
                    tiercache::__private::envelope_of(black_box(&value), how, keys, REDIS_KEY)
                })
            });
            group.bench_function(format!("{name}/read"), |b| {
                b.iter(|| {
                    tiercache::__private::value_of::<Record>(black_box(&stored), keys, REDIS_KEY)
                })
            });
        }
        group.finish();
    }
    let path = out_dir().join("formats.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&sizes).unwrap()).unwrap();
    criterion.final_summary();
}
