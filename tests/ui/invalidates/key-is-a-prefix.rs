use tiercache::invalidates;

#[invalidates(keys = ["user"])]
async fn delete_users() {
    println!("deleted all");
}

fn main() {}
