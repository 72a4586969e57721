use tiercache::cache_aside;

#[cache_aside(prefix = "touch", ttl = "5m", skip(ids))]
async fn touch<T>(id: u64) {
    println!("touched {id}");
}

fn main() {}
