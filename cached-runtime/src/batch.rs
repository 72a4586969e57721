//! Batch loads: many entries of one prefix in one pass, one Redis round
//! trip and one loader call ([`Cache::entries`]).
//!
//! 1. **L1**: every key is looked up; a fresh value is the answer.
//! 2. **Flights**: a key another caller is loading already (a single call,
//!    another batch) is awaited, not loaded again; this batch leads the
//!    flights of the others, so that single calls of those keys arriving
//!    now share its load.
//! 3. **Redis**: one `MGET` of the entries it leads and their shared tag
//!    versions; a fresh, valid entry is the answer (and fills L1).
//! 4. **One loader call**, with the keys found nowhere (and those whose
//!    other flight ended without a value, or outlasted `lock_wait`).
//! 5. **Land**: each value goes to L1 and to its flight's waiters, then all
//!    of them to Redis in one pipeline, each written only if its entry is
//!    still as the read saw it (as a single load's write).
//!
//! A batch takes no cross-process lock (one per key would cost a round
//! trip per key): two processes missing the same keys at once both load
//! them, and the first write wins.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cache::{Cache, Inner};
use crate::codec::{Cacheable, TypeCodec};
use crate::entry::{MAX_TAGS, NoTtl, Ttl};
use crate::flight::{self, Landed, Leader, Role, Shared, Slot, Source};
use crate::generations::Snapshot;
use crate::key::{EntryKey, KeyWriter};
use crate::l1::Absent;
use crate::l2::{ManyWrite, WRITE_HORIZON};
use crate::l2call::{L2Call, L2Read, Seen};
use crate::lead::{expiry, l1_entry};
use crate::observe::{self, Answer, Loading, PrefixCounters};
use crate::options::Options;
use crate::spec::{Spec, later};
use crate::warm::Warmed;

/// What names a key's own tags (see [`Entries::tags_with`]).
type TagsOf<'k, K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync + 'k>;

/// Many entries of one prefix: see [`Cache::entries`].
#[must_use = "entries do nothing until they are loaded or read"]
pub struct Entries<'c, 'k, K, T = NoTtl> {
    cache: &'c Cache,
    keys: &'k [K],
    options: Options,
    /// Each key's own tags, beside the options' tags.
    tags_of: Option<TagsOf<'k, K>>,
    marker: PhantomData<fn() -> T>,
}

impl<K, T> std::fmt::Debug for Entries<'_, '_, K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("keys", &self.keys.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The entries of `keys` under `prefix`: the same entries as
    /// [`Cache::entry`] (and a `#[cache_aside(prefix = "user", key =
    /// "{id}")]` function) names one by one, loaded together.
    ///
    /// ```no_run
    /// # use std::collections::HashMap;
    /// # use std::time::Duration;
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User;
    /// # #[derive(Debug)] struct DbError;
    /// # struct Db;
    /// # impl Db { async fn users(&self, ids: &[u64]) -> Result<HashMap<u64, User>, DbError> { Ok(HashMap::new()) } }
    /// # async fn run(cache: tiercache_runtime::Cache, db: Db, ids: Vec<u64>) {
    /// let users: Result<HashMap<u64, User>, DbError> = cache
    ///     .entries("user", &ids)
    ///     .ttl(Duration::from_secs(300))
    ///     .try_get_many_with(|missing: Vec<u64>| async move { db.users(&missing).await })
    ///     .await;
    /// # }
    /// ```
    pub fn entries<'c, 'k, K>(&'c self, prefix: &'static str, keys: &'k [K]) -> Entries<'c, 'k, K>
    where
        K: EntryKey + Eq + Hash + Clone,
    {
        Entries {
            cache: self,
            keys,
            options: Options::new(prefix),
            tags_of: None,
            marker: PhantomData,
        }
    }
}

impl<'c, 'k, K, T> Entries<'c, 'k, K, T>
where
    K: EntryKey + Eq + Hash + Clone,
{
    /// How long a loaded value stays fresh; required before a load. Above
    /// zero, at most a year.
    pub fn ttl(mut self, ttl: Duration) -> Entries<'c, 'k, K, Ttl> {
        self.options.ttl(ttl);
        Entries {
            cache: self.cache,
            keys: self.keys,
            options: self.options,
            tags_of: self.tags_of,
            marker: PhantomData,
        }
    }

    /// Each key's own tags, beside those of [`tags`](Entries::tags): what
    /// a reader's `tags = ["user:{id}"]` renders for that key, so that
    /// invalidating `user:7` forgets the entry of 7 this batch stored, as
    /// it forgets the reader's.
    ///
    /// ```no_run
    /// # async fn run(cache: tiercache_runtime::Cache, ids: Vec<u64>) {
    /// use tiercache_runtime::key::render;
    ///
    /// let names = cache
    ///     .entries("user", &ids)
    ///     .ttl(std::time::Duration::from_secs(300))
    ///     .tags_with(|id| [format!("user:{}", render(id))])
    ///     .get_many_with(|missing: Vec<u64>| async move {
    ///         missing.into_iter().map(|id| (id, format!("user {id}")))
    ///     })
    ///     .await;
    /// # }
    /// ```
    pub fn tags_with<F, I>(mut self, tags_of: F) -> Self
    where
        F: Fn(&K) -> I + Send + Sync + 'k,
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.tags_of = Some(Box::new(move |key| {
            tags_of(key).into_iter().map(Into::into).collect()
        }));
        self
    }

    /// The tags every entry carries (as [`Entry::tags`](crate::Entry::tags)).
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options.tags(tags);
        self
    }

    /// Cache a key the loader does not return as absent, for this long.
    /// Above zero, at most a year.
    pub fn cache_none(mut self, ttl: Duration) -> Self {
        self.options.cache_none(ttl);
        self
    }

    /// What the cache holds for the keys, fresh, without a load: one L1
    /// pass, then one Redis round trip for the rest. Keys it lacks are
    /// absent from the map.
    pub async fn get_many<V: Cacheable>(self) -> HashMap<K, V> {
        if let Some(error) = self.options.error() {
            tracing::warn!(%error, "tiercache entries not read");
            return HashMap::new();
        }
        let mut batch = Batch::<K, V>::new(&self);
        batch.look(false).await;
        batch.found
    }
}

impl<K> Entries<'_, '_, K, Ttl>
where
    K: EntryKey + Eq + Hash + Clone,
{
    /// The cached values of the keys, and, for those cached nowhere, what
    /// **one** call of `load` returns (given only those keys), which is
    /// cached. Keys `load` does not return are absent from the map (and,
    /// with [`cache_none`](Entries::cache_none), cached as absent). An
    /// `Err` is returned as it is, nothing of it cached.
    ///
    /// The loader may borrow from the caller and need not be `Send`.
    pub async fn try_get_many_with<F, Fut, I, V, E>(self, load: F) -> Result<HashMap<K, V>, E>
    where
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = Result<I, E>>,
        I: IntoIterator<Item = (K, V)>,
        V: Cacheable,
    {
        if let Some(error) = self.options.error() {
            tracing::warn!(%error, "tiercache entries not cached; loading without the cache");
            let mut keys: Vec<K> = self.keys.to_vec();
            let mut seen = HashSet::new();
            keys.retain(|key| seen.insert(key.clone()));
            return load(keys).await.map(|loaded| loaded.into_iter().collect());
        }
        let mut batch = Batch::<K, V>::new(&self);
        batch.look(true).await;
        if batch.missing.is_empty() {
            return Ok(batch.found);
        }
        let keys: Vec<K> = batch.missing.iter().map(|m| m.key.clone()).collect();
        let loading = Loading::start(batch.counters.clone(), self.options.spec.prefix);
        let loaded = load(keys).instrument(loading.span().clone()).await;
        let load_time = loading.elapsed();
        let loaded = match loaded {
            Ok(loaded) => {
                loading.finish(observe::Outcome::Ok);
                loaded
            }
            Err(error) => {
                loading.finish(observe::Outcome::Err);
                // Each key missing was a call answered by the load (its
                // error), as a single call's would be.
                for _ in &batch.missing {
                    batch.counters.answered(Answer::Load);
                }
                return Err(error);
            }
        };
        batch.land(loaded, load_time).await;
        Ok(batch.found)
    }

    /// Warms the entries (see [`crate::warm`]): what
    /// [`try_get_many_with`](Entries::try_get_many_with) does, with a
    /// tally instead of the values: the entries it found cached, and those
    /// it asked the loader for, loaded or (when the loader failed) failed.
    /// Counted by entry: keys that render alike are one.
    pub async fn warm_with<F, Fut, I, V, E>(self, load: F) -> Warmed
    where
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = Result<I, E>>,
        I: IntoIterator<Item = (K, V)>,
        V: Cacheable,
    {
        let prefix = self.options.spec.prefix;
        let total = (self.keys.iter())
            .map(|key| {
                let mut writer = KeyWriter::new(prefix);
                key.write_entry_key(&mut writer);
                writer.finish()
            })
            .collect::<HashSet<_>>()
            .len();
        let asked = std::cell::Cell::new(0);
        let loaded = self
            .try_get_many_with(|missing| {
                asked.set(missing.len());
                load(missing)
            })
            .await;
        let asked = asked.get();
        let cached = total.saturating_sub(asked);
        match loaded {
            Ok(_) => Warmed {
                loaded: asked,
                cached,
                failed: 0,
            },
            Err(_) => Warmed {
                loaded: 0,
                cached,
                failed: asked,
            },
        }
    }

    /// As [`try_get_many_with`](Entries::try_get_many_with), for a loader
    /// that cannot fail.
    pub async fn get_many_with<F, Fut, I, V>(self, load: F) -> HashMap<K, V>
    where
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = I>,
        I: IntoIterator<Item = (K, V)>,
        V: Cacheable,
    {
        let loaded = self
            .try_get_many_with(
                |keys| async move { Ok::<_, std::convert::Infallible>(load(keys).await) },
            )
            .await;
        match loaded {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }
}

/// `#[cache_batch]` returning `Result<HashMap<K, V>, E>`: the batch of
/// `keys` under `spec`, the function's body run once with the keys found
/// nowhere.
pub async fn batch<K, V, E, F, Fut>(
    cache: &Cache,
    spec: &'static Spec,
    keys: &[K],
    tags: Vec<String>,
    load: F,
) -> Result<HashMap<K, V>, E>
where
    K: EntryKey + Eq + Hash + Clone,
    V: Cacheable,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, E>>,
{
    let entries: Entries<'_, '_, K, Ttl> = Entries {
        cache,
        keys,
        options: Options {
            spec: *spec,
            tags,
            refused: None,
        },
        tags_of: None,
        marker: PhantomData,
    };
    entries.try_get_many_with(load).await
}

/// `#[cache_batch]` returning `HashMap<K, V>`.
pub async fn batch_infallible<K, V, F, Fut>(
    cache: &Cache,
    spec: &'static Spec,
    keys: &[K],
    tags: Vec<String>,
    load: F,
) -> HashMap<K, V>
where
    K: EntryKey + Eq + Hash + Clone,
    V: Cacheable,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = HashMap<K, V>>,
{
    let loaded = batch(cache, spec, keys, tags, |missing| async move {
        Ok::<_, std::convert::Infallible>(load(missing).await)
    });
    match loaded.await {
        Ok(found) => found,
        Err(never) => match never {},
    }
}

/// One key the batch has not found yet.
struct Missing<K> {
    key: K,
    /// Other keys that render the same (unequal as `K`, one entry): they
    /// get its value.
    aliases: Vec<K>,
    /// The rendered `prefix:key`.
    rendered: String,
    /// The entry's tags: the batch's, and the key's own.
    tags: Vec<String>,
    /// Whether it may be stored (no more tags than an entry records).
    store: bool,
    /// The key's flight, if this batch leads it.
    leader: Option<Leader>,
    /// Another caller's flight of the key, awaited.
    other: Option<Slot>,
    /// What an L1 entry of it depends on, taken before anything was read.
    generations: Snapshot,
    /// What the Redis read saw, for the write.
    seen: Option<Seen>,
}

/// A loaded value (`None`: a "nothing" cached with `cache_none`) on its
/// way to Redis, fresh for a while (until the Unix ms given).
struct Loaded<K, V> {
    missing: Missing<K>,
    value: Option<V>,
    fresh: (Duration, u64),
}

/// What became of a key the batch looked for.
enum Outcome<V> {
    Value(V, Shared, Source),
    /// A cached "nothing" (with `cache_none`, from Redis), or another
    /// flight's (a load's).
    Absent(Source),
    /// Still missing; what the Redis read saw, if it read the key.
    Missing(Option<Seen>),
}

/// An entry's bytes as read (if any), with the tag versions read with it.
type EntryRead = (Option<Vec<u8>>, Vec<u64>);

/// One `MGET` of a chunk's entries and of the union of their version keys;
/// each entry with the versions of its own tags.
async fn read_chunk(
    l2: &crate::l2::L2,
    chunk: &[L2Call<'_>],
    version_ttl: Duration,
) -> Result<Vec<EntryRead>, crate::l2::L2Error> {
    let entry_keys: Vec<String> = chunk.iter().map(|call| call.entry_key.clone()).collect();
    let mut union: Vec<String> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for key in chunk.iter().flat_map(L2Call::version_keys) {
        if !index.contains_key(key.as_str()) {
            index.insert(key, union.len());
            union.push(key.clone());
        }
    }
    let (entries, versions) = l2.read_many(&entry_keys, &union, version_ttl).await?;
    Ok(chunk
        .iter()
        .zip(entries)
        .map(|(call, entry)| {
            let own = call
                .version_keys()
                .iter()
                .filter_map(|key| {
                    index
                        .get(key.as_str())
                        .and_then(|&i| versions.get(i).copied())
                })
                .collect();
            (entry, own)
        })
        .collect())
}

/// The most entries one `MGET` or one pipeline of writes carries: a large
/// batch is sent as several, each within the Redis timeout.
const CHUNK: usize = 500;

/// One batch: what it found, and what it still looks for.
struct Batch<'a, K, V> {
    inner: &'a Arc<Inner>,
    spec: &'a Spec,
    /// The prefix's counters: each key counts as one call.
    counters: Arc<PrefixCounters>,
    tags: &'a [String],
    tags_of: Option<&'a TagsOf<'a, K>>,
    keys: &'a [K],
    codec: TypeCodec<V>,
    found: HashMap<K, V>,
    missing: Vec<Missing<K>>,
}

impl<'a, K, V> Batch<'a, K, V>
where
    K: EntryKey + Eq + Hash + Clone,
    V: Cacheable,
{
    fn new<T>(entries: &'a Entries<'_, 'a, K, T>) -> Self {
        Self {
            inner: &entries.cache.inner,
            spec: &entries.options.spec,
            counters: entries
                .cache
                .inner
                .observer
                .prefix(entries.options.spec.prefix),
            tags: &entries.options.tags,
            tags_of: entries.tags_of.as_ref(),
            keys: entries.keys,
            codec: TypeCodec::new(),
            found: HashMap::with_capacity(entries.keys.len()),
            missing: Vec::new(),
        }
    }

    /// Steps 1 to 3: L1, the flights (when it will `lead` a load), Redis.
    async fn look(&mut self, lead: bool) {
        let inner = self.inner;
        // Keys that render alike are one entry, whatever `K`'s `Eq` says:
        // looked for once, found for each.
        let mut by_rendered: HashMap<String, usize> = HashMap::with_capacity(self.keys.len());
        for key in self.keys {
            let mut writer = KeyWriter::new(self.spec.prefix);
            key.write_entry_key(&mut writer);
            if let Some(hit) = inner.l1.get(&*writer.as_key()) {
                if let Some(value) = (self.codec.unshare)(&hit) {
                    self.counters.l1_hit();
                    self.found.insert(key.clone(), value);
                    continue;
                }
                if hit.is::<Absent>() && self.spec.cache_none.is_some() {
                    self.counters.l1_hit();
                    continue;
                }
            }
            let rendered = writer.finish();
            if let Some(&i) = by_rendered.get(&rendered) {
                self.missing[i].aliases.push(key.clone());
                continue;
            }
            // A flight another batch leads is not awaited (two batches
            // waiting for each other's keys would both wait `lock_wait`):
            // the key is loaded here too.
            let (leader, other) = match lead.then(|| inner.flights.join_batch(&rendered)) {
                Some(Role::Leader(leader)) => (Some(leader), None),
                Some(Role::Waiter(slot)) if slot.led_by_batch() => (None, None),
                Some(Role::Waiter(slot)) => (None, Some(slot)),
                None => (None, None),
            };
            let mut tags = self.tags.to_vec();
            if let Some(tags_of) = self.tags_of {
                tags.extend(tags_of(key));
            }
            // Past what an entry records: the key is loaded, not stored.
            let store = tags.len() <= MAX_TAGS;
            if !store {
                tracing::warn!(
                    prefix = self.spec.prefix,
                    key = inner.observer.shown(&rendered),
                    "more than 253 tags; loaded, not cached"
                );
            }
            let (leader, other) = if store { (leader, other) } else { (None, None) };
            // Before anything is read: an invalidation from now on keeps
            // what this batch finds out of L1, and out of its flights.
            let (generations, tracked) = inner.snapshots(self.spec.prefix, &tags, &rendered);
            if let Some(leader) = &leader {
                leader.depends_on(&tracked);
            }
            by_rendered.insert(rendered.clone(), self.missing.len());
            self.missing.push(Missing {
                key: key.clone(),
                aliases: Vec::new(),
                tags,
                store,
                rendered,
                leader,
                other,
                generations,
                seen: None,
            });
        }
        if self.missing.is_empty() {
            return;
        }
        // Redis for the keys this batch leads, while the others' flights
        // land.
        let (read, waited) = tokio::join!(self.read(), self.wait_for_others());
        let mut outcomes: HashMap<usize, Outcome<V>> = read.into_iter().chain(waited).collect();
        let missing = std::mem::take(&mut self.missing);
        let mut still = Vec::with_capacity(missing.len());
        for (i, mut m) in missing.into_iter().enumerate() {
            match outcomes.remove(&i) {
                Some(Outcome::Value(value, shared, source)) => {
                    if let Some(leader) = m.leader.take() {
                        let until = later(Instant::now(), self.spec.ttl);
                        leader.land(Landed::Value(shared, source), until);
                    }
                    self.counters.answered(source.answer());
                    self.found_for(m, value);
                }
                Some(Outcome::Absent(source)) => {
                    self.counters.answered(source.answer());
                    if let Some(leader) = m.leader.take() {
                        leader.land(Landed::Absent, Instant::now());
                    }
                }
                Some(Outcome::Missing(seen)) => {
                    m.seen = seen;
                    still.push(m);
                }
                None => still.push(m),
            }
        }
        self.missing = still;
    }

    /// A value found or loaded for `m`: for its key and every alias.
    fn found_for(&mut self, m: Missing<K>, value: V) {
        for alias in m.aliases {
            self.found.insert(alias, value.clone());
        }
        self.found.insert(m.key, value);
    }

    /// One `MGET` of the entries this batch leads (all of them, when it
    /// loads nothing): a fresh valid value, or what the read saw.
    async fn read(&self) -> Vec<(usize, Outcome<V>)> {
        let inner = self.inner;
        let asked: Vec<usize> = (0..self.missing.len())
            .filter(|&i| self.missing[i].other.is_none() && self.missing[i].store)
            .collect();
        let calls: Vec<L2Call<'_>> = asked
            .iter()
            .filter_map(|&i| {
                let m = &self.missing[i];
                L2Call::new(inner, self.spec, &m.rendered, &m.tags)
            })
            .collect();
        let (Some(l2), Some(first)) = (&inner.l2, calls.first()) else {
            return Vec::new();
        };
        let at = Instant::now();
        // Before the read is sent: Redis may not have these yet.
        let pending = inner.pending.snapshot();
        let version_ttl = first.version_ttl();
        // In chunks, each one `MGET` bounded by the Redis timeout, sent
        // together (one round trip on the multiplexed connection).
        let reads = calls
            .chunks(CHUNK)
            .map(|chunk| read_chunk(l2, chunk, version_ttl));
        let mut read: Vec<Option<EntryRead>> = Vec::with_capacity(calls.len());
        for (chunk, result) in calls
            .chunks(CHUNK)
            .zip(futures_util::future::join_all(reads).await)
        {
            match result {
                Ok(entries) => read.extend(entries.into_iter().map(Some)),
                Err(error) => {
                    inner.counters.redis_failed(&error);
                    tracing::debug!(%error, "L2 batch read failed");
                    read.extend(chunk.iter().map(|_| None));
                }
            }
        }
        let now = std::time::SystemTime::now();
        let mut outcomes = Vec::with_capacity(calls.len());
        for ((&i, call), got) in asked.iter().zip(&calls).zip(read) {
            let Some((entry, versions)) = got else {
                outcomes.push((i, Outcome::Missing(None)));
                continue;
            };
            let read = call.classify(self.codec, entry, versions, pending.as_ref(), at);
            let outcome = match read {
                L2Read::Found(found) if found.meta.remaining(now).is_some() => {
                    let (expires_at_ms, load_time) =
                        (found.meta.expires_at_ms, found.meta.load_time());
                    let size = found.size;
                    let (outcome, shared): (_, Shared) = match found.value {
                        Some(value) => {
                            let shared = (self.codec.share)(&value);
                            (Outcome::Value(value, shared.clone(), Source::L2), shared)
                        }
                        None if self.spec.cache_none.is_some() => {
                            (Outcome::Absent(Source::L2), Arc::new(Absent))
                        }
                        None => {
                            outcomes.push((i, Outcome::Missing(Some(found.seen))));
                            continue;
                        }
                    };
                    let generations = self.missing[i].generations.clone();
                    let timing = (expires_at_ms, load_time);
                    if let Some(entry) =
                        l1_entry(self.spec, &self.counters, shared, timing, generations)
                    {
                        let entry = inner.weighed(entry, self.spec, self.codec.measure, Some(size));
                        inner.keep_in_l1(&self.missing[i].rendered, entry);
                    }
                    outcome
                }
                L2Read::Found(found) => Outcome::Missing(Some(found.seen)),
                L2Read::Miss(seen) => Outcome::Missing(Some(seen)),
                L2Read::Unavailable => Outcome::Missing(None),
            };
            outcomes.push((i, outcome));
        }
        outcomes
    }

    /// The flights of keys others were loading, awaited for `lock_wait`
    /// at most: their final value, their "nothing", or still missing (they
    /// failed, landed another type, only offered a stale or fail-safe
    /// value, or are slower).
    async fn wait_for_others(&self) -> Vec<(usize, Outcome<V>)> {
        let give_up_at = later(Instant::now(), self.inner.settings.lock_wait);
        let waits = self
            .missing
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.other.clone().map(|slot| (i, slot)))
            .map(|(i, slot)| async move {
                let landed =
                    tokio::time::timeout_at(give_up_at.into(), flight::wait_landed(slot)).await;
                (i, landed.ok().flatten())
            });
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .filter_map(|(i, landed)| {
                let outcome = match landed? {
                    Landed::Value(shared, source) => {
                        let value = (self.codec.unshare)(&shared)?;
                        Outcome::Value(value, shared, source)
                    }
                    Landed::Absent => Outcome::Absent(Source::Load),
                };
                Some((i, outcome))
            })
            .collect()
    }

    /// Step 5: what the loader returned goes to L1, to the flights, then
    /// to Redis in one pipeline.
    async fn land<I>(&mut self, loaded: I, load_time: Duration)
    where
        I: IntoIterator<Item = (K, V)>,
    {
        let inner = self.inner;
        let mut loaded: HashMap<K, V> = loaded.into_iter().collect();
        let missing = std::mem::take(&mut self.missing);
        let mut writes: Vec<Loaded<K, V>> = Vec::new();
        for mut m in missing {
            self.counters.answered(Answer::Load);
            // Under its key, or under a key that renders alike.
            let returned = std::iter::once(&m.key)
                .chain(&m.aliases)
                .find_map(|key| loaded.remove(key));
            if !m.store {
                if let Some(value) = returned {
                    self.found_for(m, value);
                }
                continue;
            }
            let (value, ttl) = match returned {
                Some(value) => (Some(value), inner.settings.jittered(self.spec.ttl)),
                None => match self.spec.cache_none {
                    Some(ttl) => (None, ttl),
                    None => {
                        if let Some(leader) = m.leader.take() {
                            leader.land(Landed::Absent, Instant::now());
                        }
                        continue;
                    }
                },
            };
            let shared: Shared = match &value {
                Some(value) => (self.codec.share)(value),
                None => Arc::new(Absent),
            };
            let expires_at_ms = expiry(ttl);
            let generations = m.generations.clone();
            let timing = (expires_at_ms, load_time);
            if let Some(entry) = l1_entry(
                self.spec,
                &self.counters,
                shared.clone(),
                timing,
                generations,
            ) {
                let entry = inner.weighed(entry, self.spec, self.codec.measure, None);
                inner.keep_in_l1(&m.rendered, entry);
            }
            if let Some(leader) = m.leader.take() {
                let landed = match &value {
                    Some(_) => Landed::Value(shared, Source::Load),
                    None => Landed::Absent,
                };
                leader.land(landed, later(Instant::now(), ttl));
            }
            writes.push(Loaded {
                missing: m,
                value,
                fresh: (ttl, expires_at_ms),
            });
        }
        self.write(&writes, load_time).await;
        for loaded in writes {
            if let Some(value) = loaded.value {
                self.found_for(loaded.missing, value);
            }
        }
    }

    /// One pipeline of conditional writes, for the keys the read saw (not
    /// so long ago that a tombstone they should meet may be gone).
    async fn write(&self, writes: &[Loaded<K, V>], load_time: Duration) {
        let inner = self.inner;
        let Some(l2) = &inner.l2 else { return };
        let mut first = None;
        let calls: Vec<(L2Call<'_>, &Loaded<K, V>, &Seen)> = writes
            .iter()
            .filter_map(|loaded| {
                let seen = loaded.missing.seen.as_ref();
                let seen = seen.filter(|seen| seen.at.elapsed() <= WRITE_HORIZON)?;
                let m = &loaded.missing;
                let call = L2Call::new(inner, self.spec, &m.rendered, &m.tags)?;
                Some((call, loaded, seen))
            })
            .collect();
        let many: Vec<ManyWrite<'_>> = calls
            .iter()
            .filter_map(|(call, loaded, seen)| {
                first.get_or_insert(call);
                let value = loaded.value.as_ref();
                let envelope = call
                    .envelope(self.codec, value, load_time, loaded.fresh, seen)
                    .ok()?;
                Some(ManyWrite {
                    entry_key: &call.entry_key,
                    version_keys: call.version_keys(),
                    seen: seen.digest(),
                    envelope,
                    ttl: self.spec.lifetime(loaded.fresh.0),
                })
            })
            .collect();
        let Some(first) = first else { return };
        let version_ttl = first.version_ttl();
        let writes = many
            .chunks(CHUNK)
            .map(|chunk| l2.write_many_if_unchanged(chunk, version_ttl));
        for written in futures_util::future::join_all(writes).await {
            if let Err(error) = written {
                inner.counters.redis_failed(&error);
                tracing::debug!(%error, "L2 batch write failed");
            }
        }
    }
}
