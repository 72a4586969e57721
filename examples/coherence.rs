//! Measures how long an invalidation takes to reach another instance's L1,
//! on a local Redis:
//!
//! ```sh
//! redis-server --port 6379 --daemonize yes
//! cargo run --release --example coherence   # REDIS_URL overrides redis://127.0.0.1:6379
//! ```
//!
//! Instance A holds a value in its L1; instance B invalidates it; the clock
//! runs from B's call until A has applied the message (A's
//! `remote_invalidations` counter moves). Repeated, then reported as
//! percentiles.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tiercache::{Cache, cache_aside};

const ROUNDS: usize = 500;

struct Service {
    cache: Cache,
}

impl Service {
    #[cache_aside(prefix = "price", ttl = "10m", cache = self.cache)]
    async fn price(&self, sku: u64) -> u64 {
        sku * 100
    }
}

async fn instance(url: &str) -> Cache {
    Cache::builder()
        .namespace("tiercache-coherence")
        .redis(url)
        .build()
        .await
        .expect("valid settings")
}

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let a = Service {
        cache: instance(&url).await,
    };
    let b = instance(&url).await;
    if let Err(error) = b.ping().await {
        eprintln!(
            "No Redis at {url} ({error}): start one with `redis-server --port 6379 --daemonize yes`"
        );
        return ExitCode::FAILURE;
    }

    let mut delays = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        a.price(7).await; // in A's L1
        let applied = a.cache.stats().remote_invalidations;
        let started = Instant::now();
        b.invalidate_key("price", "7").await.expect("Redis answers");
        while a.cache.stats().remote_invalidations == applied {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: never arrived"
            );
            tokio::task::yield_now().await;
        }
        delays.push(started.elapsed());
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    println!(
        "invalidation → other instance's L1, {ROUNDS} rounds on {url}: p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        delays[delays.len() - 1]
    );
    println!(
        "(from the call to invalidate_key until the other instance applied it; includes the SET and PUBLISH round trip)"
    );
    ExitCode::SUCCESS
}
