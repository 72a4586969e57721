//! `crate = "..."` for a crate that reaches tiercache through a re-export.

#![deny(warnings)]

mod reexport {
    pub use tiercache;
}

use reexport::tiercache::cache_aside;

#[cache_aside(prefix = "square", ttl = "5m", crate = "crate::reexport::tiercache")]
async fn square(n: u64) -> u64 {
    n * n
}

async fn call_all() {
    let _ = square(3).await;
}

fn main() {
    drop(call_all());
}
