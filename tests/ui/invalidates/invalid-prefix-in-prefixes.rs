use tiercache::invalidates;

#[invalidates(prefixes = ["user:list"])]
async fn reset_users() {
    println!("reset");
}

fn main() {}
