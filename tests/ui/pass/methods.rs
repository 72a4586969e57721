//! Methods with `&self` and `&mut self`, a cache in a field (owned or in an
//! `Arc`), and fields of `self` and of an argument in the key template.

#![deny(warnings)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

#[derive(Clone, Serialize, Deserialize)]
struct Page {
    items: Vec<String>,
}

struct Query {
    term: String,
    page: u32,
}

struct Catalog {
    cache: Cache,
    tenant: String,
    loads: u64,
}

impl Catalog {
    #[cache_aside(prefix = "search", ttl = "5m", key = "{self.tenant}:{query.page}/{query.term}", cache = self.cache)]
    async fn search(&self, query: &Query) -> Page {
        Page {
            items: vec![format!("{}: {} #{}", self.tenant, query.term, query.page)],
        }
    }

    #[cache_aside(prefix = "reload", ttl = "5m", key = "{self.tenant}:{id}", cache = self.cache)]
    async fn reload(&mut self, id: u64) -> Option<Page> {
        self.loads += 1;
        Some(Page {
            items: vec![id.to_string()],
        })
    }
}

struct Shared {
    cache: Arc<Cache>,
}

impl Shared {
    #[cache_aside(prefix = "shared", ttl = "1h30m", cache = self.cache)]
    async fn shared(&self, id: u64, lang: String) -> String {
        format!("{lang}:{id}")
    }
}

async fn call_all() {
    let mut catalog = Catalog {
        cache: Cache::in_memory(),
        tenant: "acme".to_owned(),
        loads: 0,
    };
    let query = Query {
        term: "shoes".to_owned(),
        page: 2,
    };
    let _ = catalog.search(&query).await;
    let _ = catalog.reload(7).await;
    let shared = Shared {
        cache: Arc::new(Cache::in_memory()),
    };
    let _ = shared.shared(1, "en".to_owned()).await;
}

fn main() {
    drop(call_all());
}
