use tiercache::invalidates;

#[invalidates(keys = ["user:{id}"], ttl = "5m")]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
