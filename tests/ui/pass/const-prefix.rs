#![deny(warnings)]

//! A reader and its writer share the prefix through a `const`.

use serde::{Deserialize, Serialize};
use tiercache::{cache_aside, invalidates, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

mod keys {
    pub const USER: &str = "user";
}

const PROFILE: &str = "profile/v2";

#[cache_aside(prefix = keys::USER, ttl = "5m", key = "{id}")]
async fn user(id: u64) -> Option<User> {
    Some(User { id, name: String::new() })
}

#[write_through(prefix = keys::USER, ttl = "5m", key = "{id}")]
#[invalidates(prefixes = ["user-list"])]
async fn save_user(id: u64, name: String) -> Option<User> {
    Some(User { id, name })
}

#[cache_aside(prefix = PROFILE, ttl = 60)]
async fn profile(id: u64) -> String {
    format!("{id}")
}

fn main() {
    let _ = (user(1), save_user(1, String::new()), profile(1));
}
