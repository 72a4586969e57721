//! L1 coherence across instances: invalidations travel over Redis pub/sub.
//!
//! Each cache with Redis runs one listener task on a dedicated pub/sub
//! connection, subscribed to its namespace's channel. A message names tags,
//! keys, prefixes or the whole namespace; the listener drops the matching L1
//! entries. Messages from this instance are skipped: it applied them before
//! publishing.
//!
//! The same connection carries the landing messages of the cross-process
//! load lock (see [`crate::lock`]): they wake this instance's callers that
//! wait for another process's load.
//!
//! A listener that loses its connection may have missed messages, so it
//! drops the whole L1 at once (and wakes every caller waiting for a landing),
//! and again when it is subscribed anew: after that, only values loaded or
//! read from L2 since (where tag versions are checked) are served from L1.
//! While Redis is down L1 keeps serving what it loads meanwhile: nobody can
//! invalidate through a Redis that is down.
//!
//! A connection can also die silently: a network partition leaves it
//! half-open, no FIN, no RST, and a listener that only waits for messages
//! would wait forever. So the listener PINGs its connection every
//! [`PING_EVERY`] (answered with a `pong` message on a subscribed
//! connection) and gives the connection up when a PONG takes longer than
//! [`PONG_WITHIN`]: a connection that goes silent is counted as lost
//! (`subscription_losses`), and L1 dropped, within
//! [`LOSS_DETECTED_WITHIN`] (3 s) of the silence, then the listener
//! resubscribes with backoff. A Redis that answers nothing for that long
//! (a `CLIENT PAUSE`, a long script) cannot be told apart, and is handled
//! the same way.
//!
//! Each subscription is made with the cache's current client: with
//! Sentinel, the master's. When the sentinels name another master the
//! listener gives its subscription up (a loss, as above: what was
//! published on the old master meanwhile may be missed) and subscribes on
//! the new one.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::Notify;

use crate::cache::Inner;
use crate::stats::Counters;
use crate::tags::Invalidation;

/// A connection that goes silent is noticed (counted in
/// `subscription_losses`, L1 dropped, waiters woken) at most this long after
/// (give or take the scheduler): the next PING is sent within
/// [`PING_EVERY`] of the last PONG, and waits [`PONG_WITHIN`] for its own;
/// a PING already in flight waits no longer.
const LOSS_DETECTED_WITHIN: Duration = Duration::from_secs(3);

/// How often the listener PINGs its connection (some 34 bytes there and
/// back per instance, a trivial command for Redis).
const PING_EVERY: Duration = Duration::from_secs(1);

/// How long a PING waits for its PONG before the connection is given up:
/// far longer than a round trip to a Redis that works. (redis-rs's
/// connection task reads the PONG, not behind this listener's work.)
const PONG_WITHIN: Duration = LOSS_DETECTED_WITHIN.saturating_sub(PING_EVERY);

/// Starts the listener of a cache with Redis; `subscribed` is notified
/// each time it (re)subscribes.
pub(crate) fn spawn(
    inner: Weak<Inner>,
    channel: String,
    subscribed: Arc<Notify>,
) -> tokio::task::AbortHandle {
    tokio::spawn(listen(inner, channel, subscribed)).abort_handle()
}

async fn listen(inner: Weak<Inner>, channel: String, subscribed: Arc<Notify>) {
    let Some(landed) = inner.upgrade().map(|i| i.names.landed_channel()) else {
        return;
    };
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        // The watch first: a move after the client is taken is noticed.
        let Some((timeout, mut moved, client)) = inner.upgrade().and_then(|i| {
            let l2 = i.l2.as_ref()?;
            Some((l2.timeout(), l2.moved(), l2.client()))
        }) else {
            return;
        };
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            pubsub.subscribe(&landed).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                // Refused, not unreachable: said once per failing stretch,
                // loud enough to be seen (this instance hears no
                // invalidation meanwhile).
                if backoff == MIN_BACKOFF && error.code().is_some() {
                    tracing::warn!(%error, "Redis refuses the invalidation subscription; retrying");
                } else {
                    tracing::debug!(%error, "cannot subscribe to invalidations; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        match inner.upgrade() {
            // Whatever was published while we were not listening is lost.
            Some(inner) => {
                inner.forget_l1();
                inner.landings.wake_all();
            }
            None => return,
        }
        subscribed.notify_waiters();
        let (mut sink, mut messages) = pubsub.split();
        let lost = tokio::select! {
            () = deliver(&inner, &landed, &mut messages) => "the connection closed",
            () = keepalive(&mut sink) => "the connection went silent (no PONG)",
            () = master_moved(moved.as_mut()) => "the master moved (Sentinel)",
        };
        // Dropping both halves closes the connection.
        drop((sink, messages));
        let Some(inner) = inner.upgrade() else { return };
        crate::observe::warn_throttled!(
            reason = lost,
            "lost the invalidation subscription; dropping L1 and resubscribing"
        );
        inner.forget_l1();
        inner.landings.wake_all();
        inner.counters.subscription_losses.fetch_add(1, Relaxed);
        inner.metrics.subscription_lost();
    }
}

/// Applies the messages of one connection until it closes (or the cache is
/// gone).
async fn deliver(inner: &Weak<Inner>, landed: &str, messages: &mut PubSubStream) {
    while let Some(message) = messages.next().await {
        let Some(inner) = inner.upgrade() else { return };
        if message.get_channel_name() == landed {
            // Another process's load of a key this one may wait for.
            if let Ok(key) = std::str::from_utf8(message.get_payload_bytes()) {
                inner.landings.landed(key);
            }
            continue;
        }
        match serde_json::from_slice::<Invalidation>(message.get_payload_bytes()) {
            Ok(invalidation) if invalidation.sender != inner.id => {
                inner.apply_locally(&invalidation);
                Counters::bump(&inner.counters.remote_invalidations);
                inner.metrics.invalidation_received();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "ignoring a foreign message on the invalidation channel")
            }
        }
    }
}

/// Returns when the sentinels named another master; never without Sentinel.
async fn master_moved(moved: Option<&mut tokio::sync::watch::Receiver<u64>>) {
    match moved {
        // An error: the cache is gone (the listener stops next).
        Some(moved) => drop(moved.changed().await),
        None => std::future::pending().await,
    }
}

/// PINGs the connection every [`PING_EVERY`]; returns once a PONG has not
/// come within [`PONG_WITHIN`], or the PING failed.
pub(crate) async fn keepalive(sink: &mut PubSubSink) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PONG_WITHIN, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "the invalidation subscription's PING failed");
                return;
            }
            Err(_) => return,
        }
    }
}
