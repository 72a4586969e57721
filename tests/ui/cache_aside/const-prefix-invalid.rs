use tiercache::cache_aside;

const USER: &str = "user:v1";

#[cache_aside(prefix = USER, ttl = "5m")]
async fn user(id: u64) -> String {
    format!("{id}")
}

fn main() {}
