use tiercache::invalidates;

#[invalidates(when = "always")]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
