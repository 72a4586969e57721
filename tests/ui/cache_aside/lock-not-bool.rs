use tiercache::cache_aside;

#[cache_aside(prefix = "rates", ttl = "5m", lock = "false")]
async fn rates(currency: String) -> Vec<(String, f64)> {
    vec![(currency, 1.0)]
}

#[cache_aside(prefix = "fees", ttl = "5m", lock = 1)]
async fn fees(currency: String) -> Vec<(String, f64)> {
    vec![(currency, 0.1)]
}

fn main() {}
