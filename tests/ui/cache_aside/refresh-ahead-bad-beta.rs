use tiercache::cache_aside;

#[cache_aside(prefix = "rates", ttl = "5m", refresh_ahead = 0)]
async fn rates(currency: String) -> Vec<(String, f64)> {
    vec![(currency, 1.0)]
}

#[cache_aside(prefix = "fees", ttl = "5m", refresh_ahead = 50)]
async fn fees(currency: String) -> Vec<(String, f64)> {
    vec![(currency, 0.1)]
}

#[cache_aside(prefix = "taxes", ttl = "5m", refresh_ahead = "yes")]
async fn taxes(country: String) -> Vec<(String, f64)> {
    vec![(country, 0.2)]
}

fn main() {}
