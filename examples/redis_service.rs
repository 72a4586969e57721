//! Two replicas of a service sharing one Redis:
//!
//! ```sh
//! redis-server --port 6379 --daemonize yes   # or: apt-get install -y redis-server
//! cargo run --example redis_service          # REDIS_URL overrides redis://127.0.0.1:6379
//! ```
//!
//! Each replica has its own `Cache` (its own L1) on the same Redis and
//! namespace. What one replica loads, the other reads from Redis (L2) without
//! running its loader; what one replica invalidates, every replica forgets.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

const NAMESPACE: &str = "tiercache-example";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    cents: u64,
}

#[derive(Debug)]
enum DbError {
    NotFound(u64),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "no row {id}"),
        }
    }
}

/// A stand-in for the database: slow, and counts its queries.
#[derive(Default)]
struct Db {
    queries: AtomicUsize,
    renamed: Mutex<HashMap<u64, String>>,
}

impl Db {
    async fn select_user(&self, id: u64) -> Result<User, DbError> {
        self.round_trip().await;
        match id {
            0 => Err(DbError::NotFound(id)),
            _ => {
                let renamed = self.renamed.lock().unwrap().get(&id).cloned();
                let name = renamed.unwrap_or_else(|| format!("user-{id}"));
                Ok(User { id, name })
            }
        }
    }

    async fn update_name(&self, id: u64, name: &str) {
        self.round_trip().await;
        self.renamed.lock().unwrap().insert(id, name.to_owned());
    }

    async fn select_orders(&self, user_id: u64) -> Result<Vec<Order>, DbError> {
        self.round_trip().await;
        Ok((1..=3)
            .map(|n| Order {
                id: user_id * 100 + n,
                cents: n * 1250,
            })
            .collect())
    }

    async fn round_trip(&self) {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The service's repository: the cache is a field, named by `cache = self.cache`.
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", cache = self.cache)]
    async fn user(&self, id: u64) -> Result<User, DbError> {
        self.db.select_user(id).await
    }

    #[cache_aside(prefix = "orders", ttl = "30s", key = "{user_id}", cache = self.cache)]
    async fn orders(&self, user_id: u64) -> Result<Vec<Order>, DbError> {
        self.db.select_orders(user_id).await
    }

    /// A write: update the database, then invalidate the cached `user(id)`
    /// in Redis and in the L1 of every replica. The key is rendered the way
    /// `key = "{id}"` renders it.
    async fn rename(&self, id: u64, name: &str) -> Result<(), tiercache::Error> {
        self.db.update_name(id, name).await;
        let key = tiercache::key::render(&id);
        self.cache.invalidate_key("user", &key).await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    // `Cache::builder().build()` succeeds with Redis down (calls then run on
    // L1 and the loader), so check here that there is a Redis to show.
    let mut conn = match connect(&url).await {
        Ok(conn) => conn,
        Err(why) => {
            eprintln!("No Redis at {url}: {why}");
            eprintln!();
            eprintln!("This example needs a local Redis. Start one with");
            eprintln!("    redis-server --port 6379 --daemonize yes");
            eprintln!("(install it with `apt-get install -y redis-server`), or point");
            eprintln!(
                "REDIS_URL at one: REDIS_URL=redis://host:port cargo run --example redis_service"
            );
            return ExitCode::FAILURE;
        }
    };
    // Start from a clean slate, so that every run shows the same thing.
    let stale: Vec<String> = scan(&mut conn, &format!("{NAMESPACE}:*")).await;
    if !stale.is_empty() {
        let _: () = conn.del(&stale).await.expect("DEL");
    }

    // One database, two replicas of the service: each with its own `Cache`
    // (its own L1) on the same Redis and namespace.
    let db = Arc::new(Db::default());
    let a = Replica::start("replica A", &url, &db).await;
    let b = Replica::start("replica B", &url, &db).await;

    println!("-- replica A loads from the database and fills L1 and Redis");
    call(&a, &db, "user(42)", a.repo.user(42)).await;
    call(&a, &db, "user(42)", a.repo.user(42)).await;
    call(&a, &db, "orders(42)", a.repo.orders(42)).await;

    println!("-- replica B finds them in Redis: its loader does not run");
    call(&b, &db, "user(42)", b.repo.user(42)).await;
    call(&b, &db, "user(42)", b.repo.user(42)).await;
    call(&b, &db, "orders(42)", b.repo.orders(42)).await;

    println!("-- an Err is not cached, in L1 or in Redis: every call queries again");
    call(&b, &db, "user(0)", b.repo.user(0)).await;
    call(&b, &db, "user(0)", b.repo.user(0)).await;
    call(&a, &db, "user(0)", a.repo.user(0)).await;

    println!("-- replica A renames user 42 and invalidates it, for every replica");
    let heard_before = b.repo.cache.stats().remote_invalidations;
    let renamed = a.repo.rename(42, "Ada").await;
    println!("replica A  rename(42, \"Ada\") -> {renamed:?}");
    let waiting = Instant::now();
    while b.repo.cache.stats().remote_invalidations == heard_before {
        assert!(waiting.elapsed() < Duration::from_secs(5), "no message");
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    println!("replica B  heard of it over pub/sub and dropped its L1 copy");
    call(&b, &db, "user(42)", b.repo.user(42)).await;
    call(&a, &db, "user(42)", a.repo.user(42)).await;

    println!("-- 20 concurrent requests for a cold key on replica B");
    let queries_before = db.queries();
    let started = Instant::now();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let repo = b.repo.clone();
            tokio::spawn(async move { repo.user(7).await })
        })
        .collect();
    for request in requests {
        request.await.expect("no panic").expect("user 7 exists");
    }
    println!(
        "20 x user(7): {} database query, {:.1?} in all",
        db.queries() - queries_before,
        started.elapsed()
    );

    println!("-- in Redis, entries are {{namespace}}:{{prefix}}:{{key}}");
    for key in ["user:42", "orders:42", "user:7"] {
        let key = format!("{NAMESPACE}:{key}");
        let ttl_ms: i64 = conn.pttl(&key).await.expect("PTTL");
        let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
        println!("{key:<28} expires in {:.0?}", ttl);
    }

    println!("-- stats");
    for Replica { name, repo } in [&a, &b] {
        println!("{name}: {:?}", repo.cache.stats());
    }
    println!("database queries: {}", db.queries());
    ExitCode::SUCCESS
}

/// One instance of the service.
struct Replica {
    name: &'static str,
    repo: Arc<Repo>,
}

impl Replica {
    async fn start(name: &'static str, redis_url: &str, db: &Arc<Db>) -> Self {
        let cache = Cache::builder()
            .namespace(NAMESPACE)
            .redis(redis_url)
            .build()
            .await
            .expect("valid settings");
        let repo = Arc::new(Repo {
            cache,
            db: Arc::clone(db),
        });
        Self { name, repo }
    }
}

/// Runs one call on a replica and prints how it was answered.
async fn call<T: std::fmt::Debug>(
    Replica { name, repo }: &Replica,
    db: &Db,
    label: &str,
    future: impl Future<Output = Result<T, DbError>>,
) {
    let (before, queries) = (repo.cache.stats(), db.queries());
    let started = Instant::now();
    let result = future.await;
    let elapsed = started.elapsed();
    let after = repo.cache.stats();
    let answer = if after.l1_hits > before.l1_hits {
        "L1 hit"
    } else if after.l2_hits > before.l2_hits {
        "L2 hit"
    } else if after.errors > before.errors {
        "error"
    } else {
        "loaded"
    };
    let queries = db.queries() - queries;
    let shown = match &result {
        Ok(value) => format!("{value:?}"),
        Err(error) => format!("Err: {error}"),
    };
    let shown = match shown.char_indices().nth(44) {
        Some((end, _)) => format!("{}…", &shown[..end]),
        None => shown,
    };
    println!("{name}  {label:<11} {answer:>6} {elapsed:>9.1?}  db queries +{queries}  {shown}");
}

/// A quick PING, so that a missing Redis is reported at once.
async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let attempt = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

/// The keys matching `pattern`, with `SCAN` (never `KEYS` on a shared Redis).
async fn scan(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}
