//! The random mix every process runs: reads, writes and invalidations on a
//! few `Cache` instances, each call a task of its own (a panicking body
//! panics only its task), bounded by [`HANG`], sometimes cancelled.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::Cache;

use crate::model::{
    ALL_PREFIXES, Db, HANG, Inval, KEYS, Kind, Mode, Outcome, PANIC_MARK, PREFIXES, Rec, body_ran,
    now_ns, prefix_bit,
};

/// What a process is told (the parent passes it to its children as JSON in
/// `TIERCACHE_HISTORY_WORKER`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Config {
    pub(crate) proc: u32,
    pub(crate) seed: u64,
    pub(crate) cache_url: String,
    pub(crate) db_url: String,
    pub(crate) namespace: String,
    pub(crate) instances: u32,
    pub(crate) tasks: u32,
    /// Wall clock, ns: when the operations begin and end.
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// Where a child writes its history (JSON lines).
    pub(crate) out: String,
}

/// Panics the hook saw that were not a body's intended one.
pub(crate) fn stray_panics() -> &'static Mutex<Vec<(String, String)>> {
    static STRAY: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    STRAY.get_or_init(Mutex::default)
}

/// Keeps intended panics quiet, and records every other one.
pub(crate) fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = payload_text(info.payload());
            if message.starts_with(PANIC_MARK) {
                return;
            }
            let thread = std::thread::current();
            let location = info
                .location()
                .map_or_else(String::new, |l| format!("at {l}"));
            let mut stray = stray_panics().lock().unwrap();
            // Each distinct panic in full once; the checker counts them all.
            let first = !stray.iter().any(|(m, _)| *m == message);
            stray.push((
                message,
                format!("{location} (thread {})", thread.name().unwrap_or("unnamed")),
            ));
            drop(stray);
            if first {
                default(info);
            }
        }));
    });
}

pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

pub(crate) async fn instance(config: &Config) -> Db {
    let cache = Cache::builder()
        .namespace(config.namespace.as_str())
        .redis(config.cache_url.as_str())
        .fail_safe_throttle(Duration::from_millis(500))
        .build()
        .await
        .expect("valid settings");
    let db = redis::Client::open(config.db_url.as_str())
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the database answers");
    Db { cache, db }
}

/// Runs the process's share of the history: `config.instances` instances,
/// `config.tasks` tasks on each and a checkpoint task per instance, from
/// `start_ns` to `end_ns`. Returns every record.
pub(crate) async fn run(config: &Config) -> Vec<Rec> {
    install_panic_hook();
    let mut dbs = Vec::new();
    for _ in 0..config.instances {
        dbs.push(instance(config).await);
    }
    let wait = config.start_ns.saturating_sub(now_ns());
    tokio::time::sleep(Duration::from_nanos(wait)).await;

    let history = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (inst, db) in (0..).zip(&dbs) {
        for task in 0..config.tasks {
            let seed = config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(
                    u64::from(config.proc) << 32 | u64::from(inst) << 16 | u64::from(task),
                );
            let worker = Worker {
                proc: config.proc,
                inst,
                db: db.clone(),
                rng: fastrand::Rng::with_seed(seed),
                ops: ops.clone(),
                history: history.clone(),
            };
            tasks.push(tokio::spawn(worker.run(config.end_ns)));
        }
        tasks.push(tokio::spawn(checkpoints(
            config.proc,
            inst,
            db.cache.clone(),
            config.end_ns,
            history.clone(),
        )));
    }
    for task in tasks {
        task.await
            .expect("a worker loop never panics: calls run in tasks of their own");
    }
    // One more checkpoint once everything is quiet, for writes at the end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (inst, db) in (0..).zip(&dbs) {
        history
            .lock()
            .unwrap()
            .push(checkpoint(config.proc, inst, &db.cache));
    }
    let mut records = std::mem::take(&mut *history.lock().unwrap());
    for (n, (message, location)) in stray_panics().lock().unwrap().iter().enumerate() {
        let mut rec = Rec::new(config.proc, 0, n as u64, Kind::StrayPanic, location);
        rec.outcome = Outcome::Panic(message.clone());
        rec.end = rec.start;
        records.push(rec);
    }
    records
}

fn checkpoint(proc: u32, inst: u32, cache: &Cache) -> Rec {
    let mut rec = Rec::new(proc, inst, 0, Kind::Checkpoint, "stats");
    let stats = cache.stats();
    rec.pending = stats.pending_invalidations;
    rec.losses = stats.subscription_losses;
    rec.breaker_open = stats.breaker_open;
    rec.redis_failures = stats.redis_errors + stats.redis_skipped;
    rec.end = now_ns();
    rec
}

async fn checkpoints(
    proc: u32,
    inst: u32,
    cache: Cache,
    end_ns: u64,
    history: Arc<Mutex<Vec<Rec>>>,
) {
    while now_ns() < end_ns {
        let rec = checkpoint(proc, inst, &cache);
        history.lock().unwrap().push(rec);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Read {
    Plain,
    Swr,
    Safe,
    Ahead,
    Maybe,
    User,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Swr => "swr",
            Self::Safe => "safe",
            Self::Ahead => "ahead",
            Self::Maybe => "maybe",
            Self::User => "user",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Plain => "p",
            Self::Swr => "s",
            Self::Safe => "f",
            Self::Ahead => "a",
            Self::Maybe | Self::User => "u",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Write {
    /// `#[write_through]` of `plain`'s entry.
    StorePlain,
    /// `#[write_through]` of `user`'s entry (`Result<Val, _>`).
    StoreUser,
    /// `#[write_through]` of `maybe`'s entry, `None` for an absent row.
    StoreMaybe,
    /// `#[invalidates(keys = [every prefix])]`.
    BumpKeys,
    /// `#[invalidates(tags = ["row:{k}"])]`.
    BumpTag,
    /// `Cache::invalidate_key` of one prefix's entry.
    InvalidateKey(&'static str),
    /// `Cache::invalidate_tags(["row:{k}"])`.
    InvalidateTag,
    /// `Cache::invalidate_prefix`.
    InvalidatePrefix(&'static str),
    /// `Cache::clear`.
    Clear,
}

struct Worker {
    proc: u32,
    inst: u32,
    db: Db,
    rng: fastrand::Rng,
    ops: Arc<AtomicU64>,
    history: Arc<Mutex<Vec<Rec>>>,
}

impl Worker {
    async fn run(mut self, end_ns: u64) {
        while now_ns() < end_ns {
            let op = u64::from(self.proc) << 48 | (self.ops.fetch_add(1, Relaxed) + 1);
            let rec = if self.rng.u32(0..100) < 92 {
                self.read(op).await
            } else {
                self.write(op).await
            };
            self.history.lock().unwrap().push(rec);
            let pause = self.rng.u64(0..4);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    fn pick_read(&mut self) -> Read {
        match self.rng.u32(0..100) {
            0..20 => Read::Plain,
            20..37 => Read::Swr,
            37..57 => Read::Safe,
            57..70 => Read::Ahead,
            70..85 => Read::Maybe,
            _ => Read::User,
        }
    }

    fn pick_mode(&mut self, read: Read) -> Mode {
        match self.rng.u32(0..100) {
            0..78 => Mode::Ok,
            78..86 if !matches!(read, Read::Maybe) => Mode::Fail,
            78..86 => Mode::Ok,
            86..90 => Mode::Panic,
            _ => Mode::Slow(self.rng.u64(20..1_000)),
        }
    }

    async fn read(&mut self, op: u64) -> Rec {
        let read = self.pick_read();
        let k = self.rng.u64(0..KEYS);
        let mode = self.pick_mode(read);
        let cancel_after =
            (self.rng.u32(0..100) < 8).then(|| Duration::from_micros(self.rng.u64(0..30_000)));
        let mut rec = Rec::new(self.proc, self.inst, op, Kind::Read, read.name());
        rec.prefix = read.prefix().to_owned();
        rec.k = k;
        rec.mode = Some(mode);
        let db = self.db.clone();
        let call = async move {
            let outcome = match read {
                Read::Plain => db.plain(k, mode, op).await,
                Read::Swr => db.swr(k, mode, op).await,
                Read::Safe => db.safe(k, mode, op).await,
                Read::Ahead => db.ahead(k, mode, op).await,
                Read::User => db.user(k, mode, op).await,
                Read::Maybe => {
                    return match db.maybe(k, mode, op).await {
                        Some(val) => Outcome::Value(val),
                        None => Outcome::Nothing,
                    };
                }
            };
            match outcome {
                Ok(val) => Outcome::Value(val),
                Err(error) => error.outcome(),
            }
        };
        rec.outcome = bounded(async move {
            match cancel_after {
                Some(after) => tokio::time::timeout(after, call)
                    .await
                    .unwrap_or(Outcome::Cancelled),
                None => call.await,
            }
        })
        .await;
        rec.end = now_ns();
        rec.body_ran = body_ran(op);
        rec
    }

    fn pick_write(&mut self) -> Write {
        let prefix = PREFIXES[self.rng.usize(0..PREFIXES.len())];
        match self.rng.u32(0..100) {
            0..17 => Write::StorePlain,
            17..30 => Write::StoreUser,
            30..43 => Write::StoreMaybe,
            43..54 => Write::BumpKeys,
            54..65 => Write::BumpTag,
            65..83 => Write::InvalidateKey(prefix),
            83..96 => Write::InvalidateTag,
            // Prefix and namespace invalidations forget every row: rare,
            // so that entries of the cold rows live for seconds.
            96..99 => Write::InvalidatePrefix(prefix),
            _ => Write::Clear,
        }
    }

    async fn write(&mut self, op: u64) -> Rec {
        let write = self.pick_write();
        let k = match self.rng.u32(0..100) {
            0..45 => 0,
            45..90 => 1,
            90..97 => 2,
            _ => 3,
        };
        let (name, covers, stores) = match write {
            Write::StorePlain => ("write_plain", prefix_bit("p"), true),
            Write::StoreUser => ("write_user", prefix_bit("u"), true),
            Write::StoreMaybe => ("write_maybe", prefix_bit("u"), true),
            Write::BumpKeys => ("bump_keys", ALL_PREFIXES, false),
            Write::BumpTag => ("bump_tag", ALL_PREFIXES, false),
            Write::InvalidateKey(prefix) => ("invalidate_key", prefix_bit(prefix), false),
            Write::InvalidateTag => ("invalidate_tags", ALL_PREFIXES, false),
            Write::InvalidatePrefix(prefix) => ("invalidate_prefix", prefix_bit(prefix), false),
            Write::Clear => ("clear", ALL_PREFIXES, false),
        };
        let mut rec = Rec::new(self.proc, self.inst, op, Kind::Write, name);
        rec.k = k;
        rec.covers = covers;
        rec.stores = stores;
        if let Write::InvalidateKey(prefix) | Write::InvalidatePrefix(prefix) = write {
            rec.prefix = prefix.to_owned();
        }
        let db = self.db.clone();
        let written = Arc::new(Mutex::new((0u64, Inval::Unknown)));
        let result = written.clone();
        rec.outcome = bounded(async move {
            let version = Mutex::new(0);
            let (ver, inval) = match write {
                Write::StorePlain => {
                    let _ = db.write_plain(k, op, &version).await;
                    (*version.lock().unwrap(), Inval::Unknown)
                }
                Write::StoreUser => {
                    let _ = db.write_user(k, op, &version).await;
                    (*version.lock().unwrap(), Inval::Unknown)
                }
                Write::StoreMaybe => {
                    let _ = db.write_maybe(k, op, &version).await;
                    (*version.lock().unwrap(), Inval::Unknown)
                }
                Write::BumpKeys => (db.bump_keys(k).await.unwrap(), Inval::Unknown),
                Write::BumpTag => (db.bump_tag(k).await.unwrap(), Inval::Unknown),
                Write::InvalidateKey(prefix) => {
                    let ver = db.bump(k).await;
                    let done = db.cache.invalidate_key(prefix, &k.to_string()).await;
                    (ver, inval_of(&done))
                }
                Write::InvalidateTag => {
                    let ver = db.bump(k).await;
                    let done = db.cache.invalidate_tags([format!("row:{k}")]).await;
                    (ver, inval_of(&done))
                }
                Write::InvalidatePrefix(prefix) => {
                    let ver = db.bump(k).await;
                    (ver, inval_of(&db.cache.invalidate_prefix(prefix).await))
                }
                Write::Clear => {
                    let ver = db.bump(k).await;
                    (ver, inval_of(&db.cache.clear().await))
                }
            };
            *result.lock().unwrap() = (ver, inval);
            Outcome::Done
        })
        .await;
        rec.end = now_ns();
        (rec.ver, rec.inval) = *written.lock().unwrap();
        rec
    }
}

fn inval_of(result: &Result<(), tiercache::Error>) -> Inval {
    match result {
        Ok(()) => Inval::Ok,
        Err(_) => Inval::Err,
    }
}

/// Runs `call` as a task of its own, bounded by [`HANG`]: a panic is the
/// outcome of this call only.
async fn bounded(call: impl Future<Output = Outcome> + Send + 'static) -> Outcome {
    let task = tokio::spawn(call);
    let abort = task.abort_handle();
    match tokio::time::timeout(HANG, task).await {
        Err(_) => {
            abort.abort();
            Outcome::Hang
        }
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) if error.is_panic() => Outcome::Panic(payload_text(&*error.into_panic())),
        Ok(Err(_)) => Outcome::Cancelled,
    }
}
