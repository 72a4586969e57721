use tiercache::invalidates;

#[invalidates(tags = [org])]
async fn delete_org(org: u64) {
    println!("deleted {org}");
}

fn main() {}
