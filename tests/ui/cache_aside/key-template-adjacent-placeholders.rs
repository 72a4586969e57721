use tiercache::cache_aside;

#[cache_aside(prefix = "cell", ttl = "5m", key = "{row}{column}")]
async fn cell(row: u32, column: u32) -> String {
    format!("{row},{column}")
}

fn main() {}
