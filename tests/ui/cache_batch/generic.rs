use std::collections::HashMap;

use tiercache::cache_batch;

#[cache_batch(prefix = "user", ttl = "5m")]
async fn users<T: Default + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(
    ids: &[u64],
) -> HashMap<u64, T> {
    ids.iter().map(|&id| (id, T::default())).collect()
}

fn main() {}
