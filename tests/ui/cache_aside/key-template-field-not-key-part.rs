use tiercache::cache_aside;

struct Price(f64);

struct Query {
    term: String,
    max_price: Price,
}

#[cache_aside(prefix = "search", ttl = "5m", key = "{query.term}:{query.max_price}")]
async fn search(query: &Query) -> Vec<String> {
    vec![format!("{} {}", query.term, query.max_price.0)]
}

fn main() {}
