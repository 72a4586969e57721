//! Every format option, with every format feature on (as `scripts/test`
//! builds): codecs, compression, its threshold, encryption.
use tiercache::{cache_aside, cache_batch, write_through};

#[cache_aside(prefix = "a", ttl = "5m", codec = "postcard", compress = "zstd", compress_above = 4096, encrypt)]
async fn all(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "b", ttl = "5m", codec = "msgpack", compress = "lz4", encrypt = false)]
async fn msgpack(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "c", ttl = "5m", codec = "json", compress = "none")]
async fn json(id: u64) -> u64 {
    id
}

#[write_through(prefix = "a", ttl = "5m", key = "{id}", codec = "postcard", compress = "zstd", compress_above = 4096, encrypt)]
async fn save(id: u64) -> u64 {
    id
}

#[cache_batch(prefix = "d", ttl = "5m", codec = "postcard", encrypt)]
async fn many(ids: &[u64]) -> std::collections::HashMap<u64, u64> {
    ids.iter().map(|id| (*id, *id)).collect()
}

fn main() {}
