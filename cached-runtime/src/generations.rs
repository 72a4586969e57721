//! In-process generation counters: O(1) L1 invalidation by key, tag, prefix
//! or namespace.
//!
//! The namespace, each prefix and each tag seen by this instance have a
//! counter; keys share [`KEY_STRIPES`] striped counters, picked by a hash of
//! the key, so that a key invalidation outdates the loads of that key (and
//! of the few keys that share its stripe), never every load in the process. A load takes a [`Snapshot`] of its entry's counters *before* it
//! reads L2 or runs the body; the L1 entry keeps it, and is served only while
//! every counter still holds the value it saw. Invalidating bumps one
//! counter: O(1), exact, and a load that raced with it can never be served
//! from L1, however late it lands. A hit pays two or three atomic loads.
//!
//! This mirrors, in process, the version nonces the entries carry in Redis
//! (see [`crate::tags`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError, Weak};

type Counter = Arc<AtomicU64>;

/// The counters of one cache. A counter lives as long as an entry or a load
/// holds it; the map keeps only weak references, pruned as it grows.
pub(crate) struct Generations {
    namespace: Counter,
    named: Mutex<Named>,
    /// The keys' counters: a key invalidation bumps its key's stripe.
    keys: Box<[Counter]>,
    /// One lock per stripe, held while an L1 fill of a key checks and
    /// inserts, and while an invalidation of a key bumps and removes: a
    /// fill that checked before the bump cannot insert after the removal
    /// (a hit does not check the key's stripe, shared with other keys).
    fills: Box<[Mutex<()>]>,
    stripe_hasher: foldhash::fast::FixedState,
}

/// How many counters the keys share. A write-through or key invalidation
/// stops the loads of its own stripe (1 in 4096 of the keys) from filling
/// L1, not every load.
pub(crate) const KEY_STRIPES: usize = 4096;

impl Default for Generations {
    fn default() -> Self {
        Self {
            namespace: Counter::default(),
            named: Mutex::default(),
            keys: (0..KEY_STRIPES).map(|_| Counter::default()).collect(),
            fills: (0..KEY_STRIPES).map(|_| Mutex::default()).collect(),
            stripe_hasher: foldhash::fast::FixedState::with_seed(0x7c3a_1d5e_9b2f_4e61),
        }
    }
}

/// The prefixes' counters and the tags', each keyed by its plain name: a
/// lookup takes the borrowed name, with nothing to build.
#[derive(Default)]
struct Named {
    prefixes: Counters,
    tags: Counters,
}

/// Weak references to counters by name, pruned as the map grows.
struct Counters {
    by_name: HashMap<String, Weak<AtomicU64>, foldhash::fast::RandomState>,
    /// Prune dead entries when the map reaches this size.
    prune_at: usize,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            by_name: HashMap::default(),
            prune_at: 1024,
        }
    }
}

/// The counters an entry depends on, with the values they had. Empty
/// (`None`) where no L1 entry will keep it.
#[derive(Clone)]
pub(crate) struct Snapshot(Option<Arc<[(Counter, u64)]>>);

impl Snapshot {
    /// A snapshot of nothing, for a cache without L1: costs nothing to take.
    pub(crate) const NONE: Self = Self(None);

    /// Whether nothing the entry depends on was invalidated since: its
    /// namespace, prefix, tags, and its key's stripe. What a load checks
    /// before its value goes to L1, a flight before a caller joins it, a
    /// fail-safe value before it is served.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.0.as_deref().is_none_or(|counters| {
            counters
                .iter()
                .all(|(counter, seen)| counter.load(SeqCst) == *seen)
        })
    }

    /// As [`Snapshot::is_current`], but for the key's stripe: what an L1
    /// hit checks. An entry in L1 is invalidated by key exactly (removed),
    /// so the stripe, shared with other keys, must not outdate it: it is
    /// for the loads in flight, which have no entry to remove yet.
    #[inline]
    pub(crate) fn is_current_in_l1(&self) -> bool {
        self.0.as_deref().is_none_or(|counters| {
            counters
                .iter()
                .enumerate()
                .all(|(i, (counter, seen))| i == KEY_STRIPE || counter.load(SeqCst) == *seen)
        })
    }

    /// For a writer: bumps the key's stripe (so that loads begun before
    /// cannot fill L1 over the written value) if nothing bumped it since
    /// this snapshot was taken, and returns the snapshot its own entry
    /// depends on. `None` when something did (an invalidation or another
    /// write of the key, or of a key sharing its stripe, raced with this
    /// one: then the written value stays out of L1), or for an empty
    /// snapshot.
    pub(crate) fn bump_own_key(&self) -> Option<Snapshot> {
        let (stripe, seen) = self.0.as_deref()?.get(KEY_STRIPE)?;
        stripe
            .compare_exchange(*seen, seen + 1, SeqCst, SeqCst)
            .ok()?;
        Some(self.with_key_stripe(seen + 1))
    }

    /// This snapshot with its key's stripe as `seen` instead.
    pub(crate) fn with_key_stripe(&self, seen: u64) -> Snapshot {
        let Some(counters) = self.0.as_deref() else {
            return Snapshot::NONE;
        };
        let mut rebased = counters.to_vec();
        if let Some(stripe) = rebased.get_mut(KEY_STRIPE) {
            stripe.1 = seen;
        }
        Snapshot(Some(rebased.into()))
    }
}

/// Where a snapshot holds the key's stripe: after the namespace.
const KEY_STRIPE: usize = 1;

impl Generations {
    fn named(&self) -> std::sync::MutexGuard<'_, Named> {
        // Every statement leaves the map consistent.
        self.named.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stripe of `key`.
    fn stripe_of(&self, key: &str) -> usize {
        use std::hash::BuildHasher;
        let hash = self.stripe_hasher.hash_one(key);
        // The modulo of a 64-bit hash by a power of two: its low bits.
        (hash as usize) % KEY_STRIPES
    }

    /// The counter of `key`'s stripe.
    fn stripe(&self, key: &str) -> &Counter {
        &self.keys[self.stripe_of(key)]
    }

    /// Holds off the L1 fills and the invalidations of the keys of `key`'s
    /// stripe: see [`Generations::fills`]. Held for no `await`.
    pub(crate) fn lock_fills(&self, key: &str) -> std::sync::MutexGuard<'_, ()> {
        self.fills[self.stripe_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters of the entry `key` (the rendered `prefix:…` key) of
    /// `prefix` carrying `tags`, as they are now.
    pub(crate) fn snapshot(&self, prefix: &str, tags: &[String], key: &str) -> Snapshot {
        let stripe = self.stripe(key).clone();
        let mut named = self.named();
        let named = &mut *named;
        let prefix = named.prefixes.counter(prefix);
        let tags = tags.iter().map(|tag| named.tags.counter(tag));
        let counters = [self.namespace.clone(), stripe, prefix]
            .into_iter()
            .chain(tags)
            .map(|counter| {
                let seen = counter.load(SeqCst);
                (counter, seen)
            });
        Snapshot(Some(counters.collect()))
    }

    pub(crate) fn bump_namespace(&self) {
        self.namespace.fetch_add(1, SeqCst);
    }

    /// The value of `key`'s stripe now.
    pub(crate) fn key_stripe(&self, key: &str) -> u64 {
        self.stripe(key).load(SeqCst)
    }

    /// Outdates the loads in flight of `key` (and of the keys that share
    /// its stripe).
    pub(crate) fn bump_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, SeqCst);
    }

    pub(crate) fn bump_prefix(&self, prefix: &str) {
        let counter = self.named().prefixes.get(prefix);
        Self::bump(counter);
    }

    pub(crate) fn bump_tag(&self, tag: &str) {
        let counter = self.named().tags.get(tag);
        Self::bump(counter);
    }

    /// A counter nobody holds needs no bump: no entry or load depends on it.
    fn bump(counter: Option<Counter>) {
        if let Some(counter) = counter {
            counter.fetch_add(1, SeqCst);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let named = self.named();
        named.prefixes.by_name.len() + named.tags.by_name.len()
    }
}

impl Counters {
    /// The live counter named `name`, if any.
    fn get(&self, name: &str) -> Option<Counter> {
        self.by_name.get(name).and_then(Weak::upgrade)
    }

    /// The counter named `name`, made if nobody holds it.
    fn counter(&mut self, name: &str) -> Counter {
        if let Some(counter) = self.get(name) {
            return counter;
        }
        if self.by_name.len() >= self.prune_at {
            self.by_name.retain(|_, counter| counter.strong_count() > 0);
            self.prune_at = (self.by_name.len() * 2).max(1024);
        }
        let counter = Counter::default();
        self.by_name
            .insert(name.to_owned(), Arc::downgrade(&counter));
        counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn a_bump_outdates_exactly_the_snapshots_that_depend_on_it() {
        let generations = Generations::default();
        let org7 = generations.snapshot("user", &tags(&["org:7"]), "user:1");
        let org8 = generations.snapshot("user", &tags(&["org:8"]), "user:2");
        let team = generations.snapshot("team", &[], "team:1");
        generations.bump_tag("org:7");
        assert!(!org7.is_current());
        assert!(org8.is_current() && team.is_current());
        generations.bump_prefix("user");
        assert!(!org8.is_current());
        assert!(team.is_current());
        generations.bump_namespace();
        assert!(!team.is_current());
        let later = generations.snapshot("user", &tags(&["org:7"]), "user:1");
        assert!(later.is_current(), "taken after the bumps");
    }

    #[test]
    fn a_writer_bumps_its_key_only_if_nothing_else_did() {
        let generations = Generations::default();
        let before = generations.snapshot("user", &[], "user:1");
        let loading = generations.snapshot("user", &[], "user:1");
        let own = before.bump_own_key().expect("nothing bumped it");
        assert!(own.is_current() && !loading.is_current());
        let raced = generations.snapshot("user", &[], "user:1");
        generations.bump_key("user:1");
        assert!(raced.bump_own_key().is_none(), "an invalidation raced");
        assert!(Snapshot::NONE.bump_own_key().is_none());
    }

    #[test]
    fn a_key_bump_outdates_that_key_and_few_others() {
        let generations = Generations::default();
        let snapshots: Vec<Snapshot> = (0..10_000)
            .map(|i| generations.snapshot("user", &[], &format!("user:{i}")))
            .collect();
        generations.bump_key("user:42");
        assert!(!snapshots[42].is_current());
        let outdated = snapshots.iter().filter(|s| !s.is_current()).count();
        // 10,000 keys over 4096 stripes: about 2.4 share a stripe.
        assert!(outdated < 12, "{outdated} snapshots outdated by one key");
        assert!(
            snapshots.iter().all(Snapshot::is_current_in_l1),
            "an entry in L1 is removed by key, not outdated by its stripe"
        );
    }

    #[test]
    fn counters_nobody_holds_are_pruned() {
        let generations = Generations::default();
        for i in 0..5000 {
            drop(generations.snapshot("user", &tags(&[&format!("user:{i}")]), "user:1"));
        }
        assert!(
            generations.len() < 2100,
            "{} counters kept",
            generations.len()
        );
        generations.bump_tag("user:1"); // no counter: nothing to do
    }
}
