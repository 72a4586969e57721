//! Return types whose shape the attributes read however they are spelled:
//! `io::Result<T>`, a `$ret:ty` forwarded by `macro_rules!`, parentheses,
//! an alias of a plain value, and a generic `-> T` (plain: the key holds
//! `T`'s value). An alias of `Result` or `Option` is a compile error (see
//! `cache_aside/return-result-alias.rs`), so each of these compiling means
//! it was read for what it is. `ApiError` is neither `Serialize` nor
//! `Clone`: an `Err` read as a value would not compile.

#![deny(warnings)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tiercache::{KeyPart, cache_aside, invalidates, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

#[derive(Debug)]
struct ApiError;

type Users = Vec<User>;
type ApiResult<T> = Result<T, ApiError>;
type MaybeUser = Option<User>;

#[cache_aside(prefix = "io", ttl = "5m")]
async fn io_result(id: u64) -> std::io::Result<User> {
    Ok(User { id })
}

macro_rules! cached {
    ($name:ident, $prefix:tt, $id:ident -> $ret:ty, $body:expr) => {
        #[cache_aside(prefix = $prefix, ttl = "5m")]
        async fn $name($id: u64) -> $ret {
            $body
        }
    };
}

cached!(by_macro, "macro", id -> Result<User, ApiError>, Ok(User { id }));
cached!(optional_by_macro, "macro-optional", id -> Option<User>, Some(User { id }));
cached!(
    io_optional_by_macro,
    "macro-io-optional",
    id -> std::io::Result<Option<User>>,
    Ok(Some(User { id }))
);

macro_rules! writers {
    ($ret:ty) => {
        #[write_through(prefix = "macro", ttl = "5m", key = "{id}")]
        async fn save(id: u64) -> $ret {
            Ok(User { id })
        }

        #[invalidates(keys = ["macro:{id}"])]
        async fn delete(id: u64) -> $ret {
            Ok(User { id })
        }
    };
}

writers!(Result<User, ApiError>);

#[allow(unused_parens)]
#[cache_aside(prefix = "parenthesized", ttl = "5m")]
async fn parenthesized(id: u64) -> (Result<User, ApiError>) {
    Ok(User { id })
}

#[cache_aside(prefix = "users", ttl = "5m")]
async fn users(id: u64) -> Users {
    vec![User { id }]
}

#[cache_aside(prefix = "echo", ttl = "5m")]
async fn echo<T>(value: T) -> T
where
    T: KeyPart + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    value
}

#[write_through(prefix = "echo", ttl = "5m", key = "{value}")]
async fn store<T>(value: T) -> T
where
    T: KeyPart + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    value
}

/// For `#[invalidates]` an `Option` is a value like any other.
#[invalidates(keys = ["user:{id}"])]
async fn forget(id: u64) -> MaybeUser {
    Some(User { id })
}

/// With `when = "always"` a failure invalidates too: an alias is fine.
#[invalidates(keys = ["user:{id}"], when = "always")]
async fn forget_always(id: u64) -> ApiResult<()> {
    let _ = id;
    Ok(())
}

async fn call_all() {
    let _: std::io::Result<User> = io_result(1).await;
    let _: Result<User, ApiError> = by_macro(1).await;
    let _: Option<User> = optional_by_macro(1).await;
    let _: std::io::Result<Option<User>> = io_optional_by_macro(1).await;
    let _: Result<User, ApiError> = save(1).await;
    let _: Result<User, ApiError> = delete(1).await;
    let _: Result<User, ApiError> = parenthesized(1).await;
    let _: Users = users(1).await;
    let _: u64 = echo(1_u64).await;
    let _: String = store("a".to_owned()).await;
    let _: MaybeUser = forget(1).await;
    let _: ApiResult<()> = forget_always(1).await;
}

fn main() {
    drop(call_all());
}
