use tiercache::invalidates;

struct Repo {
    cache: String,
}

impl Repo {
    #[invalidates(keys = ["user:{id}"], cache = self.cache)]
    async fn delete_user(&self, id: u64) {
        println!("deleted {id}");
    }
}

fn main() {}
