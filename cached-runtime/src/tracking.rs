//! The version keys, known without asking: RESP3 client-side caching.
//!
//! An L2 read needs the entry and the current version of its namespace,
//! prefix and tags. Versions change only when something is invalidated, so
//! asking Redis for them on every read (an `MGET` of three or more keys
//! instead of a `GET` of one) cost about 40 % of the read's throughput.
//! Instead, reads go over a connection of their own on which Redis tracks
//! the version keys read (`CLIENT TRACKING ON OPTIN`, then `CLIENT CACHING
//! YES` before each `MGET` of versions) and pushes an `invalidate` message
//! when one changes. A read whose versions are all known is one `GET`.
//!
//! # Why a read never accepts what a completed invalidation covers
//!
//! An invalidation is a `SET` of a version key. Redis queues the push for
//! every connection tracking that key while it runs the `SET`, before the
//! invalidating client gets its reply. A read sent after that reply is
//! answered on the tracked connection after the push, and redis-rs hands
//! each push to [`Tracking`] in the connection's reader, in order, before
//! it delivers any later reply. So when a read's reply arrives, every
//! version change that Redis made before running it has been applied here;
//! the versions are looked up only then (see [`Tracking::known`]).
//!
//! Three more things keep that true:
//!
//! - **A version learnt late is not kept.** The reply of an `MGET` of
//!   versions is stored after it arrived, by the reading task; a push for
//!   one of those keys may have been handled in between. Every push counts
//!   one *churn*, and what was read is kept only if no push came since the
//!   read was sent (see [`Tracking::learn`]).
//! - **One connection's pushes cover its own reads only.** Known versions
//!   belong to the connection that read them: a new connection (after a
//!   disconnection, a replaced connection, a move of the Sentinel master)
//!   starts with none, and a late push of an old one is ignored.
//! - **Anything unclear forgets everything.** A disconnection, a push
//!   without keys (`FLUSHALL`), a failed command on the connection.
//!
//! A server without RESP3, `CLIENT TRACKING` or `CLIENT INFO` (Redis
//! before 7, some proxies), or an ACL that refuses one of the commands,
//! refuses the connection: reads then ask for the versions every
//! time, as they did before, and the connection is tried again later.

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

/// How many version keys one cache knows at most (about 100 bytes each).
/// Past it the least used are forgotten: reading one again costs the
/// `MGET` it saved.
pub(crate) const KNOWN_VERSIONS: usize = 16_384;

/// The first wait before a refused tracked connection is tried again; it
/// doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The tracked connection and what it knows.
pub(crate) struct Tracking {
    state: Arc<RwLock<State>>,
    /// Versions read on the current connection (see [`State::current`]).
    known: Arc<quick_cache::sync::Cache<String, u64>>,
    enabled: bool,
    timeout: Duration,
    /// With Sentinel: moves of the master; a move replaces the connection.
    moved: Option<tokio::sync::watch::Receiver<u64>>,
    /// A key of the namespace, read when a connection is made.
    probe_key: Arc<str>,
}

#[derive(Default)]
struct State {
    /// The connection reads go over, and its number.
    current: Option<(u64, MultiplexedConnection)>,
    /// The last connection number given out.
    last: u64,
    /// Pushes and resets so far (see [`Tracking::learn`]).
    churn: u64,
    /// A connection being made: its number.
    connecting: Option<u64>,
    /// No new attempt before this (after a refused one).
    retry_at: Option<Instant>,
    /// Refused attempts in a row.
    refusals: u32,
    /// The moves of the Sentinel master seen.
    moves: u64,
}

impl State {
    /// Drops the connection and everything it knew.
    fn forget(&mut self, known: &quick_cache::sync::Cache<String, u64>) {
        self.current = None;
        self.connecting = None;
        self.churn += 1;
        known.clear();
    }

    /// Whether a connection is being made, or one was refused too lately
    /// to try again.
    fn waiting(&self, now: Instant) -> bool {
        self.connecting.is_some() || self.retry_at.is_some_and(|at| now < at)
    }

    fn is_current(&self, number: u64) -> bool {
        self.current.as_ref().is_some_and(|(n, _)| *n == number)
    }
}

/// A read about to go over the tracked connection.
pub(crate) struct Tracked {
    number: u64,
    pub(crate) conn: MultiplexedConnection,
    /// The churn before the read was sent.
    churn: u64,
    /// The versions known when the read began, if all were.
    pub(crate) versions: Option<Vec<u64>>,
}

impl Tracking {
    pub(crate) fn new(
        enabled: bool,
        timeout: Duration,
        moved: Option<tokio::sync::watch::Receiver<u64>>,
        probe_key: String,
    ) -> Self {
        Self {
            probe_key: probe_key.into(),
            state: Arc::default(),
            known: Arc::new(quick_cache::sync::Cache::new(KNOWN_VERSIONS)),
            enabled,
            timeout,
            moved,
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tracked connection for a read of `version_keys`, or `None`
    /// (tracking off, or no connection yet: one is made in the background
    /// with `client`, at most one at a time).
    pub(crate) fn begin(
        &self,
        client: impl FnOnce() -> redis::Client,
        version_keys: &[String],
    ) -> Option<Tracked> {
        if !self.enabled {
            return None;
        }
        let moves = self.moved.as_ref().map(|moved| *moved.borrow());
        let now = Instant::now();
        {
            let state = self.state();
            if moves.is_none_or(|moves| moves == state.moves) {
                if let Some((number, conn)) = &state.current {
                    let versions = version_keys.iter().map(|key| self.known.get(key)).collect();
                    return Some(Tracked {
                        number: *number,
                        conn: conn.clone(),
                        churn: state.churn,
                        versions,
                    });
                }
                // Without a connection for a while (refused, or being
                // made): no write lock taken on every read meanwhile.
                if state.waiting(now) {
                    return None;
                }
            }
        }
        let mut state = self.state_mut();
        if let Some(moves) = moves.filter(|&moves| moves != state.moves) {
            state.moves = moves;
            state.forget(&self.known);
        }
        if state.current.is_some() || state.waiting(now) {
            return None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return None;
        };
        state.last += 1;
        let number = state.last;
        state.connecting = Some(number);
        drop(state);
        let connecting = self.connect(client(), number);
        runtime.spawn(connecting);
        None
    }

    /// Makes connection `number` and, unless it was reset meanwhile, puts
    /// it in place.
    fn connect(
        &self,
        client: redis::Client,
        number: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (state, known, timeout) = (self.state.clone(), self.known.clone(), self.timeout);
        let probe_key = self.probe_key.clone();
        let pushes = Pushes {
            state: Arc::downgrade(&state),
            known: Arc::downgrade(&known),
            number,
        };
        async move {
            let made =
                tokio::time::timeout(timeout, open(client, pushes, timeout, &probe_key)).await;
            let made = made.unwrap_or_else(|_| {
                Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
            });
            let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
            if state.connecting != Some(number) {
                return; // reset meanwhile
            }
            state.connecting = None;
            match made {
                Ok(conn) => {
                    known.clear();
                    state.churn += 1;
                    state.current = Some((number, conn));
                    state.refusals = 0;
                    state.retry_at = None;
                }
                Err(error) => {
                    let wait = RETRY_MIN
                        .saturating_mul(1 << state.refusals.min(6))
                        .min(RETRY_MAX);
                    state.refusals = state.refusals.saturating_add(1);
                    state.retry_at = Some(Instant::now() + wait);
                    tracing::debug!(
                        %error,
                        ?wait,
                        "no tracked Redis connection (RESP3 CLIENT TRACKING); reads fetch versions each time"
                    );
                }
            }
        }
    }

    /// The versions of `version_keys` as known now, if all are, on
    /// connection `tracked`: called once a read's reply is in (see the
    /// module's docs). Those known when the read began, unless a push or
    /// a reset came since (the churn is unchanged): then no push changed
    /// what is known, and they are not looked up again.
    pub(crate) fn known(&self, tracked: &mut Tracked, version_keys: &[String]) -> Option<Vec<u64>> {
        let moves = self.moved.as_ref().map(|moved| *moved.borrow());
        let state = self.state();
        if !state.is_current(tracked.number) || moves.is_some_and(|moves| moves != state.moves) {
            return None;
        }
        if state.churn == tracked.churn
            && let Some(versions) = tracked.versions.take()
        {
            return Some(versions);
        }
        version_keys.iter().map(|key| self.known.get(key)).collect()
    }

    /// Keeps the versions a read over `tracked` fetched, unless a push or
    /// a reset came since it was sent.
    pub(crate) fn learn(&self, tracked: &Tracked, version_keys: &[String], versions: &[u64]) {
        let state = self.state_mut();
        if !state.is_current(tracked.number) || state.churn != tracked.churn {
            return;
        }
        for (key, &version) in version_keys.iter().zip(versions) {
            self.known.insert(key.clone(), version);
        }
    }

    /// The churn now, for a read about to be sent again over `tracked`;
    /// `false` when `tracked` is no longer the current connection (or the
    /// Sentinel master moved): not to be used again.
    pub(crate) fn restart(&self, tracked: &mut Tracked) -> bool {
        let moves = self.moved.as_ref().map(|moved| *moved.borrow());
        let state = self.state();
        tracked.churn = state.churn;
        state.is_current(tracked.number) && moves.is_none_or(|moves| moves == state.moves)
    }

    /// A command over `tracked` failed: its connection is dropped (a new
    /// one is made on the next read).
    pub(crate) fn failed(&self, tracked: &Tracked) {
        let mut state = self.state_mut();
        if state.is_current(tracked.number) {
            state.forget(&self.known);
        }
    }

    /// Drops the connection and what it knew (the breaker replaced the
    /// other connection: this one may be as dead).
    pub(crate) fn reset(&self) {
        self.state_mut().forget(&self.known);
    }
}

/// Opens a RESP3 connection with `pushes` as its push handler and turns
/// tracking on for it.
async fn open(
    client: redis::Client,
    pushes: Pushes,
    timeout: Duration,
    probe_key: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    // No response timeout of its own: every command on it is bounded by
    // the cache's (`L2::bounded_with`), and a second timer per read cost
    // throughput.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_push_sender(pushes);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // Every command the reads will send, so that a user whose ACL refuses
    // one (`-client|caching`) reads without tracking rather than failing.
    redis::pipe()
        .cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("OPTIN")
        .ignore()
        .cmd("CLIENT")
        .arg("CACHING")
        .arg("YES")
        .ignore()
        .cmd("MGET")
        .arg(probe_key)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    // Pushes arrive only on RESP3: a connection that is RESP2 after all
    // (tracking on, its messages lost) is refused.
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut conn)
        .await?;
    if !info.split_whitespace().any(|field| field == "resp=3") {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the tracked connection is not RESP3",
        )));
    }
    Ok(conn)
}

/// The push handler of connection `number`: runs in its reader, before
/// any later reply is delivered.
struct Pushes {
    state: Weak<RwLock<State>>,
    known: Weak<quick_cache::sync::Cache<String, u64>>,
    number: u64,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let (Some(state), Some(known)) = (self.state.upgrade(), self.known.upgrade()) else {
            return Err(redis::aio::SendError);
        };
        let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
        if !state.is_current(self.number) {
            return Ok(());
        }
        match (info.kind, info.data.first()) {
            (PushKind::Invalidate, Some(Value::Array(keys))) => {
                state.churn += 1;
                for key in keys {
                    match key {
                        Value::BulkString(key) => {
                            if let Ok(key) = std::str::from_utf8(key) {
                                known.remove(key);
                            }
                        }
                        Value::SimpleString(key) => {
                            known.remove(key.as_str());
                        }
                        _ => known.clear(),
                    }
                }
            }
            // After `FLUSHALL`/`FLUSHDB`, or a shape not understood.
            (PushKind::Invalidate, _) => {
                state.churn += 1;
                known.clear();
            }
            (PushKind::Disconnection, _) => state.forget(&known),
            _ => {}
        }
        Ok(())
    }
}
