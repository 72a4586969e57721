use tiercache::{KeyPart, KeyWriter, cache_aside};

struct Filter {
    min_price: u64,
}

impl KeyPart for Filter {
    fn write_key(&self, out: &mut KeyWriter) {
        self.min_price.write_key(out);
    }
}

#[cache_aside(prefix = "products", ttl = "5m", stale = "1h")]
async fn products(page: u32, filter: &Filter) -> Vec<String> {
    vec![format!("{page} {}", filter.min_price)]
}

fn main() {}
