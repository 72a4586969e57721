//! A template writes an argument's value, not its type.

use tiercache::{KeyPart, cache_aside};

#[cache_aside(prefix = "shown", ttl = "5m", key = "{value}")]
async fn shown(value: impl KeyPart + std::fmt::Debug) -> String {
    format!("{value:?}")
}

fn main() {}
