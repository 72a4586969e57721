use tiercache::cache_aside;

#[cache_aside(prefix = "a", ttl = "5m", codec = "bincode")]
async fn unmaintained(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "b", ttl = "5m", codec = "postcrd")]
async fn misspelt(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "c", ttl = "5m", codec = postcard)]
async fn not_a_string(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "d", ttl = "5m", compress = "gzip")]
async fn unknown_compression(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "e", ttl = "5m", compress = "zstd", compress_above = "4k")]
async fn threshold_not_an_integer(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "f", ttl = "5m", encrypt = "yes")]
async fn encrypt_not_a_bool(id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "g", ttl = "5m", compres = "zstd")]
async fn misspelt_option(id: u64) -> u64 {
    id
}

fn main() {}
