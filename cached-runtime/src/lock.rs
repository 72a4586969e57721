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
use std::sync::{Arc, Mutex, PoisonError, Weak};
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
            notify: Some(notify),
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
    /// `None` only while it is dropped.
    notify: Option<Arc<Notify>>,
}

impl Watch<'_> {
    /// Create a `notified()` future from this and `enable` it *before*
    /// trying the lock, so a landing in between is not missed.
    pub(crate) fn notify(&self) -> &Notify {
        match &self.notify {
            Some(notify) => notify,
            None => unreachable!("only the drop takes it"),
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let Some(ours) = self.notify.take() else {
            return;
        };
        let weak = Arc::downgrade(&ours);
        drop(ours); // our reference, gone (shadowing it would keep it)
        let mut map = self.landings.map();
        // Only the map's own reference left: nobody else waits. (Counted
        // with ours dropped first, so two watches that go at once cannot
        // each see the other and both keep the entry.)
        if map
            .get(&self.key)
            .is_some_and(|n| Weak::ptr_eq(&Arc::downgrade(n), &weak) && Arc::strong_count(n) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// A lock tried or held: renewed in the background while held, and
/// released (compare-and-delete: harmless if it is not ours) when dropped
/// before the write that releases it succeeded. An attempt is a lease from
/// before its `acquire` is sent: an `acquire` that timed out, or whose
/// caller was cancelled, may still take the lock in Redis, and would
/// otherwise leave it held by nobody for a whole lease.
pub(crate) struct Lease {
    cache: Cache,
    pub(crate) lock_key: String,
    waiters_key: String,
    pub(crate) token: String,
    /// The landing message: the entry's `prefix:…` key.
    pub(crate) key: String,
    renewal: Option<tokio::task::AbortHandle>,
    released: bool,
    /// The connection the lock is tried over, for its release.
    conn: redis::aio::ConnectionManager,
}

impl Lease {
    /// A lock about to be tried with `token`.
    /// `conn`: the connection the attempt goes over (see `L2::release`).
    pub(crate) fn attempt(
        cache: &Cache,
        (lock_key, token, key): (String, String, String),
        conn: redis::aio::ConnectionManager,
    ) -> Self {
        Self {
            cache: cache.clone(),
            waiters_key: crate::l2::waiters_key(&lock_key),
            lock_key,
            token,
            key,
            renewal: None,
            released: false,
            conn,
        }
    }

    /// Another holds it: nothing of ours to release.
    pub(crate) fn not_taken(mut self) {
        self.released = true;
    }

    /// Taken for `lease`: renewed from now on, every third of it.
    pub(crate) fn taken(mut self, lease: Duration) -> Self {
        let renewal = {
            let (cache, lock_key, token) = (
                self.cache.clone(),
                self.lock_key.clone(),
                self.token.clone(),
            );
            tokio::spawn(async move {
                let Some(l2) = &cache.inner.l2 else { return };
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await; // the first tick is now
                loop {
                    tick.tick().await;
                    match l2.renew(&lock_key, &token, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            crate::observe::warn_throttled!(
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
        self.renewal = Some(renewal);
        self
    }

    /// The lock as the write that releases it needs it. Renewal stops;
    /// the lock counts as released only once that write succeeded
    /// ([`Lease::released`]): if it fails, dropping the lease releases it.
    pub(crate) fn held<'a>(&'a self, channel: &'a str) -> Held<'a> {
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
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
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
        if self.released {
            return;
        }
        // Given up without a write (error, nothing to store, cancelled):
        // release now so that the waiters go on at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cache, lock_key, waiters_key, token, key, conn) = (
            self.cache.clone(),
            std::mem::take(&mut self.lock_key),
            std::mem::take(&mut self.waiters_key),
            std::mem::take(&mut self.token),
            std::mem::take(&mut self.key),
            self.conn.clone(),
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
            if let Err(error) = l2.release(held, conn).await {
                tracing::debug!(%error, "lock release failed; it expires with its lease");
            }
        });
    }
}

/// A random lock token.
pub(crate) fn token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(landings: &Landings) -> Vec<String> {
        let mut keys: Vec<String> = landings.map().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_watch_leaves_no_entry_once_nobody_waits() {
        let landings = Landings::default();
        drop(landings.watch("p:1"));
        let (a, b) = (landings.watch("p:2"), landings.watch("p:2"));
        drop(a);
        assert_eq!(waiting(&landings), ["p:2"], "b still waits");
        drop(b);
        assert!(waiting(&landings).is_empty(), "{:?}", waiting(&landings));
    }
}
