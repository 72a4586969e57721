use std::collections::HashMap;

use tiercache::cache_batch;

#[cache_batch(prefix = "user", ttl = "5m")]
async fn users(lang: &str, ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, format!("{lang} {id}"))).collect()
}

fn main() {}
