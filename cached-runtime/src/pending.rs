//! Invalidations that Redis has not confirmed yet: never dropped, retried in
//! order until it does.
//!
//! An invalidation (or a write-through that could not reach Redis) is
//! applied to this instance at once and queued here *before* that, so that
//! from then on:
//!
//! - this instance serves no L2 entry it covers: an L2 read takes a
//!   [`Snapshot`] of the queue before it is sent, and refuses an entry that
//!   an invalidation queued then covers (Redis may not have it yet);
//! - it is sent to Redis in order, one sender at a time, by the caller that
//!   queued it (who learns whether Redis confirmed it) or, when that
//!   caller gave up (a timeout, Redis down, the caller cancelled), by a
//!   background task that retries with a backoff until the queue is empty.
//!
//! Invalidations skip the circuit breaker: each try is bounded by the Redis
//! timeout, and an open breaker does not refuse them. Sending one twice is
//! harmless (a second new nonce, a second tombstone, a second message).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::cache::Inner;
use crate::l2::L2Error;
use crate::tags::Invalidation;

/// One queued invalidation.
pub(crate) struct Queued {
    pub(crate) invalidation: Invalidation,
}

/// The queue of one cache.
#[derive(Default)]
pub(crate) struct Pending {
    queue: Mutex<VecDeque<Arc<Queued>>>,
    /// The queue's length, read without the lock on every L2 read.
    len: AtomicU64,
    /// One sender at a time, so that they reach Redis in order.
    sending: tokio::sync::Mutex<()>,
    /// Whether the background retrier runs.
    retrying: AtomicBool,
}

/// The invalidations that were pending when an L2 read was sent.
pub(crate) struct Snapshot(Vec<Arc<Queued>>);

impl Snapshot {
    /// Whether one of them covers the entry `key` (rendered `prefix:…`) of
    /// `prefix` with `tags`.
    pub(crate) fn covers(&self, key: &str, prefix: &str, tags: &[String]) -> bool {
        self.0.iter().any(|queued| {
            let invalidation = &queued.invalidation;
            invalidation.all
                || invalidation.keys.iter().any(|k| k == key)
                || invalidation.prefixes.iter().any(|p| p == prefix)
                || invalidation.tags.iter().any(|t| tags.contains(t))
        })
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Pending {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Arc<Queued>>> {
        // Every statement leaves the queue consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many invalidations wait for Redis.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(SeqCst)
    }

    pub(crate) fn push(&self, invalidation: Invalidation) -> Arc<Queued> {
        let queued = Arc::new(Queued { invalidation });
        let mut queue = self.queue();
        queue.push_back(queued.clone());
        self.len.store(queue.len() as u64, SeqCst);
        queued
    }

    /// What is pending now, for an L2 read about to be sent; `None` (and
    /// one atomic load) when nothing is.
    #[inline]
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        if self.len() == 0 {
            return None;
        }
        Some(Snapshot(self.queue().iter().cloned().collect()))
    }

    fn front(&self) -> Option<Arc<Queued>> {
        self.queue().front().cloned()
    }

    fn is_queued(&self, queued: &Arc<Queued>) -> bool {
        self.queue().iter().any(|q| Arc::ptr_eq(q, queued))
    }

    /// Removes `sent` from the front, where it was when it was sent.
    fn confirmed(&self, sent: &Arc<Queued>) {
        let mut queue = self.queue();
        if queue.front().is_some_and(|front| Arc::ptr_eq(front, sent)) {
            queue.pop_front();
        }
        self.len.store(queue.len() as u64, SeqCst);
    }

    /// Sends the queue to Redis in order, up to and including `until`
    /// (everything, with `None`). `Ok` once it is confirmed; the first
    /// failure stops the sending, and what is left stays queued.
    async fn send(&self, inner: &Inner, until: Option<&Arc<Queued>>) -> Result<(), L2Error> {
        let Some(l2) = &inner.l2 else { return Ok(()) };
        let _sending = self.sending.lock().await;
        if until.is_some_and(|until| !self.is_queued(until)) {
            return Ok(()); // another sender had it confirmed
        }
        while let Some(front) = self.front() {
            let invalidation = &front.invalidation;
            let names = &inner.names;
            let mut versions: Vec<String> =
                invalidation.tags.iter().map(|t| names.tag(t)).collect();
            versions.extend(invalidation.prefixes.iter().map(|p| names.prefix(p)));
            if invalidation.all {
                versions.push(names.namespace_version());
            }
            let entries: Vec<String> = invalidation.keys.iter().map(|k| names.entry(k)).collect();
            let message = serde_json::to_vec(invalidation).unwrap_or_default();
            if let Err(error) = l2
                .invalidate(&versions, &entries, &names.channel(), &message)
                .await
            {
                inner.counters.redis_failed(&error);
                return Err(error);
            }
            self.confirmed(&front);
            if until.is_some_and(|until| Arc::ptr_eq(until, &front)) {
                break;
            }
        }
        Ok(())
    }

    /// Sends the queue up to `queued`, its own invalidation: what an
    /// invalidating caller waits for.
    pub(crate) async fn send_through(
        &self,
        inner: &Inner,
        queued: &Arc<Queued>,
    ) -> Result<(), L2Error> {
        self.send(inner, Some(queued)).await
    }

    /// Makes sure the background retrier runs while anything is queued.
    pub(crate) fn retry_in_background(inner: &Arc<Inner>) {
        let pending = &inner.pending;
        if pending.len() == 0 || pending.retrying.swap(true, SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry on: the next invalidation sends it first.
            pending.retrying.store(false, SeqCst);
            return;
        };
        let inner = inner.clone();
        runtime.spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                match inner.pending.send(&inner, None).await {
                    Ok(()) => backoff = MIN_BACKOFF,
                    Err(error) => {
                        tracing::debug!(%error, "pending invalidation not confirmed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                inner.pending.retrying.store(false, SeqCst);
                // Queued after the last look, before the flag was lowered:
                // nobody else will start a retrier for it.
                if inner.pending.len() == 0 || inner.pending.retrying.swap(true, SeqCst) {
                    return;
                }
            }
        });
    }
}

/// Starts the background retrier when dropped, unless disarmed: an
/// invalidating caller that gives up, or is cancelled, leaves its
/// invalidation to it.
pub(crate) struct RetryOnDrop<'a> {
    inner: &'a Arc<Inner>,
    armed: bool,
}

impl<'a> RetryOnDrop<'a> {
    pub(crate) fn new(inner: &'a Arc<Inner>) -> Self {
        Self { inner, armed: true }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for RetryOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            Pending::retry_in_background(self.inner);
        }
    }
}
