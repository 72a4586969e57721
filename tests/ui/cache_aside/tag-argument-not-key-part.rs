use tiercache::cache_aside;

struct Org {
    name: String,
}

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org}"], skip(org))]
async fn user(id: u64, org: &Org) -> String {
    format!("user-{id}@{}", org.name)
}

fn main() {}
