use tiercache::write_through;

#[write_through(prefix = "user", ttl = "5m", key = "{id}")]
async fn save_user(id: u64, name: String) {
    println!("{id}:{name}");
}

fn main() {}
