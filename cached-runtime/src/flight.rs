//! In-process single-flight: one load per key, however many callers.
//!
//! The first caller of a cold key becomes the [`Leader`]; later callers get a
//! receiver and wait to be notified. The leader publishes what it found
//! ([`Landed`]) before it returns. If it fails, panics or is cancelled (its
//! caller dropped the future), its sender is dropped instead: the waiters wake
//! up with nothing and try again, one of them becoming the next leader. A
//! failing load is therefore retried by the waiters one at a time, never by
//! all of them at once; an error value is never shared, since it belongs to
//! the caller whose body produced it.
//!
//! The leader is the one place where a cross-process lock can be taken: a
//! caller only loads while it holds a [`Leader`]. A leader owns its place in
//! the map (an `Arc`), so it can move into a background task: a refresh, or
//! a load that goes on after its caller stopped waiting. Such a leader may
//! [`offer`](Leader::offer) a fail-safe value to the waiters before it lands
//! the real one.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use crate::generations::Snapshot;

/// Where the value a flight landed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    L2,
    Load,
    /// An old value served because the load failed or is slow.
    FailSafe,
    /// A value past its fresh period read from Redis, offered while the
    /// leader refreshes it (`stale`).
    Stale,
}

impl Source {
    /// How a call answered with a value from here was answered.
    pub(crate) fn answer(self) -> crate::observe::Answer {
        use crate::observe::Answer;
        match self {
            Source::L2 => Answer::L2,
            Source::Load => Answer::Load,
            Source::FailSafe => Answer::FailSafe,
            Source::Stale => Answer::L2Stale,
        }
    }
}

/// A value shared between L1 and a flight's waiters: an `Arc` around the
/// function's value type.
pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

/// What a successful flight hands to its waiters.
#[derive(Clone)]
pub(crate) enum Landed {
    /// A value (an `Arc` around the function's value type).
    Value(Shared, Source),
    /// The load succeeded with "nothing" (`None`, `Ok(None)`).
    Absent,
}

/// One flight: what its callers take (the first value offered or landed),
/// and whether its leader is done. Waiters are woken through `notify`.
#[derive(Default)]
pub(crate) struct Flight {
    state: Mutex<State>,
    notify: Notify,
    /// Taken by the one waiter that loads when the leader is slower than
    /// `lock_wait` (see [`Flight::relieve`]).
    relieved: std::sync::atomic::AtomicBool,
    /// What the leader's value depends on, as it was before the leader
    /// read anything: once an invalidation outdates it, callers arriving
    /// since start a new flight instead of taking a value from before it.
    generations: std::sync::OnceLock<Snapshot>,
    /// Led by a batch (see [`Flights::join_batch`]).
    batch: bool,
}

#[derive(Default)]
struct State {
    landed: Option<Landed>,
    /// Until when a value offered before the flight is done may be taken
    /// by callers who join from then on (the end of its stale or
    /// fail-safe window, or of its fresh period).
    offered_until: Option<Instant>,
    done: bool,
}

impl Flight {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every write leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.notify.notify_waiters();
    }
}

impl Flight {
    /// For a waiter that waited `lock_wait` for the leader: whether it is
    /// the one (per flight, so per process and key) that loads meanwhile.
    /// The others keep waiting, for the leader or for it.
    /// Whether a batch leads it: another batch does not wait for it (two
    /// batches that each waited for a key the other leads would both wait
    /// `lock_wait`), it loads the key too.
    pub(crate) fn led_by_batch(&self) -> bool {
        self.batch
    }

    pub(crate) fn relieve(&self) -> bool {
        !self
            .relieved
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Hands a value to the waiters now, and to callers that join until
    /// `until`, while the flight goes on.
    fn offer(&self, landed: Landed, until: Instant) {
        self.update(|state| {
            state.landed = Some(landed);
            state.offered_until = Some(until);
        });
    }

    /// Whether a caller arriving now may join: nothing invalidated what
    /// the leader read, and no value it offered has outlived its window.
    fn joinable(&self) -> bool {
        let current = self.generations.get().is_none_or(Snapshot::is_current);
        let offer_valid = {
            let state = self.state();
            state
                .offered_until
                .is_none_or(|until| until > Instant::now())
        };
        current && offer_valid
    }
}

/// What the callers of a flight wait on.
pub(crate) type Slot = Arc<Flight>;

/// Keyed by the cache key; the hasher is fast, not DoS-resistant, like the
/// L1's (keys are the application's own).
type Map = Arc<Mutex<HashMap<Arc<str>, Slot, foldhash::fast::RandomState>>>;

#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Map,
    /// Keys whose background refresh failed, until when no other starts.
    backoff: Mutex<Backoff>,
}

/// Keys whose background refresh failed, pruned of the ones past their
/// pause as the map grows (doubling, so a burst of failures costs
/// amortized O(1) each).
struct Backoff {
    until: HashMap<Arc<str>, Instant, foldhash::fast::RandomState>,
    prune_at: usize,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            until: HashMap::default(),
            prune_at: 1024,
        }
    }
}

pub(crate) enum Role {
    Leader(Leader),
    Waiter(Slot),
}

fn lock(map: &Map) -> MutexGuard<'_, HashMap<Arc<str>, Slot, foldhash::fast::RandomState>> {
    // The map is consistent after every statement; a panic elsewhere while
    // it was held does not make it unsafe to use.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Flights {
    /// Joins the flight for `key`, or starts one. A flight an invalidation
    /// outdated since its leader began is not joined: the caller leads a
    /// new one (the old one's callers, who came before the invalidation,
    /// still get its value).
    pub(crate) fn join(&self, key: &str) -> Role {
        self.join_as(key, false)
    }

    /// [`Flights::join`] for a batch: a flight it starts is marked as
    /// one (see [`Flight::led_by_batch`]).
    pub(crate) fn join_batch(&self, key: &str) -> Role {
        self.join_as(key, true)
    }

    fn join_as(&self, key: &str, batch: bool) -> Role {
        let mut map = lock(&self.in_flight);
        if let Some(slot) = map.get(key)
            && slot.joinable()
        {
            return Role::Waiter(slot.clone());
        }
        let key: Arc<str> = key.into();
        let flight = Slot::new(Flight {
            batch,
            ..Flight::default()
        });
        map.insert(key.clone(), flight.clone());
        Role::Leader(Leader {
            map: self.in_flight.clone(),
            key,
            flight,
            relief: false,
        })
    }

    /// Whether a load of `key` is under way (that an invalidation did not
    /// outdate).
    pub(crate) fn busy(&self, key: &str) -> bool {
        lock(&self.in_flight)
            .get(key)
            .is_some_and(|slot| slot.joinable())
    }

    /// Whether a background refresh of `key` failed less than its pause
    /// ago.
    pub(crate) fn backing_off(&self, key: &str) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff
            .until
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    /// A background refresh of `key` failed: no other starts for `pause`.
    pub(crate) fn back_off(&self, key: &str, pause: std::time::Duration) {
        let now = Instant::now();
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        if backoff.until.len() >= backoff.prune_at {
            backoff.until.retain(|_, until| *until > now);
            backoff.prune_at = (backoff.until.len() * 2).max(1024);
        }
        backoff
            .until
            .insert(key.into(), crate::spec::later(now, pause));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

/// Waits until `look` finds what it waits for in the flight's state.
async fn watch<T>(slot: &Slot, look: impl Fn(&State) -> Option<T>) -> T {
    loop {
        // Listening before looking: an update in between is not missed.
        let notified = slot.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(found) = look(&slot.state()) {
            return found;
        }
        notified.await;
    }
}

/// Waits for the flight to end (landed or given up): for a caller that
/// cannot take what it offered (a value of another type).
pub(crate) async fn wait_done(slot: Slot) {
    watch(&slot, |state| state.done.then_some(())).await;
}

/// Waits for the flight to end with its leader's final value; `None` if it
/// gave up (even after offering a stale or fail-safe value, which this
/// does not take): for a batch, which asked for fresh values only.
pub(crate) async fn wait_landed(slot: Slot) -> Option<Landed> {
    watch(&slot, |state| {
        state.done.then(|| {
            state
                .landed
                .clone()
                .filter(|_| state.offered_until.is_none())
        })
    })
    .await
}

/// Waits for the flight to land; `None` if its leader gave up.
pub(crate) async fn wait(slot: Slot) -> Option<Landed> {
    watch(&slot, |state| match (&state.landed, state.done) {
        (Some(landed), _) => Some(Some(landed.clone())),
        (None, true) => Some(None),
        (None, false) => None,
    })
    .await
}

/// The one caller that loads a key. Dropping it without [`Leader::land`]
/// wakes the waiters empty-handed.
pub(crate) struct Leader {
    map: Map,
    key: Arc<str>,
    flight: Slot,
    /// A waiter that loads because the leader is slow (see
    /// [`Flight::relieve`]): it offers what it finds, and leaves the flight
    /// to its leader.
    relief: bool,
}

impl Leader {
    /// A stand-in for a slow leader, by the waiter that took the flight's
    /// [`Flight::relieve`].
    pub(crate) fn relief(flights: &Flights, key: &str, flight: Slot) -> Self {
        Self {
            map: flights.in_flight.clone(),
            key: key.into(),
            flight,
            relief: true,
        }
    }

    /// Records what the flight's value depends on, taken before anything
    /// is read (see [`Flights::join`]).
    pub(crate) fn depends_on(&self, generations: &Snapshot) {
        let _ = self.flight.generations.set(generations.clone());
    }

    /// What the flight's callers wait on.
    pub(crate) fn slot(&self) -> Slot {
        self.flight.clone()
    }

    /// Hands a value to the waiters now, and to callers that join until
    /// `until` (the end of its window), while the load goes on: a stale
    /// value while it refreshes, a fail-safe value when it is slow.
    pub(crate) fn offer(&self, landed: Landed, until: Instant) {
        self.flight.offer(landed, until);
    }

    /// Whether this is a waiter standing in for a slow leader.
    pub(crate) fn is_relief(&self) -> bool {
        self.relief
    }

    /// Hands the result to every waiter and closes the flight. A relief
    /// only offers it, to callers joining until `until` (the end of the
    /// value's fresh period or window): the flight stays its leader's.
    pub(crate) fn land(self, landed: Landed, until: Instant) {
        if self.relief {
            self.flight.offer(landed, until);
            return;
        }
        // Remove first: a caller arriving from now on finds the value in L1
        // (or starts a new flight), never a flight that already ended.
        self.leave();
        self.flight.update(|state| {
            state.landed = Some(landed);
            // The final value: no offer stands any more.
            state.offered_until = None;
            state.done = true;
        });
    }

    fn leave(&self) {
        let mut map = lock(&self.map);
        if map
            .get(&self.key)
            .is_some_and(|slot| Arc::ptr_eq(slot, &self.flight))
        {
            map.remove(&self.key);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.relief {
            // Landed or not: another waiter may relieve the leader next.
            self.flight
                .relieved
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        if !self.flight.state().done {
            self.leave();
            self.flight.update(|state| state.done = true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_what_the_leader_lands() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Waiter(slot) = flights.join("k") else {
            panic!("second caller waits")
        };
        let waiter = tokio::spawn(wait(slot));
        leader.land(Landed::Value(Arc::new(7u32), Source::Load), Instant::now());
        let Some(Landed::Value(value, Source::Load)) = waiter.await.unwrap() else {
            panic!("waiter got nothing")
        };
        assert_eq!(value.downcast_ref::<u32>(), Some(&7));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Role::Leader(_)), "a new wave");
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_wakes_waiters_empty_handed() {
        let flights = Flights::default();
        let leader = flights.join("k");
        let Role::Waiter(slot) = flights.join("k") else {
            panic!("second caller waits")
        };
        drop(leader);
        assert!(wait(slot).await.is_none());
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_flight_nobody_joined_lets_go_of_what_it_landed() {
        let flights = Flights::default();
        let Role::Leader(alone) = flights.join("a") else {
            panic!("first caller leads")
        };
        let value: Shared = Arc::new(7u32);
        alone.land(Landed::Value(value.clone(), Source::L2), Instant::now());
        assert_eq!(
            Arc::strong_count(&value),
            1,
            "the caller holds the only reference: it can take the value without a clone"
        );

        let Role::Leader(joined) = flights.join("b") else {
            panic!("first caller leads")
        };
        let Role::Waiter(slot) = flights.join("b") else {
            panic!("second caller waits")
        };
        joined.land(Landed::Absent, Instant::now());
        assert!(matches!(wait(slot).await, Some(Landed::Absent)));
    }
}
