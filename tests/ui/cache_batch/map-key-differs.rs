use std::collections::HashMap;

use tiercache::cache_batch;

#[cache_batch(prefix = "user", ttl = "5m")]
async fn users(ids: &[u64]) -> HashMap<String, String> {
    ids.iter().map(|&id| (id.to_string(), format!("{id}"))).collect()
}

fn main() {}
