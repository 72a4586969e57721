use tiercache::{cache_aside, write_through};

#[cache_aside(prefix = "name", ttl = "5m", key = "{id}")]
async fn name(id: u64) -> String {
    format!("user {id}")
}

#[write_through(name)]
async fn rename(id: u64, new: String) -> String {
    new
}

#[write_through(self.names[0](id))]
async fn relabel(id: u64, new: String) -> String {
    new
}

fn main() {}
