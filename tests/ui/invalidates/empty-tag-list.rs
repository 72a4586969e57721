use tiercache::invalidates;

#[invalidates(tags = [])]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
