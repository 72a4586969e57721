//! Connections (issue 13, first part): ACL users, the database number of
//! the URL, and a cache built from an existing `redis::Client`, against a
//! real redis-server started here.

mod support;

use std::time::Duration;

use tiercache::{Cache, Error};

/// A server with an ACL user `app` (password `secret`) that may run what
/// the cache needs, and a default user that needs a password too.
async fn server_with_acl() -> support::RedisServer {
    let server = support::RedisServer::start();
    let mut admin = support::raw(&server.url()).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    server
}

fn url_with(server: &support::RedisServer, credentials: &str, db: Option<u8>) -> String {
    let db = db.map(|db| format!("/{db}")).unwrap_or_default();
    format!("redis://{credentials}@127.0.0.1:{}{db}", server.port())
}

#[tokio::test]
async fn an_acl_user_works_and_wrong_credentials_fail_build() {
    let server = server_with_acl().await;
    let cache = Cache::builder()
        .namespace("acl")
        .redis(url_with(&server, "app:secret", None))
        .build()
        .await
        .expect("the ACL user's credentials are accepted");
    let loaded = cache
        .entry("acl", &1u8)
        .ttl(Duration::from_secs(60))
        .get_with(|| async { 7u8 })
        .await;
    assert_eq!(loaded, 7);
    let other = Cache::builder()
        .namespace("acl")
        .redis(url_with(&server, "app:secret", None))
        .build()
        .await
        .unwrap();
    assert_eq!(
        other.entry("acl", &1u8).get::<u8>().await,
        Some(7),
        "through Redis"
    );
    assert_eq!(cache.stats().redis_errors, 0);

    for credentials in ["app:wrong", "nobody:secret"] {
        let refused = Cache::builder()
            .redis(url_with(&server, credentials, None))
            .build()
            .await;
        assert!(
            matches!(refused, Err(Error::RedisAuth { .. })),
            "{credentials}: {refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("credentials"), "{message}");
        assert!(
            !message.contains("wrong") && !message.contains("secret"),
            "no password in {message}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_redis_still_builds() {
    let reserved = support::RedisServer::reserve();
    let cache = Cache::builder()
        .redis(format!("redis://app:secret@127.0.0.1:{}", reserved.port()))
        .redis_timeout(Duration::from_millis(100))
        .build()
        .await
        .expect("Redis down is an outage, not a configuration mistake");
    assert!(cache.has_redis());
}

#[tokio::test]
async fn the_database_of_the_url_holds_the_entries_and_scopes_the_messages() {
    let server = support::RedisServer::start();
    let on = |db: u8| {
        let url = format!("{}/{db}", server.url());
        async move {
            Cache::builder()
                .namespace("dbs")
                .redis(url)
                .build()
                .await
                .unwrap()
        }
    };
    let (a3, b3, a4) = (on(3).await, on(3).await, on(4).await);
    let ttl = Duration::from_secs(60);
    a3.entry("n", &1u8).ttl(ttl).set(&3u8).await.unwrap();
    a4.entry("n", &1u8).ttl(ttl).set(&4u8).await.unwrap();
    assert_eq!(b3.entry("n", &1u8).get::<u8>().await, Some(3));
    // The entries are in database 3 and 4, not 0.
    let mut raw = support::raw(&server.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("dbs:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let mut raw3 = support::raw(&format!("{}/3", server.url())).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("dbs:n:*")
        .query_async(&mut raw3)
        .await
        .unwrap();
    assert_eq!(keys, vec!["dbs:n:1".to_owned()]);
    // An invalidation in database 3 reaches database 3's instances only.
    let before = a4.stats().remote_invalidations;
    a3.entry("n", &1u8).invalidate().await.unwrap();
    assert!(
        support::eventually(Duration::from_secs(5), async || b3
            .entry("n", &1u8)
            .get::<u8>()
            .await
            .is_none())
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a4.stats().remote_invalidations,
        before,
        "database 4 heard nothing"
    );
    assert_eq!(a4.entry("n", &1u8).get::<u8>().await, Some(4));
}

#[tokio::test]
async fn a_cache_from_an_existing_client() {
    let server = server_with_acl().await;
    let client = redis::Client::open(url_with(&server, "app:secret", Some(2))).unwrap();
    let cache = Cache::builder()
        .namespace("byo")
        .redis_client(client.clone())
        .build()
        .await
        .unwrap();
    cache
        .entry("c", &1u8)
        .ttl(Duration::from_secs(60))
        .set(&9u8)
        .await
        .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("byo:c:1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "in the client's database, with its user");
    let refused = Cache::builder()
        .redis_client(redis::Client::open(url_with(&server, "app:wrong", None)).unwrap())
        .build()
        .await;
    assert!(
        matches!(refused, Err(Error::RedisAuth { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn no_password_is_shown() {
    let builder = Cache::builder().redis("redis://app:secret@127.0.0.1:6379/2");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("app:***@127.0.0.1:6379/2"), "{shown}");
    let invalid = Cache::builder()
        .redis("redis://app:secret@127.0.0.1:notaport")
        .build()
        .await;
    let message = invalid.unwrap_err().to_string();
    assert!(
        message.contains("invalid Redis URL") && !message.contains("secret"),
        "{message}"
    );
}

#[tokio::test]
async fn a_user_without_the_commands_the_cache_needs_fails_build() {
    let server = support::RedisServer::start();
    let mut admin = support::raw(&server.url()).await;
    for (user, rights) in [
        ("nothing", vec!["-@all"]),
        (
            "readonly",
            vec!["-@all", "+ping", "+info", "+get", "+mget", "+subscribe"],
        ),
    ] {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">pw")
            .arg("~*")
            .arg("&*");
        for right in &rights {
            cmd.arg(*right);
        }
        let _: () = cmd.query_async(&mut admin).await.unwrap();
        let refused = Cache::builder()
            .redis(url_with(&server, &format!("{user}:pw"), None))
            .build()
            .await;
        assert!(
            matches!(refused, Err(Error::RedisPermission { .. })),
            "{user}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_password_in_the_query_or_a_url_that_does_not_parse_is_not_shown() {
    for url in [
        "unix:///tmp/none.sock?db=2&pass=hunter2",
        "redis+unix:///tmp/none.sock?pass=hunter2&db=notanumber",
        "redis//:hunter2@127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:6379/0?x=a@b",
    ] {
        let shown = format!("{:?}", Cache::builder().redis(url));
        assert!(!shown.contains("hunter2"), "{shown}");
        if let Err(error) = Cache::builder().redis(url).build().await {
            let message = error.to_string();
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}

/// An ACL user with everything but `rights` taken away.
async fn user_without(server: &support::RedisServer, user: &str, rights: &[&str]) -> String {
    let mut admin = support::raw(&server.url()).await;
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all");
    for right in rights {
        cmd.arg(*right);
    }
    let _: () = cmd.query_async(&mut admin).await.unwrap();
    url_with(server, &format!("{user}:pw"), None)
}

/// Without SUBSCRIBE an instance would never hear another's invalidations
/// (and serve what they forgot from L1); without MGET every read fails;
/// without SCRIPT every batch write does: each refused at build.
#[tokio::test]
async fn a_user_missing_one_command_the_cache_runs_fails_build() {
    let server = support::RedisServer::start();
    for missing in ["-subscribe", "-mget", "-script"] {
        let user = format!("no{}", &missing[1..]);
        let url = user_without(&server, &user, &[missing]).await;
        let built = Cache::builder().redis(url).build().await;
        assert!(
            matches!(built, Err(Error::RedisPermission { .. })),
            "{missing}: {:?}",
            built.map(|cache| cache.stats())
        );
    }
}

/// A read-only replica takes no write: a configuration mistake.
#[tokio::test]
async fn a_read_only_replica_fails_build() {
    let server = support::RedisServer::start_with(|_| {
        vec!["--replicaof".into(), "127.0.0.1".into(), "1".into()]
    });
    let built = Cache::builder().redis(server.url()).build().await;
    assert!(
        matches!(built, Err(Error::RedisReadOnly { .. })),
        "{:?}",
        built.map(|cache| cache.stats())
    );
}

/// A user whose ACL refuses client tracking (`-client|caching`,
/// `-client|tracking`) is not refused: reads ask for the versions every
/// time, and every call is answered from L2 as before.
#[tokio::test]
async fn a_user_without_client_tracking_reads_without_it() {
    let server = support::RedisServer::start();
    let mut redis = support::raw(&server.url()).await;
    for missing in ["-client|caching", "-client|tracking"] {
        let user = format!("no{}", missing[1..].replace('|', "-"));
        let url = user_without(&server, &user, &[missing]).await;
        let namespace = format!("acl-{user}");
        let build = || {
            Cache::builder()
                .namespace(namespace.as_str())
                .redis(url.as_str())
                .l1_capacity(0)
                .build()
        };
        let cache = build().await.expect("not refused at build");
        let read = || {
            cache
                .entry("acl", &1u8)
                .ttl(Duration::from_secs(60))
                .get_with(|| async { 7u8 })
        };
        assert_eq!(read().await, 7);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read().await, 7);
        let before = support::command_calls(&mut redis, "mget").await;
        let gets = support::command_calls(&mut redis, "get").await;
        for _ in 0..10 {
            assert_eq!(read().await, 7);
        }
        // (A refused attempt's own probe may add one MGET.)
        let mgets = support::command_calls(&mut redis, "mget").await - before;
        let gets = support::command_calls(&mut redis, "get").await - gets;
        assert!(
            mgets >= 10 && gets == 0,
            "{missing}: reads ask for the versions ({mgets} MGETs, {gets} GETs)"
        );
        let stats = cache.stats();
        assert_eq!(
            (stats.loads, stats.redis_errors),
            (1, 0),
            "{missing}: {stats:?}"
        );
    }
}
