//! What a `#[cache_aside]` function generates beside itself (`_invalidate`,
//! `_refresh`, `_peek`, `_set`), and writers that name their reader's call
//! (`#[write_through(get_user(..))]`, `#[invalidates(get_user(..))]`),
//! against a real redis-server with two instances.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, Error, cache_aside, invalidates, write_through};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u64,
    name: String,
}

/// A "database" and the cache of one instance.
struct Repo {
    cache: Cache,
    rows: Arc<Mutex<HashMap<u64, User>>>,
    loads: AtomicU64,
}

impl Repo {
    fn new(cache: Cache, rows: &Arc<Mutex<HashMap<u64, User>>>) -> Self {
        Self {
            cache,
            rows: rows.clone(),
            loads: AtomicU64::new(0),
        }
    }

    fn loads(&self) -> u64 {
        self.loads.load(SeqCst)
    }

    #[cache_aside(prefix = "user", ttl = "10m", key = "{id}", tags = ["org:{org}"], skip(org), cache = self.cache)]
    async fn user(&self, id: u64, org: u64) -> Result<User, String> {
        self.loads.fetch_add(1, SeqCst);
        let row = self.rows.lock().unwrap().get(&id).cloned();
        row.filter(|user| user.org == org)
            .ok_or_else(|| format!("no user {id} in org {org}"))
    }

    /// The writer names the reader's call: prefix, key, ttl, tags and cache
    /// come from `user`.
    #[write_through(self.user(user.id, user.org))]
    async fn save(&self, user: User) -> Result<User, String> {
        self.rows.lock().unwrap().insert(user.id, user.clone());
        Ok(user)
    }

    #[invalidates(self.user(id, org))]
    async fn delete(&self, id: u64, org: u64) -> Result<(), String> {
        self.rows.lock().unwrap().remove(&id);
        Ok(())
    }

    /// A reader's call and a tag: both are forgotten.
    #[invalidates(Self::user(self, id, org), tags = ["org:{org}"])]
    async fn delete_and_forget_org(&self, id: u64, org: u64) -> Result<(), String> {
        self.rows.lock().unwrap().remove(&id);
        Ok(())
    }
}

fn row(id: u64, org: u64, name: &str) -> User {
    User {
        id,
        org,
        name: name.to_owned(),
    }
}

async fn two(namespace: &str) -> (Repo, Repo, Arc<Mutex<HashMap<u64, User>>>) {
    let rows = Arc::new(Mutex::new(HashMap::new()));
    let a = Repo::new(support::cache_in(namespace).await, &rows);
    let b = Repo::new(support::cache_in(namespace).await, &rows);
    (a, b, rows)
}

#[tokio::test]
async fn invalidate_forgets_exactly_the_entry_of_that_call() {
    let (a, b, rows) = two("companions-invalidate").await;
    rows.lock().unwrap().insert(1, row(1, 7, "ada"));
    rows.lock().unwrap().insert(2, row(2, 7, "bob"));
    assert_eq!(b.user(1, 7).await, Ok(row(1, 7, "ada")));
    assert_eq!(b.user(2, 7).await, Ok(row(2, 7, "bob")));
    rows.lock().unwrap().insert(1, row(1, 7, "ada v2"));
    rows.lock().unwrap().insert(2, row(2, 7, "bob v2"));
    a.user_invalidate(1, 7).await.unwrap();
    let forgotten = support::eventually(std::time::Duration::from_secs(5), async || {
        b.user_peek(1, 7).await.is_none()
    })
    .await;
    assert!(forgotten, "b still serves the invalidated entry");
    assert_eq!(b.user(1, 7).await, Ok(row(1, 7, "ada v2")));
    // The other entry is untouched.
    assert_eq!(b.user(2, 7).await, Ok(row(2, 7, "bob")));
}

#[tokio::test]
async fn peek_reads_without_a_load_and_set_stores_under_the_call_key() {
    let (a, b, rows) = two("companions-peek-set").await;
    assert_eq!(a.user_peek(3, 1).await, None);
    assert_eq!(a.loads(), 0, "a peek never loads");
    a.user_set(3, 1, &row(3, 1, "set")).await.unwrap();
    assert_eq!(a.user_peek(3, 1).await, Some(row(3, 1, "set")));
    // Another instance reads it from Redis: a hit for the function.
    assert_eq!(b.user(3, 1).await, Ok(row(3, 1, "set")));
    assert_eq!(b.loads(), 0);
    // With the tags the function renders: a tag invalidation forgets it.
    a.cache.invalidate_tags(["org:1"]).await.unwrap();
    assert_eq!(b.user_peek(3, 1).await, None);
    rows.lock().unwrap().insert(3, row(3, 1, "db"));
    assert_eq!(b.user(3, 1).await, Ok(row(3, 1, "db")));
}

#[tokio::test]
async fn refresh_runs_the_body_and_replaces_the_entry_everywhere() {
    let (a, b, rows) = two("companions-refresh").await;
    rows.lock().unwrap().insert(4, row(4, 2, "old"));
    assert_eq!(b.user(4, 2).await, Ok(row(4, 2, "old")));
    rows.lock().unwrap().insert(4, row(4, 2, "new"));
    // Bypasses the read: the body runs although the entry is cached.
    assert_eq!(a.user_refresh(4, 2).await, Ok(row(4, 2, "new")));
    assert_eq!(a.loads(), 1);
    let replaced = support::eventually(std::time::Duration::from_secs(5), async || {
        b.user(4, 2).await == Ok(row(4, 2, "new"))
    })
    .await;
    assert!(replaced, "b still serves the value the refresh replaced");
    // An error leaves the entry alone.
    assert!(a.user_refresh(99, 2).await.is_err());
    assert_eq!(a.user_peek(4, 2).await, Some(row(4, 2, "new")));
}

#[tokio::test]
async fn a_writer_that_names_its_reader_stores_what_the_reader_reads() {
    let (a, b, rows) = two("companions-writer").await;
    rows.lock().unwrap().insert(5, row(5, 3, "before"));
    assert_eq!(b.user(5, 3).await, Ok(row(5, 3, "before")));
    assert_eq!(a.save(row(5, 3, "after")).await, Ok(row(5, 3, "after")));
    // b's L1 drops its copy and reads the written value from Redis.
    let written = support::eventually(std::time::Duration::from_secs(5), async || {
        b.user(5, 3).await == Ok(row(5, 3, "after"))
    })
    .await;
    assert!(written);
    assert_eq!(b.loads(), 1, "the written value is a hit, not a load");
    // With the reader's tags: a tag invalidation forgets the written value.
    a.cache.invalidate_tags(["org:3"]).await.unwrap();
    assert_eq!(a.user_peek(5, 3).await, None);
}

#[tokio::test]
async fn an_invalidator_that_names_its_reader_forgets_that_entry() {
    let (a, b, rows) = two("companions-invalidator").await;
    rows.lock().unwrap().insert(6, row(6, 4, "here"));
    rows.lock().unwrap().insert(7, row(7, 4, "too"));
    assert_eq!(b.user(6, 4).await, Ok(row(6, 4, "here")));
    assert_eq!(b.user(7, 4).await, Ok(row(7, 4, "too")));
    a.delete(6, 4).await.unwrap();
    let forgotten = support::eventually(std::time::Duration::from_secs(5), async || {
        b.user(6, 4).await.is_err()
    })
    .await;
    assert!(forgotten);
    assert_eq!(b.user_peek(7, 4).await, Some(row(7, 4, "too")));
    // The reader's call and a tag.
    a.delete_and_forget_org(6, 4).await.unwrap();
    assert_eq!(a.user_peek(7, 4).await, None, "the tag forgot entry 7 too");
}

/// A free function with a default key, generics and the global-less
/// `cache` option: its companions take the same arguments.
#[cache_aside(prefix = "label", ttl = "5m", skip(cache), cache = cache)]
async fn label<T: tiercache::KeyPart + std::fmt::Display>(cache: &Cache, id: T) -> String {
    format!("label {id}")
}

#[tokio::test]
async fn companions_of_a_free_generic_function() {
    let cache = Cache::in_memory();
    assert_eq!(label_peek(&cache, 1u8).await, None);
    assert_eq!(label(&cache, 1u8).await, "label 1");
    assert_eq!(label_peek(&cache, 1u8).await, Some("label 1".to_owned()));
    // The type is part of the key: a u16 1 is another entry.
    assert_eq!(label_peek(&cache, 1u16).await, None);
    label_set(&cache, 1u8, &"set".to_owned()).await.unwrap();
    assert_eq!(label(&cache, 1u8).await, "set");
    label_invalidate(&cache, 1u8).await.unwrap();
    assert_eq!(label_peek(&cache, 1u8).await, None);
}

#[tokio::test]
async fn a_set_that_redis_refuses_is_an_error_and_leaves_no_old_value() {
    let mut server = support::RedisServer::start();
    let rows = Arc::new(Mutex::new(HashMap::new()));
    let repo = Repo::new(
        support::cache_on(&server.url(), "companions-down").await,
        &rows,
    );
    repo.user_set(8, 1, &row(8, 1, "old")).await.unwrap();
    server.stop();
    let set = repo.user_set(8, 1, &row(8, 1, "new")).await;
    assert!(matches!(set, Err(Error::NotStored { .. })), "{set:?}");
    assert_eq!(repo.user_peek(8, 1).await, None);
}

static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cache_aside(prefix = "in-a", ttl = "5m", skip(cache), cache = cache)]
async fn reader_a(cache: &Cache, id: u64) -> u64 {
    READS.fetch_add(1, SeqCst);
    id
}

#[cache_aside(prefix = "in-b", ttl = "5m", skip(cache), cache = cache)]
async fn reader_b(cache: &Cache, id: u64) -> u64 {
    READS.fetch_add(1, SeqCst);
    id
}

/// Two readers on two caches: each entry is forgotten in its own.
#[invalidates(reader_a(a, id), reader_b(b, id))]
async fn change_both(a: &Cache, b: &Cache, id: u64) {}

#[tokio::test]
async fn an_invalidator_forgets_each_reader_entry_in_its_own_cache() {
    let (a, b) = (Cache::in_memory(), Cache::in_memory());
    reader_a(&a, 1).await;
    reader_b(&b, 1).await;
    assert_eq!(READS.load(SeqCst), 2);
    change_both(&a, &b, 1).await;
    assert_eq!(reader_a_peek(&a, 1).await, None);
    assert_eq!(reader_b_peek(&b, 1).await, None, "forgotten in b, not in a");
    reader_a(&a, 1).await;
    reader_b(&b, 1).await;
    assert_eq!(READS.load(SeqCst), 4);
}

#[cache_aside(prefix = "in-c", ttl = "5m", skip(cache), cache = cache)]
async fn reader_c(cache: &Cache, id: u64) -> u64 {
    id
}

#[cache_aside(prefix = "in-d", ttl = "5m", skip(cache), cache = cache)]
async fn reader_d(cache: &Cache, id: u64) -> u64 {
    id
}

#[invalidates(reader_c(c, id), reader_d(d, id))]
async fn change_c_and_d(c: &Cache, d: &Cache, id: u64) {}

/// A caller cancelled while the first cache's Redis is slow to take its
/// invalidation leaves the others' applied and queued too.
#[tokio::test]
async fn a_cancelled_invalidator_leaves_every_cache_invalidated() {
    let slow = support::RedisServer::start();
    let c = support::cache_on(&slow.url(), "companions-cancel").await;
    let d = support::cache_in("companions-cancel").await;
    reader_c(&c, 1).await;
    reader_d(&d, 1).await;
    let mut raw = support::raw(&slow.url()).await;
    let stall = tokio::spawn(async move {
        let _: Result<(), _> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .query_async(&mut raw)
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        change_c_and_d(&c, &d, 1),
    )
    .await;
    assert!(cancelled.is_err(), "the call was cut short");
    assert_eq!(reader_d_peek(&d, 1).await, None, "d was invalidated");
    assert_eq!(reader_c_peek(&c, 1).await, None, "c was invalidated here");
    stall.await.unwrap();
    assert!(
        support::eventually(std::time::Duration::from_secs(5), async || {
            c.stats().pending_invalidations == 0
        })
        .await,
        "the retrier sent c's"
    );
}
