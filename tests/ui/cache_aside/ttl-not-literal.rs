use tiercache::cache_aside;

const FIVE_MINUTES: u64 = 300;

#[cache_aside(prefix = "square", ttl = FIVE_MINUTES)]
async fn square(n: u64) -> u64 {
    n * n
}

fn main() {
    let _ = FIVE_MINUTES;
}
