//! Programmatic entries: a cache call that is not a function.
//!
//! [`Cache::entry`] names an entry by prefix and key, exactly as a
//! `#[cache_aside(prefix = "user", key = "{id}")]` function names its own,
//! and runs the same engine: L1, Redis, single-flight and the
//! cross-process lock, versioned tags, stale-while-revalidate, fail-safe.
//! A value set through one is a hit for the other.
//!
//! ```no_run
//! # use std::time::Duration;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User;
//! # #[derive(Debug)] struct DbError;
//! # struct Db;
//! # impl Db { async fn user(&self, id: u64) -> Result<User, DbError> { Ok(User) } }
//! # async fn run(cache: tiercache_runtime::Cache, db: Db) -> Result<(), Box<dyn std::error::Error>> {
//! let user: Result<User, DbError> = cache
//!     .entry("user", &42u64)
//!     .ttl(Duration::from_secs(300))
//!     .tags(["org:7"])
//!     .try_get_with(|| async { db.user(42).await })
//!     .await;
//! # Ok(()) }
//! ```
//!
//! The builder's type tracks two things, so that a mistake is a compile
//! error rather than a surprise: whether a TTL was given ([`NoTtl`],
//! [`Ttl`]: a load or a `set` needs one), and whether the loader may run
//! in the background ([`Inline`], [`Background`]: `stale`, `timeout` and
//! `refresh_ahead` need a loader that is `Fn + Send + Sync + 'static`, as a
//! `#[cache_aside]` body with those options runs on owned copies of its
//! arguments; without them the loader may borrow from the caller).
//!
//! A setting out of range (a zero TTL, a prefix a key cannot hold, more
//! than 253 tags, `refresh_ahead` outside `(0, 1000]`) does not panic and
//! does not fail the call: the loader runs uncached, with a `warn` event;
//! [`Entry::set`] and [`Entry::invalidate`] return the error.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crate::aside::{l1_get_rendered, load_detached_in, load_in, peek};
use crate::body::Detached;
use crate::cache::Cache;
use crate::codec::{Cacheable, TypeCodec};
use crate::error::Error;
use crate::key::{EntryKey, KeyWriter};
use crate::lead::Ctx;
use crate::options::{Options, Refused};
use crate::shape::{Fallible, Optional, Plain, Shape};
use crate::write::{invalidate_entry, set};

/// The most tags an entry records the versions of (beside its namespace's
/// and its prefix's).
pub(crate) const MAX_TAGS: usize = crate::envelope::MAX_VERSIONS - 2;

/// What a read-only write-through does with its body's result: see
/// `Entry::write_through_shared`.
#[cfg(feature = "http")]
pub(crate) enum Refreshed<V> {
    /// Store the value, fresh for this long.
    Store(std::sync::Arc<V>, Duration),
    /// Forget the entry: what it holds may no longer be stored.
    Forget,
    /// Leave the entry as it is (the body failed).
    Keep,
}

/// Marks an [`Entry`] with no TTL yet: it can be read and invalidated, not
/// loaded or set.
#[derive(Debug)]
pub enum NoTtl {}

/// Marks an [`Entry`] with a TTL: it can be loaded and set.
#[derive(Debug)]
pub enum Ttl {}

/// Marks an [`Entry`] whose loader runs in the caller's task, once: it may
/// borrow from the caller and need not be `Send`.
#[derive(Debug)]
pub enum Inline {}

/// Marks an [`Entry`] with `stale`, `timeout` or `refresh_ahead`: its
/// loader may run in the background (a refresh nobody waits for, a load
/// that goes on after a slow one was answered), so it must be
/// `Fn() -> impl Future + Send + Sync + 'static`.
#[derive(Debug)]
pub enum Background {}

/// One cache entry, named by prefix and key: see [`Cache::entry`] and the
/// [module docs](self).
#[must_use = "an entry does nothing until it is loaded, read, set or invalidated"]
pub struct Entry<'c, T = NoTtl, B = Inline> {
    cache: &'c Cache,
    /// The rendered `prefix:key`, on the stack: an L1 hit makes no `String`.
    key: KeyWriter,
    options: Options,
    marker: PhantomData<fn() -> (T, B)>,
}

impl<T, B> std::fmt::Debug for Entry<'_, T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key.clone().finish())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The entry `prefix` and `key` name: the one a `#[cache_aside(prefix =
    /// "user", key = "{id}")]` function reads for the same `id` (and the
    /// default key of a function whose one key argument is `id`).
    ///
    /// `key` is any [`KeyPart`](crate::KeyPart), written as a `{placeholder}` writes it. A
    /// key of several parts (`key = "{tenant}:{id}"`, or the default key of
    /// a function of `tenant` and `id`) is a [`Key`](crate::key::Key):
    /// `&Key::new().part(&tenant).part(&id)`.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(cache: tiercache_runtime::Cache) -> Result<(), tiercache_runtime::Error> {
    /// use tiercache_runtime::key::Key;
    ///
    /// let name: Option<String> = cache.entry("user", &42u64).get().await;
    /// // `#[cache_aside(prefix = "post", key = "{tenant}:{id}")]` for ("acme", 7):
    /// cache.entry("post", &Key::new().part("acme").part(&7u64)).invalidate().await?;
    /// # Ok(()) }
    /// ```
    pub fn entry<K: EntryKey + ?Sized>(&self, prefix: &'static str, key: &K) -> Entry<'_> {
        let mut writer = KeyWriter::new(prefix);
        key.write_entry_key(&mut writer);
        Entry {
            cache: self,
            key: writer,
            options: Options::new(prefix),
            marker: PhantomData,
        }
    }
}

impl<'c, T, B> Entry<'c, T, B> {
    fn with<T2, B2>(self) -> Entry<'c, T2, B2> {
        Entry {
            cache: self.cache,
            key: self.key,
            options: self.options,
            marker: PhantomData,
        }
    }

    /// How long a loaded or set value stays fresh; required before a load
    /// or a [`set`](Entry::set). Above zero, at most a year.
    pub fn ttl(mut self, ttl: Duration) -> Entry<'c, Ttl, B> {
        self.options.ttl(ttl);
        self.with()
    }

    /// The tags the entry carries, as the macro's `tags = [...]` renders
    /// them (`"org:7"`): invalidating one forgets the entry. A read checks
    /// the versions of the tags it names, so read an entry with the tags it
    /// was written with (a `#[cache_aside]` function's, for its entries).
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options.tags(tags);
        self
    }

    /// Past its TTL, a value is served for this long more when the load
    /// fails (`fail_safe = "…"`). Zero: off; at most a year.
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.options.fail_safe(window);
        self
    }

    /// Cache a "nothing" (`None` from [`optionally_get_with`](Entry::optionally_get_with))
    /// for this long (`cache_none = "…"`). Above zero, at most a year.
    pub fn cache_none(mut self, ttl: Duration) -> Self {
        self.options.cache_none(ttl);
        self
    }

    /// The cross-process lock on a miss, for this entry (default: the
    /// cache's, see [`CacheBuilder::lock`](crate::CacheBuilder::lock)).
    pub fn lock(mut self, lock: bool) -> Self {
        self.options.spec.lock = Some(lock);
        self
    }

    /// How the value is serialized in Redis (`codec = "…"`; default: the
    /// cache's, see [`CacheBuilder::codec`](crate::CacheBuilder::codec)).
    /// Any codec compiled in is read, whatever this says.
    pub fn codec(mut self, codec: crate::Codec) -> Self {
        self.options.spec.format.codec = Some(codec);
        self
    }

    /// How the value is compressed in Redis from `above` bytes serialized
    /// (`compress = "…"`, `compress_above = n`; default: the cache's).
    pub fn compress(mut self, compression: crate::Compression, above: usize) -> Self {
        self.options.spec.format.compression = Some(compression);
        self.options.spec.format.compress_above = Some(above);
        self
    }

    /// Encrypt the value in Redis with the cache's
    /// [`KeyRing`](crate::KeyRing) (`encrypt`): without one it is kept out
    /// of Redis; a value found there unencrypted is a miss.
    #[cfg(feature = "encryption")]
    pub fn encrypt(mut self) -> Self {
        self.options.spec.format.encrypt = true;
        self
    }

    /// Past its TTL, serve the old value at once while one background
    /// refresh runs, for this long (`stale = "…"`; at most a year). The
    /// loader must then be able to run in the background.
    pub fn stale(mut self, window: Duration) -> Entry<'c, T, Background> {
        self.options.stale(window);
        self.with()
    }

    /// With a fail-safe value at hand, answer a load slower than this with
    /// it; the load goes on in the background (`timeout = "…"`). Above
    /// zero, at most a day.
    pub fn timeout(mut self, timeout: Duration) -> Entry<'c, T, Background> {
        self.options.timeout(timeout);
        self.with()
    }

    /// Refresh shortly before expiry, in the background (XFetch, with
    /// `beta`; the macro's `refresh_ahead` is `1.0`). `beta` in `(0, 1000]`.
    pub fn refresh_ahead(mut self, beta: f64) -> Entry<'c, T, Background> {
        self.options.refresh_ahead(beta);
        self.with()
    }

    /// What the cache holds, fresh, without a load: L1, then Redis (a
    /// Redis hit fills L1). `None` on a miss, for a cached "nothing", a
    /// value of another type, or one past its TTL.
    pub async fn get<V: Cacheable>(&self) -> Option<V> {
        if let Some(error) = self.options.error() {
            tracing::warn!(%error, "tiercache entry not read");
            return None;
        }
        let (key, Options { spec, tags, .. }) = (self.key.clone().finish(), &self.options);
        peek(self.cache, spec, TypeCodec::<V>::new(), &key, tags).await
    }

    /// Forgets the entry, in Redis and in the L1 of every instance, as
    /// [`Cache::invalidate_key`] does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a prefix a key cannot hold; otherwise as
    /// [`Cache::invalidate_tags`]: the entry is forgotten here at once,
    /// and the invalidation is retried until Redis confirms it.
    pub async fn invalidate(&self) -> Result<(), Error> {
        if let Some(refused @ Refused::Prefix(_)) = self.options.refused {
            return Err(refused.error());
        }
        invalidate_entry(self.cache, self.key.clone().finish()).await
    }

    /// The call's parts for the engine; `None` (with a warning) when a
    /// setting was refused: then the loader runs uncached.
    fn described<S: Shape<R>, R>(self, codec: TypeCodec<S::Value>) -> Option<Ctx<S, R>> {
        if let Some(error) = self.options.error() {
            tracing::warn!(%error, "tiercache entry not cached; loading without the cache");
            return None;
        }
        Some(Ctx::new(
            self.cache.clone(),
            self.options.spec,
            codec,
            self.key.finish(),
            self.options.tags,
            None,
        ))
    }

    /// An L1 hit, checked before anything else is made.
    pub(crate) fn hit<S: Shape<R>, R>(&self, codec: TypeCodec<S::Value>) -> Option<R> {
        if self.options.refused.is_some() {
            return None;
        }
        l1_get_rendered::<S, R>(self.cache, &self.key, codec)
    }

    /// `stale`, without the type's note that the loader may run in the
    /// background: for a caller whose loader always may (the HTTP layer's).
    #[cfg(feature = "http")]
    pub(crate) fn stale_keeping_type(mut self, window: Duration) -> Self {
        self.options.stale(window);
        self
    }

    /// A load whose loader may run in the background, in any shape and
    /// with any codec: the HTTP layer's, whose value is an `Arc` of a
    /// stored response that says how long it stays fresh.
    #[cfg(feature = "http")]
    pub(crate) async fn detached_with<S, R, F, Fut>(self, codec: TypeCodec<S::Value>, load: F) -> R
    where
        S: Shape<R> + 'static,
        S::Value: Send + Sync + 'static,
        R: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if let Some(hit) = self.hit::<S, R>(codec) {
            return hit;
        }
        match self.described::<S, R>(codec) {
            Some(ctx) => Box::pin(load_detached_in(ctx, Detached::new(load))).await,
            None => load().await,
        }
    }

    /// Runs `body` as a write-through of this entry runs its body, for a
    /// body that changes no data (the HTTP layer's refresh): the entry is
    /// read before it; what `outcome` makes of its result is stored (fresh
    /// for its duration, at most the TTL) only if nothing wrote or
    /// invalidated the entry meanwhile, forgets the entry, or leaves it as
    /// it is. Cancelled or refused, it leaves the entry alone.
    #[cfg(feature = "http")]
    pub(crate) async fn write_through_shared<V, R, Fut>(
        &self,
        body: Fut,
        outcome: impl FnOnce(&R) -> Refreshed<V>,
    ) -> (R, bool)
    where
        V: crate::codec::CacheableShared,
        Fut: Future<Output = R>,
    {
        if self.options.refused.is_some() || self.options.spec.ttl.is_zero() {
            return (body.await, false);
        }
        let (key, Options { spec, tags, .. }) = (self.key.clone().finish(), &self.options);
        let writing = crate::write::Writing::begin(&self.cache.inner, spec, &key, tags).await;
        let writing = writing.read_only();
        let result = body.await;
        let (value, fresh) = match outcome(&result) {
            Refreshed::Store(value, fresh) => (value, fresh),
            Refreshed::Forget => {
                writing.invalidate().await;
                return (result, false);
            }
            Refreshed::Keep => {
                writing.abandon();
                return (result, false);
            }
        };
        let written = writing.store_fresh(TypeCodec::arc(), &value, fresh).await;
        (result, written.is_ok())
    }
}

impl<B> Entry<'_, Ttl, B> {
    /// Stores `value` under this entry, with its TTL and tags, in L1 and
    /// Redis, and tells the other instances to drop their copy: a
    /// write-through. Read, written and announced as `#[write_through]`
    /// does: the value is stored only if the entry did not change between
    /// the read and the write.
    ///
    /// # Errors
    ///
    /// [`Error::NotStored`] when the value could not be stored (Redis out
    /// of reach, a value over `max_value_size`, another write or an
    /// invalidation of the entry meanwhile): the entry was invalidated in
    /// its place, so nobody reads the value it replaced. A setting out of
    /// range: its error.
    pub async fn set<V: Cacheable>(&self, value: &V) -> Result<(), Error> {
        if let Some(error) = self.options.error() {
            return Err(error);
        }
        let (key, Options { spec, tags, .. }) = (self.key.clone().finish(), &self.options);
        set(self.cache, spec, TypeCodec::new(), &key, tags, value).await
    }
}

impl Entry<'_, Ttl, Inline> {
    /// The cached value, or `load`'s: an `Ok` is cached, an `Err` is
    /// returned to this caller and never cached. Concurrent callers of the
    /// key (here, in a `#[cache_aside]` function, or in another process)
    /// share one load.
    pub async fn try_get_with<F, Fut, V, E>(self, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        V: Cacheable,
    {
        self.inline::<Fallible, _, _, _>(load).await
    }

    /// The cached value, or `load`'s, which is cached.
    pub async fn get_with<F, Fut, V>(self, load: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
        V: Cacheable,
    {
        self.inline::<Plain, _, _, _>(load).await
    }

    /// The cached value, or `load`'s: `Some` is cached, `None` only with
    /// [`cache_none`](Entry::cache_none).
    pub async fn optionally_get_with<F, Fut, V>(self, load: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<V>>,
        V: Cacheable,
    {
        self.inline::<Optional, _, _, _>(load).await
    }

    async fn inline<S, R, F, Fut>(self, load: F) -> R
    where
        S: Shape<R>,
        S::Value: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        if let Some(hit) = self.hit::<S, R>(TypeCodec::new()) {
            return hit;
        }
        match self.described::<S, R>(TypeCodec::new()) {
            Some(ctx) => Box::pin(load_in(ctx, load())).await,
            None => load().await,
        }
    }
}

impl Entry<'_, Ttl, Background> {
    /// As [`Entry::try_get_with`], with a loader that may run in the
    /// background (a refresh, a load that goes on after a slow one was
    /// answered with the fail-safe value).
    pub async fn try_get_with<F, Fut, V, E>(self, load: F) -> Result<V, E>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        V: Cacheable,
        E: Send + 'static,
    {
        self.background::<Fallible, _, _, _>(load).await
    }

    /// As [`Entry::get_with`], with a loader that may run in the
    /// background.
    pub async fn get_with<F, Fut, V>(self, load: F) -> V
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = V> + Send + 'static,
        V: Cacheable,
    {
        self.background::<Plain, _, _, _>(load).await
    }

    /// As [`Entry::optionally_get_with`], with a loader that may run in
    /// the background.
    pub async fn optionally_get_with<F, Fut, V>(self, load: F) -> Option<V>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<V>> + Send + 'static,
        V: Cacheable,
    {
        self.background::<Optional, _, _, _>(load).await
    }

    async fn background<S, R, F, Fut>(self, load: F) -> R
    where
        S: Shape<R> + 'static,
        S::Value: Cacheable,
        R: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if let Some(hit) = self.hit::<S, R>(TypeCodec::new()) {
            return hit;
        }
        match self.described::<S, R>(TypeCodec::new()) {
            Some(ctx) => Box::pin(load_detached_in(ctx, Detached::new(load))).await,
            None => load().await,
        }
    }
}
