use tiercache::cache_aside;

#[cache_aside(prefix = "greeting", ttl = "5m", key = "{id}")]
async fn greeting(id: u64, lang: &str) -> String {
    format!("{lang}: hello {id}")
}

fn main() {}
