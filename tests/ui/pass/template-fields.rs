//! Nested fields, tuple fields and raw identifiers in a key template.

#![deny(warnings)]

use tiercache::cache_aside;

struct Customer {
    id: u64,
}

struct Order {
    customer: Customer,
    number: String,
}

#[cache_aside(
    prefix = "order",
    ttl = "5m",
    key = "{order.customer.id}/{order.number}"
)]
async fn order(order: &Order) -> String {
    format!("{}-{}", order.customer.id, order.number)
}

#[cache_aside(prefix = "cell", ttl = "5m", key = "{cell.0}:{cell.1}")]
async fn cell(cell: (u32, u32)) -> u64 {
    u64::from(cell.0) * u64::from(cell.1)
}

#[cache_aside(prefix = "typed", ttl = "5m", key = "v1:{type_}")]
async fn typed(type_: String) -> String {
    type_
}

async fn call_all() {
    let o = Order {
        customer: Customer { id: 1 },
        number: "A-1".to_owned(),
    };
    let _ = order(&o).await;
    let _ = cell((1, 2)).await;
    let _ = typed("x".to_owned()).await;
}

fn main() {
    drop(call_all());
}
