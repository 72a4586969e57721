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
                .support_invalidation_closures()
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

    /// Drops every entry. O(1): moka marks them invalid and reclaims them in
    /// the background.
    pub(crate) fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    /// Drops the entries of a prefix (rendered keys start with `prefix:`).
    pub(crate) fn remove_prefix(&self, prefix: &str) {
        let start = format!("{prefix}:");
        self.remove_if(move |key, _| key.starts_with(&start));
    }

    /// Drops the entries carrying `tag`.
    pub(crate) fn remove_tag(&self, tag: &str) {
        let tag = tag.to_owned();
        self.remove_if(move |_, entry| {
            entry
                .tags
                .as_deref()
                .is_some_and(|tags| tags.contains(&tag))
        });
    }

    /// Entries present now that match are never returned again; moka scans
    /// for them in the background.
    fn remove_if(&self, predicate: impl Fn(&String, &Entry) -> bool + Send + Sync + 'static) {
        let Some(entries) = &self.entries else { return };
        if let Err(error) = entries.invalidate_entries_if(predicate) {
            // Only possible without support_invalidation_closures: fall back
            // to the coarse but correct option.
            tracing::warn!(%error, "dropping all of L1");
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
