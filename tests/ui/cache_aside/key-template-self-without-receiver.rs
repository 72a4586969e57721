use tiercache::cache_aside;

#[cache_aside(prefix = "user", ttl = "5m", key = "{self.tenant}:{id}")]
async fn user(tenant: &str, id: u64) -> String {
    format!("{tenant}/user-{id}")
}

fn main() {}
