use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}:{org}:{team}", tags = ["{org}{team}"])]
async fn user(id: u64, org: u64, team: u64) -> String {
    format!("user-{id}@{org}/{team}")
}

fn main() {}
