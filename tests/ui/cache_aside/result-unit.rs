use tiercache::cache_aside;

#[cache_aside(prefix = "delete", ttl = "5m")]
async fn delete(id: u64) -> Result<(), String> {
    println!("deleted {id}");
    Ok(())
}

fn main() {}
