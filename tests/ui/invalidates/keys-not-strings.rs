use tiercache::invalidates;

#[invalidates(keys = [id])]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
