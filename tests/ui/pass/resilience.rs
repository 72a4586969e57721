//! The stampede and failure options: `stale`, `refresh_ahead`, `timeout`
//! with `fail_safe`, `hard_timeout`, `cache_none`, `lock`, on `&self`
//! methods of a `Clone` repository (copied into background runs, `self`
//! used in the body, in a macro and in a closure), with borrowed and owned
//! arguments, and on a free function.

#![deny(warnings)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, LoadTimeout, cache_aside};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
enum DbError {
    Down,
    Timeout(LoadTimeout),
}

impl From<LoadTimeout> for DbError {
    fn from(timeout: LoadTimeout) -> Self {
        Self::Timeout(timeout)
    }
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    tenant: String,
    names: Arc<Vec<String>>,
}

impl Repo {
    fn name(&self, id: u64) -> Option<String> {
        let index = usize::try_from(id).ok()?;
        self.names.get(index).cloned()
    }

    #[cache_aside(prefix = "user", ttl = "5m", key = "{self.tenant}:{id}", cache = self.cache, stale = "1h")]
    async fn user(&self, id: u64) -> User {
        User {
            id,
            name: format!("{}/{}", self.tenant, self.name(id).unwrap_or_default()),
        }
    }

    #[cache_aside(prefix = "search", ttl = "5m", cache = self.cache, stale = "1h", refresh_ahead)]
    async fn search(&self, term: &str, page: u32) -> Vec<User> {
        let matches = |name: &&String| name.contains(term);
        self.names
            .iter()
            .filter(matches)
            .skip(page as usize * 10)
            .map(|name| User {
                id: 0,
                name: format!("{}:{name}", self.tenant),
            })
            .collect()
    }

    #[cache_aside(prefix = "by-name", ttl = "5m", cache = self.cache, refresh_ahead = 2.5)]
    async fn by_name(&self, name: String) -> Option<User> {
        let found = self.names.iter().position(|n| *n == name)?;
        Some(User {
            id: found as u64,
            name,
        })
    }

    #[cache_aside(prefix = "profile", ttl = "5m", cache = self.cache, fail_safe = "1h", timeout = "2s")]
    async fn profile(&self, id: u64) -> Result<User, DbError> {
        let name = self.name(id).ok_or(DbError::Down)?;
        Ok(User { id, name })
    }

    #[cache_aside(prefix = "slow", ttl = "5m", cache = self.cache, fail_safe = "1h", timeout = "2s", hard_timeout = "10s")]
    async fn slow(&self, id: u64) -> Result<User, DbError> {
        self.profile(id).await
    }

    #[cache_aside(prefix = "bounded", ttl = "5m", cache = self.cache, hard_timeout = "10s", lock = false)]
    async fn bounded(&self, id: u64) -> Result<Option<User>, DbError> {
        Ok(self.name(id).map(|name| User { id, name }))
    }

    #[cache_aside(prefix = "maybe", ttl = "5m", cache = self.cache, cache_none = "30s", stale = "10m")]
    async fn maybe(&self, id: u64) -> Option<User> {
        self.name(id).map(|name| User { id, name })
    }

    #[cache_aside(prefix = "lookup", ttl = "5m", cache = self.cache, cache_none = "30s", fail_safe = "1h")]
    async fn lookup(&self, id: u64) -> Result<Option<User>, DbError> {
        Ok(self.name(id).map(|name| User { id, name }))
    }
}

/// Nothing runs in the background without `stale`, `timeout` or a
/// `refresh_ahead` above zero: a `&mut self` method may use the others.
struct Counter {
    loads: u64,
}

impl Counter {
    #[cache_aside(
        prefix = "count",
        ttl = "5m",
        refresh_ahead = false,
        lock,
        fail_safe = "1h"
    )]
    async fn count(&mut self, page: u32) -> Result<u64, DbError> {
        self.loads += 1;
        Ok(u64::from(page) * self.loads)
    }
}

#[cache_aside(
    prefix = "greeting",
    ttl = "5m",
    stale = "1h",
    timeout = "250ms",
    fail_safe = "1d",
    hard_timeout = "5s"
)]
async fn greeting(lang: &str, name: String) -> Result<String, DbError> {
    match lang {
        "fr" => Ok(format!("Bonjour, {name} !")),
        "en" => Ok(format!("Hello, {name}!")),
        _ => Err(DbError::Down),
    }
}

async fn call_all() {
    let repo = Repo {
        cache: Cache::in_memory(),
        tenant: "acme".to_owned(),
        names: Arc::new(vec!["Ada".to_owned()]),
    };
    let _: User = repo.user(0).await;
    let _: Vec<User> = repo.search("A", 0).await;
    let _: Option<User> = repo.by_name("Ada".to_owned()).await;
    let _: Result<User, DbError> = repo.profile(0).await;
    if let Err(DbError::Timeout(timeout)) = repo.slow(0).await {
        let _ = timeout.after;
    }
    let _: Result<Option<User>, DbError> = repo.bounded(0).await;
    let _: Option<User> = repo.maybe(0).await;
    let _: Result<Option<User>, DbError> = repo.lookup(0).await;
    let _ = Counter { loads: 0 }.count(1).await;
    let _: Result<String, DbError> = greeting("en", "Ada".to_owned()).await;
}

fn main() {
    drop(call_all());
}
