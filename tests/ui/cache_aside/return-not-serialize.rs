use tiercache::cache_aside;

#[derive(Clone)]
struct User {
    id: u64,
}

#[cache_aside(prefix = "user", ttl = "5m")]
async fn user(id: u64) -> Result<User, String> {
    Ok(User { id })
}

fn main() {}
