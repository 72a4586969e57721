use std::str::FromStr;

use tiercache::cache_aside;

#[cache_aside(prefix = "parsed", ttl = "5m")]
async fn parsed<T: FromStr + Default>(text: String) -> String {
    let _ = text.parse::<T>().unwrap_or_default();
    text
}

fn main() {}
