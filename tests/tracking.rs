//! Tag versions known without asking (RESP3 client-side caching, see the
//! README's "How a read stays correct"), against a real redis-server: an
//! L2 hit is one `GET`, and no way a version can change (an invalidation
//! from another instance, a deleted or flushed version key, a killed
//! connection) lets a read sent after it accept what it covers.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tiercache::{Cache, cache_aside};

/// Numbers loads across the test binary: a stale read shows as an old one.
static LOAD_NUMBER: AtomicU64 = AtomicU64::new(1);

struct Source {
    cache: Cache,
}

impl Source {
    #[cache_aside(prefix = "row", ttl = "10m", tags = ["grp:{group}"], cache = self.cache)]
    async fn row(&self, group: u64, id: u64) -> u64 {
        LOAD_NUMBER.fetch_add(1, SeqCst) * 1000 + id
    }
}

/// A cache without L1: every call reads Redis.
async fn l2_only(url: &str, namespace: &str) -> Source {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis(url)
        .l1_capacity(0)
        .build()
        .await
        .expect("valid settings");
    Source { cache }
}

/// The ids of the connections with tracking on (`flags` holds `t`).
async fn tracked_connections(redis: &mut redis::aio::MultiplexedConnection) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .expect("CLIENT LIST answers");
    list.lines()
        .filter(|line| {
            line.split(' ').any(|field| {
                field
                    .strip_prefix("flags=")
                    .is_some_and(|f| f.contains('t'))
            })
        })
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

/// Reads `group`/`id` until the cache reads over a tracked connection and
/// knows the versions (a hit that is one `GET`); returns the value.
async fn until_tracked(
    source: &Source,
    redis: &mut redis::aio::MultiplexedConnection,
    group: u64,
    id: u64,
) -> u64 {
    let value = source.row(group, id).await;
    let tracked = support::eventually(Duration::from_secs(5), async || {
        assert_eq!(source.row(group, id).await, value, "a hit");
        let (gets, mgets) = (
            support::command_calls(redis, "get").await,
            support::command_calls(redis, "mget").await,
        );
        assert_eq!(source.row(group, id).await, value, "a hit");
        support::command_calls(redis, "get").await == gets + 1
            && support::command_calls(redis, "mget").await == mgets
    })
    .await;
    assert!(tracked, "reads went over a tracked connection within 5 s");
    value
}

#[tokio::test]
async fn an_l2_hit_is_one_get_once_the_versions_are_known() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let source = l2_only(&server.url(), "hits").await;
    let value = until_tracked(&source, &mut redis, 1, 1).await;
    assert_eq!(tracked_connections(&mut redis).await.len(), 1);

    let before = [
        support::command_calls(&mut redis, "get").await,
        support::command_calls(&mut redis, "mget").await,
        support::command_calls(&mut redis, "evalsha").await,
    ];
    for _ in 0..100 {
        assert_eq!(source.row(1, 1).await, value);
    }
    let after = [
        support::command_calls(&mut redis, "get").await,
        support::command_calls(&mut redis, "mget").await,
        support::command_calls(&mut redis, "evalsha").await,
    ];
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [100, 0, 0],
        "100 hits: 100 GETs, no MGET, no script"
    );
    assert_eq!(source.cache.stats().loads, 1);
}

/// The guarantee itself: an invalidation by another instance returns,
/// and the very next read here (no sleep, no pub/sub: this cache has no
/// L1) refuses the entry, over and over.
#[tokio::test]
async fn a_read_sent_after_another_instance_invalidated_never_accepts_the_entry() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let reader = l2_only(&server.url(), "race").await;
    let writer = l2_only(&server.url(), "race").await;
    let mut value = until_tracked(&reader, &mut redis, 7, 1).await;
    for round in 0..300 {
        // Known, and a hit.
        assert_eq!(reader.row(7, 1).await, value, "round {round}: a hit");
        match round % 3 {
            0 => writer.cache.invalidate_tags(["grp:7"]).await.unwrap(),
            1 => writer.cache.invalidate_prefix("row").await.unwrap(),
            _ => writer.cache.clear().await.unwrap(),
        }
        let after = reader.row(7, 1).await;
        assert_ne!(
            after, value,
            "round {round}: read after the invalidation returned"
        );
        value = after;
    }
    let mgets = support::command_calls(&mut redis, "mget").await;
    assert!(
        mgets >= 300,
        "each invalidation made the reader ask for the versions again ({mgets} MGETs)"
    );
}

/// A version key that disappears (evicted, expired, deleted) is a change
/// too: the entry's recorded version is no longer current, even if the
/// entry itself is put back as it was.
#[tokio::test]
async fn a_deleted_or_flushed_version_key_is_not_remembered() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let source = l2_only(&server.url(), "gone").await;
    let mut value = until_tracked(&source, &mut redis, 3, 1).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("gone:row:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "the one entry: {keys:?}");
    let entry_key = keys[0].as_str();
    for flush in [false, true] {
        let bytes: Vec<u8> = redis::cmd("GET")
            .arg(entry_key)
            .query_async(&mut redis)
            .await
            .unwrap();
        if flush {
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut redis)
                .await
                .unwrap();
        } else {
            let _: () = redis::cmd("DEL")
                .arg("gone:#t:grp:3")
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        // The old entry, back as it was: only its versions say it is old.
        let _: () = redis::cmd("SET")
            .arg(entry_key)
            .arg(bytes)
            .query_async(&mut redis)
            .await
            .unwrap();
        let after = source.row(3, 1).await;
        assert_ne!(after, value, "flush {flush}: the old entry was accepted");
        value = after;
        assert_eq!(source.row(3, 1).await, value, "and the new one is kept");
    }
}

/// A connection whose messages may have been lost (killed) takes what it
/// knew with it; a new one is made and tracked again.
#[tokio::test]
async fn a_killed_tracked_connection_forgets_what_it_knew() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let reader = l2_only(&server.url(), "killed").await;
    let writer = l2_only(&server.url(), "killed").await;
    let value = until_tracked(&reader, &mut redis, 5, 1).await;
    let tracked = tracked_connections(&mut redis).await;
    assert_eq!(tracked.len(), 1, "the reader's one tracked connection");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(tracked[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    writer.cache.invalidate_tags(["grp:5"]).await.unwrap();
    let after = reader.row(5, 1).await;
    assert_ne!(after, value, "read after the kill and the invalidation");
    let again = until_tracked(&reader, &mut redis, 5, 1).await;
    assert_eq!(again, after);
    let now = tracked_connections(&mut redis).await;
    assert!(
        now.len() == 1 && now[0] != tracked[0],
        "a new tracked connection: {now:?}"
    );
}

/// Off, or refused by the server: every read asks for the versions (one
/// `MGET` each), and nothing else changes.
#[tokio::test]
async fn without_tracking_every_read_asks_for_the_versions() {
    // A server without RESP3: `HELLO` renamed away.
    let refusing = support::RedisServer::start_with(|_| {
        vec!["--rename-command".into(), "HELLO".into(), String::new()]
    });
    let on_refusing = l2_only(&refusing.url(), "plain").await;
    let server = support::RedisServer::start();
    let off = Source {
        cache: Cache::builder()
            .namespace("plain")
            .redis(server.url())
            .l1_capacity(0)
            .client_tracking(false)
            .build()
            .await
            .expect("valid settings"),
    };
    for (source, url) in [(&on_refusing, refusing.url()), (&off, server.url())] {
        let mut redis = support::raw(&url).await;
        let value = source.row(1, 1).await;
        // Time for a tracked connection to be tried (and refused).
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A hit, so that reads are plain (not read-or-lock) from now on.
        assert_eq!(source.row(1, 1).await, value);
        let before = support::command_calls(&mut redis, "mget").await;
        for _ in 0..20 {
            assert_eq!(source.row(1, 1).await, value);
        }
        let mgets = support::command_calls(&mut redis, "mget").await - before;
        assert_eq!(mgets, 20, "{url}: one MGET per read");
        assert!(tracked_connections(&mut redis).await.is_empty());
        assert_eq!(source.cache.stats().loads, 1);
    }
}

/// Many readers at once, while another instance invalidates the tag over
/// and over: versions are fetched and learnt while invalidations of them
/// are on their way, and no read that began after an invalidation
/// returned gets a value loaded before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_never_learn_a_version_an_invalidation_replaced() {
    use std::sync::Arc;
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let reader = Arc::new(l2_only(&server.url(), "learn").await);
    let writer = l2_only(&server.url(), "learn").await;
    until_tracked(&reader, &mut redis, 9, 0).await;
    // marks[k]: the load number before invalidation k was sent; `done`:
    // how many have returned.
    let marks = Arc::new(std::sync::Mutex::new(vec![0u64]));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|task| {
            let (reader, marks, done, stop) =
                (reader.clone(), marks.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(SeqCst) {
                    let after = done.load(SeqCst) as usize;
                    let mark = marks.lock().unwrap()[after];
                    // A key per task: a call that joins another's load in
                    // flight (begun before the invalidation, which this
                    // instance hears of by pub/sub) makes no read at all.
                    let value = reader.row(9, task).await;
                    let loaded = value / 1000;
                    assert!(
                        loaded >= mark,
                        "a read begun after invalidation {after} got load {loaded}, from before it (mark {mark})"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for k in 1..=200u64 {
        marks.lock().unwrap().push(LOAD_NUMBER.load(SeqCst));
        writer.cache.invalidate_tags(["grp:9"]).await.unwrap();
        done.store(k, SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, SeqCst);
    let mut reads = 0;
    for task in readers {
        reads += task.await.expect("no stale read");
    }
    assert!(reads > 400, "the readers read throughout ({reads} reads)");
}

/// Whether every lock of `namespace` is gone within 2 s.
async fn locks_released(redis: &mut redis::aio::MultiplexedConnection, namespace: &str) -> bool {
    support::eventually(Duration::from_secs(2), async || {
        let locks: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{namespace}:#lock:*"))
            .query_async(&mut *redis)
            .await
            .unwrap();
        locks.is_empty()
    })
    .await
}

/// The commands `call` sends to the server at `url`, as `MONITOR` shows
/// them: the commands that scripts run are left out (each is one command
/// on the wire, whatever it runs).
async fn commands_sent<F: Future>(url: &str, call: F) -> Vec<String> {
    use futures_util::StreamExt;
    let client = redis::Client::open(url).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let mut lines = monitor.into_on_message::<String>();
    let mut redis = support::raw(url).await;
    // Monitoring once the server shows this.
    let _: String = redis::cmd("ECHO")
        .arg("start-of-call")
        .query_async(&mut redis)
        .await
        .unwrap();
    while let Some(line) = lines.next().await {
        if line.contains("\"start-of-call\"") {
            break;
        }
    }
    call.await;
    let _: String = redis::cmd("ECHO")
        .arg("end-of-call")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut sent = Vec::new();
    while let Some(line) = lines.next().await {
        if line.contains("\"end-of-call\"") {
            break;
        }
        if !line.contains("[0 lua]") {
            let command = line.split('"').nth(1).unwrap_or_default().to_lowercase();
            sent.push(command);
        }
    }
    sent
}

/// A miss is two round trips: the read that takes the lock when it finds
/// nothing (the versions' `MGET` and a script, in one pipeline), and the
/// write that releases it (one script),
/// while the function's reads miss; once they hit, a read is a `GET`
/// again (and a miss then costs the lock's own round trip).
#[tokio::test]
async fn a_miss_is_two_round_trips_when_misses_are_what_reads_find() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let source = l2_only(&server.url(), "trips").await;
    until_tracked(&source, &mut redis, 1, 0).await;
    source.row(1, 1).await; // a miss
    let sent = commands_sent(&server.url(), source.row(1, 2)).await;
    assert_eq!(
        sent,
        ["mget", "evalsha", "evalsha"],
        "a miss after a miss: versions and read-or-lock (one pipeline), write"
    );
    let sent = commands_sent(&server.url(), source.row(1, 2)).await;
    assert_eq!(
        sent,
        ["mget", "evalsha"],
        "a hit after a miss: the same pipeline"
    );
    let sent = commands_sent(&server.url(), source.row(1, 2)).await;
    assert_eq!(sent, ["get"], "a hit after a hit");
    let sent = commands_sent(&server.url(), source.row(1, 3)).await;
    assert_eq!(
        sent,
        ["get", "evalsha", "evalsha"],
        "a miss after a hit: read, lock, write"
    );
    assert_eq!(source.cache.stats().loads, 4);
}

/// A read-or-lock cancelled (or timed out) before Redis ran it: the lock's
/// release goes over the same connection, after it, so the lock it may
/// take is not left held by nobody for a whole lease.
#[tokio::test]
async fn a_cancelled_read_or_lock_leaves_no_lock_behind() {
    let server = support::RedisServer::start();
    let proxy = support::proxy::Proxy::start(server.port()).await;
    let source = l2_only(&proxy.url(), "cancel").await;
    let mut redis = support::raw(&server.url()).await;
    source.row(1, 1).await; // a miss: the next read is read-or-lock
    for id in 2..12 {
        proxy.freeze();
        let cancelled = tokio::time::timeout(Duration::from_millis(30), source.row(1, id)).await;
        assert!(cancelled.is_err(), "held up by the proxy");
        proxy.thaw();
        assert!(
            locks_released(&mut redis, "cancel").await,
            "id {id}: a lock left held"
        );
    }
}

/// An entry refused for its versions (after a tag invalidation) is no
/// reason to read-or-lock: the script would return it as it is, and the
/// lock would cost its own round trip all the same.
#[tokio::test]
async fn entries_refused_for_their_versions_are_read_plainly() {
    let server = support::RedisServer::start();
    let source = l2_only(&server.url(), "refused").await;
    let mut redis = support::raw(&server.url()).await;
    until_tracked(&source, &mut redis, 4, 0).await;
    for id in 1..=3 {
        source.row(4, id).await;
        source.row(4, id).await; // hits: reads are plain
    }
    source.cache.invalidate_tags(["grp:4"]).await.unwrap();
    source.row(4, 1).await; // versions asked for again, the entry refused
    for id in 2..=3 {
        let sent = commands_sent(&server.url(), source.row(4, id)).await;
        assert_eq!(
            sent,
            ["get", "evalsha", "evalsha"],
            "id {id}: a plain read, the lock, the write"
        );
    }
}

/// A Redis out of memory refuses writes, scripts that may write among
/// them (read-or-lock), but not reads: entries there are still served,
/// after a miss too, and every call is answered.
#[tokio::test]
async fn an_out_of_memory_redis_still_serves_what_it_holds() {
    let server = support::RedisServer::start();
    let source = l2_only(&server.url(), "oom").await;
    let mut redis = support::raw(&server.url()).await;
    let values: Vec<u64> = {
        let mut values = Vec::new();
        for id in 1..=3 {
            values.push(source.row(6, id).await);
        }
        values
    };
    support::out_of_memory(&mut redis).await;
    let before = source.cache.stats();
    // A miss first (read-or-lock is tried, and refused), then the hits.
    source.row(6, 99).await;
    for (id, value) in (1..=3).zip(&values) {
        assert_eq!(source.row(6, id).await, *value, "id {id} served from Redis");
    }
    let after = source.cache.stats();
    assert_eq!(after.l2_hits - before.l2_hits, 3, "{after:?}");
    assert_eq!(after.loads - before.loads, 1, "the miss alone loaded");
}

/// An error reply on the tracked connection (a foreign key of another
/// type: `WRONGTYPE`) leaves the connection in step: it is kept, not
/// made again on every read of that key.
#[tokio::test]
async fn an_error_reply_keeps_the_tracked_connection() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let source = l2_only(&server.url(), "wrongtype").await;
    until_tracked(&source, &mut redis, 2, 0).await;
    let tracked = tracked_connections(&mut redis).await;
    assert_eq!(tracked.len(), 1);
    source.row(2, 1).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("wrongtype:row:*1")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&keys[0])
        .arg("not an entry")
        .query_async(&mut redis)
        .await
        .unwrap();
    for _ in 0..20 {
        source.row(2, 1).await; // answered, by a load
    }
    assert_eq!(
        tracked_connections(&mut redis).await,
        tracked,
        "the same tracked connection"
    );
}

/// Read-or-lock took the lock, then the read failed after it (a version
/// key of the wrong type: creating it fails): the call is answered, and
/// the lock it knows it took is released, not left for a whole lease.
#[tokio::test]
async fn a_read_failing_after_read_or_lock_took_the_lock_releases_it() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    let _: () = redis::cmd("RPUSH")
        .arg("after:#t:grp:8")
        .arg("not a version")
        .query_async(&mut redis)
        .await
        .unwrap();
    let source = l2_only(&server.url(), "after").await;
    let sent = commands_sent(&server.url(), source.row(8, 1)).await;
    assert_eq!(sent[..2], ["mget", "evalsha"], "read-or-lock: {sent:?}");
    assert!(
        locks_released(&mut redis, "after").await,
        "the lock left held"
    );
    assert_eq!(source.cache.stats().loads, 1);
}
