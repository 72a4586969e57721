use std::future::Future;

use tiercache::cache_aside;

#[cache_aside(prefix = "name", ttl = "5m")]
fn name(id: u64) -> impl Future<Output = u64> {
    async move { id }
}

fn main() {}
