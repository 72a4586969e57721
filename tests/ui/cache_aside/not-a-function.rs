use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5m")]
struct User;

fn main() {}
