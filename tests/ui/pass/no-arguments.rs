//! A function without arguments has one entry; `mut` arguments work.

#![deny(warnings)]

use tiercache::cache_aside;

#[cache_aside(prefix = "config", ttl = "250ms")]
async fn config() -> Vec<String> {
    vec!["a".to_owned()]
}

#[cache_aside(prefix = "trimmed", ttl = "1d", key = "{text}")]
async fn trimmed(mut text: String) -> String {
    text.truncate(3);
    text
}

async fn call_all() {
    let _ = config().await;
    let _ = trimmed("abcdef".to_owned()).await;
}

fn main() {
    drop(call_all());
}
