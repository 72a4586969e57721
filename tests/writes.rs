//! Writes: `tags` on `#[cache_aside]`, `#[write_through]` and
//! `#[invalidates]`, against a real redis-server, with two `Cache` instances
//! standing for two processes.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside, invalidates, write_through};
use tokio::sync::{Notify, Semaphore};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u64,
    name: String,
}

/// One service instance over a shared "database".
struct Service {
    cache: Cache,
    db: Arc<Mutex<HashMap<u64, User>>>,
    reads: AtomicU64,
    /// Closed: reads wait for a permit before they finish.
    gate: Semaphore,
    read_started: Notify,
}

/// The prefix `user` reads and `save` writes: one definition for both.
const USER: &str = "user";

impl Service {
    fn new(cache: Cache, db: &Arc<Mutex<HashMap<u64, User>>>) -> Arc<Self> {
        Arc::new(Self {
            cache,
            db: db.clone(),
            reads: AtomicU64::new(0),
            gate: support::open_gate(),
            read_started: Notify::new(),
        })
    }

    fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }

    fn row(&self, id: u64) -> Option<User> {
        self.db.lock().unwrap().get(&id).cloned()
    }

    /// `org` only names a tag: the caller passes the user's org along.
    #[cache_aside(prefix = USER, ttl = "10m", key = "{id}", tags = ["user:{id}", "org:{org}"], skip(org), cache = self.cache)]
    async fn user(&self, id: u64, org: u64) -> Option<User> {
        self.reads.fetch_add(1, SeqCst);
        // The row as it is when the read starts; a closed gate holds the
        // read back after that, as a slow query would.
        let row = self.row(id);
        self.read_started.notify_one();
        drop(self.gate.acquire().await.unwrap());
        row.inspect(|user| debug_assert_eq!(user.org, org))
    }

    /// Stores the saved row under the key `user` reads.
    #[write_through(prefix = USER, ttl = "10m", key = "{id}", tags = ["user:{id}", "org:{org}"], cache = self.cache)]
    async fn save(&self, id: u64, org: u64, name: &str) -> Result<Option<User>, String> {
        if name.is_empty() {
            return Err("a name is required".into());
        }
        let user = User {
            id,
            org,
            name: name.to_owned(),
        };
        self.db.lock().unwrap().insert(id, user.clone());
        Ok(Some(user))
    }

    /// Renames every user of an org, in the database only: the cache learns
    /// of it through the tag.
    #[invalidates(tags = ["org:{org}"], cache = self.cache)]
    async fn rename_org(&self, org: u64, suffix: &str) -> Result<usize, String> {
        if suffix.is_empty() {
            return Err("empty suffix".into());
        }
        let mut db = self.db.lock().unwrap();
        let members: Vec<&mut User> = db.values_mut().filter(|u| u.org == org).collect();
        let renamed = members.len();
        for user in members {
            user.name.push_str(suffix);
        }
        Ok(renamed)
    }

    /// Changes the database, then fails: invalidates anyway ("always").
    #[invalidates(keys = ["user:{id}"], when = "always", cache = self.cache)]
    async fn rename_then_fail(&self, id: u64, name: &str) -> Result<(), String> {
        if let Some(user) = self.db.lock().unwrap().get_mut(&id) {
            user.name = name.to_owned();
        }
        Err("the commit failed after the write".into())
    }

    /// Changes the database, then fails: the default ("after") does not
    /// invalidate on error.
    #[invalidates(keys = ["user:{id}"], cache = self.cache)]
    async fn rename_then_fail_quietly(&self, id: u64, name: &str) -> Result<(), String> {
        if let Some(user) = self.db.lock().unwrap().get_mut(&id) {
            user.name = name.to_owned();
        }
        Err("failed".into())
    }

    /// Invalidates before the body runs, and after it succeeds.
    #[invalidates(prefixes = ["user"], when = "before", cache = self.cache)]
    async fn reset(&self, started: &Notify, go: &Semaphore) {
        started.notify_one();
        drop(go.acquire().await.unwrap());
    }

    /// Write-through and invalidation stacked: stores the user, forgets the
    /// org's lists.
    #[write_through(prefix = USER, ttl = "10m", key = "{id}", tags = ["user:{id}", "org:{org}"], cache = self.cache)]
    #[invalidates(prefixes = ["org_members"], cache = self.cache)]
    async fn create(&self, id: u64, org: u64, name: &str) -> Option<User> {
        let user = User {
            id,
            org,
            name: name.to_owned(),
        };
        self.db.lock().unwrap().insert(id, user.clone());
        Some(user)
    }

    #[cache_aside(prefix = "org_members", ttl = "10m", cache = self.cache)]
    async fn org_members(&self, org: u64) -> Vec<u64> {
        self.reads.fetch_add(1, SeqCst);
        let mut ids: Vec<u64> = self
            .db
            .lock()
            .unwrap()
            .values()
            .filter(|u| u.org == org)
            .map(|u| u.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Shares `user`'s prefix and key, with another value type.
    #[write_through(prefix = USER, ttl = "10m", key = "{id}", cache = self.cache)]
    async fn save_name_only(&self, id: u64) -> String {
        format!("name of {id}")
    }
}

fn database(
    users: impl IntoIterator<Item = (u64, u64, &'static str)>,
) -> Arc<Mutex<HashMap<u64, User>>> {
    let rows = users
        .into_iter()
        .map(|(id, org, name)| {
            (
                id,
                User {
                    id,
                    org,
                    name: name.to_owned(),
                },
            )
        })
        .collect();
    Arc::new(Mutex::new(rows))
}

/// Polls `service.user(id, org)` until its name is `name`.
async fn eventually_named(service: &Service, id: u64, org: u64, name: &str) -> bool {
    support::eventually(Duration::from_secs(2), async || {
        service.user(id, org).await.is_some_and(|u| u.name == name)
    })
    .await
}

#[tokio::test]
async fn a_tag_invalidates_every_entry_carrying_it_on_every_instance() {
    let db = database([(1, 7, "ada"), (2, 7, "bob"), (3, 8, "cy")]);
    let a = Service::new(support::cache_in("tags").await, &db);
    let b = Service::new(support::cache_in("tags").await, &db);
    for (id, org) in [(1, 7), (2, 7), (3, 8)] {
        a.user(id, org).await.unwrap();
        b.user(id, org).await.unwrap(); // L2, then L1 on b
    }
    assert_eq!(b.reads(), 0);

    assert_eq!(a.rename_org(7, "!").await, Ok(2));
    assert_eq!(a.cache.stats().invalidations, 1);
    assert_eq!(
        a.user(1, 7).await.unwrap().name,
        "ada!",
        "a reloads at once"
    );
    assert!(
        eventually_named(&b, 2, 7, "bob!").await,
        "b's L1 follows the tag"
    );
    assert_eq!(
        b.user(3, 8).await.unwrap().name,
        "cy",
        "another org is untouched"
    );
    assert_eq!(
        b.reads(),
        1,
        "b reloaded user 2 itself (a reloaded only user 1)"
    );
    assert_eq!(b.user(1, 7).await.unwrap().name, "ada!");
    assert_eq!(b.reads(), 1, "and read a's reload of user 1 from Redis");
    let reads = a.reads();
    a.user(3, 8).await.unwrap();
    assert_eq!(a.reads(), reads, "org 8 still cached");
}

#[tokio::test]
async fn invalidates_skips_an_error_unless_told_always() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("when").await, &db);
    a.user(1, 7).await.unwrap();

    assert_eq!(a.rename_org(7, "").await, Err("empty suffix".into()));
    assert_eq!(a.reads(), 1);
    a.user(1, 7).await.unwrap();
    assert_eq!(a.reads(), 1, "no invalidation after an error by default");

    a.rename_then_fail_quietly(1, "quiet").await.unwrap_err();
    assert_eq!(
        a.user(1, 7).await.unwrap().name,
        "ada",
        "default: the failed call invalidates nothing"
    );

    a.rename_then_fail(1, "eve").await.unwrap_err();
    assert_eq!(
        a.user(1, 7).await.unwrap().name,
        "eve",
        "`always` invalidated after the error"
    );
}

#[tokio::test]
async fn invalidates_before_also_invalidates_before_the_body() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("before").await, &db);
    a.user(1, 7).await.unwrap();
    let (started, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let resetting = tokio::spawn({
        let (a, started, go) = (a.clone(), started.clone(), go.clone());
        async move { a.reset(&started, &go).await }
    });
    started.notified().await; // the body runs: the prefix is already invalidated
    a.user(1, 7).await.unwrap();
    assert_eq!(a.reads(), 2, "invalidated before the body");
    go.add_permits(1);
    resetting.await.unwrap();
    a.user(1, 7).await.unwrap();
    assert_eq!(a.reads(), 3, "and again after it");
}

#[tokio::test]
async fn write_through_replaces_the_entry_everywhere() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("write").await, &db);
    let b = Service::new(support::cache_in("write").await, &db);
    a.user(1, 7).await.unwrap();
    assert_eq!(b.user(1, 7).await.unwrap().name, "ada"); // now in b's L1

    let saved = a.save(1, 7, "ada lovelace").await.unwrap().unwrap();
    assert_eq!(a.cache.stats().writes, 1);
    assert_eq!(
        a.user(1, 7).await,
        Some(saved.clone()),
        "a serves what it wrote"
    );
    assert_eq!(a.reads(), 1, "without reading the database");
    assert!(
        eventually_named(&b, 1, 7, "ada lovelace").await,
        "b dropped its L1 copy"
    );
    assert_eq!(b.reads(), 0, "and read the written value from Redis");

    let fresh = Service::new(support::cache_in("write").await, &db);
    assert_eq!(fresh.user(1, 7).await, Some(saved));
    assert_eq!(fresh.reads(), 0);
}

#[tokio::test]
async fn write_through_stores_nothing_on_error() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("write-err").await, &db);
    a.user(1, 7).await.unwrap();
    assert_eq!(a.save(1, 7, "").await, Err("a name is required".into()));
    assert_eq!(a.user(1, 7).await.unwrap().name, "ada");
    assert_eq!(a.reads(), 1, "the entry is untouched");
}

#[tokio::test]
async fn a_write_through_and_an_invalidation_stack() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("stack").await, &db);
    assert_eq!(a.org_members(7).await, [1]);
    a.create(2, 7, "bob").await.unwrap();
    assert_eq!(a.org_members(7).await, [1, 2], "the list was invalidated");
    let reads = a.reads();
    assert_eq!(a.user(2, 7).await.unwrap().name, "bob");
    assert_eq!(a.reads(), reads, "and the new user written through");
}

#[tokio::test]
async fn a_reader_of_another_type_sees_a_miss_not_a_wrong_value() {
    let db = database([(1, 7, "ada")]);
    let a = Service::new(support::cache_in("types").await, &db);
    a.save_name_only(1).await; // a String under user:1
    assert_eq!(a.user(1, 7).await.unwrap().name, "ada", "not the String");
    assert_eq!(a.reads(), 1);
    let fresh = Service::new(support::cache_in("types").await, &db);
    assert_eq!(fresh.user(1, 7).await.unwrap().name, "ada");
    assert_eq!(fresh.reads(), 0, "the reader's reload replaced it in Redis");
}

/// A read that loaded the old row before a write-through, and lands after
/// it, must not replace the written value: not in Redis, not in L1.
#[tokio::test]
async fn a_slow_reader_never_overwrites_a_write_through() {
    let db = database([(1, 7, "old")]);
    let reader = Service::new(support::cache_in("write-race").await, &db);
    let writer = Service::new(support::cache_in("write-race").await, &db);
    let closed = support::close(&reader.gate).await;
    let reading = tokio::spawn({
        let reader = reader.clone();
        async move { reader.user(1, 7).await }
    });
    reader.read_started.notified().await; // it has the old row
    writer.save(1, 7, "new").await.unwrap();
    drop(closed);
    assert_eq!(
        reading.await.unwrap().unwrap().name,
        "old",
        "its own caller gets what it read"
    );

    assert!(
        eventually_named(&reader, 1, 7, "new").await,
        "the reader's L1 does not keep the old row"
    );
    let fresh = Service::new(support::cache_in("write-race").await, &db);
    assert_eq!(
        fresh.user(1, 7).await.unwrap().name,
        "new",
        "Redis keeps the written value"
    );
    assert_eq!(fresh.reads(), 0);
}

/// The stale-set race with a tag: the load started before the tag's
/// invalidation, so it is not served after it.
#[tokio::test]
async fn a_load_that_raced_with_a_tag_invalidation_is_never_served() {
    let db = database([(1, 7, "old")]);
    let a = Service::new(support::cache_in("tag-race").await, &db);
    let closed = support::close(&a.gate).await;
    let loading = tokio::spawn({
        let a = a.clone();
        async move { a.user(1, 7).await }
    });
    a.read_started.notified().await;
    db.lock().unwrap().get_mut(&1).unwrap().name = "new".into();
    a.cache.invalidate_tags(["org:7"]).await.unwrap();
    drop(closed);
    assert_eq!(loading.await.unwrap().unwrap().name, "old");
    assert_eq!(
        a.user(1, 7).await.unwrap().name,
        "new",
        "reloaded, not served from L1"
    );
    let fresh = Service::new(support::cache_in("tag-race").await, &db);
    assert_eq!(
        fresh.user(1, 7).await.unwrap().name,
        "new",
        "nor from Redis"
    );
}

#[tokio::test]
async fn invalidating_a_tag_is_the_same_work_for_1_or_1000_entries() {
    let server = support::RedisServer::start();
    let url = server.url();
    let mut redis = support::raw(&url).await;
    let mut work = Vec::new();
    for (namespace, entries) in [("one", 1u64), ("thousand", 1000)] {
        let db = database((0..entries).map(|id| (id, 7, "x")));
        let cache = support::cache_on(&url, namespace).await;
        let a = Service::new(cache, &db);
        for id in 0..entries {
            a.user(id, 7).await.unwrap();
        }
        let before = support::commands_executed(&mut redis).await;
        a.cache.invalidate_tags(["org:7"]).await.unwrap();
        work.push(support::commands_executed(&mut redis).await - before - 1); // minus one INFO
        let reads = a.reads();
        a.user(0, 7).await.unwrap();
        assert_eq!(a.reads(), reads + 1, "invalidated");
    }
    assert_eq!(
        work,
        [2, 2],
        "one SET and one PUBLISH, whatever the entries"
    );
}

/// Redis may evict a version key (under `maxmemory`): the entries that
/// recorded it become misses, never stale hits, and the tag works again.
#[tokio::test]
async fn an_evicted_version_key_costs_a_miss_not_a_stale_value() {
    let db = database([(1, 7, "old")]);
    let a = Service::new(support::cache_in("evicted").await, &db);
    a.user(1, 7).await.unwrap();
    db.lock().unwrap().get_mut(&1).unwrap().name = "new".into();
    let mut redis = support::raw(&support::shared().url()).await;
    let evicted: u64 = redis::cmd("DEL")
        .arg("evicted:#t:org:7")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(evicted, 1, "the tag's version key existed");

    let fresh = Service::new(support::cache_in("evicted").await, &db);
    assert_eq!(
        fresh.user(1, 7).await.unwrap().name,
        "new",
        "a miss, not the old entry"
    );
    assert_eq!(fresh.reads(), 1);
    fresh.cache.invalidate_tags(["org:7"]).await.unwrap();
    db.lock().unwrap().get_mut(&1).unwrap().name = "newer".into();
    let reader = Service::new(support::cache_in("evicted").await, &db);
    assert_eq!(
        reader.user(1, 7).await.unwrap().name,
        "newer",
        "the re-created tag invalidates again"
    );
}
