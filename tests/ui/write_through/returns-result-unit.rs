use tiercache::write_through;

#[derive(Debug)]
struct DbError;

#[write_through(prefix = "user", ttl = "5m", key = "{id}")]
async fn save_user(id: u64, name: String) -> Result<(), DbError> {
    println!("{id}:{name}");
    Ok(())
}

fn main() {}
