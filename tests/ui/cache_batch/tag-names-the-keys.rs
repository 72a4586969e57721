use std::collections::HashMap;

use tiercache::cache_batch;

#[cache_batch(prefix = "user", ttl = "5m", tags = ["user:{ids}"])]
async fn users(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, format!("{id}"))).collect()
}

fn main() {}
