use tiercache::cache_aside;

#[derive(Debug)]
struct DbError;

impl From<tiercache::LoadTimeout> for DbError {
    fn from(_: tiercache::LoadTimeout) -> Self {
        Self
    }
}

#[cache_aside(
    prefix = "report",
    ttl = "1h",
    fail_safe = "1d",
    timeout = "5s",
    hard_timeout = "2s"
)]
async fn report(month: u32) -> Result<Vec<String>, DbError> {
    Ok(vec![month.to_string()])
}

fn main() {}
