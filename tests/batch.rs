//! Batch loads (`Cache::entries`) against a real redis-server: one L1 pass,
//! one Redis round trip, one loader call, the same entries as single calls.

mod support;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

const TTL: Duration = Duration::from_secs(300);

/// What the loader was asked for, call by call.
#[derive(Default, Clone)]
struct Calls(Arc<Mutex<Vec<Vec<u64>>>>);

impl Calls {
    fn record(&self, ids: &[u64]) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        self.0.lock().unwrap().push(ids);
    }

    fn all(&self) -> Vec<Vec<u64>> {
        self.0.lock().unwrap().clone()
    }
}

/// A batch over `ids` whose loader finds every id but those in `absent`.
async fn batch(cache: &Cache, ids: &[u64], calls: &Calls) -> HashMap<u64, User> {
    cache
        .entries("user", ids)
        .ttl(TTL)
        .get_many_with(|missing: Vec<u64>| async move {
            calls.record(&missing);
            missing.into_iter().map(|id| (id, user(id)))
        })
        .await
}

/// Spawns a batch over `ids` whose loader records the keys it is given,
/// then waits at `gate`, and returns `value(id)` for each.
fn spawn_gated(
    cache: &Cache,
    ids: &'static [u64],
    calls: &Calls,
    gate: &Arc<tokio::sync::Semaphore>,
    value: fn(u64) -> User,
) -> tokio::task::JoinHandle<HashMap<u64, User>> {
    let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
    tokio::spawn(async move {
        cache
            .entries("user", ids)
            .ttl(TTL)
            .get_many_with(|missing: Vec<u64>| async move {
                calls.record(&missing);
                let _pass = gate.acquire().await;
                missing.into_iter().map(move |id| (id, value(id)))
            })
            .await
    })
}

#[cache_aside(prefix = "user", ttl = "5m", key = "{id}", skip(cache, loads), cache = cache)]
async fn single(cache: &Cache, loads: &AtomicU64, id: u64) -> User {
    loads.fetch_add(1, SeqCst);
    user(id)
}

#[tokio::test]
async fn one_redis_read_one_load_and_one_write_for_what_l1_lacks() {
    // A server of its own: the commands counted are this test's only.
    let server = support::RedisServer::start();
    let cache = support::cache_on(&server.url(), "batch-round-trips").await;
    let ids: Vec<u64> = (0..100).collect();
    // 90 cached already: 60 in this instance's L1 and Redis, 30 in Redis only.
    let calls = Calls::default();
    batch(&cache, &ids[..60], &calls).await;
    let other = support::cache_on(&server.url(), "batch-round-trips").await;
    batch(&other, &ids[60..90], &calls).await;
    assert_eq!(calls.all().len(), 2);

    let mut redis = support::raw(&server.url()).await;
    let count = async |redis: &mut redis::aio::MultiplexedConnection| {
        (
            support::command_calls(redis, "mget").await,
            support::command_calls(redis, "evalsha").await,
            support::command_calls(redis, "script|load").await,
        )
    };
    let before = count(&mut redis).await;
    let found = batch(&cache, &ids, &calls).await;
    assert_eq!(found.len(), 100);
    assert!(ids.iter().all(|id| found[id] == user(*id)));
    assert_eq!(
        calls.all()[2],
        (90..100).collect::<Vec<_>>(),
        "one call, the 10 found nowhere"
    );
    // Two round trips: one MGET; one pipeline of SCRIPT LOAD and 10 writes.
    let after = count(&mut redis).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (1, 10, 1)
    );
    let stats = cache.stats();
    assert_eq!(stats.l1_hits, 60, "{stats:?}");
    assert_eq!(stats.l2_hits, 30, "{stats:?}");
    // All 100 are in L1 now: no Redis, no load.
    assert_eq!(batch(&cache, &ids, &calls).await.len(), 100);
    assert_eq!(calls.all().len(), 3);
    assert_eq!(count(&mut redis).await, after);
}

#[tokio::test]
async fn batches_and_single_calls_share_their_entries() {
    let cache = support::cache_in("batch-shared").await;
    let loads = AtomicU64::new(0);
    let calls = Calls::default();
    // Loaded one by one: hits for the batch.
    for id in [1, 2] {
        single(&cache, &loads, id).await;
    }
    let other = support::cache_in("batch-shared").await;
    let found = batch(&other, &[1, 2, 3], &calls).await;
    assert_eq!(found.len(), 3);
    assert_eq!(calls.all(), vec![vec![3]]);
    // Loaded by the batch: hits for the function, here and elsewhere.
    assert_eq!(single(&other, &loads, 3).await, user(3));
    let third = support::cache_in("batch-shared").await;
    assert_eq!(single(&third, &loads, 3).await, user(3));
    assert_eq!(loads.load(SeqCst), 2);
    // And for a single entry.
    let peeked: Option<User> = third.entry("user", &3u64).get().await;
    assert_eq!(peeked, Some(user(3)));
}

#[tokio::test]
async fn keys_the_loader_does_not_return_are_absent_and_cached_only_with_cache_none() {
    let cache = support::cache_in("batch-absent").await;
    let calls = Calls::default();
    let odd_only = |cache_none: bool| {
        let calls = calls.clone();
        let entries = cache.entries("sparse", &[1u64, 2, 3, 4]).ttl(TTL);
        let entries = if cache_none {
            entries.cache_none(TTL)
        } else {
            entries
        };
        async move {
            entries
                .get_many_with(|missing: Vec<u64>| async move {
                    calls.record(&missing);
                    missing
                        .into_iter()
                        .filter(|id| id % 2 == 1)
                        .map(|id| (id, user(id)))
                })
                .await
        }
    };
    let found = odd_only(false).await;
    assert_eq!(
        found
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [1, 3].into()
    );
    // Not cached: asked for again.
    odd_only(false).await;
    assert_eq!(calls.all(), vec![vec![1, 2, 3, 4], vec![2, 4]]);
    // Cached as absent, in L1 and in Redis.
    odd_only(true).await;
    odd_only(true).await;
    let other = support::cache_in("batch-absent").await;
    let recorder = calls.clone();
    let found = other
        .entries("sparse", &[1u64, 2, 3, 4])
        .ttl(TTL)
        .cache_none(TTL)
        .get_many_with(|missing: Vec<u64>| async move {
            recorder.record(&missing);
            Vec::<(u64, User)>::new()
        })
        .await;
    assert_eq!(found.len(), 2);
    assert_eq!(calls.all().len(), 3, "{:?}", calls.all());
}

#[tokio::test]
async fn a_failed_load_caches_nothing() {
    let cache = support::cache_in("batch-error").await;
    let failed: Result<HashMap<u64, User>, String> = cache
        .entries("user", &[1u64, 2])
        .ttl(TTL)
        .try_get_many_with(|_: Vec<u64>| async { Err::<Vec<(u64, User)>, _>("db down".to_owned()) })
        .await;
    assert_eq!(failed, Err("db down".to_owned()));
    let calls = Calls::default();
    assert_eq!(batch(&cache, &[1, 2], &calls).await.len(), 2);
    assert_eq!(calls.all(), vec![vec![1, 2]]);
    assert_eq!(cache.stats().errors, 1);
}

#[tokio::test]
async fn a_key_in_flight_elsewhere_is_awaited_not_loaded_again() {
    let cache = support::cache_in("batch-flight").await;
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let loads = Arc::new(AtomicU64::new(0));
    // A single call of key 5 is loading (held at the gate).
    let single_call = {
        let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .entry("user", &5u64)
                .ttl(TTL)
                .get_with(|| async move {
                    loads.fetch_add(1, SeqCst);
                    let _pass = gate.acquire().await;
                    User {
                        id: 5,
                        name: "from the single call".into(),
                    }
                })
                .await
        })
    };
    assert!(support::eventually(Duration::from_secs(5), async || loads.load(SeqCst) == 1).await);
    let calls = Calls::default();
    let batch_call = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move { batch(&cache, &[4, 5, 6], &calls).await })
    };
    // The batch waits for key 5's flight (as a single call of key 5
    // would), then loads the others.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(calls.all().is_empty(), "{:?}", calls.all());
    drop(closed);
    let found = batch_call.await.unwrap();
    assert_eq!(calls.all(), vec![vec![4, 6]], "key 5 is left to its flight");
    assert_eq!(found[&5].name, "from the single call");
    assert_eq!(found.len(), 3);
    assert_eq!(single_call.await.unwrap().name, "from the single call");
}

#[tokio::test]
async fn a_single_call_joins_the_load_of_a_batch() {
    let cache = support::cache_in("batch-joined").await;
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let calls = Calls::default();
    let batch_call = spawn_gated(&cache, &[7, 8], &calls, &gate, user);
    assert!(support::eventually(Duration::from_secs(5), async || calls.all().len() == 1).await);
    let loads = Arc::new(AtomicU64::new(0));
    let joined = {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move { single(&cache, &loads, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(closed);
    assert_eq!(joined.await.unwrap(), user(8));
    assert_eq!(
        loads.load(SeqCst),
        0,
        "the single call took the batch's value"
    );
    assert_eq!(batch_call.await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_invalidation_during_the_load_keeps_its_values_out_of_l1() {
    let cache = support::cache_in("batch-race").await;
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let calls = Calls::default();
    let read_before = |id| User {
        id,
        name: "read before the update".into(),
    };
    let batch_call = spawn_gated(&cache, &[9], &calls, &gate, read_before);
    assert!(support::eventually(Duration::from_secs(5), async || calls.all().len() == 1).await);
    // The row changes and is invalidated while the batch's read is in flight.
    cache.entry("user", &9u64).invalidate().await.unwrap();
    drop(closed);
    batch_call.await.unwrap();
    let loads = AtomicU64::new(0);
    assert_eq!(
        single(&cache, &loads, 9).await,
        user(9),
        "not the value read before"
    );
    assert_eq!(loads.load(SeqCst), 1);
    let other = support::cache_in("batch-race").await;
    assert_eq!(
        single(&other, &loads, 9).await,
        user(9),
        "nor is it in Redis"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_loader_may_borrow_and_keys_are_asked_for_once() {
    let cache = Cache::in_memory();
    let local = Rc::new(Mutex::new(Vec::new()));
    let found = cache
        .entries("local", &[3u8, 3, 4, 3])
        .ttl(TTL)
        .get_many_with(|missing: Vec<u8>| {
            let local = &local;
            async move {
                tokio::task::yield_now().await;
                local.lock().unwrap().push(missing.clone());
                missing.into_iter().map(|k| (k, u32::from(k) * 10))
            }
        })
        .await;
    assert_eq!(found, HashMap::from([(3, 30), (4, 40)]));
    assert_eq!(*local.lock().unwrap(), vec![vec![3, 4]]);
    let peeked: HashMap<u8, u32> = cache.entries("local", &[3u8, 5]).get_many().await;
    assert_eq!(peeked, HashMap::from([(3, 30)]));
}

mod batch_functions {
    use std::collections::HashMap;

    use tiercache::{Cache, cache_batch};

    use super::{Calls, User, user};

    /// The body runs once, with only the ids found nowhere.
    #[cache_batch(prefix = "user", ttl = "5m", skip(cache, calls), cache = cache)]
    pub(crate) async fn users(cache: &Cache, calls: &Calls, ids: &[u64]) -> HashMap<u64, User> {
        calls.record(ids);
        ids.iter().map(|&id| (id, user(id))).collect()
    }

    pub(crate) struct Repo {
        pub(crate) cache: Cache,
        pub(crate) calls: Calls,
    }

    impl Repo {
        /// A method, fallible, with `cache_none` and a tag from an
        /// argument.
        #[cache_batch(prefix = "user", ttl = "5m", tags = ["org:{org}"], cache_none = "1m", skip(org), cache = self.cache)]
        pub(crate) async fn users(
            &self,
            org: u64,
            ids: &[u64],
        ) -> Result<HashMap<u64, User>, String> {
            self.calls.record(ids);
            if ids.contains(&666) {
                return Err("no".into());
            }
            Ok(ids
                .iter()
                .filter(|&&id| id != org)
                .map(|&id| (id, user(id)))
                .collect())
        }
    }
}

#[tokio::test]
async fn a_batch_function_runs_its_body_once_with_the_keys_found_nowhere() {
    use batch_functions::*;
    let cache = support::cache_in("batch-fn").await;
    let loads = AtomicU64::new(0);
    single(&cache, &loads, 2).await;
    let calls = Calls::default();
    let found = users(&cache, &calls, &[1, 2, 3]).await;
    assert_eq!(found.len(), 3);
    assert_eq!(calls.all(), vec![vec![1, 3]]);
    // Its entries are the single function's.
    assert_eq!(single(&cache, &loads, 3).await, user(3));
    assert_eq!(loads.load(SeqCst), 1);
    users(&cache, &calls, &[1, 2, 3]).await;
    assert_eq!(calls.all().len(), 1, "all cached");

    let repo = Repo {
        cache: support::cache_in("batch-fn-method").await,
        calls: Calls::default(),
    };
    // Key 5 is the org: the body leaves it out; cached as absent.
    let found = repo.users(5, &[4, 5]).await.unwrap();
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert_eq!(repo.users(5, &[4, 5]).await.unwrap().len(), 1);
    assert_eq!(repo.calls.all(), vec![vec![4, 5]], "5 is cached as absent");
    assert_eq!(repo.users(5, &[666]).await, Err("no".to_owned()));
    // The tag forgets both.
    repo.cache.invalidate_tags(["org:5"]).await.unwrap();
    repo.users(5, &[4, 5]).await.unwrap();
    assert_eq!(repo.calls.all().last(), Some(&vec![4, 5]));
}

/// Two batches of the same keys, the first held in its load: the second
/// does not wait for the first's flights (which could wait for its own in
/// turn), it loads them too.
#[tokio::test]
async fn a_batch_never_waits_for_another_batch() {
    let cache = Cache::builder()
        .lock_wait(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let first_calls = Calls::default();
    let first = spawn_gated(&cache, &[1, 2, 3], &first_calls, &gate, user);
    assert!(
        support::eventually(Duration::from_secs(5), async || first_calls.all().len()
            == 1)
        .await
    );
    let second_calls = Calls::default();
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        batch(&cache, &[3, 2, 1], &second_calls),
    )
    .await
    .expect("the second batch does not wait for the first");
    assert_eq!(second.len(), 3);
    assert_eq!(second_calls.all(), vec![vec![1, 2, 3]]);
    drop(closed);
    assert_eq!(first.await.unwrap().len(), 3);
}

/// A key type whose `Eq` tells apart what renders alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Email(String);

impl tiercache::KeyPart for Email {
    fn write_key(&self, out: &mut tiercache::KeyWriter) {
        self.0.to_lowercase().write_key(out);
    }
}

#[tokio::test]
async fn keys_that_render_alike_are_one_entry() {
    let cache = Cache::builder()
        .lock_wait(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let asked = Mutex::new(Vec::new());
    let keys = [
        Email("Ada@x".into()),
        Email("ada@x".into()),
        Email("bob@x".into()),
    ];
    let found = tokio::time::timeout(
        Duration::from_secs(10),
        cache
            .entries("email", &keys)
            .ttl(TTL)
            .get_many_with(|missing: Vec<Email>| {
                asked.lock().unwrap().push(missing.len());
                async move { missing.into_iter().map(|e| (e.clone(), e.0.len())) }
            }),
    )
    .await
    .expect("a batch does not wait for its own flight");
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        *asked.lock().unwrap(),
        vec![2],
        "one entry for the two that render alike"
    );
}

#[cache_aside(prefix = "tagged", ttl = "5m", key = "{id}", tags = ["user:{id}"], skip(cache, loads), cache = cache)]
async fn tagged(cache: &Cache, loads: &AtomicU64, id: u64) -> User {
    loads.fetch_add(1, SeqCst);
    User {
        id,
        name: "from the function".into(),
    }
}

/// With each key's own tags, a batch's entries are the tagged reader's:
/// hits for it (in Redis too), and forgotten with their tag.
#[tokio::test]
async fn a_batch_with_each_keys_tags_stores_what_a_tagged_reader_reads() {
    let cache = support::cache_in("batch-tags-with").await;
    let tagged_batch = |cache: &Cache| {
        let cache = cache.clone();
        async move {
            cache
                .entries("tagged", &[1u64, 2])
                .ttl(TTL)
                .tags_with(|id| [format!("user:{}", tiercache::key::render(id))])
                .get_many_with(|missing: Vec<u64>| async move {
                    missing.into_iter().map(|id| {
                        (
                            id,
                            User {
                                id,
                                name: "from the batch".into(),
                            },
                        )
                    })
                })
                .await
        }
    };
    assert_eq!(tagged_batch(&cache).await.len(), 2);
    let loads = AtomicU64::new(0);
    assert_eq!(tagged(&cache, &loads, 1).await.name, "from the batch");
    let other = support::cache_in("batch-tags-with").await;
    assert_eq!(
        tagged(&other, &loads, 2).await.name,
        "from the batch",
        "a Redis hit"
    );
    assert_eq!(loads.load(SeqCst), 0);
    cache.invalidate_tags(["user:1"]).await.unwrap();
    assert_eq!(tagged(&cache, &loads, 1).await.name, "from the function");
    assert_eq!(
        tagged(&cache, &loads, 2).await.name,
        "from the batch",
        "only 1 was tagged"
    );
    assert_eq!(loads.load(SeqCst), 1);
}

/// Tags are recorded in one order, whatever order they are listed in.
#[tokio::test]
async fn tags_listed_in_another_order_are_the_same_entry() {
    let cache = support::cache_in("batch-tag-order").await;
    cache
        .entry("ordered", &1u64)
        .ttl(TTL)
        .tags(["x", "y"])
        .set(&5u32)
        .await
        .unwrap();
    let other = support::cache_in("batch-tag-order").await;
    let found = other
        .entries("ordered", &[1u64])
        .ttl(TTL)
        .tags(["y"])
        .tags_with(|_| ["x", "y"])
        .get_many_with(|_: Vec<u64>| async { Vec::<(u64, u32)>::new() })
        .await;
    assert_eq!(found.get(&1), Some(&5), "a Redis hit, not a load");
}

/// A batch takes another flight's final value only: a stale value that a
/// single call's flight offered while it refreshes is past its TTL.
#[tokio::test]
async fn a_batch_does_not_take_a_stale_value_another_flight_offers() {
    let writer = support::cache_in("batch-offer").await;
    let short = Duration::from_millis(200);
    let _: u64 = writer
        .entry("p", &7u64)
        .ttl(short)
        .stale(Duration::from_secs(60))
        .get_with(|| async { 1 })
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let cache = support::cache_in("batch-offer").await;
    let gate = Arc::new(support::open_gate());
    let closed = support::close(&gate).await;
    let held = gate.clone();
    let stale: u64 = cache
        .entry("p", &7u64)
        .ttl(short)
        .stale(Duration::from_secs(60))
        .get_with(move || {
            let held = held.clone();
            async move {
                let _pass = held.acquire().await;
                2
            }
        })
        .await;
    assert_eq!(
        stale, 1,
        "the single call is answered stale while it refreshes"
    );
    let batch = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .entries("p", &[7u64])
                .ttl(TTL)
                .get_many_with(|missing: Vec<u64>| async move {
                    missing.into_iter().map(|id| (id, 3u64))
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(closed);
    let found = batch.await.unwrap();
    assert_ne!(found.get(&7), Some(&1), "not the value past its TTL");
}
