use tiercache::cache_aside;

struct User {
    id: u64,
}

#[derive(Debug)]
struct DbError;

#[cache_aside(prefix = "user", ttl = "5m", cache_none = "30s")]
async fn user(id: u64) -> Result<User, DbError> {
    if id == 0 {
        return Err(DbError);
    }
    Ok(User { id })
}

fn main() {}
