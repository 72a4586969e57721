use tiercache::invalidates;

#[invalidates(keys = ["user:{id}"], when = "sometimes")]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
