use tiercache::cache_aside;

#[cache_aside(prefix = "touch", ttl = "5m")]
async fn touch(id: u64) {
    println!("touched {id}");
}

fn main() {}
