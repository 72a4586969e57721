//! Runs with no Redis: the embedded default cache.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: i32,
}

#[cache_aside(prefix = "weather", ttl = "30s")]
async fn weather(city: String) -> Result<Weather, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Weather { city, celsius: 21 })
}

#[tokio::main]
async fn main() {
    for _ in 0..3 {
        let started = Instant::now();
        let w = weather("Lisbon".to_owned()).await.unwrap();
        println!("{w:?} in {:?}", started.elapsed());
    }
    println!("{:?}", tiercache::Cache::in_memory().stats());
}
