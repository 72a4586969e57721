use serde::{Deserialize, Serialize};
use tiercache::write_through;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[write_through(prefix = "user", ttl = "5m", key = "{id}")]
async fn rename(id: u64, name: String) -> ApiResult<User> {
    Ok(User { id, name })
}

fn main() {}
