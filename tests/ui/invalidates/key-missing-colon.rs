use tiercache::invalidates;

#[invalidates(keys = ["user{id}"])]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
