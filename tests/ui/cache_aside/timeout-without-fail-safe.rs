use tiercache::cache_aside;

#[derive(Debug)]
struct DbError;

#[cache_aside(prefix = "report", ttl = "1h", timeout = "2s")]
async fn report(month: u32) -> Result<Vec<String>, DbError> {
    Ok(vec![month.to_string()])
}

fn main() {}
