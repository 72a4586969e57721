use tiercache::invalidates;

#[invalidates(tags = ["org:{org_id}"])]
async fn delete_user(id: u64, org: u64) {
    println!("deleted {id} of {org}");
}

fn main() {}
