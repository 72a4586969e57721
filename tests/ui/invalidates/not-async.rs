use tiercache::invalidates;

#[invalidates(keys = ["user:{id}"])]
fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
