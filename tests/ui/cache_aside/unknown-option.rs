use tiercache::cache_aside;

#[cache_aside(prefix = "square", tll = "5m")]
async fn square(n: u64) -> u64 {
    n * n
}

fn main() {}
