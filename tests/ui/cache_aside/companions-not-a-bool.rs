use tiercache::cache_aside;

#[cache_aside(prefix = "name", ttl = "5m", companions = "no")]
async fn name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
