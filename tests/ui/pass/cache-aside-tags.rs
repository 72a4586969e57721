//! `#[cache_aside]` with tags: constant, from arguments and their fields,
//! and from `{self.tenant}`.

#![deny(warnings)]

use tiercache::{Cache, cache_aside};

struct Query {
    org: u64,
    term: String,
}

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}", tags = ["users", "org:{org}"], skip(org))]
async fn user(id: u64, org: u64) -> String {
    format!("{id}@{org}")
}

#[cache_aside(
    prefix = "search",
    ttl = "5m",
    key = "{query.org}/{query.term}",
    tags = ["org:{query.org}"]
)]
async fn search(query: &Query) -> Vec<String> {
    vec![query.term.clone()]
}

struct Directory {
    cache: Cache,
    tenant: String,
}

impl Directory {
    #[cache_aside(
        prefix = "member",
        ttl = "5m",
        key = "{self.tenant}:{id}",
        tags = ["tenant:{self.tenant}", "org:{self.tenant}/{org}"],
        skip(org),
        cache = self.cache
    )]
    async fn member(&self, id: u64, org: u64) -> Option<String> {
        Some(format!("{}:{id}@{org}", self.tenant))
    }
}

async fn call_all() {
    let _ = user(1, 2).await;
    let _ = search(&Query {
        org: 1,
        term: "a".to_owned(),
    })
    .await;
    let directory = Directory {
        cache: Cache::in_memory(),
        tenant: "acme".to_owned(),
    };
    let _ = directory.member(1, 2).await;
}

fn main() {
    drop(call_all());
}
