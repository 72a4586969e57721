use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5 minutes", key = "{user_id}", skip(dbase))]
async fn user(db: &str, id: u64) -> String {
    format!("{db}/user-{id}")
}

fn main() {}
