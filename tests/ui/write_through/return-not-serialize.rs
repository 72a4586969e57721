use serde::Deserialize;
use tiercache::write_through;

#[derive(Clone, Deserialize)]
struct User {
    id: u64,
}

#[write_through(prefix = "user", ttl = "5m", key = "{id}")]
async fn save_user(id: u64) -> Result<User, String> {
    Ok(User { id })
}

fn main() {}
