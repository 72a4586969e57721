//! Shared pieces of the tiercache benchmark suite (`scripts/bench`).
//!
//! - [`Item`]: the value every case caches, ~200 bytes as JSON;
//! - [`redis_url`]: the Redis server of the run (`TIERCACHE_BENCH_REDIS`,
//!   set by `scripts/bench`), or one started here on a free loopback port;
//! - [`Proxy`]: a loopback TCP proxy that counts round trips (a client's
//!   request burst answered by the server), to count them without MONITOR;
//! - [`commandstats`]: `INFO commandstats` as a map, for command-count deltas;
//! - [`out_dir`]: where non-criterion results (JSON) go for `report`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cached value of every case: about 200 bytes of JSON, two heap strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Which item.
    pub id: u64,
    /// A small number.
    pub version: u32,
    /// A short name.
    pub name: String,
    /// The bulk of the value.
    pub body: String,
}

const BODY: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud.";

/// The item for `id` (what every loader returns).
pub fn item(id: u64) -> Item {
    Item {
        id,
        version: 3,
        name: format!("item-{id:08}"),
        body: BODY.to_owned(),
    }
}

/// The functions under test of the L1 cases, shared by the criterion suite
/// and the `profile` binary so both measure the same code.
pub mod hit_ratio;

pub mod l1 {
    use cached::macros::cached;
    use tiercache::cache_aside;

    use super::{Item, item};

    /// tiercache, L1 hit, u64 argument (global cache: `Cache::in_memory()`).
    #[cache_aside(prefix = "l1u64", ttl = "10m")]
    pub async fn tc_u64(id: u64) -> Item {
        item(id)
    }

    /// tiercache, L1 hit, String argument.
    #[cache_aside(prefix = "l1str", ttl = "10m")]
    pub async fn tc_str(name: String) -> Item {
        item(name.len() as u64)
    }

    /// `cached`, async `#[cached(ttl_secs = …)]`, u64 argument.
    #[cached(ttl_secs = 600)]
    pub async fn cached_u64(id: u64) -> Item {
        item(id)
    }

    /// `cached`, async `#[cached(ttl_secs = …)]`, String argument.
    #[cached(ttl_secs = 600)]
    pub async fn cached_str(name: String) -> Item {
        item(name.len() as u64)
    }
}

/// An error type for `cached`'s `#[concurrent_cached]`, which needs `Result`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

// ---------------------------------------------------------------------------
// Redis

struct Server {
    url: String,
    _child: Option<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The Redis URL of this run: `TIERCACHE_BENCH_REDIS` if set (scripts/bench
/// sets it), otherwise a `redis-server` started on a free loopback port and
/// killed when this process exits.
pub fn redis_url() -> &'static str {
    &SERVER
        .get_or_init(|| match std::env::var("TIERCACHE_BENCH_REDIS") {
            Ok(url) => Server { url, _child: None },
            Err(_) => start_server(),
        })
        .url
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
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

fn start_server() -> Server {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: apt-get install -y redis-server");
        // Kill it when this process is gone (statics are never dropped).
        let watchdog = format!(
            "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.2; done; kill -9 {pid} 2>/dev/null",
            parent = std::process::id(),
            pid = child.id()
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: the port was taken, most likely
            }
            if ping(port) {
                return Server {
                    url: format!("redis://127.0.0.1:{port}"),
                    _child: Some(child),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-server did not start on a free port");
}

/// The L2 hit's hardware limit: `GET raw:l2:{id}` + serde_json, on a raw
/// connection.
pub async fn raw_get(conn: &mut redis::aio::MultiplexedConnection, id: u64) -> Item {
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("raw:l2:{id}"))
        .query_async(conn)
        .await
        .expect("GET answers");
    serde_json::from_slice(&bytes.expect("filled")).expect("decodes")
}

/// The L2 hit's limit under the design's tag check (`shared/DESIGN.md`,
/// versioned tags), done by hand: one `MGET` of `raw:l2:{id}` and two
/// version keys (set by [`set_raw_versions`]), then serde_json.
pub async fn raw_mget3(conn: &mut redis::aio::MultiplexedConnection, id: u64) -> Item {
    type Reply = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
    let (bytes, ns, prefix): Reply = redis::cmd("MGET")
        .arg(format!("raw:l2:{id}"))
        .arg(RAW_VERSIONS[0])
        .arg(RAW_VERSIONS[1])
        .query_async(conn)
        .await
        .expect("MGET answers");
    assert!(ns.is_some() && prefix.is_some(), "versions set");
    serde_json::from_slice(&bytes.expect("filled")).expect("decodes")
}

/// The version keys [`raw_mget3`] reads.
const RAW_VERSIONS: [&str; 2] = ["raw:l2:#ns", "raw:l2:#p:l2"];

/// Sets the version keys [`raw_mget3`] reads.
pub async fn set_raw_versions(conn: &mut redis::aio::MultiplexedConnection) {
    for key in RAW_VERSIONS {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("0123456789abcdef")
            .query_async(&mut *conn)
            .await
            .expect("SET answers");
    }
}

/// A raw multiplexed redis-rs connection to `url`.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// `INFO commandstats`: calls per command (`get`, `mget`, `evalsha`, ...).
pub async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO answers");
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        // cmdstat_get:calls=12,usec=...
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let n = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        calls.insert(name.to_owned(), n);
    }
    calls
}

/// `after - before`, leaving out zero deltas, the `info` used to read them
/// and the `ping` of each cache's pub/sub keepalive (one a second).
pub fn command_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "ping"))
        .filter_map(|(name, &n)| {
            let d = n - before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Round-trip counting proxy

/// A loopback TCP proxy in front of Redis that counts round trips: on each
/// connection, a round trip starts when the client sends after the server
/// has answered (or for the first time). With one caller at a time, that is
/// exactly the number of request/response exchanges, pipelines counting once.
pub struct Proxy {
    port: u16,
    round_trips: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`) on the current runtime.
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let client_turn = Arc::new(AtomicBool::new(true));
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let turn = client_turn.clone();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if turn.swap(false, Ordering::SeqCst) {
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            client_turn.store(true, Ordering::SeqCst);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self { port, round_trips }
    }

    /// The URL to give a client instead of Redis's.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Round trips so far, over every connection through the proxy.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

/// `host:port` of a `redis://host:port` URL.
pub fn host_port(url: &str) -> String {
    url.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

// ---------------------------------------------------------------------------
// Results

/// Where the suite writes what criterion does not (`TIERCACHE_BENCH_OUT`, or
/// `target/tiercache-bench` of the workspace).
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("TIERCACHE_BENCH_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tiercache-bench"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// Collects named results and writes them as one JSON object.
#[derive(Default)]
pub struct Results {
    values: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Results {
    /// Records `value` under `name` and prints it.
    pub fn put(&self, name: &str, value: serde_json::Value) {
        println!("{name:<48} {value}");
        self.values.lock().unwrap().insert(name.to_owned(), value);
    }

    /// Writes `file` in [`out_dir`].
    pub fn write(&self, file: &str) {
        let path = out_dir().join(file);
        let json = serde_json::Value::Object(self.values.lock().unwrap().clone());
        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).expect("write results");
        println!("wrote {}", path.display());
    }
}

/// The median and the given percentiles (0–100) of `samples`, in µs.
pub fn percentiles_us(samples: &mut [Duration], ps: &[f64]) -> Vec<f64> {
    samples.sort();
    ps.iter()
        .map(|&p| {
            let rank = ((p / 100.0) * (samples.len() as f64)).ceil() as usize;
            let i = rank.clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e6
        })
        .collect()
}

/// The median of `samples`, in µs.
pub fn median_us(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let n = samples.len();
    let mid = if n % 2 == 1 {
        samples[n / 2].as_secs_f64()
    } else {
        (samples[n / 2 - 1].as_secs_f64() + samples[n / 2].as_secs_f64()) / 2.0
    };
    mid * 1e6
}

/// Resident set size of this process, in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}
