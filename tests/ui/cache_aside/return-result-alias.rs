use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

/// Neither `Serialize` nor `Clone`: the only error is the one that says
/// what to write.
#[derive(Debug)]
struct ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[cache_aside(prefix = "user", ttl = "5m")]
async fn user(id: u64) -> ApiResult<User> {
    Ok(User { id })
}

fn main() {}
