//! Type and const parameters are part of the key: of the default key as
//! their `type_name` (or value), of a template as `{T}`, unless skipped.

#![deny(warnings)]

use std::fmt::Display;

use tiercache::{KeyPart, cache_aside};

#[cache_aside(prefix = "describe", ttl = "5m")]
async fn describe<T: KeyPart + Display>(value: T) -> String {
    format!("<{value}>")
}

// The count does not depend on the element type.
#[cache_aside(prefix = "total", ttl = "5m", key = "{values}", skip(T))]
async fn total<T>(values: Vec<T>) -> usize
where
    T: KeyPart + Send,
{
    values.len()
}

#[cache_aside(prefix = "parsed", ttl = "5m", key = "{text}:{T}")]
async fn parsed<T: std::str::FromStr>(text: String) -> bool {
    text.parse::<T>().is_ok()
}

#[cache_aside(prefix = "padded", ttl = "5m", key = "{text}/{N}")]
async fn padded<const N: usize>(text: String) -> String {
    format!("{text:N$}")
}

async fn call_all() {
    let _ = parsed::<u8>("1".to_owned()).await;
    let _ = padded::<4>("a".to_owned()).await;
    let _ = describe(1_u32).await;
    let _ = describe("a").await;
    let _ = total(vec![1_u8, 2]).await;
}

fn main() {
    drop(call_all());
}
