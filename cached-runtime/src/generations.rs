//! In-process generation counters: O(1) L1 invalidation by tag, prefix or
//! namespace.
//!
//! The namespace, each prefix and each tag seen by this instance have a
//! counter. A load takes a [`Snapshot`] of its entry's counters *before* it
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
}

#[derive(Default)]
struct Named {
    counters: HashMap<String, Weak<AtomicU64>, foldhash::fast::RandomState>,
    /// Prune dead entries when the map reaches this size.
    prune_at: usize,
    /// Where names are built for a lookup: no allocation per snapshot.
    scratch: String,
}

/// The counters an entry depends on, with the values they had. Empty
/// (`None`) where no L1 entry will keep it.
#[derive(Clone)]
pub(crate) struct Snapshot(Option<Arc<[(Counter, u64)]>>);

impl Snapshot {
    /// A snapshot of nothing, for a cache without L1: costs nothing to take.
    pub(crate) const NONE: Self = Self(None);

    /// Whether nothing the entry depends on was invalidated since.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.0.as_deref().is_none_or(|counters| {
            counters
                .iter()
                .all(|(counter, seen)| counter.load(SeqCst) == *seen)
        })
    }
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            namespace: Counter::default(),
            named: Mutex::new(Named {
                prune_at: 1024,
                ..Named::default()
            }),
        }
    }
}

impl Generations {
    fn named(&self) -> std::sync::MutexGuard<'_, Named> {
        // Every statement leaves the map consistent.
        self.named.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters of an entry of `prefix` carrying `tags`, as they are now.
    pub(crate) fn snapshot(&self, prefix: &str, tags: &[String]) -> Snapshot {
        let mut named = self.named();
        let names = std::iter::once(("p:", prefix)).chain(tags.iter().map(|tag| ("t:", &**tag)));
        let counters = std::iter::once(self.namespace.clone())
            .chain(names.map(|(kind, name)| named.counter(kind, name)))
            .map(|counter| {
                let seen = counter.load(SeqCst);
                (counter, seen)
            });
        Snapshot(Some(counters.collect()))
    }

    pub(crate) fn bump_namespace(&self) {
        self.namespace.fetch_add(1, SeqCst);
    }

    pub(crate) fn bump_prefix(&self, prefix: &str) {
        self.bump("p:", prefix);
    }

    pub(crate) fn bump_tag(&self, tag: &str) {
        self.bump("t:", tag);
    }

    /// A counter nobody holds needs no bump: no entry or load depends on it.
    fn bump(&self, kind: &str, name: &str) {
        let mut named = self.named();
        let name = named.scratch_name(kind, name);
        let counter = named.counters.get(&name).and_then(Weak::upgrade);
        named.scratch = name;
        if let Some(counter) = counter {
            counter.fetch_add(1, SeqCst);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.named().counters.len()
    }
}

impl Named {
    /// `kind` + `name` in the scratch buffer, taken out (put it back).
    fn scratch_name(&mut self, kind: &str, name: &str) -> String {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.push_str(kind);
        scratch.push_str(name);
        scratch
    }

    fn counter(&mut self, kind: &str, name: &str) -> Counter {
        let name = self.scratch_name(kind, name);
        if let Some(counter) = self.counters.get(&name).and_then(Weak::upgrade) {
            self.scratch = name;
            return counter;
        }
        if self.counters.len() >= self.prune_at {
            self.counters
                .retain(|_, counter| counter.strong_count() > 0);
            self.prune_at = (self.counters.len() * 2).max(1024);
        }
        let counter = Counter::default();
        self.counters.insert(name, Arc::downgrade(&counter));
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
        let org7 = generations.snapshot("user", &tags(&["org:7"]));
        let org8 = generations.snapshot("user", &tags(&["org:8"]));
        let team = generations.snapshot("team", &[]);
        generations.bump_tag("org:7");
        assert!(!org7.is_current());
        assert!(org8.is_current() && team.is_current());
        generations.bump_prefix("user");
        assert!(!org8.is_current());
        assert!(team.is_current());
        generations.bump_namespace();
        assert!(!team.is_current());
        let later = generations.snapshot("user", &tags(&["org:7"]));
        assert!(later.is_current(), "taken after the bumps");
    }

    #[test]
    fn counters_nobody_holds_are_pruned() {
        let generations = Generations::default();
        for i in 0..5000 {
            drop(generations.snapshot("user", &tags(&[&format!("user:{i}")])));
        }
        assert!(
            generations.len() < 2100,
            "{} counters kept",
            generations.len()
        );
        generations.bump_tag("user:1"); // no counter: nothing to do
    }
}
