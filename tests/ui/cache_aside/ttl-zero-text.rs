use tiercache::cache_aside;

#[cache_aside(prefix = "square", ttl = "0s")]
async fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
