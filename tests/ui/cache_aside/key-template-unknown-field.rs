use tiercache::cache_aside;

struct Query {
    term: String,
    page: u32,
}

#[cache_aside(prefix = "search", ttl = "5m", key = "{query.term}:{query.pages}")]
async fn search(query: &Query) -> Vec<String> {
    vec![format!("{} {}", query.term, query.page)]
}

fn main() {}
