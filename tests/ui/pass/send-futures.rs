//! A cached function's future is `Send` (and `'static` with owned
//! arguments) exactly when the uncached one is: every shape, with the
//! common error types, borrowed and owned arguments, spawned on tokio; and
//! in a trait whose method must return `impl Future + Send`.

#![deny(warnings)]

use std::error::Error;
use std::future::Future;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside, invalidates, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: String,
}

#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("not found")]
    NotFound,
}

type BoxError = Box<dyn Error + Send + Sync>;

fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

/// One cached reader per shape and error type, spawned with an owned
/// argument and sent with a borrowed one.
macro_rules! readers {
    ($($module:ident: $error:ty;)*) => {$(
        mod $module {
            use super::*;

            #[cache_aside(prefix = "plain", ttl = "5m")]
            pub(crate) async fn plain(id: &str) -> User {
                User { id: id.to_owned() }
            }

            #[cache_aside(prefix = "fallible", ttl = "5m")]
            pub(crate) async fn fallible(id: &str) -> Result<User, $error> {
                Ok(User { id: id.to_owned() })
            }

            #[cache_aside(prefix = "fallible-optional", ttl = "5m")]
            pub(crate) async fn fallible_optional(id: String) -> Result<Option<User>, $error> {
                Ok(Some(User { id }))
            }

            #[cache_aside(prefix = "optional", ttl = "5m", stale = "1m")]
            pub(crate) async fn optional(id: String) -> Option<User> {
                Some(User { id })
            }

            #[cache_aside(prefix = "resilient", ttl = "5m", timeout = "1s", fail_safe = "1h")]
            pub(crate) async fn resilient(id: &str) -> Result<User, $error> {
                Ok(User { id: id.to_owned() })
            }

            #[write_through(prefix = "fallible", ttl = "5m", key = "{id}")]
            pub(crate) async fn save(id: &str) -> Result<User, $error> {
                Ok(User { id: id.to_owned() })
            }

            #[invalidates(keys = ["fallible:{id}"])]
            pub(crate) async fn delete(id: String) -> Result<(), $error> {
                drop(id);
                Ok(())
            }

            #[write_through(fallible(id))]
            pub(crate) async fn save_to_reader(id: &str) -> Result<User, $error> {
                Ok(User { id: id.to_owned() })
            }

            #[invalidates(fallible(&id), optional(id.clone()))]
            pub(crate) async fn forget(id: String) -> Result<(), $error> {
                drop(id);
                Ok(())
            }

            pub(crate) fn spawn_all() {
                let id = String::from("1");
                tokio::spawn(fallible_optional(id.clone()));
                tokio::spawn(optional(id.clone()));
                tokio::spawn(delete(id.clone()));
                tokio::spawn(async move {
                    let _ = plain(&id).await;
                    let _ = fallible(&id).await;
                    let _ = resilient(&id).await;
                    let _ = save(&id).await;
                    let _ = save_to_reader(&id).await;
                    let _ = forget(id.clone()).await;
                    let _ = fallible_invalidate(&id).await;
                    let _ = fallible_refresh(&id).await;
                    let _ = fallible_peek(&id).await;
                    let _ = fallible_set(&id, &User { id: id.clone() }).await;
                    let _ = resilient_refresh(&id).await;
                    let _ = optional_refresh(id.clone()).await;
                });
                let borrowed = String::from("2");
                drop(assert_send(fallible(&borrowed)));
            }
        }
    )*};
}

readers! {
    box_error: BoxError;
    box_error_written_out: Box<dyn Error + Send + Sync>;
    anyhow_error: anyhow::Error;
    io_error: std::io::Error;
    thiserror_enum: DbError;
}

/// An error that is not `Send`: the future that returns it is still
/// `Send`, as the uncached one is (it is never held across an `await`),
/// though it cannot be spawned (its output is not `Send`).
mod unsendable_error {
    use super::*;

    #[cache_aside(prefix = "local", ttl = "5m")]
    pub(crate) async fn fallible(id: &str) -> Result<User, Box<dyn Error>> {
        Ok(User { id: id.to_owned() })
    }

    #[cache_aside(prefix = "local-optional", ttl = "5m")]
    pub(crate) async fn fallible_optional(id: String) -> Result<Option<User>, Box<dyn Error>> {
        Ok(Some(User { id }))
    }

    #[write_through(prefix = "local", ttl = "5m", key = "{id}")]
    pub(crate) async fn save(id: String) -> Result<Option<User>, Box<dyn Error>> {
        Ok(Some(User { id }))
    }

    #[invalidates(keys = ["local:{id}"])]
    pub(crate) async fn delete(id: String) -> Result<(), Box<dyn Error>> {
        drop(id);
        Ok(())
    }

    pub(crate) fn send_all() {
        let id = String::from("1");
        drop(assert_send(fallible(&id)));
        drop(assert_send(fallible_optional(id.clone())));
        drop(assert_send(save(id.clone())));
        drop(assert_send(delete(id)));
    }
}

/// A trait whose method must return a `Send` future, as a tonic service or
/// an axum handler needs.
trait Users {
    fn user(&self, id: &str) -> impl Future<Output = Result<User, BoxError>> + Send;
}

struct CachedUsers {
    cache: Cache,
}

impl Users for CachedUsers {
    #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache, companions = false)]
    async fn user(&self, id: &str) -> Result<User, BoxError> {
        if id.is_empty() {
            return Err("empty id".into());
        }
        Ok(User { id: id.to_owned() })
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        box_error::spawn_all();
        box_error_written_out::spawn_all();
        anyhow_error::spawn_all();
        io_error::spawn_all();
        thiserror_enum::spawn_all();
        unsendable_error::send_all();
        let users = CachedUsers {
            cache: Cache::in_memory(),
        };
        let _ = DbError::NotFound;
        let _ = users.user("1").await;
    });
}
