use tiercache::write_through;

#[write_through(prefix = "user", ttl = "5m")]
async fn save_user(id: u64, name: String) -> String {
    format!("{id}:{name}")
}

fn main() {}
