use tiercache::cache_batch;

#[cache_batch(prefix = "user", ttl = "5m")]
async fn users(ids: &[u64]) -> Vec<String> {
    ids.iter().map(|id| format!("{id}")).collect()
}

fn main() {}
