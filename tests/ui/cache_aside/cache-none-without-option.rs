use tiercache::cache_aside;

struct User {
    id: u64,
    name: String,
}

#[cache_aside(prefix = "user", ttl = "5m", cache_none = "30s")]
async fn user(id: u64) -> User {
    User {
        id,
        name: "Ada".to_owned(),
    }
}

fn main() {}
