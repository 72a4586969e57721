use tiercache::{cache_aside, invalidates};

#[cache_aside(prefix = "name", ttl = "5m", key = "{id}")]
async fn name(id: u64) -> String {
    format!("user {id}")
}

#[invalidates(tags = ["user:{id}"], name(id))]
async fn delete(id: u64) {}

fn main() {}
