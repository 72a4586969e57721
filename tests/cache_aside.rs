//! `#[cache_aside]` end to end, against a real redis-server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tiercache::{Cache, Error, Stats, cache_aside};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A stand-in for a service's repository: counts its "database" queries.
struct Repo {
    cache: Cache,
    queries: AtomicUsize,
}

impl Repo {
    fn new(cache: Cache) -> Self {
        Self {
            cache,
            queries: AtomicUsize::new(0),
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(SeqCst)
    }

    #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache)]
    async fn user(&self, id: u64) -> Result<User, String> {
        self.queries.fetch_add(1, SeqCst);
        Ok(User {
            id,
            name: format!("user-{id}"),
        })
    }

    #[cache_aside(prefix = "pair", ttl = "5m", key = "{a}:{b}", cache = self.cache)]
    async fn pair(&self, a: &str, b: &str) -> String {
        self.queries.fetch_add(1, SeqCst);
        format!("{a}+{b}")
    }

    /// `Err` for odd ids.
    #[cache_aside(prefix = "even", ttl = "5m", cache = self.cache)]
    async fn even_only(&self, id: u64) -> Result<u64, String> {
        self.queries.fetch_add(1, SeqCst);
        if id.is_multiple_of(2) {
            Ok(id)
        } else {
            Err(format!("{id} is odd"))
        }
    }

    /// `None` for odd ids.
    #[cache_aside(prefix = "maybe", ttl = "5m", cache = self.cache)]
    async fn maybe(&self, id: u64) -> Option<u64> {
        self.queries.fetch_add(1, SeqCst);
        (id.is_multiple_of(2)).then_some(id)
    }

    /// `Ok(None)` for odd ids.
    #[cache_aside(prefix = "lookup", ttl = "5m", cache = self.cache)]
    async fn lookup(&self, id: u64) -> Result<Option<u64>, String> {
        self.queries.fetch_add(1, SeqCst);
        Ok((id.is_multiple_of(2)).then_some(id))
    }

    #[cache_aside(prefix = "slow", ttl = "5m", cache = self.cache)]
    async fn slow(&self, id: u64) -> u64 {
        self.queries.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        id * 10
    }

    #[cache_aside(prefix = "short", ttl = "300ms", cache = self.cache)]
    async fn short_lived(&self, id: u64) -> u64 {
        let run = u64::try_from(self.queries.fetch_add(1, SeqCst)).unwrap();
        run * 1000 + id
    }

    /// Shares its prefix with `shared_text` but caches another type.
    #[cache_aside(prefix = "shared", ttl = "5m", cache = self.cache)]
    async fn shared_number(&self, id: u64) -> u64 {
        self.queries.fetch_add(1, SeqCst);
        id
    }

    #[cache_aside(prefix = "shared", ttl = "5m", cache = self.cache)]
    async fn shared_text(&self, id: u64) -> String {
        self.queries.fetch_add(1, SeqCst);
        format!("text-{id}")
    }
}

/// The counters of `stats`, without what it says of L1's size now.
fn counters(mut stats: Stats) -> Stats {
    stats.l1_entries = 0;
    stats
}

fn stats(l1_hits: u64, l2_hits: u64, misses: u64, loads: u64, errors: u64) -> Stats {
    let mut stats = Stats::default();
    stats.l1_hits = l1_hits;
    stats.l2_hits = l2_hits;
    stats.misses = misses;
    stats.loads = loads;
    stats.errors = errors;
    stats
}

#[tokio::test]
async fn hits_and_misses_per_layer() {
    let a = Repo::new(support::cache_in("layers").await);
    let expected = User {
        id: 1,
        name: "user-1".into(),
    };

    assert_eq!(a.user(1).await, Ok(expected.clone()));
    assert_eq!(
        counters(a.cache.stats()),
        stats(0, 0, 1, 1, 0),
        "first call loads"
    );
    assert_eq!(a.user(1).await, Ok(expected.clone()));
    assert_eq!(
        counters(a.cache.stats()),
        stats(1, 0, 1, 1, 0),
        "second call is an L1 hit"
    );

    // Another instance (another process, as far as the cache knows).
    let b = Repo::new(support::cache_in("layers").await);
    assert_eq!(b.user(1).await, Ok(expected.clone()));
    assert_eq!(b.queries(), 0, "the second instance's loader never runs");
    assert_eq!(counters(b.cache.stats()), stats(0, 1, 0, 0, 0), "L2 hit");
    assert_eq!(b.user(1).await, Ok(expected));
    assert_eq!(
        counters(b.cache.stats()),
        stats(1, 1, 0, 0, 0),
        "and then L1"
    );
    assert_eq!(a.queries(), 1);
}

#[tokio::test]
async fn the_key_is_namespace_prefix_and_escaped_arguments() {
    let repo = Repo::new(support::cache_in("keys").await);
    repo.pair("a b", "c").await;
    let mut redis = support::raw(&support::shared().url()).await;
    let stored: Option<Vec<u8>> = redis.get("keys:pair:a%20b:c").await.unwrap();
    let stored = stored.expect("the entry is stored under the documented key");
    assert_eq!(&stored[..3], b"tc\x02", "in the versioned envelope");
}

#[tokio::test]
async fn keys_are_injective() {
    let repo = Repo::new(support::cache_in("injective").await);
    assert_eq!(repo.pair("1:2", "3").await, "1:2+3");
    assert_eq!(repo.pair("1", "2:3").await, "1+2:3");
    assert_eq!(repo.queries(), 2, "two different entries");
    // Hostile values stay inside their part of the key.
    assert_eq!(repo.pair("*", "{x}").await, "*+{x}");
    assert_eq!(repo.pair("", "").await, "+");
    assert_eq!(repo.pair("", ":").await, "+:");
    assert_eq!(repo.pair(":", "").await, ":+");
    assert_eq!(repo.queries(), 6);
    // And each one is a hit the second time.
    assert_eq!(repo.pair("1:2", "3").await, "1:2+3");
    assert_eq!(repo.pair(":", "").await, ":+");
    assert_eq!(repo.queries(), 6);
}

#[tokio::test]
async fn errors_are_returned_and_never_cached() {
    let repo = Repo::new(support::cache_in("errors").await);
    assert_eq!(repo.even_only(3).await, Err("3 is odd".to_owned()));
    assert_eq!(repo.even_only(3).await, Err("3 is odd".to_owned()));
    assert_eq!(repo.queries(), 2, "an Err is not cached");
    assert_eq!(repo.cache.stats().errors, 2);
    assert_eq!(repo.even_only(4).await, Ok(4));
    assert_eq!(repo.even_only(4).await, Ok(4));
    assert_eq!(repo.queries(), 3, "an Ok is");
    let mut redis = support::raw(&support::shared().url()).await;
    let stored: bool = redis.exists("errors:even:3").await.unwrap();
    assert!(!stored, "nothing written to Redis for an Err");
}

#[tokio::test]
async fn none_is_returned_and_not_cached() {
    let repo = Repo::new(support::cache_in("none").await);
    assert_eq!(repo.maybe(1).await, None);
    assert_eq!(repo.maybe(1).await, None);
    assert_eq!(repo.queries(), 2, "None is not cached");
    assert_eq!(repo.maybe(2).await, Some(2));
    assert_eq!(repo.maybe(2).await, Some(2));
    assert_eq!(repo.queries(), 3, "Some is");

    assert_eq!(repo.lookup(1).await, Ok(None));
    assert_eq!(repo.lookup(1).await, Ok(None));
    assert_eq!(repo.queries(), 5, "Ok(None) is not cached");
    assert_eq!(repo.lookup(2).await, Ok(Some(2)));
    assert_eq!(repo.lookup(2).await, Ok(Some(2)));
    assert_eq!(repo.queries(), 6, "Ok(Some) is");
    assert_eq!(repo.cache.stats().errors, 0, "None is no error");
}

#[tokio::test]
async fn corrupt_values_in_redis_are_misses_and_get_overwritten() {
    let url = support::shared().url();
    let mut redis = support::raw(&url).await;
    let garbage: [&[u8]; 5] = [
        b"",
        b"not an envelope",
        b"\xff\xfe\x00garbage",
        b"tc\x01\x00",                // truncated header
        b"{\"id\":7,\"name\":\"x\"}", // bare JSON, no envelope
    ];
    for (id, bytes) in (10u64..).zip(garbage) {
        let key = format!("corrupt:user:{id}");
        let _: () = redis.set(&key, bytes).await.unwrap();
        let repo = Repo::new(support::cache_in("corrupt").await);
        assert_eq!(repo.user(id).await.unwrap().id, id, "{bytes:?} is a miss");
        assert_eq!(repo.queries(), 1);
        let stored: Vec<u8> = redis.get(&key).await.unwrap();
        assert_eq!(&stored[..3], b"tc\x02", "{bytes:?} was overwritten");
        let fresh = Repo::new(support::cache_in("corrupt").await);
        assert_eq!(fresh.user(id).await.unwrap().id, id);
        assert_eq!(fresh.queries(), 0, "the overwritten entry is an L2 hit");
    }
}

#[tokio::test]
async fn an_older_envelope_version_is_a_miss() {
    let url = support::shared().url();
    let mut redis = support::raw(&url).await;
    let writer = Repo::new(support::cache_in("old-format").await);
    writer.user(5).await.unwrap();
    let mut stored: Vec<u8> = redis.get("old-format:user:5").await.unwrap();
    stored[2] = 1; // format version 1
    let _: () = redis.set("old-format:user:5", stored).await.unwrap();

    let reader = Repo::new(support::cache_in("old-format").await);
    assert_eq!(reader.user(5).await.unwrap().id, 5);
    assert_eq!(reader.queries(), 1, "reloaded");
    let stored: Vec<u8> = redis.get("old-format:user:5").await.unwrap();
    assert_eq!(stored[2], 2, "and rewritten in the current format");
}

#[tokio::test]
async fn a_value_of_another_type_is_a_miss_not_a_wrong_value() {
    let repo = Repo::new(support::cache_in("foreign").await);
    assert_eq!(repo.shared_number(1).await, 1);
    // Same prefix and key, another type: L1 and L2 both hold a u64.
    assert_eq!(repo.shared_text(1).await, "text-1");
    assert_eq!(repo.queries(), 2);
    // Through L2 only, from a fresh instance.
    let fresh = Repo::new(support::cache_in("foreign").await);
    assert_eq!(fresh.shared_number(1).await, 1);
    assert_eq!(fresh.queries(), 1, "the String overwrote the u64 in Redis");
}

#[tokio::test]
async fn concurrent_callers_of_a_cold_key_share_one_load() {
    let repo = Arc::new(Repo::new(support::cache_in("flight").await));
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.slow(7).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 70);
    }
    assert_eq!(repo.queries(), 1, "200 callers, one load");
    let stats = repo.cache.stats();
    assert_eq!(stats.loads, 1);
    assert_eq!(
        stats.l1_hits + stats.misses,
        200,
        "every call counted once: {stats:?}"
    );
}

#[tokio::test]
async fn l1_entries_do_not_outlive_their_ttl() {
    let repo = Repo::new(Cache::in_memory());
    let first = repo.short_lived(1).await;
    assert_eq!(repo.short_lived(1).await, first, "fresh: a hit");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_ne!(repo.short_lived(1).await, first, "expired: reloaded");
    assert_eq!(repo.queries(), 2);
}

#[tokio::test]
async fn l2_entries_expire_with_the_ttl() {
    let url = support::shared().url();
    let repo = Repo::new(support::cache_in("expiry").await);
    repo.short_lived(1).await;
    let mut redis = support::raw(&url).await;
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg("expiry:short:1")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        (1..=300).contains(&ttl_ms),
        "Redis expires the entry with the TTL: {ttl_ms} ms"
    );
}

#[tokio::test]
async fn without_redis_the_cache_is_l1_only() {
    let repo = Repo::new(Cache::in_memory());
    assert!(!repo.cache.has_redis());
    repo.user(1).await.unwrap();
    repo.user(1).await.unwrap();
    assert_eq!(counters(repo.cache.stats()), stats(1, 0, 1, 1, 0));
}

#[tokio::test]
async fn redis_not_running_at_build_fails_nothing_and_is_used_once_up() {
    let mut server = support::RedisServer::reserve();
    let started = Instant::now();
    let cache = Cache::builder()
        .namespace("late")
        .redis(server.url())
        .build()
        .await
        .expect("a Redis that is down is no build error");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "build does not hang"
    );
    let repo = Repo::new(cache.clone());
    assert_eq!(repo.user(1).await.unwrap().id, 1);
    assert_eq!(repo.user(1).await.unwrap().id, 1);
    assert_eq!(repo.queries(), 1, "L1 works without Redis");
    assert!(cache.stats().redis_errors >= 1);

    server.restart();
    let url = server.url();
    let mut redis = support::raw(&url).await;
    let mut id = 100;
    let reached = support::eventually(Duration::from_secs(10), async || {
        id += 1;
        repo.user(id).await.unwrap();
        redis
            .exists::<_, bool>(format!("late:user:{id}"))
            .await
            .unwrap()
    })
    .await;
    assert!(reached, "writes reach Redis once it is up");
}

#[tokio::test]
async fn redis_stopped_and_restarted_never_fails_a_call() {
    let mut server = support::RedisServer::start();
    let url = server.url();
    let build = || {
        Cache::builder()
            .namespace("restart")
            .redis(url.clone())
            .redis_timeout(Duration::from_millis(100))
            .build()
    };
    let repo = Repo::new(build().await.unwrap());
    repo.user(1).await.unwrap();
    assert_eq!(repo.cache.stats().loads, 1);

    server.stop();
    for id in 1..=20 {
        assert_eq!(
            repo.user(id).await.unwrap().id,
            id,
            "Redis down: calls still succeed"
        );
    }
    assert_eq!(repo.queries(), 20, "1 from L1, 19 loaded");
    let other = Repo::new(build().await.expect("build while Redis is down"));
    assert_eq!(other.user(1).await.unwrap().id, 1);

    server.restart();
    // A writer and a reader on the restarted (empty) server: L2 hits resume.
    let mut id = 1000;
    let resumed = support::eventually(Duration::from_secs(10), async || {
        id += 1;
        repo.user(id).await.unwrap();
        let reader = Repo::new(build().await.unwrap());
        reader.user(id).await.unwrap();
        reader.cache.stats().l2_hits == 1
    })
    .await;
    assert!(resumed, "L2 hits resume after the restart");
}

#[tokio::test]
async fn a_slow_redis_costs_at_most_the_timeout() {
    let server = support::RedisServer::start();
    let cache = Cache::builder()
        .namespace("slow")
        .redis(server.url())
        .redis_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let repo = Repo::new(cache);
    let pause = support::stall(&server.url(), 2.0).await;
    let started = Instant::now();
    assert_eq!(repo.user(1).await.unwrap().id, 1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "read and write bounded by the 100 ms timeout, not Redis's 2 s: {took:?}"
    );
    assert!(repo.cache.stats().redis_errors >= 1);
    pause.await.unwrap();
}

#[tokio::test]
async fn builder_errors() {
    let invalid_url = Cache::builder().redis("http://nope").build().await;
    assert!(
        matches!(invalid_url, Err(Error::InvalidRedisUrl { .. })),
        "{invalid_url:?}"
    );
    let invalid_namespace = Cache::builder().namespace("a:b").build().await;
    assert!(matches!(invalid_namespace, Err(Error::InvalidName { .. })));
    let zero_timeout = Cache::builder().redis_timeout(Duration::ZERO).build().await;
    assert!(matches!(zero_timeout, Err(Error::InvalidSetting { .. })));
}

#[tokio::test]
async fn l1_capacity_zero_turns_l1_off() {
    let cache = Cache::builder()
        .namespace("no-l1")
        .redis(support::shared().url())
        .l1_capacity(0)
        .build()
        .await
        .unwrap();
    let repo = Repo::new(cache);
    repo.user(1).await.unwrap();
    repo.user(1).await.unwrap();
    assert_eq!(
        counters(repo.cache.stats()),
        stats(0, 1, 1, 1, 0),
        "the second call is an L2 hit"
    );
}

#[tokio::test]
async fn a_stalled_redis_trips_the_breaker_and_a_probe_brings_it_back() {
    let server = support::RedisServer::start();
    let cache = Cache::builder()
        .namespace("breaker")
        .redis(server.url())
        .redis_timeout(Duration::from_millis(100))
        .circuit_breaker(3, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let repo = Repo::new(cache);
    let pause = support::stall(&server.url(), 1.5).await;
    for id in 1..=10 {
        assert_eq!(repo.user(id).await.unwrap().id, id, "every call succeeds");
    }
    let stats = repo.cache.stats();
    assert!(stats.breaker_open && stats.breaker_trips == 1, "{stats:?}");
    assert!(
        stats.redis_errors <= 4,
        "after 3 timeouts calls skip Redis instead of waiting (a probe may add one): {stats:?}"
    );
    assert!(stats.redis_skipped >= 6, "{stats:?}");
    pause.await.unwrap();

    // Redis is back: a probe closes the breaker and L2 is used again.
    let mut id = 100;
    let closed = support::eventually(Duration::from_secs(5), async || {
        id += 1;
        repo.user(id).await.unwrap();
        !repo.cache.stats().breaker_open
    })
    .await;
    assert!(closed, "the breaker closes once Redis answers");
    repo.user(id + 1).await.unwrap(); // loaded, and written to Redis
    let fresh = Repo::new(support::cache_on(&server.url(), "breaker").await);
    fresh.user(id + 1).await.unwrap();
    assert_eq!(
        fresh.queries(),
        0,
        "the tripped instance writes to Redis again"
    );
}
