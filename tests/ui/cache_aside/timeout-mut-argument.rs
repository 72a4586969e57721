use tiercache::cache_aside;

#[derive(Debug)]
struct DbError;

#[cache_aside(
    prefix = "count",
    ttl = "5m",
    skip(loads),
    fail_safe = "1h",
    timeout = "2s"
)]
async fn count(loads: &mut u64, page: u32) -> Result<u64, DbError> {
    *loads += 1;
    Ok(u64::from(page) * *loads)
}

fn main() {}
