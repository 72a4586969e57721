use tiercache::{Cache, cache_aside};

#[derive(Clone, Debug)]
struct Shop {
    cache: Cache,
}

impl Shop {
    #[cache_aside(prefix = "shop", ttl = "5m", stale = "1h", cache = self.cache)]
    async fn describe(&self, id: u64) -> String {
        format!("{self:?} {id}")
    }

    #[cache_aside(prefix = "owned", ttl = "5m", refresh_ahead, cache = self.cache)]
    async fn owned(self, id: u64) -> String {
        tracing::info!(target: "shop", "{self:?}");
        format!("{id}")
    }
}

fn main() {}
