//! Case 7: the L1's hit ratio beside moka's, on the same request streams.
//!
//! L1 is quick_cache (S3-FIFO-like, with a ghost queue), chosen over moka
//! (W-TinyLFU) for its hit cost. This replays what a cache sees in
//! production, skewed keys, and the same with scans through it, through a
//! tiercache in-memory cache (the whole call path: key, L1 lookup, load,
//! fill) and through a `moka::sync::Cache` of the same capacity, and counts
//! the share of requests each answered without loading.
//!
//! - Zipf over [`KEYS`] keys with α 0.7, 0.9 and 1.1, [`REQUESTS`]
//!   requests, from a fixed seed;
//! - scan-polluted: Zipf 0.9, with a scan of 20,000 keys seen once (a
//!   batch job, a crawler) after every 100,000 requests;
//! - capacities of 1 %, 5 % and 20 % of the keys.

use std::time::Duration;

use tiercache::Cache;

/// Distinct keys of the Zipf workloads.
pub const KEYS: u64 = 100_000;
/// Requests per workload.
pub const REQUESTS: usize = 1_000_000;
/// The capacities, in per cent of [`KEYS`].
pub const CAPACITIES: [u64; 3] = [1, 5, 20];

/// A named request stream.
pub struct Workload {
    /// As the report names it.
    pub name: &'static str,
    /// The keys, in request order.
    pub keys: Vec<u64>,
}

/// Keys drawn from Zipf(α) over `0..n`: key `k` with probability
/// proportional to `1 / (k + 1)^α`, by inverting the cumulative
/// distribution.
pub fn zipf(alpha: f64, n: u64, count: usize, seed: u64) -> Vec<u64> {
    let mut cumulative = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for k in 0..n {
        sum += 1.0 / ((k + 1) as f64).powf(alpha);
        cumulative.push(sum);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let x = rng.f64() * sum;
            cumulative.partition_point(|&c| c < x).min(n as usize - 1) as u64
        })
        .collect()
}

/// The workloads of the case.
pub fn workloads() -> Vec<Workload> {
    let mut all: Vec<Workload> = [(0.7, "zipf 0.7"), (0.9, "zipf 0.9"), (1.1, "zipf 1.1")]
        .into_iter()
        .map(|(alpha, name)| Workload {
            name,
            keys: zipf(alpha, KEYS, REQUESTS, 7),
        })
        .collect();
    // Scans of keys beyond the Zipf range, each seen once.
    const SCAN: u64 = 20_000;
    const BETWEEN: usize = 100_000;
    let skewed = zipf(0.9, KEYS, REQUESTS, 11);
    let mut keys = Vec::with_capacity(REQUESTS + REQUESTS / BETWEEN * SCAN as usize);
    let mut next_scan = KEYS;
    for chunk in skewed.chunks(BETWEEN) {
        keys.extend_from_slice(chunk);
        keys.extend(next_scan..next_scan + SCAN);
        next_scan += SCAN;
    }
    all.push(Workload {
        name: "zipf 0.9 + scans",
        keys,
    });
    all
}

/// tiercache's L1: the share of requests answered from it.
pub async fn tiercache(keys: &[u64], capacity: u64) -> f64 {
    let cache = Cache::builder()
        .namespace("hit-ratio")
        .l1_capacity(capacity)
        .build()
        .await
        .expect("an in-memory cache");
    let ttl = Duration::from_secs(3600);
    for key in keys {
        let value = cache
            .entry("z", key)
            .ttl(ttl)
            .get_with(|| async { *key })
            .await;
        std::hint::black_box(value);
    }
    let stats = cache.stats();
    stats.l1_hits as f64 / keys.len() as f64
}

/// moka's: the share of requests `get` answered (a miss inserts).
pub fn moka(keys: &[u64], capacity: u64) -> f64 {
    let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(capacity);
    let mut hits = 0u64;
    for &key in keys {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, key);
        }
    }
    hits as f64 / keys.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_as_asked() {
        let keys = zipf(1.1, 1000, 100_000, 1);
        let first = keys.iter().filter(|&&k| k == 0).count() as f64 / keys.len() as f64;
        // P(0) = 1 / H(1000, 1.1) ≈ 0.17.
        assert!((0.15..0.19).contains(&first), "{first}");
        assert!(keys.iter().all(|&k| k < 1000));
    }
}
