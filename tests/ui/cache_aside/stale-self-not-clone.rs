use tiercache::cache_aside;

struct Catalog {
    tenant: String,
}

impl Catalog {
    #[cache_aside(
        prefix = "products",
        ttl = "5m",
        key = "{self.tenant}:{page}",
        stale = "1h"
    )]
    async fn products(&self, page: u32) -> Vec<String> {
        vec![format!("{}: {page}", self.tenant)]
    }
}

fn main() {}
