use tiercache::cache_aside;

#[cache_aside(prefix = "name", ttl = "5m")]
async fn name(id: u64) -> impl std::fmt::Display {
    id
}

fn main() {}
