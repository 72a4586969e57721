use tiercache::write_through;

#[write_through(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org_id}"])]
async fn save_user(id: u64, org: u64) -> String {
    format!("{id}@{org}")
}

fn main() {}
