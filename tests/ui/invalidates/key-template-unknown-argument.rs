use tiercache::invalidates;

#[invalidates(keys = ["user:{user_id}"])]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
