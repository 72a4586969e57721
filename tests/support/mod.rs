//! Test fixture: a real `redis-server` on a free loopback port.
//!
//! [`shared`] is the one server of a test binary, started on first use; tests
//! that stop or restart Redis start their own with [`RedisServer::start`].
//! A watchdog process kills every server when the test binary exits, however
//! it exits, so no `redis-server` outlives the tests.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;
pub mod traced;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL: &str = "redis-server is not installed: the tests need a real one. \
Install it with `apt-get install -y redis-server` (or run `scripts/test`, which does)";

/// A `redis-server` owned by the test.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// More arguments for `redis-server` (TLS, ...).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(|_| Vec::new())
    }

    /// Starts a server with more arguments, made from a second free port
    /// (for `--tls-port`); the server's own `port` stays plain TCP, which
    /// the harness pings.
    pub fn start_with(args: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                port,
                child: None,
                args: args(free_port()),
            };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// A port nothing listens on, to start a server on later.
    pub fn reserve() -> Self {
        Self {
            port: free_port(),
            child: None,
            args: Vec::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_start(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .args(&self.args);
        self.child = serving(command, self.port);
        self.child.is_some()
    }
}

/// Runs `command` (a redis-server) and waits until it answers on `port`;
/// `None` if it exits first (the port was taken, most likely) or does not
/// answer within 5 s. Fails loudly if redis-server is not installed.
fn serving(mut command: Command, port: u16) -> Option<Child> {
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
        Err(error) => panic!("cannot start redis-server: {error}"),
    };
    watch(child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if ping(port) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test binary's shared server.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Kills `pid` once this test process is gone (statics are never dropped).
fn watch(pid: u32) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.2; done; kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A plain connection to inspect or tamper with what the cache stored.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the test server answers")
}

/// Polls `condition` every 20 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cache on the Redis at `url`, in `namespace` (each test its own, so
/// tests on a shared server do not see each other's entries).
pub async fn cache_on(url: &str, namespace: &str) -> tiercache::Cache {
    tiercache::Cache::builder()
        .namespace(namespace)
        .redis(url)
        .build()
        .await
        .expect("valid settings")
}

/// A cache on the test binary's shared server, in `namespace`.
pub async fn cache_in(namespace: &str) -> tiercache::Cache {
    cache_on(&shared().url(), namespace).await
}

/// The number of commands Redis has executed (`INFO commandstats`),
/// counting this `INFO` itself only from the next call on, and no `PING`:
/// the pub/sub listeners' keepalive sends one a second each.
pub async fn commands_executed(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    command_calls(redis, "").await
}

/// The calls of `command` (`"publish"`; `""` for every command) so far, per
/// `INFO commandstats`: commands run by scripts included.
pub async fn command_calls(redis: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO answers");
    let prefix = match command {
        "" => "cmdstat_".to_owned(),
        command => format!("cmdstat_{command}:"),
    };
    info.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter(|line| !command.is_empty() || !line.starts_with("cmdstat_ping:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Makes the Redis behind `redis` refuse every write, scripts that may
/// write included, and still answer reads (out of memory: `maxmemory 1`).
pub async fn out_of_memory(redis: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(redis)
        .await
        .expect("CONFIG SET answers");
}

/// Makes the Redis at `url` answer nobody for `seconds` (`DEBUG SLEEP`),
/// from a task that ends when Redis answers again. Returns once the sleep
/// has begun. (The admin connection's own response timeout gives up on the
/// reply; the server sleeps all the same.)
pub async fn stall(url: &str, seconds: f64) -> tokio::task::JoinHandle<()> {
    let mut admin = raw(url).await;
    let stalled = tokio::spawn(async move {
        let _: Result<(), _> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .query_async(&mut admin)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stalled
}

/// A gate for test loaders, open: [`close`] closes it.
pub fn open_gate() -> tokio::sync::Semaphore {
    tokio::sync::Semaphore::new(GATE_PERMITS as usize)
}

/// Every permit of an [`open_gate`]: what [`close`] takes (`acquire_many`
/// takes a `u32`, so a gate of `Semaphore::MAX_PERMITS` could never be
/// closed).
const GATE_PERMITS: u32 = u32::MAX;

/// Closes a gate that test loaders pass through: they wait until the
/// returned permit is dropped.
pub async fn close(gate: &tokio::sync::Semaphore) -> tokio::sync::SemaphorePermit<'_> {
    gate.acquire_many(GATE_PERMITS)
        .await
        .expect("the gate is never closed for good")
}

/// A master, one replica of it and one sentinel monitoring it as
/// [`Sentinels::MASTER`], each a `redis-server` on a free loopback port.
/// `start` returns once the replica is in sync and the sentinel knows it
/// as a replica fit for a failover.
pub struct Sentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinel: Option<Child>,
    sentinel_port: u16,
    /// The sentinel's config (it rewrites it), removed on drop.
    dir: std::path::PathBuf,
}

impl Sentinels {
    /// The name the sentinel monitors the master by.
    pub const MASTER: &'static str = "mymaster";

    pub async fn start() -> Self {
        // The sentinel's config, and what the servers save (a replica
        // writes the RDB of its full sync), out of the working directory.
        static DIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tiercache-sentinel-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let in_dir = vec!["--dir".to_owned(), dir.display().to_string()];
        let master = RedisServer::start_with(|_| in_dir.clone());
        let master_port = master.port();
        let replica = RedisServer::start_with(|_| {
            let mut args = in_dir.clone();
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]);
            args
        });
        let link_up = eventually(Duration::from_secs(10), async || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut raw(&replica.url()).await)
                .await
                .expect("INFO answers");
            info.contains("master_link_status:up")
        })
        .await;
        assert!(link_up, "the replica did not sync with the master");
        let (sentinel, sentinel_port) = (0..5)
            .find_map(|_| start_sentinel(&dir, master_port))
            .expect("redis-server --sentinel did not start on a free port after 5 attempts");
        let sentinels = Self {
            master,
            replica,
            sentinel: Some(sentinel),
            sentinel_port,
            dir,
        };
        let replica_port = sentinels.replica.port().to_string();
        let known = eventually(Duration::from_secs(20), async || {
            let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(Self::MASTER)
                .query_async(&mut raw(&sentinels.url()).await)
                .await
                .unwrap_or_default();
            replicas.iter().any(|replica| {
                replica.get("port") == Some(&replica_port)
                    && replica.get("flags").map(String::as_str) == Some("slave")
                    && replica.get("master-link-status").map(String::as_str) == Some("ok")
            })
        })
        .await;
        assert!(known, "the sentinel does not know the replica");
        sentinels
    }

    /// The sentinel's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port of the master the sentinel names now.
    pub async fn master_port(&self) -> Option<u16> {
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(Self::MASTER)
            .query_async(&mut raw(&self.url()).await)
            .await
            .ok()?;
        address.map(|(_, port)| port)
    }

    /// Promotes the replica (`SENTINEL FAILOVER`, retried while the
    /// sentinel finds it unfit), and returns once the sentinel names it as
    /// the master.
    pub async fn fail_over(&self) {
        let started = eventually(Duration::from_secs(20), async || {
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(Self::MASTER)
                .query_async::<()>(&mut raw(&self.url()).await)
                .await
                .is_ok()
        })
        .await;
        assert!(started, "the sentinel refused to fail over");
        let promoted = eventually(Duration::from_secs(20), async || {
            self.master_port().await == Some(self.replica.port())
        })
        .await;
        assert!(promoted, "the sentinel did not promote the replica");
    }
}

/// Starts a sentinel of the master on `master_port`, on a free port, with
/// its config in `dir`.
fn start_sentinel(dir: &std::path::Path, master_port: u16) -> Option<(Child, u16)> {
    let port = free_port();
    let config = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
         sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
         sentinel down-after-milliseconds {name} 1000\n\
         sentinel failover-timeout {name} 5000\n",
        dir = dir.display(),
        name = Sentinels::MASTER,
    );
    std::fs::write(&config, text).expect("the sentinel's config is written");
    let mut command = Command::new("redis-server");
    command.arg(&config).arg("--sentinel");
    serving(command, port).map(|child| (child, port))
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        if let Some(mut sentinel) = self.sentinel.take() {
            let _ = sentinel.kill();
            let _ = sentinel.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
