use tiercache::{Cache, cache_aside};

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cache_aside(prefix = "user", ttl = "5m", skip(self), cache = self.cache)]
    async fn user(&self, id: u64) -> String {
        format!("user-{id}")
    }
}

fn main() {}
