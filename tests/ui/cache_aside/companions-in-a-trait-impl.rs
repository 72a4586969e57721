use tiercache::cache_aside;

trait Users {
    async fn name(&self, id: u64) -> String;
}

struct Repo;

impl Users for Repo {
    #[cache_aside(prefix = "name", ttl = "5m", key = "{id}")]
    async fn name(&self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {}
