use std::sync::Arc;

use tiercache::cache_aside;

/// An `Arc<str>` is cached through serde's `rc` feature (a `str` cannot be
/// deserialized on its own): without it, the error says so.
#[cache_aside(prefix = "name", ttl = "5m")]
async fn name(id: u64) -> Arc<str> {
    Arc::from(format!("user {id}"))
}

fn main() {}
