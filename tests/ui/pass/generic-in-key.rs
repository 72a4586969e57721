//! A generic parameter that an argument mentions is part of the key.

#![deny(warnings)]

use std::fmt::Display;

use tiercache::{KeyPart, cache_aside};

#[cache_aside(prefix = "describe", ttl = "5m")]
async fn describe<T: KeyPart + Display>(value: T) -> String {
    format!("<{value}>")
}

#[cache_aside(prefix = "total", ttl = "5m", key = "{values}")]
async fn total<T>(values: Vec<T>) -> usize
where
    T: KeyPart + Send,
{
    values.len()
}

async fn call_all() {
    let _ = describe(1_u32).await;
    let _ = describe("a").await;
    let _ = total(vec![1_u8, 2]).await;
}

fn main() {
    drop(call_all());
}
