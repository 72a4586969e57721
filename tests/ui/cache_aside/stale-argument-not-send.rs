use std::rc::Rc;

use tiercache::cache_aside;

#[cache_aside(prefix = "greeting", ttl = "5m", stale = "1h")]
async fn greeting(name: Rc<str>) -> String {
    format!("Hello, {name}!")
}

fn main() {}
