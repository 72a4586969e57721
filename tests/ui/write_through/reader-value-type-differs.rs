use serde::{Deserialize, Serialize};
use tiercache::{cache_aside, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
}

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}")]
async fn get_user(id: u64) -> Option<User> {
    Some(User { id })
}

#[write_through(get_user(order.id))]
async fn save_order(order: Order) -> Result<Order, String> {
    Ok(order)
}

fn main() {}
