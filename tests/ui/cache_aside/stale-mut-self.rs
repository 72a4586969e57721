use tiercache::cache_aside;

struct Counter {
    loads: u64,
}

impl Counter {
    #[cache_aside(prefix = "count", ttl = "5m", stale = "1h")]
    async fn count(&mut self, page: u32) -> u64 {
        self.loads += 1;
        u64::from(page) * self.loads
    }
}

fn main() {}
