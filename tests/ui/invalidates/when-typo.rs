use tiercache::invalidates;

#[invalidates(keys = ["user:{id}"], when = "befor")]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
