//! A cached method in a trait impl.

#![deny(warnings)]

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

trait Users {
    async fn user(&self, id: u64) -> Result<User, String>;
}

struct CachedUsers {
    cache: Cache,
}

impl Users for CachedUsers {
    #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache, companions = false)]
    async fn user(&self, id: u64) -> Result<User, String> {
        Ok(User { id })
    }
}

async fn call_all() {
    let users = CachedUsers {
        cache: Cache::in_memory(),
    };
    let _ = users.user(1).await;
}

fn main() {
    drop(call_all());
}
