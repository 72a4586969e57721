use serde::{Deserialize, Serialize};
use tiercache::cache_aside;

#[derive(Clone, Serialize, Deserialize)]
struct Report {
    rows: Vec<String>,
}

#[derive(Debug)]
enum DbError {
    Unavailable,
}

#[cache_aside(prefix = "report", ttl = "1h", hard_timeout = "10s")]
async fn report(month: u32) -> Result<Report, DbError> {
    if month > 12 {
        return Err(DbError::Unavailable);
    }
    Ok(Report {
        rows: vec![month.to_string()],
    })
}

fn main() {}
