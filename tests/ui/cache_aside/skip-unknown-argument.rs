use tiercache::cache_aside;

struct Db;

#[cache_aside(prefix = "user", ttl = "5m", skip(database))]
async fn user(db: &Db, id: u64) -> String {
    let _ = db;
    format!("user-{id}")
}

fn main() {}
