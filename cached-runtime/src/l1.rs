//! L1: the in-process layer, typed values in a bounded concurrent map.
//!
//! Values are stored as `Arc<dyn Any>` around the function's own value type,
//! so a hit is a hash lookup, a downcast and a `clone` of the value: no
//! deserialization, no Redis. A downcast that fails (two functions sharing a
//! prefix with different types) is a miss, like a foreign value in L2.
//!
//! The map is `quick_cache` (sharded, read-locked lookups, a CLOCK-PRO /
//! S3-FIFO style eviction with a ghost queue), bounded in entries, and
//! with a byte budget in estimated bytes too (see [`Weigh`]). It was
//! moka until the L1 hit had to beat a plain `Mutex<HashMap>` cache: a moka
//! `get` alone (SipHash, its clock, the read-log channel and housekeeping)
//! cost about as much as the whole hit of the `cached` crate. What moka did
//! beside the lookup is done here:
//!
//! - per-entry TTL: each entry keeps when it expires, checked on every hit
//!   (on a coarse clock while that is enough to tell, see [`Expiry`]); an
//!   expired entry is a miss and is removed. Expired entries nobody asks
//!   for again stay until the policy evicts them, within the capacity;
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
use crate::observe::PrefixCounters;

/// One L1 entry: the value, how long it may live, and the generations of
/// its namespace, prefix and tags when its load started. The map holds it
/// behind an `Arc`: a hit clones that `Arc` and the value, not the entry.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) value: Shared,
    /// Its function's prefix's counters: a hit counts itself without a
    /// lookup by name.
    counters: Arc<PrefixCounters>,
    ttl: Duration,
    generations: Snapshot,
    /// For entries that outlive their fresh period or refresh early: when
    /// it ends, and XFetch's `delta·β`. `None`: fresh until it expires.
    pub(crate) timing: Option<Timing>,
    /// Its value's serialized size, with a byte budget (0: unknown).
    size: u32,
}

/// When an entry stops being fresh, for functions with `stale`,
/// `fail_safe` or `refresh_ahead`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Until when a hit is answered without a load: the end of the fresh
    /// period, or of a fail-safe throttle (never past its window).
    pub(crate) fresh_until: Instant,
    /// The end of the value's fresh period as its envelope records it:
    /// the stale and fail-safe windows count from here.
    pub(crate) expired_at: Instant,
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
        let generations = crate::generations::Generations::default().snapshot("p", &[], "p:k");
        let counters = crate::observe::Observer::new("ns", false).prefix("p");
        Self::shared(Arc::new(value), ttl, generations, counters)
    }

    /// An entry around a value already shared with the flight's waiters,
    /// of the prefix whose counters are `counters`.
    pub(crate) fn shared(
        value: Shared,
        ttl: Duration,
        generations: Snapshot,
        counters: Arc<PrefixCounters>,
    ) -> Self {
        Self {
            value,
            counters,
            ttl,
            generations,
            timing: None,
            size: 0,
        }
    }

    /// With its value's serialized size, which a byte budget weighs it by.
    pub(crate) fn sized(mut self, bytes: usize) -> Self {
        self.size = u32::try_from(bytes).unwrap_or(u32::MAX);
        self
    }

    /// With its fresh period checked on every hit (see [`Timing`]).
    pub(crate) fn timed(mut self, timing: Option<Timing>) -> Self {
        self.timing = timing;
        self
    }

    /// The generations it depends on.
    pub(crate) fn generations(&self) -> &Snapshot {
        &self.generations
    }

    /// Whether nothing it depends on was invalidated since its load began.
    pub(crate) fn is_current(&self) -> bool {
        self.generations.is_current()
    }
}

/// An entry as the map holds it, behind an `Arc`: a lookup clones that one
/// `Arc` (the map hands out clones), not each `Arc` of the entry.
struct Slot {
    entry: Entry,
    /// When the entry expires: its TTL counted from its (re)insertion.
    expires: Expiry,
    /// The [`L1::clear`] epoch it was inserted in.
    cleared: u64,
}

/// When an entry expires, on two clocks. The precise one (`Instant`, the
/// clock's `CLOCK_MONOTONIC`) costs about as much as the rest of a hit; the
/// coarse one (`CLOCK_MONOTONIC_COARSE`: the time at the last kernel tick,
/// a few ms behind) a tenth of it. A hit reads the coarse clock, and the
/// precise one only in the last [`COARSE_MARGIN`] of the entry's life: the
/// coarse clock lags by less than that, so an entry is never served past
/// its TTL by the precise clock.
#[derive(Clone, Copy)]
struct Expiry {
    /// Before this, on the coarse clock, the entry is fresh for sure.
    surely_fresh_until: coarsetime::Instant,
    /// When it expires; `None` when that is past what an `Instant` holds.
    at: Option<Instant>,
}

/// More than the coarse clock can lag the precise one: a kernel tick (1 to
/// 10 ms), with room for a late tick.
const COARSE_MARGIN: Duration = Duration::from_millis(50);

/// Whether coarsetime's clock is monotonic here (elsewhere it may be the
/// wall clock, which can go back: then only the precise clock is used).
const COARSE_IS_MONOTONIC: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
));

impl Expiry {
    fn after(ttl: Duration) -> Self {
        let coarse = coarsetime::Instant::now_without_cache_update();
        // coarsetime's durations hold 2^32 s: far beyond any TTL worth a
        // fast path.
        let fast_for = ttl
            .checked_sub(COARSE_MARGIN)
            .filter(|_| COARSE_IS_MONOTONIC)
            .map(|d| d.min(Duration::from_secs(u64::from(u32::MAX) / 2)));
        Self {
            surely_fresh_until: fast_for
                .and_then(|d| coarse.checked_add(d.into()))
                .unwrap_or(coarse),
            at: Instant::now().checked_add(ttl),
        }
    }

    #[inline]
    fn is_fresh(&self) -> bool {
        coarsetime::Instant::now_without_cache_update() < self.surely_fresh_until
            || self.at.is_none_or(|at| Instant::now() < at)
    }
}

/// The rendered key, as bytes: a lookup hashes the `&[u8]` it borrows.
type Key = Box<[u8]>;

type Map = quick_cache::sync::Cache<Key, Arc<Slot>, Weigh>;

/// What an entry costs against L1's bounds. Without a byte budget, one:
/// the capacity counts entries. With one, the capacity is the budget, and
/// an entry weighs an estimate of the memory it holds — its key, its
/// value's serialized size, and [`ENTRY_OVERHEAD`] — but never less than
/// the budget over the entry capacity, so that the count bound holds too.
#[derive(Clone, Copy)]
struct Weigh {
    /// `None`: count entries.
    floor: Option<u64>,
}

/// The memory an entry holds beside its key and its value's serialized
/// bytes: the map's slot and its share of the map's tables, the `Arc`s
/// around the entry and the value, its generations and timing, the boxed
/// key's allocation, the allocator's rounding. Measured (benchmark case 6:
/// a million entries of a ~220-byte JSON value, unbounded, grow the
/// resident set by ~650 bytes each).
pub(crate) const ENTRY_OVERHEAD: u64 = 400;

impl quick_cache::Weighter<Key, Arc<Slot>> for Weigh {
    #[inline]
    fn weight(&self, key: &Key, slot: &Arc<Slot>) -> u64 {
        match self.floor {
            None => 1,
            Some(floor) => {
                let bytes = key.len() as u64 + u64::from(slot.entry.size) + ENTRY_OVERHEAD;
                bytes.max(floor)
            }
        }
    }
}

/// A value found in L1: derefs to the shared value.
pub(crate) struct Hit(Arc<Slot>);

impl Hit {
    /// The counters of the entry's prefix.
    #[inline]
    pub(crate) fn counters(&self) -> &PrefixCounters {
        &self.0.entry.counters
    }
}

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
    /// The byte budget, if any.
    max_bytes: Option<u64>,
    /// Bumped by [`L1::clear`]: entries of an older epoch are gone.
    cleared: AtomicU64,
}

impl L1 {
    /// At most `capacity` entries and, with `max_bytes`, about that many
    /// bytes (see [`Weigh`]), for values of up to `max_value` serialized
    /// bytes.
    ///
    /// quick_cache splits its capacity between shards and refuses an entry
    /// heavier than its shard's share: under a budget, the map has as few
    /// shards as it takes for a shard to hold two of the largest values
    /// (one, for a budget under two of them).
    pub(crate) fn new(capacity: u64, max_bytes: Option<u64>, max_value: usize) -> Self {
        let entries = (capacity > 0).then(|| {
            let (weight_capacity, floor, most) = match max_bytes {
                None => (capacity, None, capacity),
                // The tables are sized for the entries the budget can
                // hold at the smallest weight, not for the whole count.
                Some(bytes) => (
                    bytes,
                    Some((bytes / capacity).max(1)),
                    capacity.min(bytes / ENTRY_OVERHEAD),
                ),
            };
            let estimated = usize::try_from(most.max(1)).unwrap_or(usize::MAX);
            let mut options = quick_cache::OptionsBuilder::new();
            options
                .estimated_items_capacity(estimated)
                .weight_capacity(weight_capacity);
            if let Some(bytes) = max_bytes {
                let heaviest = (max_value as u64).saturating_add(ENTRY_OVERHEAD + 1024);
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let fit = usize::try_from(bytes / heaviest.saturating_mul(2)).unwrap_or(usize::MAX);
                // quick_cache rounds the count up to a power of two: round
                // it down here, so that a shard still holds two.
                let fit = fit.clamp(1, cores * 4);
                let fit = if fit.is_power_of_two() {
                    fit
                } else {
                    fit.next_power_of_two() / 2
                };
                options.shards(fit);
            }
            let (weigh, hasher, lifecycle) = (
                Weigh { floor },
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            );
            match options.build() {
                Ok(options) => Map::with_options(options, weigh, hasher, lifecycle),
                Err(_) => Map::with(estimated, weight_capacity, weigh, hasher, lifecycle),
            }
        });
        Self {
            entries,
            max_bytes,
            cleared: AtomicU64::new(0),
        }
    }

    /// Whether entries are weighed by their size (a byte budget).
    pub(crate) fn weighs(&self) -> bool {
        self.max_bytes.is_some()
    }

    /// The estimated bytes its entries hold, with a byte budget (see
    /// [`Weigh`]); else how many entries it holds.
    pub(crate) fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, Map::weight)
    }

    /// Whether a held entry may be served at all, fresh or not.
    #[inline]
    fn servable(&self, slot: &Slot) -> bool {
        slot.cleared == self.cleared.load(SeqCst)
            && slot.expires.is_fresh()
            && slot.entry.generations.is_current_in_l1()
    }

    /// The value under `key` (the rendered key, as `str` or bytes), of
    /// whatever type it was stored with, if it is fresh and was not
    /// invalidated (then it is dropped).
    #[inline]
    pub(crate) fn get<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<Hit> {
        let hit = self.lookup(key.as_ref())?;
        match hit.0.entry.timing {
            Some(timing) if !timing.serve_now(Instant::now()) => None,
            _ => Some(hit),
        }
    }

    /// The entry under `key`, fresh or not, unless it expired, was cleared
    /// or was invalidated.
    pub(crate) fn entry<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<Entry> {
        self.lookup(key.as_ref()).map(|hit| hit.0.entry.clone())
    }

    /// The slot under `key`, unless it expired, was cleared or was
    /// invalidated (then it is dropped).
    #[inline]
    fn lookup(&self, key: &[u8]) -> Option<Hit> {
        let entries = self.entries.as_ref()?;
        let slot = entries.get(key)?;
        if self.servable(&slot) {
            Some(Hit(slot))
        } else {
            // Unless it was replaced meanwhile by an entry that is servable.
            entries.remove_if(key, |slot| !self.servable(slot));
            None
        }
    }

    /// Whether entries are kept at all (a capacity of zero disables L1).
    pub(crate) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    pub(crate) fn insert(&self, key: String, entry: Entry) {
        let Some(entries) = self.entries.as_ref() else {
            return;
        };
        // Read before the entry is in place: a `clear` from now on
        // outdates it.
        let cleared = self.cleared.load(SeqCst);
        let slot = Slot {
            expires: Expiry::after(entry.ttl),
            cleared,
            entry,
        };
        entries.insert(key.into_bytes().into_boxed_slice(), Arc::new(slot));
    }

    /// How many entries it holds (expired and cleared ones included, until
    /// they are found or evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Map::len)
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
        let l1 = L1::new(100, None, 1 << 20);
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
    fn entries_longer_than_the_coarse_margin_expire_on_time() {
        let l1 = L1::new(100, None, 1 << 20);
        let ttl = COARSE_MARGIN * 3;
        let before_insert = Instant::now();
        l1.insert("a".into(), Entry::new(1u8, ttl));
        let after_insert = Instant::now();
        assert!(l1.get("a").is_some());
        // In the margin, where the precise clock decides.
        std::thread::sleep(ttl - COARSE_MARGIN / 2 - before_insert.elapsed());
        let (early, found, late) = (
            before_insert.elapsed(),
            l1.get("a").is_some(),
            after_insert.elapsed(),
        );
        // The entry expires `ttl` after a moment between the two instants.
        let insert_took = after_insert - before_insert;
        assert!(found || late >= ttl - insert_took, "expired early");
        assert!(!found || early < ttl + insert_took, "served late");
        std::thread::sleep(COARSE_MARGIN);
        assert!(l1.get("a").is_none(), "expired");
    }

    #[test]
    fn clear_drops_everything_inserted_before() {
        let l1 = L1::new(100, None, 1 << 20);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(60)));
        l1.clear();
        assert!(l1.get("a").is_none());
        l1.insert("a".into(), Entry::new(2u8, Duration::from_secs(60)));
        let value = l1.get("a").expect("inserted after the clear");
        assert_eq!(value.downcast_ref::<u8>(), Some(&2));
    }

    #[test]
    fn bounded_with_eviction() {
        let l1 = L1::new(1_000, None, 1 << 20);
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

    /// Under a budget, a value as large as `max_value_size` is kept: the
    /// map has few enough shards for one to hold it (with the default
    /// shard count, a 3 MiB value in a 16 MiB budget was refused).
    #[test]
    fn a_large_value_fits_its_shard_under_a_budget() {
        let l1 = L1::new(10_000, Some(16 << 20), 4 << 20);
        let entry = Entry::new(7u8, Duration::from_secs(60)).sized(3 << 20);
        l1.insert("big".into(), entry);
        assert!(l1.get("big").is_some(), "a 3 MiB value in a 16 MiB L1");
        let small = L1::new(10_000, Some(1 << 20), 4 << 20);
        small.insert(
            "a".into(),
            Entry::new(1u8, Duration::from_secs(60)).sized(300 << 10),
        );
        assert!(
            small.get("a").is_some(),
            "300 KiB in a 1 MiB L1 of one shard"
        );
    }

    #[test]
    fn capacity_zero_disables() {
        let l1 = L1::new(0, None, 1 << 20);
        l1.insert("a".into(), Entry::new(1u8, Duration::from_secs(1)));
        assert!(l1.get("a").is_none());
    }
}
