//! Warming a cache at start-up, from a list of ids:
//!
//! ```sh
//! cargo run --example warm                       # the embedded default: no Redis
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example warm
//! ```
//!
//! With Redis, a second run finds everything cached already (another
//! instance warmed it): the tally says so.
//!
//! Two ways: through a `#[cache_aside]` function (its `_peek` companion,
//! then the function itself), one call per id, 8 at a time; and through a batch
//! (`cache.entries`), one query per 100 ids, 2 batches at a time. Each run
//! reports its progress to a callback, is bounded by a deadline, and ends
//! with a tally.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::warm::{Warm, unless_cached};
use tiercache::{Cache, cache_aside};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
}

/// The database: a query takes a millisecond, and counts itself.
struct Db {
    queries: AtomicUsize,
}

impl Db {
    async fn product(&self, id: u64) -> Result<Product, String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(Product {
            id,
            name: format!("product {id}"),
        })
    }

    async fn products(&self, ids: &[u64]) -> Result<Vec<(u64, Product)>, String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(ids
            .iter()
            .map(|&id| {
                let name = format!("product {id}");
                (id, Product { id, name })
            })
            .collect())
    }
}

#[cache_aside(prefix = "product", ttl = "1h", key = "{id}", skip(db))]
async fn product(db: &Db, id: u64) -> Result<Product, String> {
    db.product(id).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut builder = Cache::builder().namespace("tiercache-warm-example");
    if let Ok(url) = std::env::var("REDIS_URL") {
        builder = builder.redis(url);
    }
    let cache = match builder.build().await {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("the cache does not build: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = tiercache::set_global(cache.clone()) {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let db = Db {
        queries: AtomicUsize::new(0),
    };

    // One call per id, through the function's companions.
    let ids: Vec<u64> = (1..=500).collect();
    let progress = Warm::new(ids)
        .concurrency(8)
        .on_progress(|p| {
            if p.done % 100 == 0 {
                println!("  {} of {} products warmed", p.done, p.total.unwrap_or(0));
            }
        })
        .until(tokio::time::sleep(Duration::from_secs(30)))
        .run(|id| {
            let db = &db;
            unless_cached(product_peek(db, id), move || product(db, id))
        })
        .await;
    println!(
        "one call per id: {} loaded, {} cached already, {} failed{}; {} queries",
        progress.loaded,
        progress.cached,
        progress.failed,
        if progress.cancelled {
            " (stopped by the deadline)"
        } else {
            ""
        },
        db.queries.swap(0, Ordering::Relaxed),
    );

    // A batch per 100 ids: the same entries, one query per batch.
    let ids: Vec<u64> = (1..=1_000).collect();
    let progress = Warm::new(ids.chunks(100))
        .concurrency(2)
        .run(|chunk| {
            let db = &db;
            cache
                .entries("product", chunk)
                .ttl(Duration::from_secs(3600))
                .warm_with(move |missing: Vec<u64>| async move { db.products(&missing).await })
        })
        .await;
    println!(
        "a batch per 100 ids: {} loaded, {} cached already, {} failed; {} queries",
        progress.loaded,
        progress.cached,
        progress.failed,
        db.queries.load(Ordering::Relaxed),
    );

    // Warm: the first 1,000 products are hits now.
    let before = cache.stats().loads;
    for id in 1..=1_000 {
        if product(&db, id).await.is_err() {
            return ExitCode::FAILURE;
        }
    }
    println!(
        "1,000 calls after warming: {} loads",
        cache.stats().loads - before
    );
    ExitCode::SUCCESS
}
