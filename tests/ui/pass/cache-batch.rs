//! `#[cache_batch]` on free functions and methods, infallible and
//! fallible (`io::Result` too), spawned: its future is `Send`.

use std::collections::HashMap;

use tiercache::{Cache, cache_batch};

#[cache_batch(prefix = "name", ttl = "5m")]
pub async fn names(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, format!("{id}"))).collect()
}

#[cache_batch(prefix = "label", ttl = "5m", skip(lang))]
async fn labels(lang: String, keys: &[String]) -> std::io::Result<HashMap<String, String>> {
    Ok(keys.iter().map(|key| (key.clone(), format!("{lang}:{key}"))).collect())
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cache_batch(prefix = "row", ttl = "1h", cache_none = "1m", cache = self.cache)]
    async fn rows(&self, ids: &[u32]) -> Result<HashMap<u32, Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ids.iter().map(|&id| (id, vec![id as u8])).collect())
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let repo = std::sync::Arc::new(Repo { cache: Cache::in_memory() });
        tokio::spawn(async move {
            let ids = vec![1, 2];
            let _ = names(&ids).await;
            let _ = labels("en".into(), &["a".to_owned()]).await;
            let _ = repo.rows(&[1]).await;
        })
        .await
        .unwrap();
    });
}
