use tiercache::write_through;

async fn name(id: u64) -> String {
    format!("user {id}")
}

#[write_through(name(id))]
async fn rename(id: u64, new: String) -> String {
    new
}

fn main() {}
