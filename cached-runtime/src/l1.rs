//! L1: the in-process layer, typed values in moka.
//!
//! Values are stored as `Arc<dyn Any>` around the function's own value type,
//! so a hit is a hash lookup, a downcast and a `clone` of the value: no
//! deserialization, no Redis. A downcast that fails (two functions sharing a
//! prefix with different types) is a miss, like a foreign value in L2.

#[cfg(test)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::flight::Shared;
use crate::generations::Snapshot;

/// One L1 entry: the value, how long it may live, and the generations of
/// its namespace, prefix and tags when its load started. Cloned on every
/// hit: keep it to `Arc`s and small copies.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) value: Shared,
    ttl: Duration,
    generations: Snapshot,
    /// For entries that outlive their fresh period or refresh early: when
    /// it ends, and XFetch's `delta·β`. `None`: fresh until it expires.
    pub(crate) timing: Option<Timing>,
}

/// When an entry stops being fresh, for functions with `stale`,
/// `fail_safe` or `refresh_ahead`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) fresh_until: Instant,
    /// The same moment as its envelope in Redis records it (Unix ms).
    pub(crate) expires_at_ms: u64,
    pub(crate) xfetch_scale: Duration,
}

impl Timing {
    /// Whether a hit may be answered from the entry without more ado: it is
    /// fresh and XFetch does not pick this hit to refresh it.
    #[inline]
    pub(crate) fn serve_now(&self, now: Instant) -> bool {
        match self.fresh_until.checked_duration_since(now) {
            Some(gap) if !gap.is_zero() => !crate::spec::xfetch(gap, self.xfetch_scale),
            _ => false,
        }
    }
}

/// A cached "nothing" (`cache_none`), stored in place of a value.
pub(crate) struct Absent;

impl Entry {
    #[cfg(test)]
    pub(crate) fn new<T: Send + Sync + 'static>(value: T, ttl: Duration) -> Self {
        let generations = crate::generations::Generations::default().snapshot("p", &[]);
        Self::shared(Arc::new(value), ttl, generations)
    }

    /// An entry around a value already shared with the flight's waiters.
    pub(crate) fn shared(value: Shared, ttl: Duration, generations: Snapshot) -> Self {
        Self {
            value,
            ttl,
            generations,
            timing: None,
        }
    }

    /// With its fresh period checked on every hit (see [`Timing`]).
    pub(crate) fn timed(mut self, timing: Option<Timing>) -> Self {
        self.timing = timing;
        self
    }
}

/// Each entry lives for its own TTL, counted from its (re)insertion.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The in-process layer; disabled when built with a capacity of 0.
pub(crate) struct L1 {
    entries: Option<moka::sync::Cache<String, Entry>>,
}

impl L1 {
    pub(crate) fn new(capacity: u64) -> Self {
        let entries = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build()
        });
        Self { entries }
    }

    /// The value under `key`, of whatever type it was stored with, if it
    /// is fresh and was not invalidated (then it is dropped).
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Shared> {
        let entry = self.entry(key)?;
        match entry.timing {
            Some(timing) if !timing.serve_now(Instant::now()) => None,
            _ => Some(entry.value),
        }
    }

    /// The entry under `key`, fresh or not, unless it was invalidated.
    #[inline]
    pub(crate) fn entry(&self, key: &str) -> Option<Entry> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(key)?;
        if entry.generations.is_current() {
            Some(entry)
        } else {
            entries.invalidate(key);
            None
        }
    }

    pub(crate) fn insert(&self, key: String, entry: Entry) {
        if let Some(entries) = &self.entries {
            entries.insert(key, entry);
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
    }

    /// Drops every entry: O(1), entries are reclaimed in the background.
    pub(crate) fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_get_and_per_entry_ttl() {
        let l1 = L1::new(100);
        l1.insert("a".into(), Entry::new(5u32, Duration::from_millis(50)));
        l1.insert(
            "b".into(),
            Entry::new(String::from("x"), Duration::from_secs(60)),
        );
        let get = |key| l1.get(key).and_then(|v| v.downcast_ref::<u32>().copied());
        assert_eq!(get("a"), Some(5));
        assert_eq!(get("b"), None, "another type is a miss");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(get("a"), None, "expired");
        assert!(l1.get("b").is_some());
        l1.remove("b");
        assert!(l1.get("b").is_none());
    }

    #[test]
    fn capacity_zero_disables() {
        let l1 = L1::new(0);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(1)));
        assert!(l1.get("a").is_none());
    }
}
