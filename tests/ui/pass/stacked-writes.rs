//! `#[write_through]` and `#[invalidates]` on one function, in both orders.

#![deny(warnings)]

use serde::{Deserialize, Serialize};
use tiercache::{Cache, invalidates, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u64,
}

#[derive(Debug)]
struct DbError;

#[write_through(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org}"])]
#[invalidates(prefixes = ["user-list"], tags = ["org-members:{org}"])]
async fn save(id: u64, org: u64) -> Result<User, DbError> {
    Ok(User { id, org })
}

#[invalidates(keys = ["org:{org}"], when = "always")]
#[write_through(prefix = "user", ttl = "5m", key = "{id}")]
async fn move_user(id: u64, org: u64) -> Option<User> {
    (org != 0).then_some(User { id, org })
}

struct Users {
    cache: Cache,
}

impl Users {
    #[invalidates(prefixes = ["user-list"], cache = self.cache)]
    #[write_through(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache)]
    async fn save(&self, id: u64, org: u64) -> User {
        User { id, org }
    }

    #[write_through(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache)]
    #[invalidates(tags = ["org:{org}"], when = "before", cache = self.cache)]
    async fn save_mut(&mut self, id: u64, org: u64) -> Result<User, DbError> {
        Ok(User { id, org })
    }
}

async fn call_all() {
    let _: Result<User, DbError> = save(1, 2).await;
    let _: Option<User> = move_user(1, 2).await;
    let mut users = Users {
        cache: Cache::in_memory(),
    };
    let _: User = users.save(1, 2).await;
    let _: Result<User, DbError> = users.save_mut(1, 2).await;
}

fn main() {
    drop(call_all());
}
