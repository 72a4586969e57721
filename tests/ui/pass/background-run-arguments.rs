//! What a background run (`stale`, `refresh_ahead`, `timeout`) copies
//! compiles without a warning: a `self` renamed on the syntax tree (`use`
//! trees, `self::` paths, nested items and macros' field names keep
//! theirs), an argument only the key uses, a `#[cfg]` argument, a borrowed
//! `impl Trait`.

#![deny(warnings)]

use tiercache::{Cache, KeyPart, cache_aside};

fn helper() -> &'static str {
    "helper"
}

macro_rules! record {
    (self = $value:expr) => {
        drop($value)
    };
}

#[derive(Clone, Debug)]
struct Shop {
    cache: Cache,
    name: String,
}

impl Shop {
    #[cache_aside(prefix = "shop", ttl = "5m", key = "{id}", stale = "1h", cache = self.cache)]
    async fn describe(&self, id: u64) -> String {
        use std::fmt::{self, Write};
        struct Local;
        impl Local {
            fn name(&self) -> &'static str {
                "local"
            }
        }
        record!(self = self.name.clone());
        let mut out = String::new();
        let written: fmt::Result = write!(out, "{}:{}:{}", self.name, self::helper(), Local.name());
        let _ = written;
        out
    }
}

#[cache_aside(prefix = "keyed", ttl = "5m", refresh_ahead, cache = cache, skip(cache))]
async fn keyed(
    cache: &Cache,
    key_only: u64,
    #[cfg(any())] missing: u64,
    shown: &(impl std::fmt::Display + KeyPart + Clone + Send + Sync + 'static),
) -> String {
    format!("<{shown}>")
}

fn main() {
    let cache = Cache::in_memory();
    let shop = Shop {
        cache: cache.clone(),
        name: "corner".to_owned(),
    };
    drop(shop.describe(1));
    drop(keyed(&cache, 1, &2_u8));
}
