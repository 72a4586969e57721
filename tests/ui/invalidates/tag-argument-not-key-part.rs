use tiercache::invalidates;

struct Org {
    name: String,
}

#[invalidates(tags = ["org:{org}"])]
async fn delete_org(org: Org) {
    println!("deleted {}", org.name);
}

fn main() {}
