//! A type parameter may change the result without changing an argument:
//! a key template must name it, or skip it.

use std::str::FromStr;

use tiercache::cache_aside;

#[cache_aside(prefix = "parsed", ttl = "5m", key = "{text}")]
async fn parsed<T: FromStr + Default>(text: String) -> String {
    let _ = text.parse::<T>().unwrap_or_default();
    text
}

#[cache_aside(prefix = "repeat", ttl = "5m", key = "{text}")]
async fn repeat<const N: usize>(text: String) -> String {
    text.repeat(N)
}

#[cache_aside(prefix = "field", ttl = "5m", key = "{text}:{T.name}")]
async fn field<T: Default>(text: String) -> String {
    text
}

fn main() {}
