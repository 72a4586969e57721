use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}", tags = [])]
async fn user(id: u64) -> String {
    format!("user-{id}")
}

fn main() {}
