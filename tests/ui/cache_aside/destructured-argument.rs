use tiercache::cache_aside;

#[cache_aside(prefix = "sum", ttl = "5m")]
async fn sum((a, b): (u64, u64)) -> u64 {
    a + b
}

fn main() {}
