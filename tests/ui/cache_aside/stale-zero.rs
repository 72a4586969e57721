use tiercache::cache_aside;

#[cache_aside(prefix = "price", ttl = "5m", stale = "0s")]
async fn price(sku: String) -> u64 {
    sku.len() as u64 * 100
}

fn main() {}
