//! Programmatic entries (`Cache::entry`) against a real redis-server: the
//! same entries and the same engine as the macros.

mod support;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, Error, Key, cache_aside};
use tokio::sync::Barrier;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
    }
}

const TTL: Duration = Duration::from_secs(300);

/// The reader the entries share theirs with.
#[cache_aside(prefix = "user", ttl = "5m", key = "{id}", tags = ["org:{org}"], skip(cache, org, loads), cache = cache)]
async fn get_user(cache: &Cache, loads: &AtomicU64, id: u64, org: u64) -> Result<User, String> {
    loads.fetch_add(1, SeqCst);
    Ok(user(id, &format!("from-fn-{org}")))
}

#[cache_aside(prefix = "post", ttl = "5m", key = "{tenant}:{id}", skip(cache), cache = cache)]
async fn post(cache: &Cache, tenant: &str, id: u64) -> String {
    format!("post {tenant}/{id} from the function")
}

#[cache_aside(prefix = "post-default", ttl = "5m", skip(cache), cache = cache)]
async fn post_by_default_key(cache: &Cache, tenant: &str, id: u64) -> String {
    format!("post {tenant}/{id} from the function")
}

#[tokio::test]
async fn an_entry_loads_once_and_then_hits() {
    let cache = support::cache_in("entries-once").await;
    let loads = AtomicU64::new(0);
    for _ in 0..3 {
        let got: Result<User, String> = cache
            .entry("user", &1u64)
            .ttl(TTL)
            .try_get_with(|| async {
                loads.fetch_add(1, SeqCst);
                Ok(user(1, "ada"))
            })
            .await;
        assert_eq!(got, Ok(user(1, "ada")));
    }
    assert_eq!(loads.load(SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.l1_hits), (1, 2), "{stats:?}");

    // Another instance: a Redis hit, no load.
    let other = support::cache_in("entries-once").await;
    let got: User = other
        .entry("user", &1u64)
        .ttl(TTL)
        .get_with(|| async { unreachable!("a Redis hit") })
        .await;
    assert_eq!(got, user(1, "ada"));
    assert_eq!(other.stats().l2_hits, 1);
}

#[tokio::test]
async fn an_entry_and_a_function_share_their_entries() {
    let cache = support::cache_in("entries-shared").await;
    let loads = AtomicU64::new(0);
    // Set here: a hit for the function, in this instance and another.
    let entry = cache.entry("user", &7u64).ttl(TTL).tags(["org:3"]);
    entry.set(&user(7, "set")).await.unwrap();
    assert_eq!(get_user(&cache, &loads, 7, 3).await, Ok(user(7, "set")));
    let other = support::cache_in("entries-shared").await;
    assert_eq!(get_user(&other, &loads, 7, 3).await, Ok(user(7, "set")));
    assert_eq!(loads.load(SeqCst), 0);

    // Loaded by the function: a hit for the entry, here and in Redis.
    assert_eq!(
        get_user(&cache, &loads, 8, 3).await,
        Ok(user(8, "from-fn-3"))
    );
    let third = support::cache_in("entries-shared").await;
    let peeked: Option<User> = third.entry("user", &8u64).tags(["org:3"]).get().await;
    assert_eq!(peeked, Some(user(8, "from-fn-3")));
    // The Redis hit filled L1: no Redis the second time.
    let peeked: Option<User> = third.entry("user", &8u64).tags(["org:3"]).get().await;
    assert_eq!(peeked, Some(user(8, "from-fn-3")));
    assert_eq!((third.stats().l2_hits, third.stats().l1_hits), (1, 1));

    // The tag the function renders invalidates what the entry set.
    cache.invalidate_tags(["org:3"]).await.unwrap();
    let gone: Option<User> = other.entry("user", &7u64).tags(["org:3"]).get().await;
    assert_eq!(gone, None);
    assert_eq!(
        get_user(&other, &loads, 7, 3).await,
        Ok(user(7, "from-fn-3"))
    );
}

#[tokio::test]
async fn a_key_of_several_parts_is_written_as_its_template() {
    let cache = support::cache_in("entries-key").await;
    let key = Key::new().part("acme corp").part(&7u64);
    cache
        .entry("post", &key)
        .ttl(TTL)
        .set(&"post from the entry".to_owned())
        .await
        .unwrap();
    assert_eq!(post(&cache, "acme corp", 7).await, "post from the entry");
    assert_eq!(
        post(&cache, "acme", 7).await,
        "post acme/7 from the function"
    );
    // The default key of (tenant, id) is the same as "{tenant}:{id}".
    cache
        .entry("post-default", &key)
        .ttl(TTL)
        .set(&"default key".to_owned())
        .await
        .unwrap();
    assert_eq!(
        post_by_default_key(&cache, "acme corp", 7).await,
        "default key"
    );
    // Text that is not template text is escaped: it cannot forge a part.
    assert_eq!(Key::new().text("a b").part(&1u8).as_str(), "a%20b1");
    // Parts with no separator between them are separated, as a template
    // must separate its placeholders: no two keys render alike.
    let (x, y) = (
        Key::new().part("a-b").text("-").part("c"),
        Key::new().part("a").text("-").part("b-c"),
    );
    assert_ne!(x.as_str(), y.as_str());
    assert_ne!(x, y);
    assert_eq!(
        Key::new().part("a").text("").part("b"),
        Key::new().part("a").part("b")
    );
    assert_eq!(
        Key::new()
            .text("v2/")
            .part(&7u8)
            .text("|")
            .part("en")
            .as_str(),
        "v2/7|en"
    );
    assert_eq!(Key::new().text("user-").part(&7u8).as_str(), "user-7");
}

#[tokio::test]
async fn an_invalidated_entry_is_loaded_again_on_every_instance() {
    let (a, b) = (
        support::cache_in("entries-inv").await,
        support::cache_in("entries-inv").await,
    );
    let value = |cache: &Cache, v: &'static str| {
        let cache = cache.clone();
        async move {
            cache
                .entry("item", "x")
                .ttl(TTL)
                .get_with(|| async move { v.to_owned() })
                .await
        }
    };
    assert_eq!(value(&a, "one").await, "one");
    assert_eq!(value(&b, "two").await, "one"); // from Redis, now in b's L1
    a.entry("item", "x").invalidate().await.unwrap();
    let cleared = support::eventually(Duration::from_secs(5), async || {
        b.entry("item", "x").get::<String>().await.is_none()
    })
    .await;
    assert!(cleared, "b's L1 still serves the invalidated entry");
    assert_eq!(value(&b, "three").await, "three");
}

#[tokio::test]
async fn concurrent_entries_and_functions_share_one_load() {
    let cache = support::cache_in("entries-flight").await;
    let loads = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let barrier = Arc::new(Barrier::new(9));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (cache, loads, gate, barrier) =
            (cache.clone(), loads.clone(), gate.clone(), barrier.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            cache
                .entry("user", &9u64)
                .ttl(TTL)
                .tags(["org:1"])
                .try_get_with(|| async move {
                    loads.fetch_add(1, SeqCst);
                    let _pass = gate.acquire().await;
                    Ok::<_, String>(user(9, "shared"))
                })
                .await
        }));
    }
    barrier.wait().await;
    // Everyone is waiting on the one load: the function joins it too.
    assert!(support::eventually(Duration::from_secs(5), async || loads.load(SeqCst) == 1).await);
    let fn_loads = AtomicU64::new(0);
    let cache2 = cache.clone();
    let function = async move { get_user(&cache2, &fn_loads, 9, 1).await };
    let function = tokio::spawn(function);
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(closed);
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(user(9, "shared")));
    }
    assert_eq!(function.await.unwrap(), Ok(user(9, "shared")));
    assert_eq!(loads.load(SeqCst), 1);
}

/// Not `Send`, not `'static`: an inline loader may borrow anything.
#[tokio::test(flavor = "current_thread")]
async fn an_inline_loader_borrows_from_its_caller() {
    let cache = Cache::in_memory();
    let local = Rc::new(String::from("borrowed"));
    let borrowed: &str = &local;
    let got = cache
        .entry("local", &1u8)
        .ttl(TTL)
        .get_with(|| async {
            tokio::task::yield_now().await;
            format!("{borrowed} {}", Rc::strong_count(&local))
        })
        .await;
    assert_eq!(got, "borrowed 1");
}

#[tokio::test]
async fn stale_serves_the_old_value_while_one_refresh_runs() {
    let cache = Cache::builder().ttl_jitter(0.0).build().await.unwrap();
    let loads = Arc::new(AtomicU64::new(0));
    let get = || {
        let loads = loads.clone();
        cache
            .entry("swr", &1u8)
            .ttl(Duration::from_millis(100))
            .stale(Duration::from_secs(60))
            .get_with(move || {
                let loads = loads.clone();
                async move { loads.fetch_add(1, SeqCst) + 1 }
            })
    };
    assert_eq!(get().await, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(get().await, 1, "stale: the old value at once");
    let refreshed = support::eventually(Duration::from_secs(5), async || get().await == 2).await;
    assert!(refreshed);
    assert_eq!(loads.load(SeqCst), 2);
    assert!(cache.stats().stale_served >= 1);
}

#[tokio::test]
async fn fail_safe_serves_the_old_value_when_the_load_fails() {
    let cache = Cache::builder().ttl_jitter(0.0).build().await.unwrap();
    let get = |result: Result<u32, &'static str>| {
        cache
            .entry("fs", &1u8)
            .ttl(Duration::from_millis(50))
            .fail_safe(Duration::from_secs(60))
            .try_get_with(move || async move { result })
    };
    assert_eq!(get(Ok(1)).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(get(Err("db down")).await, Ok(1));
    assert_eq!(cache.stats().fail_safe, 1);
    // Without the option, the error.
    let plain: Result<u32, &str> = cache
        .entry("fs-off", &1u8)
        .ttl(TTL)
        .try_get_with(|| async { Err("db down") })
        .await;
    assert_eq!(plain, Err("db down"));
}

#[tokio::test]
async fn a_none_is_cached_only_with_cache_none() {
    let cache = Cache::in_memory();
    let loads = AtomicU64::new(0);
    let none = || async {
        loads.fetch_add(1, SeqCst);
        None::<u32>
    };
    for _ in 0..2 {
        let got = cache
            .entry("n", &1u8)
            .ttl(TTL)
            .optionally_get_with(none)
            .await;
        assert_eq!(got, None);
    }
    assert_eq!(loads.load(SeqCst), 2);
    for _ in 0..2 {
        let got = cache
            .entry("n", &2u8)
            .ttl(TTL)
            .cache_none(TTL)
            .optionally_get_with(none)
            .await;
        assert_eq!(got, None);
    }
    assert_eq!(loads.load(SeqCst), 3);
}

#[tokio::test]
async fn a_setting_out_of_range_runs_the_loader_uncached_and_errs_on_writes() {
    let cache = Cache::in_memory();
    let loads = AtomicU64::new(0);
    for _ in 0..2 {
        let got = cache
            .entry("zero", &1u8)
            .ttl(Duration::ZERO)
            .get_with(|| async {
                loads.fetch_add(1, SeqCst);
                5u8
            })
            .await;
        assert_eq!(got, 5);
    }
    assert_eq!(loads.load(SeqCst), 2, "a zero TTL caches nothing");
    let set = cache
        .entry("zero", &1u8)
        .ttl(Duration::ZERO)
        .set(&5u8)
        .await;
    assert!(
        matches!(set, Err(Error::InvalidSetting { setting: "ttl", .. })),
        "{set:?}"
    );
    let bad = cache.entry("no spaces", &1u8);
    assert!(matches!(
        bad.invalidate().await,
        Err(Error::InvalidName { what: "prefix", .. })
    ));
    assert_eq!(bad.get::<u8>().await, None);
    let beta = cache.entry("b", &1u8).ttl(TTL).refresh_ahead(f64::NAN);
    assert!(matches!(
        beta.set(&1u8).await,
        Err(Error::InvalidSetting {
            setting: "refresh_ahead",
            ..
        })
    ));
    // Durations no Redis expiry or `Instant` holds: refused, never a panic.
    let huge = cache
        .entry("huge", &1u8)
        .ttl(Duration::MAX)
        .get_with(|| async { 7u8 })
        .await;
    assert_eq!(huge, 7);
    let window = cache
        .entry("huge", &2u8)
        .ttl(TTL)
        .fail_safe(Duration::MAX)
        .stale(Duration::MAX)
        .get_with(|| async { 8u8 })
        .await;
    assert_eq!(window, 8);
    let batch = cache
        .entries("huge", &[1u8, 2])
        .ttl(Duration::MAX)
        .get_many_with(|keys: Vec<u8>| async move { keys.into_iter().map(|k| (k, k)) })
        .await;
    assert_eq!(batch.len(), 2);
    let tags: Vec<String> = (0..254).map(|i| format!("t{i}")).collect();
    let many = cache.entry("t", &1u8).ttl(TTL).tags(tags);
    assert!(matches!(
        many.set(&1u8).await,
        Err(Error::InvalidSetting {
            setting: "tags",
            ..
        })
    ));
}

#[tokio::test]
async fn a_set_redis_does_not_take_is_an_error_and_leaves_no_old_value() {
    let mut server = support::RedisServer::start();
    let cache = support::cache_on(&server.url(), "entries-down").await;
    let entry = || cache.entry("user", &1u64).ttl(TTL);
    entry().set(&user(1, "old")).await.unwrap();
    assert_eq!(entry().get::<User>().await, Some(user(1, "old")));
    server.stop();
    let set = entry().set(&user(1, "new")).await;
    assert!(matches!(set, Err(Error::NotStored { .. })), "{set:?}");
    // Neither the old value nor the new one is served.
    assert_eq!(entry().get::<User>().await, None);
}

/// A prefix refused as invalid is no panic, even where a long key is
/// shortened (at a character boundary, not inside one).
#[test]
fn the_debug_of_an_entry_with_a_long_non_ascii_prefix_does_not_panic() {
    static PREFIX: std::sync::LazyLock<&'static str> =
        std::sync::LazyLock::new(|| Box::leak(format!("a{}", "é".repeat(130)).into_boxed_str()));
    let cache = tiercache::Cache::in_memory();
    let entry = cache.entry(*PREFIX, &1u64);
    let shown = format!("{entry:?}");
    assert!(!shown.is_empty());
}
