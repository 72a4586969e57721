use tiercache::cache_aside;

struct Filter {
    min_price: f64,
}

#[cache_aside(prefix = "products", ttl = "5m", key = "{page}:{filter}")]
async fn products(page: u32, filter: Filter) -> Vec<String> {
    vec![format!("{page} {}", filter.min_price)]
}

fn main() {}
