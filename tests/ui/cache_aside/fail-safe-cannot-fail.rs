use tiercache::cache_aside;

#[cache_aside(prefix = "rates", ttl = "5m", fail_safe = "1h")]
async fn rates(currency: String) -> Vec<(String, f64)> {
    vec![(currency, 1.0)]
}

fn main() {}
