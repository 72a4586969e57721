use tiercache::cache_aside;

struct Repo {
    cache: String,
}

impl Repo {
    #[cache_aside(prefix = "user", ttl = "5m", cache = self.cache)]
    async fn user(&self, id: u64) -> String {
        format!("user-{id}")
    }
}

fn main() {}
