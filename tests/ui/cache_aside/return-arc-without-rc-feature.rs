use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

#[cache_aside(prefix = "user", ttl = "5m")]
async fn user(id: u64) -> Result<Arc<User>, String> {
    Ok(Arc::new(User { id }))
}

fn main() {}
