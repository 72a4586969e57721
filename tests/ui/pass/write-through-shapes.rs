//! `#[write_through]` on every return shape, with tags; arguments outside
//! the key are the data written.

#![deny(warnings)]

use serde::{Deserialize, Serialize};
use tiercache::write_through;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

#[write_through(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org}", "users"])]
async fn save(id: u64, org: u64, name: String) -> User {
    User { id, org, name }
}

#[write_through(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org}"])]
async fn save_if_known(id: u64, org: u64, name: String) -> Option<User> {
    (id != 0).then_some(User { id, org, name })
}

#[write_through(prefix = "user", ttl = "5m", key = "{user.id}", tags = ["org:{user.org}"])]
async fn store(user: User) -> Result<User, DbError> {
    if user.name.is_empty() {
        return Err(DbError);
    }
    Ok(user)
}

#[write_through(prefix = "user", ttl = 60, key = "{id}", skip(trace))]
async fn rename(id: u64, name: String, trace: bool) -> Result<Option<User>, DbError> {
    if trace {
        println!("renaming {id}");
    }
    Ok(Some(User { id, org: 0, name }))
}

async fn call_all() {
    let _: User = save(1, 2, "Ada".to_owned()).await;
    let _: Option<User> = save_if_known(1, 2, "Ada".to_owned()).await;
    let _: Result<User, DbError> = store(User {
        id: 1,
        org: 2,
        name: "Ada".to_owned(),
    })
    .await;
    let _: Result<Option<User>, DbError> = rename(1, "Bob".to_owned(), false).await;
}

fn main() {
    drop(call_all());
}
