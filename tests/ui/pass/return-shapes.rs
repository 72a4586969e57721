//! Every return shape of a free function: `T`, `Option<T>`, `Result<T, E>`,
//! `Result<Option<T>, E>` and an alias of `Result`.

#![deny(warnings)]

use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

#[cache_aside(prefix = "plain", ttl = "5m")]
async fn plain(id: u64) -> User {
    User {
        id,
        name: "Ada".to_owned(),
    }
}

#[cache_aside(prefix = "optional", ttl = "5m")]
async fn optional(id: u64) -> Option<User> {
    (id != 0).then(|| User {
        id,
        name: "Ada".to_owned(),
    })
}

#[cache_aside(prefix = "fallible", ttl = "5m")]
async fn fallible(id: u64) -> Result<User, DbError> {
    if id == 0 {
        return Err(DbError);
    }
    Ok(User {
        id,
        name: "Ada".to_owned(),
    })
}

#[cache_aside(prefix = "fallible-optional", ttl = "5m")]
async fn fallible_optional(id: u64) -> Result<Option<User>, DbError> {
    match id {
        0 => Err(DbError),
        1 => Ok(None),
        _ => Ok(Some(User {
            id,
            name: "Ada".to_owned(),
        })),
    }
}

#[cache_aside(prefix = "io", ttl = "5m")]
async fn io_alias(path: String) -> std::io::Result<String> {
    Ok(path)
}

#[cache_aside(prefix = "io-optional", ttl = "5m")]
async fn io_alias_optional(path: String) -> std::io::Result<Option<Vec<u8>>> {
    Ok(Some(path.into_bytes()))
}

async fn call_all() {
    let _: User = plain(1).await;
    let _: Option<User> = optional(1).await;
    let _: Result<User, DbError> = fallible(1).await;
    let _: Result<Option<User>, DbError> = fallible_optional(1).await;
    let _: std::io::Result<String> = io_alias("a".to_owned()).await;
    let _: std::io::Result<Option<Vec<u8>>> = io_alias_optional("a".to_owned()).await;
}

fn main() {
    drop(call_all());
}
