use tiercache::invalidates;

#[invalidates(tags = ["tenant:{self.tenant}"])]
async fn delete_user(id: u64) {
    println!("deleted {id}");
}

fn main() {}
