//! tiercache in one file, no Redis needed:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! Without a Redis URL the cache is L1 only: an in-process cache of typed
//! values. Add `.redis(url)` to the builder (see `examples/redis_service.rs`)
//! and the same functions share their entries across processes.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: i32,
}

/// A slow lookup: each run of the body takes ~200 ms. Cached for 30 s under
/// the key `weather:{city}` (by default every argument is part of the key).
#[cache_aside(prefix = "weather", ttl = "30s")]
async fn weather(city: &str) -> Result<Weather, String> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let celsius = city.len() as i32 * 3;
    Ok(Weather {
        city: city.to_owned(),
        celsius,
    })
}

static RATE_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// A flaky upstream: the first call fails, later ones succeed. An `Err` is
/// returned to the caller as it is and never cached.
#[cache_aside(prefix = "rate", ttl = "1m")]
async fn exchange_rate(currency: &str) -> Result<f64, String> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    if RATE_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(format!("upstream timed out for {currency}"));
    }
    Ok(1.08)
}

#[tokio::main]
async fn main() {
    // Optional: without it, the first cached call installs `Cache::in_memory()`
    // as the global cache. Keeping a handle lets us read its stats.
    let cache = Cache::in_memory();
    tiercache::set_global(cache.clone()).expect("set_global runs before any cached call");

    println!("-- a slow function: the first call loads, the next ones hit L1");
    for _ in 0..3 {
        call(&cache, r#"weather("Lisbon")"#, weather("Lisbon")).await;
    }
    println!("-- another argument is another key");
    call(&cache, r#"weather("Oslo")"#, weather("Oslo")).await;
    call(&cache, r#"weather("Oslo")"#, weather("Oslo")).await;

    println!("-- an Err is returned as it is and not cached: the next call loads again");
    for _ in 0..3 {
        call(&cache, r#"exchange_rate("EUR")"#, exchange_rate("EUR")).await;
    }

    println!("-- concurrent callers of a cold key share one load (single-flight)");
    let loads_before = cache.stats().loads;
    let started = Instant::now();
    let tasks: Vec<_> = (0..10).map(|_| tokio::spawn(weather("Paris"))).collect();
    for task in tasks {
        task.await
            .expect("task panicked")
            .expect("weather never fails");
    }
    println!(
        "10 x weather(\"Paris\") at once: {} load, {:.1?} in all",
        cache.stats().loads - loads_before,
        started.elapsed()
    );

    let stats = cache.stats();
    println!("-- cache.stats()");
    println!("{stats:?}");
    println!("hit ratio: {:.0}%", stats.hit_ratio() * 100.0);
}

/// Runs one cached call and prints how it was answered, read from the stats.
async fn call<T: Debug>(cache: &Cache, label: &str, future: impl Future<Output = T>) {
    let before = cache.stats();
    let started = Instant::now();
    let result = future.await;
    let elapsed = started.elapsed();
    let after = cache.stats();
    let answer = if after.l1_hits > before.l1_hits {
        "L1 hit"
    } else if after.errors > before.errors {
        "error"
    } else {
        "loaded"
    };
    println!("{label:<24} {answer:>8} {elapsed:>9.1?}  {result:?}");
}
