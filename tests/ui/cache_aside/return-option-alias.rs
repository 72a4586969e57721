use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

type MaybeUser = Option<User>;

#[cache_aside(prefix = "user", ttl = "5m")]
async fn find_user(id: u64) -> MaybeUser {
    (id != 0).then_some(User { id })
}

fn main() {}
