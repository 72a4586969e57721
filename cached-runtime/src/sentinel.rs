//! Redis Sentinel: the master's address, asked of the sentinels, and
//! followed across failovers.
//!
//! The cache keeps one target (a client and its connection) and replaces
//! both when the sentinels name another master. It asks them again:
//!
//! - when a sentinel announces `+switch-master` for the master's name (one
//!   subscription per cache, on one sentinel at a time; what Jedis and
//!   Lettuce do): the new master takes writes within milliseconds of its
//!   promotion, and the old one, which Sentinel leaves a master for some
//!   seconds before demoting it, gets none (what it took then is lost
//!   when it resyncs as a replica);
//! - when a command fails as `READONLY` (the old master was demoted: its
//!   connection was killed, and the manager reconnected to the same
//!   address, a replica now), or as a connection failure (it is down);
//! - when the connection is replaced (see `L2::reconnect`).
//!
//! One lookup runs at a time, at most one per [`MIN_GAP`] unless a
//! sentinel announced a switch. A lookup is redis-rs's: `SENTINEL MASTERS`
//! of the sentinels (a few at once), then the named master's `ROLE`, on a
//! connection of its own: a master a sentinel still names but that was
//! demoted is not taken. It runs in the background, bounded by
//! [`lookup_within`]: no cached call waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

/// Where commands go: a client and the connection made from it, replaced
/// together.
pub(crate) struct Target {
    pub(crate) client: redis::Client,
    pub(crate) conn: ConnectionManager,
    /// Where it is, as spans show it.
    pub(crate) server: crate::l2::Server,
}

impl Target {
    pub(crate) fn new(client: redis::Client, conn: ConnectionManager) -> Self {
        Self {
            server: crate::l2::Server::of(&client),
            client,
            conn,
        }
    }
}

/// What [`CacheBuilder::redis_sentinel`](crate::CacheBuilder::redis_sentinel)
/// configured, checked.
pub(crate) struct Settings {
    /// The sentinels, with their own credentials and database 0.
    pub(crate) sentinels: Vec<redis::ConnectionInfo>,
    /// The name the sentinels monitor the master by.
    pub(crate) master_name: String,
    /// The master's database, user and password.
    pub(crate) master: redis::RedisConnectionInfo,
    /// Whether the master is reached over TLS (the sentinels' URLs are
    /// `rediss://`).
    pub(crate) tls: bool,
}

/// The least time between two lookups that no sentinel asked for.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(100);

/// How long a lookup may take: several round trips (the sentinel, then a
/// connection to the master and its `ROLE`), so four Redis timeouts, and
/// at least a second.
pub(crate) fn lookup_within(timeout: Duration) -> Duration {
    timeout.saturating_mul(4).max(Duration::from_secs(1))
}

/// The address a client connects to, to compare masters by.
fn address(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Follows the master the sentinels name.
pub(crate) struct Follow {
    lookup: tokio::sync::Mutex<SentinelClient>,
    within: Duration,
    target: Arc<RwLock<Target>>,
    config: ConnectionManagerConfig,
    /// A lookup is running.
    resolving: AtomicBool,
    /// A sentinel announced a switch while a lookup ran: look again after.
    again: AtomicBool,
    last: Mutex<Option<Instant>>,
    /// Bumped each time the target is replaced: the invalidation listener
    /// resubscribes on the new master.
    moved: tokio::sync::watch::Sender<u64>,
    /// The `+switch-master` subscription, stopped with the cache.
    switches: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(task) = self.switches.get() {
            task.abort();
        }
    }
}

/// Clears [`Follow::resolving`] if the lookup's task ends early (aborted
/// with the runtime); `None` once the task cleared it itself.
struct Resolving<'a>(Option<&'a AtomicBool>);

impl Drop for Resolving<'_> {
    fn drop(&mut self) {
        if let Some(resolving) = self.0 {
            resolving.store(false, Ordering::SeqCst);
        }
    }
}

impl Follow {
    /// Asks the sentinels for the master once (within
    /// [`lookup_within`]), and starts following it. Sentinels that do not
    /// answer are no error: until they do, the target is an address that
    /// refuses at once (calls run without L2, and each failure asks the
    /// sentinels again, once per [`MIN_GAP`]).
    pub(crate) async fn start(
        settings: Settings,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> Result<(Arc<Self>, Arc<RwLock<Target>>), redis::RedisError> {
        let mut node =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(settings.master);
        if settings.tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let lookup = SentinelClient::build(
            settings.sentinels.clone(),
            settings.master_name.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let within = lookup_within(timeout);
        let lookup = tokio::sync::Mutex::new(lookup);
        let found = {
            let mut sentinel = lookup.lock().await;
            tokio::time::timeout(within, sentinel.async_get_client()).await
        };
        let client = match found {
            Ok(Ok(client)) => {
                tracing::debug!(master = %address(&client), "the sentinels name the Redis master");
                client
            }
            // Credentials refused, by a sentinel or the master: a
            // configuration mistake, said by `build`, not an outage.
            Ok(Err(error)) if refused(&error) => return Err(error),
            Ok(Err(error)) => {
                tracing::warn!(%error, "the sentinels name no Redis master yet; running on L1 until they do");
                nowhere()?
            }
            Err(_) => {
                tracing::warn!(
                    "no sentinel answered within {within:?}; running on L1 until one does"
                );
                nowhere()?
            }
        };
        let conn = client.get_connection_manager_lazy(config.clone())?;
        let target = Arc::new(RwLock::new(Target::new(client, conn)));
        let follow = Arc::new(Self {
            lookup,
            within,
            target: target.clone(),
            config,
            resolving: AtomicBool::new(false),
            again: AtomicBool::new(false),
            last: Mutex::new(None),
            moved: tokio::sync::watch::Sender::new(0),
            switches: OnceLock::new(),
        });
        let task = tokio::spawn(watch_switches(
            Arc::downgrade(&follow),
            settings.sentinels,
            settings.master_name,
            timeout,
        ));
        let _ = follow.switches.set(task.abort_handle());
        Ok((follow, target))
    }

    /// Tells of each replacement of the target.
    pub(crate) fn moved(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Looks the master up again in the background, unless a lookup runs
    /// or ran less than [`MIN_GAP`] ago; `announced` (a sentinel said the
    /// master switched) skips the gap, and runs again after a lookup that
    /// is running (it may have asked before the switch).
    ///
    /// No announcement is lost: it is recorded (`again`) before the
    /// running flag is tried, and whoever clears the flag (a lookup that
    /// ends, or a kick that skipped) checks `again` after clearing it.
    pub(crate) fn kick(self: &Arc<Self>, announced: bool) {
        if announced {
            self.again.store(true, Ordering::SeqCst);
        }
        loop {
            if self.resolving.swap(true, Ordering::SeqCst) {
                return; // the running lookup sees `again` before it ends
            }
            let recent = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|last| last.elapsed() < MIN_GAP);
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                self.resolving.store(false, Ordering::SeqCst);
                return;
            };
            if recent && !self.again.load(Ordering::SeqCst) {
                self.resolving.store(false, Ordering::SeqCst);
                // Announced between the swap and the store: look now.
                if self.again.load(Ordering::SeqCst) {
                    continue;
                }
                return;
            }
            let this = self.clone();
            runtime.spawn(async move {
                let mut resolving = Resolving(Some(&this.resolving));
                loop {
                    this.again.store(false, Ordering::SeqCst);
                    this.follow().await;
                    *this
                        .last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                    this.resolving.store(false, Ordering::SeqCst);
                    // Announced meanwhile (before or after the store): once
                    // more, unless another kick took the flag and runs it.
                    if !this.again.load(Ordering::SeqCst)
                        || this.resolving.swap(true, Ordering::SeqCst)
                    {
                        resolving.0 = None;
                        break;
                    }
                }
            });
            return;
        }
    }

    /// One lookup; the target is replaced if the master is elsewhere now.
    async fn follow(&self) {
        let found = tokio::time::timeout(self.within, async {
            self.lookup.lock().await.async_get_client().await
        })
        .await;
        let client = match found {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                tracing::debug!(%error, "the sentinels name no Redis master");
                return;
            }
            Err(_) => {
                tracing::debug!(within = ?self.within, "no sentinel answered");
                return;
            }
        };
        let master = address(&client);
        let current = {
            let target = self
                .target
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            address(&target.client)
        };
        if master == current {
            return;
        }
        match client.get_connection_manager_lazy(self.config.clone()) {
            Ok(conn) => {
                *self
                    .target
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Target::new(client, conn);
                self.moved.send_modify(|moves| *moves += 1);
                tracing::info!(%master, previous = %current, "the Redis master moved: following it");
            }
            Err(error) => tracing::debug!(%error, "cannot make a connection to the new master"),
        }
    }
}

/// Whether Redis refused the credentials or the user's rights.
fn refused(error: &redis::RedisError) -> bool {
    crate::cache::is_auth_error(error) || error.code() == Some("NOPERM")
}

/// A client whose connections fail at once (a Unix socket in a directory
/// that does not exist): the target while no master is known.
fn nowhere() -> Result<redis::Client, redis::RedisError> {
    redis::Client::open(redis::ConnectionAddr::Unix(
        "/nonexistent/tiercache-no-redis-master-known-yet".into(),
    ))
}

/// Listens for `+switch-master` on one sentinel after another (the next
/// when one fails), and looks the master up when it is this one's: at once
/// on each (re)subscription too, as a switch may have been missed.
async fn watch_switches(
    follow: Weak<Follow>,
    sentinels: Vec<redis::ConnectionInfo>,
    name: String,
    timeout: Duration,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);
    const MIN_LASTING: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    for sentinel in sentinels.iter().cycle() {
        let subscribed = tokio::time::timeout(timeout, async {
            let client = redis::Client::open(sentinel.clone())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = subscribed else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let subscribed_at = Instant::now();
        match follow.upgrade() {
            Some(follow) => follow.kick(true),
            None => return,
        }
        let (mut sink, mut messages) = pubsub.split();
        let watched = async {
            while let Some(message) = messages.next().await {
                // "<name> <old ip> <old port> <new ip> <new port>"
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() != Some(name.as_str()) {
                    continue;
                }
                tracing::info!(switch = %payload, "a sentinel announces a new Redis master");
                match follow.upgrade() {
                    Some(follow) => follow.kick(true),
                    None => return false,
                }
            }
            true
        };
        // A sentinel that goes silent (its host gone, no FIN) is given up
        // as the invalidation listener gives up its Redis: no PONG in time.
        let go_on = tokio::select! {
            go_on = watched => go_on,
            () = crate::coherence::keepalive(&mut sink) => true,
        };
        if !go_on {
            return;
        }
        // A sentinel that takes the subscription and drops it at once is
        // not tried again in a tight loop: the back-off starts over only
        // after a subscription that lasted.
        if subscribed_at.elapsed() < MIN_LASTING {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = MIN_BACKOFF;
        }
        tracing::debug!("lost the sentinel's +switch-master subscription; trying the next");
    }
}
