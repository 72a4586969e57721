use tiercache::cache_aside;

struct Report {
    rows: Vec<String>,
}

#[cache_aside(prefix = "report", ttl = "1h", hard_timeout = "10s")]
async fn report(month: u32) -> Option<Report> {
    (month <= 12).then(|| Report {
        rows: vec![month.to_string()],
    })
}

fn main() {}
