//! L2: the shared layer, envelopes and tag versions in Redis.
//!
//! One multiplexed connection through redis-rs's `ConnectionManager`, created
//! lazily so that a Redis that is down at start-up neither fails
//! [`CacheBuilder::build`](crate::CacheBuilder::build) nor blocks it; the
//! manager reconnects in the background after a connection error. Every
//! operation is bounded by the configured timeout, and its failure is
//! reported to the caller as "no L2 this time": a miss on read, a skipped
//! write. A cached call never fails because of Redis.
//!
//! The commands, and why each is one round trip, are described in
//! [`crate::tags`].

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use tracing::Instrument;

use crate::breaker::{Breaker, is_connection_failure};
use crate::metrics::{ErrorKind, RedisMetrics};
use crate::sentinel::{Follow, Target};
use crate::tags::{fresh_version, parse_version};
use crate::tracking::{Tracked, Tracking};

/// Why an L2 operation did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum L2Error {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis skipped: the circuit breaker is open after repeated failures")]
    BreakerOpen,
    /// More operations than [`MAX_IN_FLIGHT`] waited their turn for longer
    /// than the timeout: this process is overloaded, not Redis.
    #[error("Redis skipped: {MAX_IN_FLIGHT} operations in flight for longer than {0:?}")]
    Busy(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl L2Error {
    /// Whether the operation was skipped rather than failed: the breaker
    /// is open, or this process had too many in flight (`redis_skipped`).
    pub(crate) fn skipped(&self) -> bool {
        matches!(self, L2Error::BreakerOpen | L2Error::Busy(_))
    }

    /// Its `kind` in `tiercache_redis_errors_total`.
    fn kind(&self) -> ErrorKind {
        match self {
            L2Error::Timeout(_) => ErrorKind::Timeout,
            L2Error::BreakerOpen => ErrorKind::BreakerOpen,
            L2Error::Busy(_) => ErrorKind::Busy,
            L2Error::Redis(error) if error.is_timeout() => ErrorKind::Timeout,
            L2Error::Redis(error) if is_connection_failure(error) => ErrorKind::Connection,
            L2Error::Redis(_) => ErrorKind::Server,
        }
    }
}

/// What one Redis operation does: the `op` label of
/// `tiercache_redis_duration_seconds`, and its span's
/// `tiercache.operation`; its command is the span's `db.operation.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// An entry and its versions (`MGET`).
    Read,
    /// A batch's entries and their versions (`MGET`).
    ReadMany,
    /// Version keys created on a tag's first read.
    CreateVersions,
    /// A load's compare-and-set write, releasing its lock.
    Write,
    /// A batch's writes.
    WriteMany,
    /// The cross-process lock taken.
    Lock,
    /// An entry and its versions read, and the lock taken if it is absent
    /// (`MGET` and a script).
    ReadOrLock,
    /// A lock's lease extended.
    Renew,
    /// A lock released.
    Unlock,
    /// A marker put in place of an absent entry.
    Plant,
    /// A write-through's compare-and-set write.
    WriteThrough,
    /// Versions bumped, entries replaced by tombstones, announced.
    Invalidate,
    /// A health check or a connection opened.
    Ping,
    /// The server's version.
    Info,
    /// The permissions checked at `build`.
    Probe,
}

impl Op {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Op; 15] = [
        Op::Read,
        Op::ReadMany,
        Op::CreateVersions,
        Op::Write,
        Op::WriteMany,
        Op::Lock,
        Op::ReadOrLock,
        Op::Renew,
        Op::Unlock,
        Op::Plant,
        Op::WriteThrough,
        Op::Invalidate,
        Op::Ping,
        Op::Info,
        Op::Probe,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::ReadMany => "read_many",
            Op::CreateVersions => "create_versions",
            Op::Write => "write",
            Op::WriteMany => "write_many",
            Op::Lock => "lock",
            Op::ReadOrLock => "read_or_lock",
            Op::Renew => "renew",
            Op::Unlock => "unlock",
            Op::Plant => "plant",
            Op::WriteThrough => "write_through",
            Op::Invalidate => "invalidate",
            Op::Ping => "ping",
            Op::Info => "info",
            Op::Probe => "probe",
        }
    }

    /// The command Redis sees (`PIPELINE` for several).
    const fn command(self) -> &'static str {
        match self {
            Op::Read | Op::ReadMany => "MGET",
            Op::Write | Op::Lock | Op::Renew | Op::Unlock | Op::WriteThrough => "EVALSHA",
            Op::Plant => "SET",
            Op::Ping => "PING",
            Op::Info => "INFO",
            Op::CreateVersions | Op::ReadOrLock | Op::WriteMany | Op::Invalidate | Op::Probe => {
                "PIPELINE"
            }
        }
    }
}

/// Where the operations go, as OpenTelemetry's database conventions name
/// it on their spans.
pub(crate) struct Server {
    address: String,
    port: Option<u16>,
    /// The database number, `db.namespace`.
    database: String,
}

impl Server {
    pub(crate) fn of(client: &redis::Client) -> Self {
        let info = client.get_connection_info();
        let (address, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), Some(*port)),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), Some(*port)),
            redis::ConnectionAddr::Unix(path) => (path.display().to_string(), None),
            _ => (String::from("unknown"), None),
        };
        Self {
            address,
            port,
            database: info.redis_settings().db().to_string(),
        }
    }

    /// The span of one operation: `redis <COMMAND>` to an OpenTelemetry
    /// exporter, a client span with the database conventions' attributes.
    fn span(&self, op: Op) -> tracing::Span {
        tracing::info_span!(
            "redis",
            otel.name = op.command(),
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = op.command(),
            db.namespace = self.database.as_str(),
            server.address = self.address.as_str(),
            server.port = self.port,
            tiercache.operation = op.name(),
            error.type = tracing::field::Empty,
        )
    }
}

/// Stores an entry only if it is still what the loader saw before loading
/// (absent, or the same bytes by SHA-1), and extends its tag versions (only
/// those with less than half their TTL left: an extension is a change
/// that every tracked connection hears of, see `tracking.rs`): a
/// reader whose load raced with a write-through must not overwrite the newer
/// value with the one it loaded before. Then, if the loader held the entry's
/// lock, releases it and tells the waiting processes: the same round trip.
///
/// KEYS: entry, lock, lock's waiter flag, version keys. ARGV: expected
/// SHA-1 hex ("" for absent), envelope, TTL ms, version TTL ms, lock token
/// ("": no lock), landing channel, landing message.
static WRITE_IF_UNCHANGED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
local expected = ARGV[1]
local stored = 0
if (current == false and expected == '') or (current and redis.sha1hex(current) == expected) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  for i = 4, #KEYS do
    if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) / 2 then
      redis.call('PEXPIRE', KEYS[i], ARGV[4], 'GT')
    end
  end
  stored = 1
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
  if redis.call('DEL', KEYS[3]) == 1 then
    redis.call('PUBLISH', ARGV[6], ARGV[7])
  end
end
return stored
",
    )
});

/// A write-through: stores the entry only if it is still what the writer
/// read before its body ran (absent, or the same bytes by SHA-1), extends
/// its tag versions and announces it to the other instances. A writer that
/// finds it changed (another write, an invalidation, a load that landed)
/// cannot tell whose data is newer, and invalidates the entry instead.
///
/// KEYS: entry, version keys. ARGV: expected SHA-1 hex ("" for absent),
/// envelope, TTL ms, version TTL ms, channel, message.
static WRITE_THROUGH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
local expected = ARGV[1]
if (current == false and expected == '') or (current and redis.sha1hex(current) == expected) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  for i = 2, #KEYS do
    if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) / 2 then
      redis.call('PEXPIRE', KEYS[i], ARGV[4], 'GT')
    end
  end
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return 1
end
return 0
",
    )
});

/// Takes a lock for `lease` ms if it is free and the entry is still what
/// the caller read, or holds it already with `token` (a read-or-lock whose
/// outcome was lost may have taken it): `{1, lease}`; `{2, 0}` when the entry changed since (a
/// load landed between the read and this: read it rather than load again);
/// otherwise `{0, time left on the holder's lease in ms}`.
///
/// A caller that finds the lock held raises the lock's waiter flag, so
/// that the holder publishes its landing only when someone waits for it
/// (an uncontended miss publishes nothing).
///
/// KEYS: lock, entry, lock's waiter flag. ARGV: token, lease ms, SHA-1 hex
/// of the entry as read ("" for absent).
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
local current = redis.call('GET', KEYS[2])
local seen = ARGV[3]
if (current == false and seen ~= '') or (current and redis.sha1hex(current) ~= seen) then
  return {2, 0}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(ARGV[2])}
end
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[3], '1', 'PX', math.max(left, 1) + 1000)
return {0, left}
",
    )
});

/// A read that takes the lock when it finds nothing to serve: the entry,
/// and, when it is absent or a tombstone (see [`tombstone`]), what
/// [`ACQUIRE`] would have answered for it, at once: a miss costs the round
/// trip of the read alone. `{entry, 3, 0}` when the entry is there (the
/// lock not tried: whether it is valid is the caller's to see).
///
/// KEYS: entry, lock, lock's waiter flag. ARGV: token, lease ms.
static READ_OR_ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local entry = redis.call('GET', KEYS[1])
if entry and not (string.len(entry) == 11 and string.sub(entry, 1, 3) == 'tc\0') then
  return {entry, 3, 0}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {entry, 1, tonumber(ARGV[2])}
end
local left = redis.call('PTTL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', math.max(left, 1) + 1000)
return {entry, 0, left}
",
    )
});

/// What a lock of [`L2::read_or_acquire`] asks for.
pub(crate) struct Acquire<'a> {
    pub(crate) lock_key: &'a str,
    pub(crate) token: &'a str,
    pub(crate) lease: Duration,
    /// The connection to send it over: the one its release would take
    /// (see `Lease`).
    pub(crate) conn: &'a ConnectionManager,
}

/// The waiter flag of a lock: `{ns}:#lock:…` → `{ns}:#lock:…#w`.
pub(crate) fn waiters_key(lock_key: &str) -> String {
    format!("{lock_key}#w")
}

/// An [`ACQUIRE`] or [`READ_OR_ACQUIRE`] reply's code and time left.
fn acquired(taken: i64, left: i64, lease: Duration) -> Acquired {
    match taken {
        1 => Acquired::Taken,
        2 => Acquired::Landed,
        // A lock set without a TTL (by something else: `PTTL` is -1)
        // is waited on as a whole lease, not polled.
        _ => Acquired::Held(
            u64::try_from(left)
                .ok()
                .filter(|&left| left > 0)
                .map_or(lease, Duration::from_millis),
        ),
    }
}

/// What [`L2::acquire`] found.
pub(crate) enum Acquired {
    /// The lock is ours.
    Taken,
    /// The entry changed since it was read.
    Landed,
    /// Another holder has it, for this much longer at most.
    Held(Duration),
}

/// Extends a lease that is still ours: 1, or 0 when it is not.
///
/// KEYS: lock. ARGV: token, lease ms.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Releases a lock that is still ours and tells the waiting processes.
///
/// KEYS: lock, lock's waiter flag. ARGV: token, landing channel, landing
/// message.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
",
    )
});

/// A held lock, for the write that releases it.
pub(crate) struct Held<'a> {
    pub(crate) lock_key: &'a str,
    /// Raised by the callers that wait (see `ACQUIRE`).
    pub(crate) waiters_key: &'a str,
    pub(crate) token: &'a str,
    pub(crate) channel: &'a str,
    pub(crate) message: &'a str,
}

/// The SHA-1 hex the write script compares with; `""` stands for "absent".
pub(crate) fn seen(entry: Option<&[u8]>) -> String {
    entry.map_or_else(String::new, |bytes| {
        sha1_smol::Sha1::from(bytes).digest().to_string()
    })
}

/// One entry of [`L2::write_many_if_unchanged`].
pub(crate) struct ManyWrite<'a> {
    pub(crate) entry_key: &'a str,
    /// The version keys of its tags.
    pub(crate) version_keys: &'a [String],
    /// The SHA-1 of the entry as read (see [`seen`]).
    pub(crate) seen: String,
    pub(crate) envelope: Vec<u8>,
    pub(crate) ttl: Duration,
}

/// What a read found: the entry, if any, and the current version of each tag
/// asked for, in order.
pub(crate) struct Read {
    pub(crate) entry: Option<Vec<u8>>,
    pub(crate) versions: Vec<u64>,
}

pub(crate) struct L2 {
    /// The client and its connection: the connection replaced when the
    /// breaker opens (see [`L2::reconnect`]), both when the sentinels name
    /// another master.
    target: std::sync::Arc<std::sync::RwLock<Target>>,
    /// With Sentinel: follows the master.
    sentinel: Option<std::sync::Arc<Follow>>,
    config: ConnectionManagerConfig,
    timeout: Duration,
    pub(crate) breaker: Breaker,
    /// Turns for operations in flight on the connection.
    in_flight: tokio::sync::Semaphore,
    metrics: RedisMetrics,
    /// The connection reads go over, and the versions it knows.
    tracking: Tracking,
    /// Timeouts and connection failures in a row on the other connection
    /// (see [`STRIKES`]).
    strikes: std::sync::atomic::AtomicU32,
    /// When strikes last replaced it.
    struck: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two replacements for strikes.
const STRIKE_GAP: Duration = Duration::from_secs(5);

/// After this many timeouts or connection failures in a row of the
/// commands that do not go over the tracked connection, that connection is
/// replaced (see [`L2::reconnect`]), whether or not the breaker opened: a
/// tracked connection that answers keeps the breaker closed while the other
/// one may have gone silent.
const STRIKES: u32 = 5;

/// How many operations one cache keeps in flight on its connection at
/// once. A burst of thousands of calls otherwise queues them all in the
/// client at once: each waits for the ones before it to be written, read
/// and woken up, past the timeout of a healthy Redis, and the breaker would
/// take the client's own backlog for a failing server. Past this, an
/// operation waits its turn (up to the timeout, then it skips Redis,
/// counted in `redis_skipped` and not as a failure), and the time the
/// timeout bounds is the server's.
pub(crate) const MAX_IN_FLIGHT: usize = 128;

/// `MGET` of the entry and its version keys, built in buffers of the right
/// size.
fn mget(entry_key: Option<&str>, version_keys: &[String]) -> redis::Cmd {
    let data = entry_key.map_or(0, str::len) + version_keys.iter().map(String::len).sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(2 + version_keys.len(), data + 4);
    cmd.arg("MGET").arg(entry_key).arg(version_keys);
    cmd
}

/// An integer in a script's reply.
fn integer(reply: Option<redis::Value>) -> Result<i64, L2Error> {
    match reply {
        Some(redis::Value::Int(n)) => Ok(n),
        _ => Err(unexpected("a script answered with no integer")),
    }
}

/// A `GET` reply, or one value of an `MGET`'s.
fn string(reply: redis::Value) -> Result<Option<Vec<u8>>, L2Error> {
    match reply {
        redis::Value::BulkString(bytes) => Ok(Some(bytes)),
        redis::Value::Nil => Ok(None),
        _ => Err(unexpected("Redis answered with a value that is no string")),
    }
}

/// An `MGET` reply, taken apart by hand: the generic conversion cost more
/// than the rest of an L2 hit's own work.
fn strings(reply: redis::Value) -> Result<Vec<Option<Vec<u8>>>, L2Error> {
    let redis::Value::Array(values) = reply else {
        return Err(unexpected("MGET answered with no array"));
    };
    values.into_iter().map(string).collect()
}

/// The `redis_version` an `INFO server` reply gives, and whether it is 7.0
/// or newer; a server that does not say is given the benefit of the doubt.
fn server_version(info: &str) -> (String, bool) {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    let recent = major.is_none_or(|major| major >= 7);
    (version, recent)
}

/// A reply of the wrong shape (a foreign server or proxy): a failed call.
fn unexpected(what: &'static str) -> L2Error {
    L2Error::Redis(redis::RedisError::from((redis::ErrorKind::Parse, what)))
}

/// Milliseconds for a Redis expiry: at least 1, and at most a century,
/// which Redis takes (it refuses an expiry past what a signed 64-bit
/// count of milliseconds since the epoch holds).
fn millis(d: Duration) -> u64 {
    const CENTURY_MS: u64 = 100 * 365 * 86_400_000;
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, CENTURY_MS)
}

impl L2 {
    /// Prepares the connection without waiting for it.
    pub(crate) fn new(
        client: redis::Client,
        timeout: Duration,
        breaker: Breaker,
        namespace: &str,
        tracking: bool,
    ) -> Result<Self, redis::RedisError> {
        let config = Self::config(timeout);
        let conn = client.get_connection_manager_lazy(config.clone())?;
        let target = Target::new(client, conn);
        Ok(Self::with(
            std::sync::Arc::new(target.into()),
            None,
            config,
            (timeout, breaker, tracking),
            namespace,
        ))
    }

    /// Prepares the connection to the master the sentinels name (asking
    /// them once, see [`Follow::start`]), and follows it.
    pub(crate) async fn sentinel(
        settings: crate::sentinel::Settings,
        timeout: Duration,
        breaker: Breaker,
        namespace: &str,
        tracking: bool,
    ) -> Result<Self, redis::RedisError> {
        let config = Self::config(timeout);
        let (follow, target) = Follow::start(settings, config.clone(), timeout).await?;
        let l2 = Self::with(
            target,
            Some(follow),
            config,
            (timeout, breaker, tracking),
            namespace,
        );
        Ok(l2)
    }

    fn with(
        target: std::sync::Arc<std::sync::RwLock<Target>>,
        sentinel: Option<std::sync::Arc<Follow>>,
        config: ConnectionManagerConfig,
        (timeout, breaker, tracking): (Duration, Breaker, bool),
        namespace: &str,
    ) -> Self {
        let moved = sentinel.as_ref().map(|sentinel| sentinel.moved());
        Self {
            tracking: Tracking::new(tracking, timeout, moved, format!("{namespace}:#probe")),
            strikes: std::sync::atomic::AtomicU32::new(0),
            struck: std::sync::Mutex::new(None),
            target,
            sentinel,
            config,
            timeout,
            breaker,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            metrics: RedisMetrics::new(namespace),
        }
    }

    fn config(timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Retries happen in the background after a failed request; keep
            // each attempt short so a returning Redis is noticed soon.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
    }

    /// The span of one operation, on the current server (none, and no
    /// lock taken, when nothing records `INFO` spans).
    fn span(&self, op: Op) -> tracing::Span {
        if !tracing::enabled!(target: "tiercache_runtime::l2", tracing::Level::INFO) {
            return tracing::Span::none();
        }
        let target = self
            .target
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        target.server.span(op)
    }

    /// The connection to send a command on: a clone of the manager's handle.
    pub(crate) fn conn(&self) -> ConnectionManager {
        let target = self
            .target
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        target.conn.clone()
    }

    /// Replaces the connection with a new one (connected lazily). redis-rs
    /// reconnects after a connection error, but not after a response
    /// timeout: a connection that went silent (a failover behind a virtual
    /// IP, a lost NAT entry, a half-open TCP connection) would otherwise
    /// time out every command until the kernel gives up on it, minutes
    /// later. Called when the breaker opens and when its probe fails.
    /// With Sentinel, the master is looked up again too.
    /// The tracked connection is dropped too (see [`Tracking::reset`]).
    fn reconnect(&self) {
        {
            let mut target = self
                .target
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match target
                .client
                .get_connection_manager_lazy(self.config.clone())
            {
                Ok(fresh) => {
                    target.conn = fresh;
                    tracing::debug!("Redis connection replaced");
                }
                Err(error) => tracing::debug!(%error, "cannot make a new Redis connection"),
            }
        }
        self.tracking.reset();
        if let Some(sentinel) = &self.sentinel {
            sentinel.kick(false);
        }
    }

    /// With Sentinel, looks the master up again (in the background, see
    /// [`Follow::kick`]) after a failure that says it may have moved: a
    /// write refused as `READONLY` (the old master, demoted, where the
    /// manager reconnected) or a connection failure.
    fn follow_master<T>(&self, result: &Result<T, L2Error>) {
        let Some(sentinel) = &self.sentinel else {
            return;
        };
        let moved = match result {
            Ok(_) | Err(L2Error::BreakerOpen | L2Error::Busy(_)) => false,
            Err(L2Error::Timeout(_)) => true,
            Err(L2Error::Redis(error)) => {
                error.code() == Some("READONLY") || is_connection_failure(error)
            }
        };
        if moved {
            sentinel.kick(false);
        }
    }

    /// The client of the current master (with Sentinel, the last one the
    /// sentinels named), for a new pub/sub connection.
    pub(crate) fn client(&self) -> redis::Client {
        let target = self
            .target
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        target.client.clone()
    }

    /// With Sentinel: tells of each move of the master (see
    /// [`Follow::moved`]).
    pub(crate) fn moved(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.sentinel.as_ref().map(|sentinel| sentinel.moved())
    }

    /// Whether every turn for an operation is taken (see [`MAX_IN_FLIGHT`]).
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.available_permits() == 0
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn bounded<T>(
        &self,
        op: Op,
        run: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        self.bounded_by_breaker(op, run, true).await
    }

    /// As [`L2::bounded`], for a command over the tracked connection.
    async fn bounded_tracked<T>(
        &self,
        op: Op,
        run: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        self.bounded_by_breaker(op, run, false).await
    }

    /// Refused while the breaker is open (but for its probe), then
    /// [`L2::bounded_with`].
    async fn bounded_by_breaker<T>(
        &self,
        op: Op,
        run: impl Future<Output = redis::RedisResult<T>>,
        untracked: bool,
    ) -> Result<T, L2Error> {
        let probe = self.breaker.is_open();
        if !self.breaker.allow() {
            self.metrics.failed(ErrorKind::BreakerOpen);
            self.metrics.breaker(true);
            return Err(L2Error::BreakerOpen);
        }
        self.bounded_with(op, run, probe, untracked).await
    }

    /// As [`L2::bounded`], tried even while the breaker is open: for
    /// invalidations, which must not be refused (their outcome still
    /// counts for the breaker).
    async fn bounded_past_breaker<T>(
        &self,
        op: Op,
        run: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        self.bounded_with(op, run, false, true).await
    }

    /// An operation bounded by the timeout, its outcome counted by the
    /// breaker, timed, in a span of its own; a failed `probe` (the
    /// breaker's one call per cooldown) replaces the connection.
    async fn bounded_with<T>(
        &self,
        op: Op,
        run: impl Future<Output = redis::RedisResult<T>>,
        probe: bool,
        untracked: bool,
    ) -> Result<T, L2Error> {
        let _turn = match self.in_flight.try_acquire() {
            Ok(turn) => turn,
            Err(_) => match tokio::time::timeout(self.timeout, self.in_flight.acquire()).await {
                Ok(Ok(turn)) => turn,
                _ => {
                    self.metrics.failed(ErrorKind::Busy);
                    return Err(L2Error::Busy(self.timeout));
                }
            },
        };
        let sent = self.breaker.clock();
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let span = self.span(op);
        let ran = tokio::time::timeout(self.timeout, run.instrument(span.clone())).await;
        #[cfg(feature = "metrics")]
        self.metrics.took(op, started.elapsed());
        let result = match ran {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(L2Error::Redis(error)),
            Err(_) => Err(L2Error::Timeout(self.timeout)),
        };
        let opened = match &result {
            Ok(_) => {
                self.breaker.success();
                false
            }
            Err(L2Error::Redis(error)) if !is_connection_failure(error) => {
                self.breaker.success();
                false
            }
            Err(L2Error::Timeout(_)) => self.breaker.timed_out(sent),
            Err(L2Error::Redis(error)) if error.is_timeout() => self.breaker.timed_out(sent),
            Err(_) => self.breaker.failure(),
        };
        if let Err(error) = &result {
            let kind = error.kind();
            self.metrics.failed(kind);
            span.record("error.type", kind.label());
        }
        self.metrics.breaker(self.breaker.is_open());
        // Both connections are replaced together (`reconnect`): a new one
        // may reach another server (a failover behind a name or a virtual
        // IP) where the old other one would not. And the untracked one lost
        // (redis-rs reconnects it), the tracked one goes too; a failed
        // command on the tracked one drops it likewise (`tracked_reply`).
        if opened || (probe && result.is_err()) || (untracked && self.strike(&result)) {
            self.reconnect();
        } else if untracked
            && let Err(L2Error::Redis(error)) = &result
            && is_connection_failure(error)
        {
            self.tracking.reset();
        }
        self.follow_master(&result);
        result
    }

    /// Counts a timeout or connection failure of the untracked connection
    /// (anything else clears the count): whether it is the [`STRIKES`]th
    /// in a row.
    ///
    /// One caller only sees the count reach it, and a connection is
    /// replaced this way at most once per [`STRIKE_GAP`]: the commands in
    /// flight when Redis stalled (a fork, an overload) time out on the new
    /// connection's account too.
    fn strike<T>(&self, result: &Result<T, L2Error>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let failed = match result {
            Err(L2Error::Timeout(_)) => true,
            Err(L2Error::Redis(error)) => error.is_timeout() || is_connection_failure(error),
            _ => false,
        };
        if !failed {
            if self.strikes.load(Relaxed) != 0 {
                self.strikes.store(0, Relaxed);
            }
            return false;
        }
        if self.strikes.fetch_add(1, Relaxed) + 1 != STRIKES {
            return false;
        }
        self.strikes.store(0, Relaxed);
        let mut last = self
            .struck
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < STRIKE_GAP) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn cmd<T: redis::FromRedisValue>(&self, op: Op, cmd: &redis::Cmd) -> Result<T, L2Error> {
        let mut conn = self.conn();
        self.bounded(op, cmd.query_async(&mut conn)).await
    }

    async fn pipe<T: redis::FromRedisValue>(
        &self,
        op: Op,
        pipe: &redis::Pipeline,
    ) -> Result<T, L2Error> {
        let mut conn = self.conn();
        self.bounded(op, pipe.query_async(&mut conn)).await
    }

    /// Opens the connection now, so the first call finds it ready.
    pub(crate) async fn warm_up(&self) -> Result<(), L2Error> {
        self.cmd::<()>(Op::Ping, &redis::cmd("PING")).await
    }

    /// Runs, once, what the cache runs, on a key and the channels of the
    /// namespace: its commands, each as itself (a command a script runs
    /// that the user may not run fails as `ERR`, not `NOPERM`), a script
    /// loaded and invoked in a pipeline as a batch's writes are, and a
    /// subscription as its listener's. A user whose ACL lacks one of them,
    /// or a read-only replica, is told at `build`, not by misses or stale
    /// values later.
    pub(crate) async fn probe(&self, names: &crate::tags::Names) -> Result<(), L2Error> {
        static PROBE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new("return 1"));
        let key = names.entry("#probe");
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg("1")
            .arg("PX")
            .arg(1000)
            .ignore();
        pipe.cmd("GET").arg(&key).ignore();
        pipe.cmd("MGET").arg(&key).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(1000).arg("GT").ignore();
        pipe.cmd("PTTL").arg(&key).ignore();
        pipe.cmd("DEL").arg(&key).ignore();
        pipe.cmd("PUBLISH")
            .arg(names.probe_channel())
            .arg("")
            .ignore();
        pipe.load_script(&PROBE).ignore();
        pipe.invoke_script(&PROBE.prepare_invoke()).ignore();
        self.pipe::<()>(Op::Probe, &pipe).await?;
        let (channel, landed) = (names.channel(), names.landed_channel());
        let subscribed = async {
            let mut pubsub = self.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            pubsub.subscribe(&landed).await
        };
        self.bounded(Op::Probe, subscribed).await
    }

    /// The server's version (`redis_version` of `INFO server`), and whether
    /// it is recent enough (7.0 or newer).
    pub(crate) async fn version(&self) -> Result<(String, bool), L2Error> {
        let info: String = self.cmd(Op::Info, redis::cmd("INFO").arg("server")).await?;
        Ok(server_version(&info))
    }

    /// The entry and its tag versions: one `MGET`. Version keys that do not
    /// exist yet are created with a fresh nonce (a second round trip, on the
    /// first read of a tag only).
    pub(crate) async fn read(
        &self,
        entry_key: &str,
        version_keys: &[String],
        version_ttl: Duration,
    ) -> Result<Read, L2Error> {
        // (With the breaker open, no tracked connection is tried: the read
        // is skipped all the same.)
        if !self.breaker.is_open()
            && let Some(tracked) = self.tracking.begin(|| self.client(), version_keys)
            && let Some(read) = self
                .tracked_read(tracked, entry_key, version_keys, version_ttl)
                .await?
        {
            return Ok(read);
        }
        let cmd = mget(Some(entry_key), version_keys);
        let mut found = strings(self.cmd(Op::Read, &cmd).await?)?;
        if found.is_empty() {
            return Err(unexpected("MGET answered with no values"));
        }
        let entry = found.remove(0);
        let versions = self
            .current_versions(version_keys, found, version_ttl)
            .await?;
        Ok(Read { entry, versions })
    }

    /// [`L2::read`] over the tracked connection: a `GET` of the entry when
    /// its versions are known (and still are once it is in), otherwise
    /// `CLIENT CACHING YES`, an `MGET` of the versions (kept, see
    /// [`Tracking::learn`]) and a `GET` of the entry, in one pipeline.
    /// `None` when the connection was replaced meanwhile: to be read
    /// without it.
    async fn tracked_read(
        &self,
        mut tracked: Tracked,
        entry_key: &str,
        version_keys: &[String],
        version_ttl: Duration,
    ) -> Result<Option<Read>, L2Error> {
        if tracked.versions.is_some() {
            let mut get = redis::Cmd::with_capacity(2, entry_key.len() + 3);
            get.arg("GET").arg(entry_key);
            let got = self
                .bounded_tracked(Op::Read, get.query_async(&mut tracked.conn))
                .await;
            let entry = self.tracked_reply(&tracked, got).and_then(string)?;
            if let Some(versions) = self.tracking.known(&mut tracked, version_keys) {
                return Ok(Some(Read { entry, versions }));
            }
            if !self.tracking.restart(&mut tracked) {
                return Ok(None); // replaced meanwhile
            }
            // A version changed meanwhile: ask for them all.
        }
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
        pipe.add_command(mget(None, version_keys));
        pipe.cmd("GET").arg(entry_key);
        let got = self
            .bounded_tracked(Op::Read, pipe.query_async(&mut tracked.conn))
            .await;
        let (found, entry): (redis::Value, redis::Value) = self.tracked_reply(&tracked, got)?;
        let found = strings(found)?;
        let entry = string(entry)?;
        let complete = found.iter().all(Option::is_some);
        let versions = self
            .current_versions(version_keys, found, version_ttl)
            .await?;
        if complete {
            self.tracking.learn(&tracked, version_keys, &versions);
        }
        Ok(Some(Read { entry, versions }))
    }

    /// A reply on the tracked connection; a timeout or a connection
    /// failure drops the connection (an error reply, `WRONGTYPE` of a
    /// foreign key, leaves it in step).
    fn tracked_reply<T>(&self, tracked: &Tracked, got: Result<T, L2Error>) -> Result<T, L2Error> {
        let lost = match &got {
            Err(L2Error::Timeout(_)) => true,
            Err(L2Error::Redis(error)) => error.is_timeout() || is_connection_failure(error),
            _ => false,
        };
        if lost {
            self.tracking.failed(tracked);
        }
        got
    }

    /// Many entries, and the versions of `version_keys` (the union of
    /// their tags'): one `MGET` (and, on the first read of a tag, the
    /// round trip that creates its version key).
    pub(crate) async fn read_many(
        &self,
        entry_keys: &[String],
        version_keys: &[String],
        version_ttl: Duration,
    ) -> Result<(Vec<Option<Vec<u8>>>, Vec<u64>), L2Error> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(entry_keys).arg(version_keys);
        let mut found = strings(self.cmd(Op::ReadMany, &cmd).await?)?;
        if found.len() != entry_keys.len() + version_keys.len() {
            return Err(unexpected("MGET answered with the wrong number of values"));
        }
        let versions = found.split_off(entry_keys.len());
        let versions = self
            .current_versions(version_keys, versions, version_ttl)
            .await?;
        Ok((found, versions))
    }

    /// [`L2::write_if_unchanged`] for many entries, without a lock: one
    /// pipeline (the script loaded first, so that a server that lost it
    /// still runs it). Whether each was stored.
    pub(crate) async fn write_many_if_unchanged(
        &self,
        writes: &[ManyWrite<'_>],
        version_ttl: Duration,
    ) -> Result<Vec<bool>, L2Error> {
        let mut pipe = redis::pipe();
        pipe.load_script(&WRITE_IF_UNCHANGED).ignore();
        for write in writes {
            let mut invocation = WRITE_IF_UNCHANGED.key(write.entry_key);
            invocation
                .key(write.entry_key)
                .key(write.entry_key)
                .key(write.version_keys)
                .arg(&write.seen)
                .arg(write.envelope.as_slice())
                .arg(millis(write.ttl))
                .arg(millis(version_ttl))
                .arg("")
                .arg("")
                .arg("");
            pipe.invoke_script(&invocation);
        }
        let stored: Vec<i64> = self.pipe(Op::WriteMany, &pipe).await?;
        if stored.len() != writes.len() {
            return Err(unexpected(
                "a pipeline of writes answered with the wrong number of replies",
            ));
        }
        Ok(stored.into_iter().map(|stored| stored == 1).collect())
    }

    /// The versions `found` for `version_keys`, after creating the keys it
    /// lacks (`SET NX`, then `GET`: one more round trip, on the first read
    /// of a tag only).
    async fn current_versions(
        &self,
        version_keys: &[String],
        mut found: Vec<Option<Vec<u8>>>,
        version_ttl: Duration,
    ) -> Result<Vec<u64>, L2Error> {
        if found.len() != version_keys.len() {
            return Err(unexpected("MGET answered with the wrong number of values"));
        }
        let missing: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &missing {
                pipe.cmd("SET")
                    .arg(&version_keys[i])
                    .arg(fresh_version())
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(version_ttl))
                    .ignore();
                pipe.cmd("GET").arg(&version_keys[i]);
            }
            let created: Vec<Option<Vec<u8>>> = self.pipe(Op::CreateVersions, &pipe).await?;
            for (i, version) in missing.into_iter().zip(created) {
                // Gone again at once (evicted): a nonce nothing recorded.
                found[i] = Some(version.unwrap_or_else(|| fresh_version().into_bytes()));
            }
        }
        Ok(found
            .iter()
            .map(|version| parse_version(version.as_deref().unwrap_or_default()))
            .collect())
    }

    /// Stores an entry unless it changed since it was read as `seen` (see
    /// [`seen`]), and releases the lock `held`: one round trip. `Ok(false)`
    /// when the entry had changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_if_unchanged(
        &self,
        entry_key: &str,
        seen: &str,
        envelope: &[u8],
        ttl: Duration,
        version_keys: &[String],
        version_ttl: Duration,
        held: Option<Held<'_>>,
    ) -> Result<bool, L2Error> {
        let mut invocation = WRITE_IF_UNCHANGED.key(entry_key);
        let (lock_key, waiters_key, token, channel, message) = held.map_or(
            (entry_key, entry_key, "", "", ""),
            |Held {
                 lock_key,
                 waiters_key,
                 token,
                 channel,
                 message,
             }| (lock_key, waiters_key, token, channel, message),
        );
        invocation
            .key(lock_key)
            .key(waiters_key)
            .key(version_keys)
            .arg(seen)
            .arg(envelope)
            .arg(millis(ttl))
            .arg(millis(version_ttl))
            .arg(token)
            .arg(channel)
            .arg(message);
        let mut conn = self.conn();
        self.bounded(Op::Write, invocation.invoke_async(&mut conn))
            .await
    }

    /// Tries to take `lock_key` for `lease`, unless the entry changed since
    /// it was read as `seen` (see [`seen`]).
    pub(crate) async fn acquire(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
        entry_key: &str,
        seen: &str,
        conn: &ConnectionManager,
    ) -> Result<Acquired, L2Error> {
        let mut invocation = ACQUIRE.key(lock_key);
        invocation
            .key(entry_key)
            .key(waiters_key(lock_key))
            .arg(token)
            .arg(millis(lease))
            .arg(seen);
        let mut conn = conn.clone();
        let (taken, left): (i64, i64) = self
            .bounded(Op::Lock, invocation.invoke_async(&mut conn))
            .await?;
        Ok(acquired(taken, left, lease))
    }

    /// [`L2::read`], and the lock taken in the same round trip when the
    /// entry is absent or a tombstone (see [`READ_OR_ACQUIRE`]): `None`
    /// when the entry was there (the lock not tried). The outer error: the
    /// lock's outcome is not known; the inner one: the read failed after
    /// it.
    ///
    /// One pipeline, `MGET` of the versions then the script, over the
    /// connection the lock's release goes over (see `Lease`): a release
    /// sent after an attempt that timed out or was cancelled runs after
    /// it, never before. Not over the tracked connection, then, and so the
    /// versions are asked for, not looked up (a push on the tracked
    /// connection says nothing of a reply on this one).
    pub(crate) async fn read_or_acquire(
        &self,
        entry_key: &str,
        version_keys: &[String],
        version_ttl: Duration,
        lock: Acquire<'_>,
    ) -> Result<(Result<Read, L2Error>, Option<Acquired>), L2Error> {
        let waiters = waiters_key(lock.lock_key);
        let mut invocation = READ_OR_ACQUIRE.key(entry_key);
        invocation
            .key(lock.lock_key)
            .key(&waiters)
            .arg(lock.token)
            .arg(millis(lock.lease));
        let mut pipe = redis::pipe();
        pipe.add_command(mget(None, version_keys));
        pipe.invoke_script(&invocation);
        let mut conn = lock.conn.clone();
        let (found, script): (redis::Value, redis::Value) =
            self.scripted(&pipe, &READ_OR_ACQUIRE, &mut conn).await?;
        let redis::Value::Array(mut parts) = script else {
            return Err(unexpected("the read-or-lock script answered with no array"));
        };
        if parts.len() != 3 {
            return Err(unexpected(
                "the read-or-lock script answered with the wrong shape",
            ));
        }
        let left = integer(parts.pop())?;
        let taken = integer(parts.pop())?;
        let lock = (taken != 3).then(|| acquired(taken, left, lock.lease));
        // The lock's outcome is known from here: what fails after it (the
        // versions created, a round trip that may be skipped) fails the
        // read alone.
        let read = async {
            let entry = string(parts.pop().unwrap_or(redis::Value::Nil))?;
            let versions = self
                .current_versions(version_keys, strings(found)?, version_ttl)
                .await?;
            Ok(Read { entry, versions })
        };
        Ok((read.await, lock))
    }

    /// A pipeline that invokes `script`, sent again with the script
    /// loaded first when the server does not have it (`NOSCRIPT`: a
    /// restarted or flushed server).
    async fn scripted<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        script: &redis::Script,
        conn: &mut ConnectionManager,
    ) -> Result<T, L2Error> {
        let sent = self
            .bounded(Op::ReadOrLock, pipe.query_async(&mut *conn))
            .await;
        match sent {
            Err(L2Error::Redis(error))
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let mut load = redis::pipe();
                load.load_script(script).ignore();
                self.bounded(Op::ReadOrLock, load.query_async::<()>(&mut *conn))
                    .await?;
                self.bounded(Op::ReadOrLock, pipe.query_async(&mut *conn))
                    .await
            }
            other => other,
        }
    }

    /// Extends a lease that is still ours; `Ok(false)` when it is not.
    /// Tried even while the breaker is open.
    pub(crate) async fn renew(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, L2Error> {
        let mut invocation = RENEW.key(lock_key);
        invocation.arg(token).arg(millis(lease));
        let mut conn = self.conn();
        // Past the breaker: a lease that lapses lets another process load too.
        let renewed: i64 = self
            .bounded_past_breaker(Op::Renew, invocation.invoke_async(&mut conn))
            .await?;
        Ok(renewed == 1)
    }

    /// Releases a lock that is still ours and tells the waiters. Tried even
    /// while the breaker is open.
    ///
    /// Over `attempted`, the connection the lock was tried over: a release sent after an attempt whose outcome is not known
    /// (timed out, cancelled) then runs after it, even if the connection
    /// was replaced meanwhile; over the current one if that fails.
    pub(crate) async fn release(
        &self,
        held: Held<'_>,
        mut attempted: ConnectionManager,
    ) -> Result<(), L2Error> {
        let mut invocation = RELEASE.key(held.lock_key);
        invocation
            .key(held.waiters_key)
            .arg(held.token)
            .arg(held.channel)
            .arg(held.message);
        // Past the breaker: a lock left held holds the other processes up
        // for its whole lease.
        let released = self
            .bounded_past_breaker(Op::Unlock, invocation.invoke_async::<i64>(&mut attempted))
            .await;
        if released.is_ok() {
            return Ok(());
        }
        let mut conn = self.conn();
        self.bounded_past_breaker(Op::Unlock, invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    /// Puts `marker` in place of an absent entry for `ttl`: whether it was
    /// absent (`SET NX PX`).
    pub(crate) async fn plant(
        &self,
        entry_key: &str,
        marker: &[u8],
        ttl: Duration,
    ) -> Result<bool, L2Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(entry_key)
            .arg(marker)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let set: Option<String> = self.cmd(Op::Plant, &cmd).await?;
        Ok(set.is_some())
    }

    /// A write-through: stores an entry unless it changed since it was
    /// read as `seen` (see [`seen`]), keeps its tag versions alive at least
    /// as long and announces it: one round trip. `Ok(false)` when the entry
    /// had changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_through(
        &self,
        entry_key: &str,
        seen: &str,
        envelope: &[u8],
        ttl: Duration,
        version_keys: &[String],
        version_ttl: Duration,
        (channel, message): (&str, &[u8]),
    ) -> Result<bool, L2Error> {
        let mut invocation = WRITE_THROUGH.key(entry_key);
        invocation
            .key(version_keys)
            .arg(seen)
            .arg(envelope)
            .arg(millis(ttl))
            .arg(millis(version_ttl))
            .arg(channel)
            .arg(message);
        let mut conn = self.conn();
        let stored: i64 = self
            .bounded(Op::WriteThrough, invocation.invoke_async(&mut conn))
            .await?;
        Ok(stored == 1)
    }

    /// Gives each version key a new nonce, replaces each entry with a
    /// [`tombstone`], and announces it: one pipeline, whatever the number
    /// of entries affected. Tried even while the breaker is open.
    pub(crate) async fn invalidate(
        &self,
        version_keys: &[String],
        entry_keys: &[String],
        channel: &str,
        message: &[u8],
    ) -> Result<(), L2Error> {
        let mut pipe = redis::pipe();
        for key in version_keys {
            pipe.cmd("SET")
                .arg(key)
                .arg(fresh_version())
                .arg("XX")
                .arg("KEEPTTL")
                .ignore();
        }
        for key in entry_keys {
            pipe.cmd("SET")
                .arg(key)
                .arg(tombstone())
                .arg("PX")
                .arg(millis(TOMBSTONE_TTL))
                .ignore();
        }
        pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        let mut conn = self.conn();
        self.bounded_past_breaker(Op::Invalidate, pipe.query_async(&mut conn))
            .await
    }
}

/// How long a key invalidation's tombstone stays in place of the entry.
/// A load that read the entry before the invalidation compares what it
/// read with the tombstone and is refused; a load whose read is older than
/// [`WRITE_HORIZON`] does not write at all. The margin between the two
/// (26 minutes) covers a write that waited its turn and then its timeout
/// (a minute each at most) and a TCP connection that keeps retransmitting
/// it (Linux gives up after about 15 minutes): no load outlives the
/// tombstone it should have met. A tombstone costs about 60 bytes.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(1800);

/// A load whose L2 read is older than this leaves Redis alone (its value
/// still goes to its callers and, unless invalidated, to L1).
pub(crate) const WRITE_HORIZON: Duration = Duration::from_secs(240);

/// What a key invalidation leaves in place of the entry: no envelope
/// (readers see a miss), and unlike any other (a random nonce), so that a
/// load that read an earlier tombstone is refused too.
pub(crate) fn tombstone() -> Vec<u8> {
    let mut bytes = TOMBSTONE.to_vec();
    bytes.extend_from_slice(&fastrand::u64(..).to_le_bytes());
    bytes
}

/// The head of every tombstone: the envelope's magic with format 0.
const TOMBSTONE: &[u8] = b"tc\0";

/// Whether an entry's bytes are a [`tombstone`].
pub(crate) fn is_tombstone(bytes: &[u8]) -> bool {
    bytes.len() == TOMBSTONE.len() + 8 && bytes.starts_with(TOMBSTONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_is_the_sha1_hex_that_redis_sha1hex_gives() {
        assert_eq!(
            seen(Some(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(seen(None), "", "absent");
    }

    #[test]
    fn server_versions_are_read_from_info() {
        let info = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n";
        assert_eq!(server_version(info), ("6.2.14".to_owned(), false));
        let valkey = "# Server\r\nredis_version:7.2.4\r\nvalkey_version:9.0.0\r\n";
        assert_eq!(server_version(valkey), ("7.2.4".to_owned(), true));
        assert!(server_version("").1, "unknown: not refused");
    }

    #[test]
    fn tombstones_are_unique_and_no_envelope() {
        let (a, b) = (tombstone(), tombstone());
        assert_ne!(a, b);
        assert!(is_tombstone(&a) && is_tombstone(&b));
        assert!(crate::envelope::decode_meta(&a).is_none());
        assert!(!is_tombstone(b"tc\x02"));
    }
}
