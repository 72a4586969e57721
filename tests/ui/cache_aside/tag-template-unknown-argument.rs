use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}:{org}", tags = ["org:{org_id}"])]
async fn user(id: u64, org: u64) -> String {
    format!("user-{id}@{org}")
}

fn main() {}
