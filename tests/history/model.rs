//! What the history checker runs and records: the versioned database, the
//! cached functions over it, the operations, and the records they leave.
//!
//! The database is a second `redis-server` that no fault ever touches: a row
//! is `row:{k}`, whose value is its version (`INCR` on every write), and
//! `outage:{k}` (with a PX expiry) makes the database fail for that key.
//! A load answers `Val { k, ver, done_ms, op }`, so a stale answer shows as
//! an old version, and its age as `done_ms`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, LoadTimeout, cache_aside, invalidates, write_through};

/// Rows: a small key space, so that every key is shared and contended.
/// Writes go mostly to the first two (hot: loads race with writes), rarely
/// to the last two (cold: entries live long enough for a stale one to be
/// seen past the propagation bound).
pub(crate) const KEYS: u64 = 4;

/// The prefixes of the cached functions, in the order of their bit in
/// [`Rec::covers`].
pub(crate) const PREFIXES: [&str; 5] = ["p", "s", "f", "a", "u"];
pub(crate) const ALL_PREFIXES: u8 = 0b1_1111;

/// Fresh period of each prefix, and the extra window its answers may be
/// served for (stale, or fail-safe), in ms: what an answer's age is held to.
pub(crate) fn windows_ms(prefix: &str) -> (u64, u64) {
    match prefix {
        "p" => (8_000, 0),
        "s" => (1_000, 3_000),
        "f" => (1_000, 3_000),
        "a" => (2_000, 0),
        "u" => (8_000, 0),
        other => unreachable!("prefix {other}"),
    }
}

pub(crate) fn prefix_bit(prefix: &str) -> u8 {
    let index = PREFIXES
        .iter()
        .position(|p| *p == prefix)
        .expect("a known prefix");
    1 << index
}

/// A row as a load saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Val {
    pub(crate) k: u64,
    pub(crate) ver: u64,
    /// Wall clock when the body returned (the engine's ttl runs from about
    /// then).
    pub(crate) done_ms: u64,
    /// The operation whose body loaded it.
    pub(crate) op: u64,
}

/// Errors a body produces. Every one names the operation whose body made
/// it, so the checker can tell an error handed to the wrong caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DbErr {
    /// The body was told to fail.
    Fail { op: u64 },
    /// The database had an outage for this key.
    Down { op: u64 },
    /// The row does not exist (version ≡ 3 mod 4), for `user`.
    NotFound { op: u64 },
    /// `hard_timeout` gave the load up.
    Timeout(LoadTimeout),
}

impl DbErr {
    pub(crate) fn outcome(&self) -> Outcome {
        let (what, by) = match self {
            Self::Fail { op } => ("fail", Some(*op)),
            Self::Down { op } => ("down", Some(*op)),
            Self::NotFound { op } => ("not_found", Some(*op)),
            Self::Timeout(_) => ("timeout", None),
        };
        Outcome::Err {
            what: what.to_owned(),
            by,
        }
    }
}

impl From<LoadTimeout> for DbErr {
    fn from(timeout: LoadTimeout) -> Self {
        Self::Timeout(timeout)
    }
}

/// Whether a row version means "no such row" (for `maybe` and `user`).
pub(crate) fn absent(ver: u64) -> bool {
    ver % 4 == 3
}

/// What a body does besides reading its row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Mode {
    Ok,
    Fail,
    Panic,
    /// Reads the row, then sleeps this many ms before returning it.
    Slow(u64),
}

pub(crate) const PANIC_MARK: &str = "history: intended panic of op";

/// Operation ids whose body started (in this process), to tell whether a
/// timeout was the caller's own.
fn bodies() -> &'static Mutex<HashSet<u64>> {
    static BODIES: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    BODIES.get_or_init(Mutex::default)
}

pub(crate) fn body_ran(op: u64) -> bool {
    bodies().lock().unwrap().contains(&op)
}

pub(crate) fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_nanos()).expect("before 2554")
}

pub(crate) fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// One instance of the service: a `Cache` and a connection to the
/// database. `Clone` for the options that load in the background.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) cache: Cache,
    pub(crate) db: redis::aio::MultiplexedConnection,
}

impl Db {
    /// The row's version and whether the database is down for it.
    async fn read_row(&self, k: u64) -> (u64, bool) {
        let mut db = self.db.clone();
        let (ver, outage): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(format!("row:{k}"))
            .arg(format!("outage:{k}"))
            .query_async(&mut db)
            .await
            .expect("the database answers (no fault is injected on it)");
        (ver.unwrap_or(0), outage.is_some())
    }

    /// A new version of the row.
    pub(crate) async fn bump(&self, k: u64) -> u64 {
        let mut db = self.db.clone();
        redis::cmd("INCR")
            .arg(format!("row:{k}"))
            .query_async(&mut db)
            .await
            .expect("the database answers (no fault is injected on it)")
    }

    /// The body every cached function shares.
    async fn load(&self, k: u64, mode: Mode, op: u64, outages: bool) -> Result<Val, DbErr> {
        bodies().lock().unwrap().insert(op);
        let (ver, outage) = self.read_row(k).await;
        match mode {
            Mode::Ok => {}
            Mode::Fail => return Err(DbErr::Fail { op }),
            Mode::Panic => {
                tokio::task::yield_now().await;
                panic!("{PANIC_MARK} {op}")
            }
            Mode::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
        if outages && outage {
            return Err(DbErr::Down { op });
        }
        Ok(Val {
            k,
            ver,
            done_ms: now_ms(),
            op,
        })
    }

    // ------------------------------------------------------------ readers

    #[cache_aside(prefix = "p", ttl = "8s", key = "{k}", tags = ["row:{k}"], skip(mode, op), cache = self.cache)]
    pub(crate) async fn plain(&self, k: u64, mode: Mode, op: u64) -> Result<Val, DbErr> {
        self.load(k, mode, op, true).await
    }

    #[cache_aside(prefix = "s", ttl = "1s", stale = "3s", key = "{k}", tags = ["row:{k}"], skip(mode, op), cache = self.cache)]
    pub(crate) async fn swr(&self, k: u64, mode: Mode, op: u64) -> Result<Val, DbErr> {
        self.load(k, mode, op, true).await
    }

    #[cache_aside(
        prefix = "f",
        ttl = "1s",
        fail_safe = "3s",
        timeout = "150ms",
        hard_timeout = "1s",
        key = "{k}",
        tags = ["row:{k}"],
        skip(mode, op),
        cache = self.cache
    )]
    pub(crate) async fn safe(&self, k: u64, mode: Mode, op: u64) -> Result<Val, DbErr> {
        self.load(k, mode, op, true).await
    }

    #[cache_aside(prefix = "a", ttl = "2s", refresh_ahead = 2.0, key = "{k}", tags = ["row:{k}"], skip(mode, op), cache = self.cache)]
    pub(crate) async fn ahead(&self, k: u64, mode: Mode, op: u64) -> Result<Val, DbErr> {
        self.load(k, mode, op, true).await
    }

    /// `find_user`: `None` for an absent row, cached for `cache_none`.
    #[cache_aside(prefix = "u", ttl = "8s", cache_none = "2s", key = "{k}", tags = ["row:{k}"], skip(mode, op), cache = self.cache)]
    pub(crate) async fn maybe(&self, k: u64, mode: Mode, op: u64) -> Option<Val> {
        // No error path in this shape: `Fail` is not drawn for it.
        let val = self.load(k, mode, op, false).await.ok()?;
        (!absent(val.ver)).then_some(val)
    }

    /// `get_user`: the same prefix and key as `maybe`, another shape.
    #[cache_aside(prefix = "u", ttl = "8s", key = "{k}", tags = ["row:{k}"], skip(mode, op), cache = self.cache)]
    pub(crate) async fn user(&self, k: u64, mode: Mode, op: u64) -> Result<Val, DbErr> {
        let val = self.load(k, mode, op, true).await?;
        if absent(val.ver) {
            return Err(DbErr::NotFound { op });
        }
        Ok(val)
    }

    // ------------------------------------------------------------ writers

    fn written(k: u64, ver: u64, op: u64) -> Val {
        Val {
            k,
            ver,
            done_ms: now_ms(),
            op,
        }
    }

    #[write_through(prefix = "p", ttl = "8s", key = "{k}", tags = ["row:{k}"], cache = self.cache)]
    pub(crate) async fn write_plain(
        &self,
        k: u64,
        op: u64,
        ver: &Mutex<u64>,
    ) -> Result<Val, DbErr> {
        let v = self.bump(k).await;
        *ver.lock().unwrap() = v;
        Ok(Self::written(k, v, op))
    }

    #[write_through(prefix = "u", ttl = "8s", key = "{k}", tags = ["row:{k}"], cache = self.cache)]
    pub(crate) async fn write_user(&self, k: u64, op: u64, ver: &Mutex<u64>) -> Result<Val, DbErr> {
        let v = self.bump(k).await;
        *ver.lock().unwrap() = v;
        Ok(Self::written(k, v, op))
    }

    /// Returns `None` when the new version is an absent row: the entry must
    /// then not keep the old value.
    #[write_through(prefix = "u", ttl = "8s", key = "{k}", tags = ["row:{k}"], cache = self.cache)]
    pub(crate) async fn write_maybe(&self, k: u64, op: u64, ver: &Mutex<u64>) -> Option<Val> {
        let v = self.bump(k).await;
        *ver.lock().unwrap() = v;
        (!absent(v)).then(|| Self::written(k, v, op))
    }

    /// A new version, then every function's entry of the row by key.
    #[invalidates(keys = ["p:{k}", "s:{k}", "f:{k}", "a:{k}", "u:{k}"], cache = self.cache)]
    pub(crate) async fn bump_keys(&self, k: u64) -> Result<u64, DbErr> {
        Ok(self.bump(k).await)
    }

    /// A new version, then the row's tag.
    #[invalidates(tags = ["row:{k}"], cache = self.cache)]
    pub(crate) async fn bump_tag(&self, k: u64) -> Result<u64, DbErr> {
        Ok(self.bump(k).await)
    }
}

// ------------------------------------------------------------ the records

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Read,
    Write,
    /// A snapshot of an instance's stats.
    Checkpoint,
    /// A panic the panic hook saw that no body threw on purpose.
    StrayPanic,
    /// A fault the parent injected (`func` says which, `prefix` its kind).
    Fault,
}

/// How a Redis-side invalidation ended, as the caller could see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Inval {
    /// Not a write.
    None,
    Ok,
    Err,
    /// The macros do not say (`#[invalidates]` logs a failure,
    /// `#[write_through]` skips it): treated like `Err`.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Value(Val),
    /// `None` from `maybe`.
    Nothing,
    /// An `Err`: which error (`fail`, `down`, `not_found`, `timeout`) and
    /// the operation whose body produced it, when it says.
    Err {
        what: String,
        by: Option<u64>,
    },
    Panic(String),
    Cancelled,
    /// Did not return within [`HANG`].
    Hang,
    /// A write or a checkpoint that returned.
    Done,
}

/// Every call returns within this, or it is a hang.
pub(crate) const HANG: Duration = Duration::from_secs(15);

/// One operation (or checkpoint) of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rec {
    /// Process index (0: the parent).
    pub(crate) proc: u32,
    /// Instance index in its process.
    pub(crate) inst: u32,
    pub(crate) op: u64,
    pub(crate) kind: Kind,
    /// The function or the write's kind.
    pub(crate) func: String,
    /// Read: the entry's prefix.
    pub(crate) prefix: String,
    pub(crate) k: u64,
    /// Wall clock, ns since the epoch.
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) mode: Option<Mode>,
    pub(crate) outcome: Outcome,
    /// Read: whether this operation's own body ran (in the call or in a
    /// background load it started).
    pub(crate) body_ran: bool,
    /// Write: the row version it wrote (`INCR`).
    pub(crate) ver: u64,
    /// Write: the entries of row `k` it covers, one bit per prefix.
    pub(crate) covers: u8,
    /// Write: a write-through (stores a value rather than forgetting).
    pub(crate) stores: bool,
    pub(crate) inval: Inval,
    /// Checkpoint: `Stats::pending_invalidations`.
    pub(crate) pending: u64,
    /// Checkpoint: `Stats::subscription_losses`.
    pub(crate) losses: u64,
    /// Checkpoint: `Stats::breaker_open`.
    #[serde(default)]
    pub(crate) breaker_open: bool,
    /// Checkpoint: `Stats::redis_errors + redis_skipped`.
    #[serde(default)]
    pub(crate) redis_failures: u64,
}

impl Rec {
    pub(crate) fn new(proc: u32, inst: u32, op: u64, kind: Kind, func: &str) -> Self {
        Self {
            proc,
            inst,
            op,
            kind,
            func: func.to_owned(),
            prefix: String::new(),
            k: 0,
            start: now_ns(),
            end: 0,
            mode: None,
            outcome: Outcome::Done,
            body_ran: false,
            ver: 0,
            covers: 0,
            stores: false,
            inval: Inval::None,
            pending: 0,
            losses: 0,
            breaker_open: false,
            redis_failures: 0,
        }
    }

    pub(crate) fn instance(&self) -> (u32, u32) {
        (self.proc, self.inst)
    }
}
