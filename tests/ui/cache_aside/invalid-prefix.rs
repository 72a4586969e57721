use tiercache::cache_aside;

#[cache_aside(prefix = "user:v1", ttl = "5m")]
async fn user(id: u64) -> String {
    format!("user-{id}")
}

fn main() {}
