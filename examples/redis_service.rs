//! Two replicas of a service sharing one Redis:
//!
//! ```sh
//! redis-server --port 6379 --daemonize yes   # or: apt-get install -y redis-server
//! cargo run --example redis_service          # REDIS_URL overrides redis://127.0.0.1:6379
//! ```
//!
//! Each replica has its own `Cache` (its own L1) on the same Redis and
//! namespace. What one replica loads, the other reads from Redis (L2) without
//! running its loader. What one replica writes with `#[write_through]`, the
//! other drops from its L1 and reads from Redis; what one replica invalidates
//! with `#[invalidates]`, every replica forgets.

use std::collections::HashMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, Stats, cache_aside, invalidates, write_through};

const NAMESPACE: &str = "tiercache-example";

/// A user row joined with its organisation's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    org: String,
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} ({})", self.id, self.name, self.org)
    }
}

/// An organisation row.
#[derive(Debug)]
struct Org {
    id: u64,
    name: String,
}

impl fmt::Display for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "org {} {}", self.id, self.name)
    }
}

#[derive(Debug)]
enum DbError {
    NoUser { id: u64, org: u64 },
    NoOrg(u64),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoUser { id, org } => write!(f, "no user {id} in org {org}"),
            Self::NoOrg(org) => write!(f, "no org {org}"),
        }
    }
}

/// A stand-in for the database: slow, and counts its queries.
struct Db {
    queries: AtomicUsize,
    /// id -> (name, org)
    users: Mutex<HashMap<u64, (String, u64)>>,
    /// org -> name
    orgs: Mutex<HashMap<u64, String>>,
}

impl Db {
    fn new() -> Self {
        let users = [(42, "Grace", 7), (43, "Alan", 7), (9, "Edsger", 8)];
        Self {
            queries: AtomicUsize::new(0),
            users: Mutex::new(
                users
                    .into_iter()
                    .map(|(id, name, org)| (id, (name.to_owned(), org)))
                    .collect(),
            ),
            orgs: Mutex::new(HashMap::from([
                (7, "Acme".to_owned()),
                (8, "Globex".to_owned()),
            ])),
        }
    }

    async fn select_user(&self, id: u64, org: u64) -> Result<User, DbError> {
        self.round_trip().await;
        let row = self.users.lock().unwrap().get(&id).cloned();
        match row {
            Some((name, in_org)) if in_org == org => Ok(User {
                id,
                name,
                org: self.orgs.lock().unwrap()[&org].clone(),
            }),
            _ => Err(DbError::NoUser { id, org }),
        }
    }

    async fn update_user(&self, id: u64, org: u64, name: &str) -> Result<User, DbError> {
        self.round_trip().await;
        self.users
            .lock()
            .unwrap()
            .insert(id, (name.to_owned(), org));
        let org_name = self.orgs.lock().unwrap().get(&org).cloned();
        let org_name = org_name.ok_or(DbError::NoOrg(org))?;
        Ok(User {
            id,
            name: name.to_owned(),
            org: org_name,
        })
    }

    async fn update_org(&self, org: u64, name: &str) -> Result<Org, DbError> {
        self.round_trip().await;
        let mut orgs = self.orgs.lock().unwrap();
        let row = orgs.get_mut(&org).ok_or(DbError::NoOrg(org))?;
        name.clone_into(row);
        Ok(Org {
            id: org,
            name: name.to_owned(),
        })
    }

    async fn round_trip(&self) {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    /// A read, cached under `user:{id}` and tagged with the user and its org.
    /// (Tags are rendered from arguments, so the org is one: say, from the
    /// request path `/orgs/{org}/users/{id}`.)
    /// `org` only names a tag (a user's org is part of the row, the caller
    /// passes it along): `skip(org)` says it does not change the result.
    #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", tags = ["user:{id}", "org:{org}"], skip(org), cache = self.cache)]
    async fn user(&self, id: u64, org: u64) -> Result<User, DbError> {
        self.db.select_user(id, org).await
    }

    /// A write: the saved user replaces the entry `user(id, org)` reads, in
    /// this replica's L1 and in Redis; the other replicas drop their L1 copy.
    #[write_through(prefix = "user", ttl = "5m", key = "{id}", tags = ["user:{id}", "org:{org}"], cache = self.cache)]
    async fn save_user(&self, id: u64, org: u64, name: &str) -> Result<User, DbError> {
        self.db.update_user(id, org, name).await
    }

    /// A write that changes every cached user of the org (they carry its
    /// name): once it succeeds, whatever is tagged `org:{org}` is forgotten,
    /// in Redis and in every replica's L1.
    #[invalidates(tags = ["org:{org}"], cache = self.cache)]
    async fn rename_org(&self, org: u64, name: &str) -> Result<Org, DbError> {
        self.db.update_org(org, name).await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    // One database, two replicas of the service: each with its own `Cache`
    // (its own L1) on the same Redis and namespace.
    let db = Arc::new(Db::new());
    let a = Replica::start("replica A", &url, &db).await;

    // `build()` succeeds with Redis down (calls then run on L1 and the
    // loader), so check here that there is a Redis to show.
    if let Err(error) = a.repo.cache.ping().await {
        eprintln!("No Redis at {url}: {error}");
        eprintln!();
        eprintln!("This example needs a local Redis. Start one with");
        eprintln!("    redis-server --port 6379 --daemonize yes");
        eprintln!("(install it with `apt-get install -y redis-server`), or point");
        eprintln!(
            "REDIS_URL at one: REDIS_URL=redis://host:port cargo run --example redis_service"
        );
        return ExitCode::FAILURE;
    }
    // Start from a clean slate, so that every run shows the same thing:
    // forget what earlier runs left in the namespace (O(1), nothing deleted).
    if let Err(error) = a.repo.cache.clear().await {
        eprintln!("Could not clear the namespace: {error}");
        return ExitCode::FAILURE;
    }
    let b = Replica::start("replica B", &url, &db).await;

    match run(&a, &b, &db).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(a: &Replica, b: &Replica, db: &Db) -> Result<(), String> {
    println!("-- replica A loads user 42 from the database, into its L1 and Redis");
    call(a, db, "user(42, 7)", a.repo.user(42, 7)).await;
    call(a, db, "user(42, 7)", a.repo.user(42, 7)).await;

    println!("-- replica B finds it in Redis: its loader does not run");
    call(b, db, "user(42, 7)", b.repo.user(42, 7)).await;
    call(b, db, "user(42, 7)", b.repo.user(42, 7)).await;

    println!("-- an Err is not cached, in L1 or in Redis: every call queries again");
    call(b, db, "user(1, 7)", b.repo.user(1, 7)).await;
    call(b, db, "user(1, 7)", b.repo.user(1, 7)).await;
    call(a, db, "user(1, 7)", a.repo.user(1, 7)).await;

    println!("-- 20 concurrent calls for a cold key on replica B share one load");
    let queries = db.queries();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let repo = Arc::clone(&b.repo);
            tokio::spawn(async move { repo.user(9, 8).await })
        })
        .collect();
    for call in calls {
        call.await.expect("no panic").expect("user 9 exists");
    }
    println!(
        "{}  {:<26} {:<6}  db +{}  one load for the 20 calls",
        b.name,
        "20 x user(9, 8)",
        "loaded",
        db.queries() - queries
    );

    println!(
        "-- replica A saves user 42 (#[write_through]): B drops its L1 copy, reads A's from Redis"
    );
    let heard = b.repo.cache.stats().remote_invalidations;
    call(
        a,
        db,
        r#"save_user(42, 7, "Ada")"#,
        a.repo.save_user(42, 7, "Ada"),
    )
    .await;
    wait_for_message(b, heard, "its L1 copy of user 42 is dropped").await?;
    call(a, db, "user(42, 7)", a.repo.user(42, 7)).await;
    call(b, db, "user(42, 7)", b.repo.user(42, 7)).await;

    println!(
        r#"-- replica A renames org 7 (#[invalidates(tags = ["org:{{org}}"])]): B reloads org 7's users only"#
    );
    let heard = b.repo.cache.stats().remote_invalidations;
    call(
        a,
        db,
        r#"rename_org(7, "Acme Corp")"#,
        a.repo.rename_org(7, "Acme Corp"),
    )
    .await;
    wait_for_message(b, heard, "its L1 entries tagged org:7 are dropped").await?;
    call(b, db, "user(42, 7)", b.repo.user(42, 7)).await;
    call(a, db, "user(42, 7)", a.repo.user(42, 7)).await;
    call(b, db, "user(9, 8)", b.repo.user(9, 8)).await;

    println!("-- stats");
    for replica in [a, b] {
        println!("{}  {}", replica.name, summary(&replica.repo.cache.stats()));
    }
    println!("database queries: {}", db.queries());
    Ok(())
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

/// Runs one call on a replica and prints how it was answered: from L1, from
/// Redis, by a load, with an error, or (not a cached read) as a write.
async fn call<T: fmt::Display>(
    Replica { name, repo }: &Replica,
    db: &Db,
    label: &str,
    future: impl Future<Output = Result<T, DbError>>,
) {
    let (before, queries) = (repo.cache.stats(), db.queries());
    let result = future.await;
    let after = repo.cache.stats();
    let answer = if after.l1_hits > before.l1_hits {
        "L1 hit"
    } else if after.l2_hits > before.l2_hits {
        "L2 hit"
    } else if result.is_err() {
        "error"
    } else if after.misses > before.misses {
        "loaded"
    } else {
        "write"
    };
    let shown = match &result {
        Ok(value) => format!("Ok: {value}"),
        Err(error) => format!("Err: {error}"),
    };
    let queries = db.queries() - queries;
    println!("{name}  {label:<26} {answer:<6}  db +{queries}  {shown}");
}

/// Pub/sub is asynchronous: waits (at most 1 s) until `replica` has applied
/// a message from the other replica, i.e. dropped the L1 entries it covers.
async fn wait_for_message(
    replica: &Replica,
    heard_before: u64,
    effect: &str,
) -> Result<(), String> {
    let started = Instant::now();
    while replica.repo.cache.stats().remote_invalidations == heard_before {
        if started.elapsed() > Duration::from_secs(1) {
            return Err(format!(
                "{} heard nothing over pub/sub within 1 s",
                replica.name
            ));
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    println!("{}  hears of it over pub/sub: {effect}", replica.name);
    Ok(())
}

fn summary(stats: &Stats) -> String {
    format!(
        "L1 hits {}, L2 hits {}, misses {}, loads {} ({} failed), remote invalidations {}, Redis errors {}",
        stats.l1_hits,
        stats.l2_hits,
        stats.misses,
        stats.loads,
        stats.errors,
        stats.remote_invalidations,
        stats.redis_errors,
    )
}
