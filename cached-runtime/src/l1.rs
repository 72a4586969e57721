//! L1: the in-process layer, typed values in a bounded concurrent map.
//!
//! Values are stored as `Arc<dyn Any>` around the function's own value type,
//! so a hit is a hash lookup, a downcast and a `clone` of the value: no
//! deserialization, no Redis. A downcast that fails (two functions sharing a
//! prefix with different types) is a miss, like a foreign value in L2.
//!
//! The map is `quick_cache` (sharded, read-locked lookups, a CLOCK-PRO /
//! S3-FIFO style eviction with a ghost queue), bounded in entries. It was
//! moka until the L1 hit had to beat a plain `Mutex<HashMap>` cache: a moka
//! `get` alone (SipHash, its clock, the read-log channel and housekeeping)
//! cost about as much as the whole hit of the `cached` crate. What moka did
//! beside the lookup is done here:
//!
//! - per-entry TTL: each entry keeps the `Instant` it expires at, checked on
//!   every hit; an expired entry is a miss and is removed. Expired entries
//!   nobody asks for again stay until the policy evicts them, within the
//!   capacity;
//! - `clear` is O(1): it bumps an epoch that every entry recorded when it
//!   was inserted; older entries are misses, removed when found and
//!   otherwise evicted like expired ones.
//!
//! Keys are the rendered key's bytes, hashed once per lookup, so a hit can
//! borrow them from the [`KeyWriter`](crate::KeyWriter) they were rendered in.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::flight::Shared;
use crate::generations::Snapshot;

/// One L1 entry: the value, how long it may live, and the generations of
/// its namespace, prefix and tags when its load started. Cloned on every
/// hit: keep it to `Arc`s and small `Copy` fields.
#[derive(Clone)]
pub(crate) struct Entry {
    value: Shared,
    ttl: Duration,
    generations: Snapshot,
}

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
        }
    }
}

/// An entry as the map holds it, behind an `Arc`: a lookup clones that one
/// `Arc` (the map hands out clones), not each `Arc` of the entry.
struct Slot {
    entry: Entry,
    /// When the entry expires: its TTL counted from its (re)insertion;
    /// `None` when that is past what an `Instant` can hold.
    expires: Option<Instant>,
    /// The [`L1::clear`] epoch it was inserted in.
    cleared: u64,
}

/// The rendered key, as bytes: a lookup hashes the `&[u8]` it borrows.
type Key = Box<[u8]>;

type Map = quick_cache::sync::Cache<Key, Arc<Slot>>;

/// A value found in L1: derefs to the shared value.
pub(crate) struct Hit(Arc<Slot>);

impl Deref for Hit {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        &self.0.entry.value
    }
}

/// The in-process layer; disabled when built with a capacity of 0.
pub(crate) struct L1 {
    entries: Option<Map>,
    /// Bumped by [`L1::clear`]: entries of an older epoch are gone.
    cleared: AtomicU64,
}

impl L1 {
    pub(crate) fn new(capacity: u64) -> Self {
        let entries = (capacity > 0).then(|| {
            let estimated = usize::try_from(capacity).unwrap_or(usize::MAX);
            Map::with(
                estimated,
                capacity,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            )
        });
        Self {
            entries,
            cleared: AtomicU64::new(0),
        }
    }

    /// Whether a held entry may be served at `now`.
    #[inline]
    fn servable(&self, slot: &Slot, now: Instant) -> bool {
        slot.cleared == self.cleared.load(SeqCst)
            && slot.expires.is_none_or(|expires| now < expires)
            && slot.entry.generations.is_current()
    }

    /// The value under `key` (the rendered key, as `str` or bytes), of
    /// whatever type it was stored with, unless it expired, was cleared or
    /// was invalidated (then it is dropped).
    #[inline]
    pub(crate) fn get<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<Hit> {
        let entries = self.entries.as_ref()?;
        let key = key.as_ref();
        let slot = entries.get(key)?;
        let now = Instant::now();
        if self.servable(&slot, now) {
            Some(Hit(slot))
        } else {
            // Unless it was replaced meanwhile by an entry that is servable.
            entries.remove_if(key, |slot| !self.servable(slot, now));
            None
        }
    }

    pub(crate) fn insert(&self, key: String, entry: Entry) {
        if let Some(entries) = &self.entries {
            // Read before the entry is in place: a `clear` from now on
            // outdates it.
            let cleared = self.cleared.load(SeqCst);
            let slot = Slot {
                expires: Instant::now().checked_add(entry.ttl),
                cleared,
                entry,
            };
            entries.insert(key.into_bytes().into_boxed_slice(), Arc::new(slot));
        }
    }

    pub(crate) fn remove<K: AsRef<[u8]> + ?Sized>(&self, key: &K) {
        if let Some(entries) = &self.entries {
            entries.remove(key.as_ref());
        }
    }

    /// Drops every entry: O(1), entries are reclaimed as they are found or
    /// evicted.
    pub(crate) fn clear(&self) {
        self.cleared.fetch_add(1, SeqCst);
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
    fn clear_drops_everything_inserted_before() {
        let l1 = L1::new(100);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(60)));
        l1.clear();
        assert!(l1.get("a").is_none());
        l1.insert("a".into(), Entry::new(2u8, Duration::from_secs(60)));
        let value = l1.get("a").expect("inserted after the clear");
        assert_eq!(value.downcast_ref::<u8>(), Some(&2));
    }

    #[test]
    fn bounded_with_eviction() {
        let l1 = L1::new(1_000);
        for i in 0..10_000 {
            l1.insert(format!("k:{i}"), Entry::new(i, Duration::from_secs(60)));
            // A few keys stay hot: the policy keeps them.
            for hot in 0..10 {
                assert!(l1.get(format!("k:{hot}").as_str()).is_some() || i < hot);
            }
        }
        let held = l1.entries.as_ref().unwrap().len();
        assert!(held <= 1_100, "{held} entries held");
        assert!(held >= 900, "{held} entries held");
    }

    #[test]
    fn capacity_zero_disables() {
        let l1 = L1::new(0);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(1)));
        assert!(l1.get("a").is_none());
    }
}
