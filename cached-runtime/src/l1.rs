//! L1: the in-process layer, typed values in moka.
//!
//! Values are stored as `Arc<dyn Any>` around the function's own value type,
//! so a hit is a hash lookup, a downcast and a `clone` of the value: no
//! deserialization, no Redis. A downcast that fails (two functions sharing a
//! prefix with different types) is a miss, like a foreign value in L2.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::flight::Shared;

/// One L1 entry: the value, how long it may live, and its explicit tags
/// (its prefix is in its key). Cloned on every hit: keep it to `Arc`s.
#[derive(Clone)]
pub(crate) struct Entry {
    value: Shared,
    ttl: Duration,
    tags: Option<Arc<[String]>>,
}

impl Entry {
    #[cfg(test)]
    pub(crate) fn new<T: Send + Sync + 'static>(value: T, ttl: Duration) -> Self {
        Self::shared(Arc::new(value), ttl, &[])
    }

    /// An entry around a value already shared with the flight's waiters.
    pub(crate) fn shared(value: Shared, ttl: Duration, tags: &[String]) -> Self {
        let tags = (!tags.is_empty()).then(|| Arc::from(tags));
        Self { value, ttl, tags }
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

    /// The value under `key`, of whatever type it was stored with.
    pub(crate) fn get(&self, key: &str) -> Option<Shared> {
        Some(self.entries.as_ref()?.get(key)?.value)
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

    /// Drops the entries of a prefix (rendered keys start with `prefix:`).
    pub(crate) fn remove_prefix(&self, prefix: &str) {
        self.remove_if(|key, _| {
            key.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(':'))
        });
    }

    /// Drops the entries carrying `tag`.
    pub(crate) fn remove_tag(&self, tag: &str) {
        self.remove_if(|_, entry| {
            entry
                .tags
                .as_deref()
                .is_some_and(|tags| tags.iter().any(|t| t == tag))
        });
    }

    /// Removes the entries that match, before returning: none of them is
    /// served afterwards. A scan of L1, so O(entries in L1), bounded by its
    /// capacity; Redis-side invalidation stays O(1). An insert that races
    /// with the scan is caught by the epoch check in `Inner::keep_in_l1`.
    ///
    /// Not moka's `invalidate_entries_if`: it drops its predicate once its
    /// background scan is done, and entries the scan did not visit are
    /// served again (216 of 100,000 in the test below).
    fn remove_if(&self, matches: impl Fn(&str, &Entry) -> bool) {
        let Some(entries) = &self.entries else { return };
        for (key, entry) in entries.iter() {
            if matches(&key, &entry) {
                entries.invalidate(key.as_str());
            }
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
    fn removes_by_prefix_and_by_tag() {
        let l1 = L1::new(100);
        let minute = Duration::from_secs(60);
        let tags = ["org:1".to_owned()];
        l1.insert("user:1".into(), Entry::shared(Arc::new(1u8), minute, &tags));
        l1.insert("user:2".into(), Entry::new(2u8, minute));
        l1.insert("users:1".into(), Entry::new(3u8, minute));
        l1.insert("team:1".into(), Entry::shared(Arc::new(4u8), minute, &tags));
        l1.remove_tag("org:1");
        assert!(l1.get("user:1").is_none() && l1.get("team:1").is_none());
        assert!(l1.get("user:2").is_some());
        l1.remove_prefix("user");
        assert!(l1.get("user:2").is_none());
        assert!(l1.get("users:1").is_some(), "a prefix is a whole segment");
        l1.clear();
        assert!(l1.get("users:1").is_none());
    }

    #[test]
    fn capacity_zero_disables() {
        let l1 = L1::new(0);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(1)));
        assert!(l1.get("a").is_none());
    }
}

#[cfg(test)]
mod removal {
    use super::*;

    /// With moka's `invalidate_entries_if`, 216 of these 100,000 entries
    /// were still served after the removal.
    #[test]
    fn nothing_matching_is_served_after_a_removal() {
        let l1 = L1::new(200_000);
        let minute = Duration::from_secs(60);
        let tags = ["t".to_owned()];
        for i in 0..100_000 {
            l1.insert(format!("p:{i}"), Entry::shared(Arc::new(i), minute, &tags));
        }
        l1.remove_tag("t");
        let served = (0..100_000)
            .filter(|i| l1.get(&format!("p:{i}")).is_some())
            .count();
        assert_eq!(served, 0, "served after remove_tag");
        for i in 0..100_000 {
            l1.insert(format!("q:{i}"), Entry::shared(Arc::new(i), minute, &tags));
        }
        l1.remove_prefix("q");
        let served = (0..100_000)
            .filter(|i| l1.get(&format!("q:{i}")).is_some())
            .count();
        assert_eq!(served, 0, "served after remove_prefix");
        for i in 0..100_000 {
            l1.insert(format!("r:{i}"), Entry::new(i, minute));
        }
        l1.clear();
        let served = (0..100_000)
            .filter(|i| l1.get(&format!("r:{i}")).is_some())
            .count();
        assert_eq!(served, 0, "served after clear");
    }
}
