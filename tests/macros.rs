//! What the attributes accept: ordinary Rust that compiles without them
//! compiles with them and caches what it should (issue 11). Compile-only
//! cases are in `tests/ui/pass`; these run, on an in-memory cache.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tiercache::{Cache, cache_aside};

trait Entity {
    const TABLE: &'static str;
}

struct User;
struct Order;

impl Entity for User {
    const TABLE: &'static str = "users";
}

impl Entity for Order {
    const TABLE: &'static str = "orders";
}

/// The README's newtype pattern: the type is only in `PhantomData`.
struct Id<T>(u64, PhantomData<T>);

impl<T> Id<T> {
    fn new(id: u64) -> Self {
        Self(id, PhantomData)
    }
}

impl<T> tiercache::KeyPart for Id<T> {
    fn write_key(&self, out: &mut tiercache::KeyWriter) {
        self.0.write_key(out);
    }
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cache_aside(prefix = "label", ttl = "5m", cache = cache, skip(cache))]
async fn label<T: Entity>(cache: &Cache, id: Id<T>) -> String {
    LOADS.fetch_add(1, SeqCst);
    format!("{}#{}", T::TABLE, id.0)
}

#[cache_aside(prefix = "label-template", ttl = "5m", key = "{id}/{T}", cache = cache, skip(cache))]
async fn label_template<T: Entity>(cache: &Cache, id: Id<T>) -> String {
    format!("{}#{}", T::TABLE, id.0)
}

#[cache_aside(prefix = "first", ttl = "5m", cache = cache, skip(cache))]
async fn first<T: Entity>(cache: &Cache, ids: Vec<Id<T>>) -> Option<String> {
    Some(match ids.first() {
        Some(id) => format!("{}#{}", T::TABLE, id.0),
        None => format!("no {}", T::TABLE),
    })
}

#[cache_aside(prefix = "maybe", ttl = "5m", cache = cache, skip(cache))]
async fn maybe<T: Entity>(cache: &Cache, id: Option<Id<T>>) -> String {
    format!("{}:{}", T::TABLE, id.map_or(0, |id| id.0))
}

#[cache_aside(prefix = "parsed", ttl = "5m", cache = cache, skip(cache))]
async fn parsed<T: std::str::FromStr + std::fmt::Debug>(cache: &Cache, text: String) -> String {
    format!("{:?}", text.parse::<T>().ok())
}

#[cache_aside(prefix = "shown", ttl = "5m", cache = cache, skip(cache))]
async fn shown(cache: &Cache, value: impl std::fmt::Debug + tiercache::KeyPart) -> String {
    format!("{value:?}")
}

#[cache_aside(prefix = "repeat", ttl = "5m", cache = cache, skip(cache))]
async fn repeat<const N: usize>(cache: &Cache, text: String) -> String {
    text.repeat(N)
}

#[tokio::test]
async fn type_parameters_are_part_of_the_key() {
    let cache = Cache::in_memory();
    assert_eq!(label(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(label(&cache, Id::<Order>::new(1)).await, "orders#1");
    assert_eq!(label(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(LOADS.load(SeqCst), 2, "one load per type, then a hit");

    assert_eq!(label_template(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(
        label_template(&cache, Id::<Order>::new(1)).await,
        "orders#1"
    );

    assert_eq!(
        first(&cache, Vec::<Id<User>>::new()).await.unwrap(),
        "no users"
    );
    assert_eq!(
        first(&cache, Vec::<Id<Order>>::new()).await.unwrap(),
        "no orders"
    );
    assert_eq!(maybe::<User>(&cache, None).await, "users:0");
    assert_eq!(maybe::<Order>(&cache, None).await, "orders:0");

    assert_eq!(parsed::<u8>(&cache, "300".into()).await, "None");
    assert_eq!(parsed::<u16>(&cache, "300".into()).await, "Some(300)");

    assert_eq!(shown(&cache, 1_u8).await, "1");
    assert_eq!(shown(&cache, "1").await, "\"1\"");

    assert_eq!(repeat::<2>(&cache, "ab".into()).await, "abab");
    assert_eq!(repeat::<3>(&cache, "ab".into()).await, "ababab");
}
