//! Invalidations that Redis has not confirmed yet: never dropped, retried
//! until it does.
//!
//! An invalidation (or a write-through that could not reach Redis) is
//! applied to this instance at once and queued here *before* that, so that
//! from then on:
//!
//! - this instance serves no L2 entry it covers: an L2 read takes a
//!   [`Snapshot`] of the queue before it is sent, and refuses an entry that
//!   an invalidation queued then covers (Redis may not have it yet);
//! - it is sent to Redis by the caller that queued it (who learns whether
//!   Redis confirmed it) or, when that caller gave up (a timeout, Redis
//!   down, the caller cancelled), by a background task that retries with a
//!   backoff until the queue is empty.
//!
//! One sender at a time sends everything queued in one pipeline: new
//! nonces and tombstones commute, so a batch is as good as its parts in
//! order, and a burst of invalidations costs a round trip per batch, not
//! per invalidation. Past [`MAX_PENDING`] (a long outage), the queue is
//! merged into one invalidation that covers them all: their tags, and
//! their keys' prefixes; the whole namespace if that still names too
//! much. Waiting for another sender is bounded by the Redis timeout, and a
//! caller whose invalidation was in a batch that failed meanwhile is told
//! at once (the retrier sends it).
//!
//! Invalidations skip the circuit breaker: each try is bounded by the Redis
//! timeout, and an open breaker does not refuse them. Sending one twice is
//! harmless (a second new nonce, a second tombstone, a second message).
//!
//! The retrier holds the cache while anything is queued: a cache dropped
//! during an outage keeps retrying until Redis confirms what it owes, then
//! lets go. [`Cache::flush_invalidations`](crate::Cache::flush_invalidations)
//! sends the queue now, for a process about to exit.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::cache::Inner;
use crate::l2::L2Error;
use crate::tags::Invalidation;

/// How many invalidations may wait for Redis before they are merged into
/// one invalidation of the whole namespace.
pub(crate) const MAX_PENDING: usize = 1024;

/// One queued invalidation.
pub(crate) struct Queued {
    pub(crate) invalidation: Invalidation,
    /// Its place in the queue: it is confirmed once everything up to it is.
    seq: u64,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Arc<Queued>>,
    /// The `seq` of the next invalidation queued.
    next: u64,
}

/// The queue of one cache.
#[derive(Default)]
pub(crate) struct Pending {
    queue: Mutex<Queue>,
    /// The queue's length, read without the lock on every L2 read.
    len: AtomicU64,
    /// Every invalidation with a `seq` below this is confirmed.
    confirmed: AtomicU64,
    /// Every invalidation with a `seq` below this was in a batch that
    /// failed: its sender need not try again at once (the retrier will).
    failed: AtomicU64,
    /// One sender at a time.
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
        self.0
            .iter()
            .any(|queued| covers(&queued.invalidation, key, prefix, tags))
    }
}

fn covers(invalidation: &Invalidation, key: &str, prefix: &str, tags: &[String]) -> bool {
    invalidation.all
        || invalidation.keys.iter().any(|k| k == key)
        || invalidation.prefixes.iter().any(|p| p == prefix)
        || invalidation.tags.iter().any(|t| tags.contains(t))
}

/// One invalidation covering all of `batch`.
fn merged(batch: &[Arc<Queued>], sender: u64) -> Invalidation {
    if batch.iter().any(|queued| queued.invalidation.all) {
        return Invalidation {
            sender,
            all: true,
            ..Invalidation::default()
        };
    }
    let union = |part: fn(&Invalidation) -> &Vec<String>| -> Vec<String> {
        let names: BTreeSet<&String> = batch
            .iter()
            .flat_map(|queued| part(&queued.invalidation))
            .collect();
        names.into_iter().cloned().collect()
    };
    Invalidation {
        sender,
        tags: union(|i| &i.tags),
        keys: union(|i| &i.keys),
        prefixes: union(|i| &i.prefixes),
        all: false,
    }
}

/// `invalidation` with its keys replaced by their prefixes (a key is
/// rendered `prefix:…`, and no prefix holds a `:`), and, if that still
/// names more than half of [`MAX_PENDING`] tags and prefixes, by the whole
/// namespace: coarser, never narrower.
fn coarsened(invalidation: &Invalidation) -> Invalidation {
    let sender = invalidation.sender;
    let mut prefixes: BTreeSet<String> = invalidation.prefixes.iter().cloned().collect();
    for key in &invalidation.keys {
        let prefix = key.split(':').next().unwrap_or(key);
        prefixes.insert(prefix.to_owned());
    }
    if invalidation.all || invalidation.tags.len() + prefixes.len() > MAX_PENDING / 2 {
        return Invalidation {
            sender,
            all: true,
            ..Invalidation::default()
        };
    }
    Invalidation {
        sender,
        tags: invalidation.tags.clone(),
        keys: Vec::new(),
        prefixes: prefixes.into_iter().collect(),
        all: false,
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Pending {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every statement leaves the queue consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many invalidations wait for Redis.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(SeqCst)
    }

    /// Queues an invalidation sent by `sender` (this instance).
    pub(crate) fn push(&self, invalidation: Invalidation, sender: u64) -> Arc<Queued> {
        let mut queue = self.queue();
        let seq = queue.next;
        queue.next += 1;
        let queued = if queue.items.len() >= MAX_PENDING {
            // A long outage: one invalidation stands for all of them (and
            // for this one), confirmed when it is.
            let mut items: Vec<Arc<Queued>> = queue.items.drain(..).collect();
            items.push(Arc::new(Queued { invalidation, seq }));
            let coarser = coarsened(&merged(&items, sender));
            tracing::warn!(
                pending = items.len(),
                all = coarser.all,
                "too many invalidations wait for Redis: merged into one of their prefixes and tags"
            );
            Arc::new(Queued {
                invalidation: coarser,
                seq,
            })
        } else {
            Arc::new(Queued { invalidation, seq })
        };
        queue.items.push_back(queued.clone());
        self.len.store(queue.items.len() as u64, SeqCst);
        queued
    }

    /// What is pending now, for an L2 read about to be sent; `None` (and
    /// one atomic load) when nothing is.
    #[inline]
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        if self.len() == 0 {
            return None;
        }
        Some(Snapshot(self.queue().items.iter().cloned().collect()))
    }

    fn is_confirmed(&self, queued: &Queued) -> bool {
        self.confirmed.load(SeqCst) > queued.seq
    }

    /// Removes `sent` from the front, where it was when it was sent.
    fn confirm(&self, sent: &[Arc<Queued>]) {
        let mut queue = self.queue();
        for sent in sent {
            if queue.items.front().is_some_and(|f| Arc::ptr_eq(f, sent)) {
                queue.items.pop_front();
            }
        }
        if let Some(last) = sent.last() {
            self.confirmed.fetch_max(last.seq + 1, SeqCst);
        }
        self.len.store(queue.items.len() as u64, SeqCst);
    }

    /// Sends what is queued to Redis, one batch per round trip, until
    /// `until` is confirmed (everything, with `None`). The first failure
    /// stops the sending, and what is left stays queued.
    async fn send(&self, inner: &Inner, until: Option<&Queued>) -> Result<(), L2Error> {
        let Some(l2) = &inner.l2 else { return Ok(()) };
        // Waiting for another sender is bounded too: behind a Redis that
        // does not answer, a thousand invalidations must not wait a
        // thousand timeouts each.
        let timeout = l2.timeout();
        let Ok(_sending) = tokio::time::timeout(timeout, self.sending.lock()).await else {
            return Err(L2Error::Busy(timeout));
        };
        loop {
            if until.is_some_and(|until| self.is_confirmed(until)) {
                return Ok(()); // another sender had it confirmed
            }
            if until.is_some_and(|until| self.failed.load(SeqCst) > until.seq) {
                // Tried meanwhile, in another sender's batch, and failed.
                return Err(L2Error::Busy(timeout));
            }
            let batch: Vec<Arc<Queued>> = self.queue().items.iter().cloned().collect();
            if batch.is_empty() {
                return Ok(());
            }
            let invalidation = merged(&batch, inner.id);
            let names = &inner.names;
            let mut versions: Vec<String> =
                invalidation.tags.iter().map(|t| names.tag(t)).collect();
            versions.extend(invalidation.prefixes.iter().map(|p| names.prefix(p)));
            if invalidation.all {
                versions.push(names.namespace_version());
            }
            let entries: Vec<String> = invalidation.keys.iter().map(|k| names.entry(k)).collect();
            let message = serde_json::to_vec(&invalidation).unwrap_or_default();
            if let Err(error) = l2
                .invalidate(&versions, &entries, &names.channel(), &message)
                .await
            {
                inner.counters.redis_failed(&error);
                if let Some(last) = batch.last() {
                    self.failed.fetch_max(last.seq + 1, SeqCst);
                }
                return Err(error);
            }
            self.confirm(&batch);
            inner.metrics.pending(|| self.len());
        }
    }

    /// Sends the queue up to `queued`, its own invalidation: what an
    /// invalidating caller waits for.
    pub(crate) async fn send_through(&self, inner: &Inner, queued: &Queued) -> Result<(), L2Error> {
        self.send(inner, Some(queued)).await
    }

    /// Sends everything queued now: for
    /// [`Cache::flush_invalidations`](crate::Cache::flush_invalidations).
    pub(crate) async fn send_all(&self, inner: &Inner) -> Result<(), L2Error> {
        self.send(inner, None).await
    }

    /// Makes sure the background retrier runs while anything is queued.
    pub(crate) fn retry_in_background(inner: &Arc<Inner>) {
        let pending = &inner.pending;
        if pending.len() == 0 || pending.retrying.swap(true, SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry on: the next invalidation, or
            // `flush_invalidations`, sends it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keys: &[&str]) -> Invalidation {
        Invalidation {
            keys: keys.iter().map(|&k| k.to_owned()).collect(),
            ..Invalidation::default()
        }
    }

    #[test]
    fn a_batch_merges_into_one_invalidation() {
        let pending = Pending::default();
        pending.push(keys(&["u:1", "u:2"]), 7);
        pending.push(keys(&["u:2"]), 7);
        pending.push(
            Invalidation {
                tags: vec!["org:1".into()],
                ..Invalidation::default()
            },
            7,
        );
        let batch: Vec<_> = pending.queue().items.iter().cloned().collect();
        let one = merged(&batch, 7);
        assert_eq!(one.keys, ["u:1", "u:2"]);
        assert_eq!(one.tags, ["org:1"]);
        assert_eq!(one.sender, 7);
        let snapshot = pending.snapshot().expect("pending");
        assert!(snapshot.covers("u:2", "u", &[]));
        assert!(snapshot.covers("x:9", "x", &["org:1".into()]));
        assert!(!snapshot.covers("u:3", "u", &[]));
    }

    #[test]
    fn past_the_bound_keys_become_their_prefixes() {
        let pending = Pending::default();
        let first = pending.push(keys(&["u:0"]), 7);
        for i in 1..=MAX_PENDING {
            pending.push(keys(&[&format!("u:{i}")]), 7);
        }
        assert_eq!(pending.len(), 1);
        let snapshot = pending.snapshot().expect("pending");
        assert!(snapshot.covers("u:99999", "u", &[]), "the prefix");
        assert!(!snapshot.covers("other:1", "other", &[]), "no more");
        let batch: Vec<_> = pending.queue().items.iter().cloned().collect();
        assert!(!pending.is_confirmed(&first));
        pending.confirm(&batch);
        assert!(pending.is_confirmed(&first), "confirmed by the merged one");
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn past_the_bound_many_names_become_the_namespace() {
        let pending = Pending::default();
        for i in 0..=MAX_PENDING {
            let tag = Invalidation {
                tags: vec![format!("t:{i}")],
                ..Invalidation::default()
            };
            pending.push(tag, 7);
        }
        assert_eq!(pending.len(), 1);
        let snapshot = pending.snapshot().expect("pending");
        assert!(snapshot.covers("anything:1", "anything", &[]));
    }
}
