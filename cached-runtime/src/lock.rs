//! The cross-process load lock: one loader per key across all processes.
//!
//! In-process single-flight (see [`crate::flight`]) leaves one leader per
//! key and process; the leaders of all processes then race for a lease in
//! Redis (`{ns}:#lock:{prefix}:{key}`):
//!
//! - **Acquire**: `SET lock token NX PX lease` with a random token; a loser
//!   learns the time left on the holder's lease (one script, one round
//!   trip).
//! - **Renew**: while the loader runs, every third of the lease the holder
//!   extends it, only if the token is still its own; a holder that dies
//!   stops renewing and its lease runs out.
//! - **Release**: compare-and-delete, then, if a loser raised the lock's
//!   waiter flag (`…#w`), `PUBLISH` the entry's key on `{ns}:#landed`: in
//!   the same script as the write of the value, so a waiter that hears it
//!   finds the value in Redis, and an uncontended miss publishes nothing. A holder that gives up
//!   (error, panic, cancelled) releases in the background.
//! - **Wait**: a loser waits for the landing message (delivered by the
//!   instance's pub/sub listener, see [`crate::coherence`]) or for the
//!   holder's lease to run out, whichever comes first, then reads Redis
//!   again and retries the lock. It stops waiting after the cache's
//!   `lock_wait` and then serves a fail-safe value, or loads itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cache::Cache;
use crate::l2::Held;

/// The keys this instance is waiting on for another process's load.
#[derive(Default)]
pub(crate) struct Landings {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Landings {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts listening for the landing of `key`.
    pub(crate) fn watch(&self, key: &str) -> Watch<'_> {
        let notify = self.map().entry(key.to_owned()).or_default().clone();
        Watch {
            landings: self,
            key: key.to_owned(),
            notify,
        }
    }

    /// Wakes whoever waits for `key`: its value landed in Redis.
    pub(crate) fn landed(&self, key: &str) {
        if let Some(notify) = self.map().get(key) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter: landing messages may have been missed.
    pub(crate) fn wake_all(&self) {
        for notify in self.map().values() {
            notify.notify_waiters();
        }
    }
}

/// Interest in the landing of one key; see [`Watch::notify`].
pub(crate) struct Watch<'a> {
    landings: &'a Landings,
    key: String,
    notify: Arc<Notify>,
}

impl Watch<'_> {
    /// Create a `notified()` future from this and `enable` it *before*
    /// trying the lock, so a landing in between is not missed.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.landings.map();
        // The map's own reference and ours: nobody else waits.
        if map
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

/// A held lock, renewed in the background until it is released.
pub(crate) struct Lease {
    cache: Cache,
    pub(crate) lock_key: String,
    waiters_key: String,
    pub(crate) token: String,
    /// The landing message: the entry's `prefix:…` key.
    pub(crate) key: String,
    renewal: tokio::task::AbortHandle,
    released: bool,
}

impl Lease {
    /// Starts renewing a lock just taken with `token` for `lease`.
    pub(crate) fn start(
        cache: &Cache,
        lock_key: String,
        token: String,
        key: String,
        lease: Duration,
    ) -> Self {
        let renewal = {
            let (cache, lock_key, token) = (cache.clone(), lock_key.clone(), token.clone());
            tokio::spawn(async move {
                let Some(l2) = &cache.inner.l2 else { return };
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await; // the first tick is now
                loop {
                    tick.tick().await;
                    match l2.renew(&lock_key, &token, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                lock = lock_key,
                                "the load lock's lease ran out before the load ended; another process may load too"
                            );
                            return;
                        }
                        Err(error) => tracing::debug!(%error, "lease renewal failed"),
                    }
                }
            })
            .abort_handle()
        };
        Self {
            cache: cache.clone(),
            waiters_key: crate::l2::waiters_key(&lock_key),
            lock_key,
            token,
            key,
            renewal,
            released: false,
        }
    }

    /// The lock as the write that releases it needs it. Renewal stops;
    /// the lock counts as released only once that write succeeded
    /// ([`Lease::released`]): if it fails, dropping the lease releases it.
    pub(crate) fn held<'a>(&'a self, channel: &'a str) -> Held<'a> {
        self.renewal.abort();
        Held {
            lock_key: &self.lock_key,
            waiters_key: &self.waiters_key,
            token: &self.token,
            channel,
            message: &self.key,
        }
    }

    /// The write that releases the lock succeeded: nothing to do on drop.
    pub(crate) fn released(&mut self) {
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        // Given up without a write (error, nothing to store, cancelled):
        // release now so that the waiters go on at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cache, lock_key, waiters_key, token, key) = (
            self.cache.clone(),
            std::mem::take(&mut self.lock_key),
            std::mem::take(&mut self.waiters_key),
            std::mem::take(&mut self.token),
            std::mem::take(&mut self.key),
        );
        runtime.spawn(async move {
            let Some(l2) = &cache.inner.l2 else { return };
            let channel = cache.inner.names.landed_channel();
            let held = Held {
                lock_key: &lock_key,
                waiters_key: &waiters_key,
                token: &token,
                channel: &channel,
                message: &key,
            };
            if let Err(error) = l2.release(held).await {
                tracing::debug!(%error, "lock release failed; it expires with its lease");
            }
        });
    }
}

/// A random lock token.
pub(crate) fn token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
