use tiercache::{cache_aside, write_through};

#[cache_aside(prefix = "name", ttl = "5m", key = "{id}")]
async fn name(id: u64) -> String {
    format!("user {id}")
}

#[write_through(name(id), ttl = "10m", key = "{id}")]
async fn rename(id: u64, new: String) -> String {
    new
}

fn main() {}
