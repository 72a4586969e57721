//! The cache handle, its builder and the global instance.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::Error;
use crate::flight::Flights;
use crate::generations::Generations;
use crate::key::check_name;
use crate::l1::L1;
use crate::l2::L2;
use crate::lock::Landings;
use crate::metrics::CacheMetrics;
use crate::observe::Observer;
use crate::pending::{Pending, RetryOnDrop};
use crate::spec::Settings;
use crate::stats::{Counters, Stats};
use crate::tags::{Invalidation, Names};

/// The default namespace, the first part of every Redis key.
pub const DEFAULT_NAMESPACE: &str = "tiercache";
/// The default L1 capacity, in entries.
pub const DEFAULT_L1_CAPACITY: u64 = 10_000;
/// The default bound on each Redis operation.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// The default circuit breaker: open after this many consecutive failures…
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// …and probe Redis once per this long while open.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// A two-level cache: an in-process L1 (a bounded concurrent map, quick_cache)
/// in front of an optional shared L2 (Redis).
///
/// Cheap to clone (an `Arc`): clones share everything. Cached functions use
/// the [global](crate::set_global) cache unless their `cache = …` option names
/// another one.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), tiercache_runtime::Error> {
/// use tiercache_runtime::Cache;
///
/// let cache = Cache::builder()
///     .namespace("shop")
///     .redis("redis://127.0.0.1:6379")
///     .build()
///     .await?;
/// println!("{:?}", cache.stats());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The namespace, and the Redis names derived from it.
    pub(crate) names: Names,
    /// Tells this instance's own invalidation messages from others'.
    pub(crate) id: u64,
    pub(crate) l1: L1,
    pub(crate) l2: Option<L2>,
    pub(crate) flights: Flights,
    /// Keys this instance waits on for another process's load.
    pub(crate) landings: Landings,
    pub(crate) settings: Settings,
    /// The keys values are encrypted with in Redis, if any.
    pub(crate) keys: Option<crate::crypt::KeyRing>,
    /// Prefixes a function that encrypts has used here.
    pub(crate) sealed_prefixes: crate::format::SealedPrefixes,
    pub(crate) counters: Counters,
    /// Each prefix's counters, and how calls are traced.
    pub(crate) observer: Observer,
    pub(crate) metrics: CacheMetrics,
    /// What L1 entries depend on: bumped by tag, prefix and namespace
    /// invalidations.
    pub(crate) generations: Generations,
    /// Invalidations applied here that Redis has not confirmed yet.
    pub(crate) pending: Pending,
    listener: OnceLock<tokio::task::AbortHandle>,
}

impl Inner {
    /// The generation counters an L1 entry of `prefix` with `tags` under
    /// `key` will depend on; nothing without L1. Taken before anything is
    /// read or loaded: an invalidation from then on outdates the entry.
    pub(crate) fn snapshot(
        &self,
        prefix: &str,
        tags: &[String],
        key: &str,
    ) -> crate::generations::Snapshot {
        if self.l1.enabled() {
            self.generations.snapshot(prefix, tags, key)
        } else {
            crate::generations::Snapshot::NONE
        }
    }

    /// [`Inner::snapshot`], and the same taken even without L1: what a
    /// load's flight (and a fail-safe value) depends on.
    pub(crate) fn snapshots(
        &self,
        prefix: &str,
        tags: &[String],
        key: &str,
    ) -> (crate::generations::Snapshot, crate::generations::Snapshot) {
        let generations = self.snapshot(prefix, tags, key);
        let tracked = if self.l1.enabled() {
            generations.clone()
        } else {
            self.generations.snapshot(prefix, tags, key)
        };
        (generations, tracked)
    }

    /// With an L1 byte budget, `entry` with its value's serialized size:
    /// `known` (as read from Redis), else `measure`d in the codec `spec`
    /// writes (only then). A value its codec cannot serialize weighs as
    /// much as can be: it is not kept in L1 under a budget.
    pub(crate) fn weighed(
        &self,
        entry: crate::l1::Entry,
        spec: &crate::spec::Spec,
        measure: crate::codec::Measure,
        known: Option<usize>,
    ) -> crate::l1::Entry {
        if !self.l1.weighs() {
            return entry;
        }
        let codec = || crate::format::Format::of(spec.format, self.settings.formats).codec;
        let size = known.or_else(|| measure(&entry.value, codec()));
        entry.sized(size.unwrap_or(usize::MAX))
    }

    /// Puts a value in L1 unless an invalidation covering it was applied
    /// since its generations were taken (before the value was read or
    /// loaded): it may be stale. A tag, prefix or namespace invalidation
    /// after this outdates the entry in place (every hit checks those
    /// generations); a key invalidation removes the key, and waits for a
    /// fill of its stripe that checked before it (see
    /// `Generations::lock_fills`).
    pub(crate) fn keep_in_l1(&self, key: &str, entry: crate::l1::Entry) {
        self.fill_l1(key, entry, true);
    }

    /// As [`Inner::keep_in_l1`], unless L1 holds a value of `key` by now
    /// (another load's, newer): for a fail-safe value kept serving.
    pub(crate) fn keep_in_l1_unless_filled(&self, key: &str, entry: crate::l1::Entry) {
        self.fill_l1(key, entry, false);
    }

    fn fill_l1(&self, key: &str, entry: crate::l1::Entry, replace: bool) {
        if !self.l1.enabled() {
            return;
        }
        let _fills = self.generations.lock_fills(key);
        if entry.is_current() && (replace || self.l1.get(key).is_none()) {
            self.l1.insert(key.to_owned(), entry);
            self.metrics.l1_entries(|| self.l1.len());
        }
    }

    /// A key invalidation here: L1 forgets the key, and loads of it in
    /// flight cannot fill L1.
    fn outdate_key(&self, key: &str) {
        let _fills = self.generations.lock_fills(key);
        self.generations.bump_key(key);
        self.l1.remove(key);
    }

    /// A write-through's key invalidation here, before it keeps its value:
    /// as [`Inner::outdate_key`], bumping the stripe only if nothing else
    /// did since `written` was taken; the snapshot to keep the value with
    /// then (`None`: another write or invalidation raced with this one).
    pub(crate) fn outdate_written_key(
        &self,
        key: &str,
        written: &crate::generations::Snapshot,
    ) -> Option<crate::generations::Snapshot> {
        let _fills = self.generations.lock_fills(key);
        let own = written.bump_own_key();
        if own.is_none() {
            self.generations.bump_key(key);
        }
        self.l1.remove(key);
        own
    }

    /// Makes the L1 entries an invalidation covers unservable, and the
    /// loads in flight that it outdates unable to fill L1: O(1) for a tag,
    /// a prefix or the namespace (a generation bump), and for each key (a
    /// bump of its stripe).
    pub(crate) fn apply_locally(&self, invalidation: &Invalidation) {
        if invalidation.all {
            self.forget_l1();
            return;
        }
        for key in &invalidation.keys {
            self.outdate_key(key);
        }
        for prefix in &invalidation.prefixes {
            self.generations.bump_prefix(prefix);
        }
        for tag in &invalidation.tags {
            self.generations.bump_tag(tag);
        }
    }

    /// Drops all of L1, and what loads in flight would put there: messages
    /// may have been missed.
    pub(crate) fn forget_l1(&self) {
        self.generations.bump_namespace();
        self.l1.clear();
        self.metrics.l1_entries(|| 0);
    }

    /// Invalidates here at once, then in Redis (and so on the other
    /// instances). Until Redis confirms it the invalidation is pending:
    /// this instance serves no L2 entry it covers, and it is retried in
    /// order in the background. The local part happens before the first
    /// `await`: a caller cancelled at any point leaves it applied here and
    /// queued for Redis.
    ///
    /// `Ok`: Redis has it. `Err`: not yet; it stays pending and is retried.
    pub(crate) async fn invalidate(
        self: &Arc<Self>,
        invalidation: Invalidation,
    ) -> Result<(), Error> {
        self.queue(invalidation).send().await
    }

    /// The first half of [`Inner::invalidate`], with no `await`: applied
    /// here and queued for Redis, to be sent by [`Queuing::send`] (or, if
    /// that never runs, by the retrier). For several invalidations that
    /// must all be queued before any is sent: a caller cancelled while the
    /// first is sent leaves the others queued too.
    pub(crate) fn queue(self: &Arc<Self>, mut invalidation: Invalidation) -> Queuing<'_> {
        if invalidation.is_empty() {
            return Queuing {
                inner: self,
                queued: None,
            };
        }
        invalidation.sender = self.id;
        Counters::bump(&self.counters.invalidations);
        self.metrics.invalidation_sent();
        let queued = self
            .enqueue(invalidation)
            .map(|queued| (queued, RetryOnDrop::new(self)));
        Queuing {
            inner: self,
            queued,
        }
    }

    /// Applies an invalidation here and queues it for Redis, without
    /// sending it: the caller sends it, or leaves it to
    /// [`Pending::retry_in_background`]. `None` without Redis (then it is
    /// local only).
    fn enqueue(
        self: &Arc<Self>,
        invalidation: Invalidation,
    ) -> Option<Arc<crate::pending::Queued>> {
        if self.l2.is_none() {
            self.apply_locally(&invalidation);
            return None;
        }
        // Queued before it is applied: an L2 read from now on that finds
        // an entry it covers refuses it.
        let queued = self.pending.push(invalidation, self.id);
        self.metrics.pending(|| self.pending.len());
        self.apply_locally(&queued.invalidation);
        Some(queued)
    }
}

/// An invalidation applied here and queued for Redis ([`Inner::queue`]).
/// Dropped unsent, the retrier sends it.
pub(crate) struct Queuing<'a> {
    inner: &'a Arc<Inner>,
    /// `None` without Redis (local only), or for nothing to invalidate.
    queued: Option<(Arc<crate::pending::Queued>, RetryOnDrop<'a>)>,
}

impl Queuing<'_> {
    /// Sends it. `Ok`: Redis has it. `Err`: not yet; it stays pending and
    /// is retried.
    pub(crate) async fn send(self) -> Result<(), Error> {
        let Some((queued, retry)) = self.queued else {
            return Ok(());
        };
        let result = self.inner.pending.send_through(self.inner, &queued).await;
        if result.is_ok() {
            retry.disarm();
        }
        result.map_err(Error::from)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl Cache {
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The embedded default: L1 only, no Redis, default settings. Needs no
    /// runtime and cannot fail.
    #[must_use]
    pub fn in_memory() -> Self {
        Self::from_parts(
            Names::new(DEFAULT_NAMESPACE.to_owned()),
            (DEFAULT_L1_CAPACITY, None),
            None,
            Settings::default(),
            None,
        )
    }

    fn from_parts(
        names: Names,
        (l1_capacity, l1_max_bytes): (u64, Option<u64>),
        l2: Option<L2>,
        settings: Settings,
        keys: Option<crate::crypt::KeyRing>,
    ) -> Self {
        let observer = Observer::new(names.as_str(), settings.trace_keys);
        let metrics = CacheMetrics::new(names.as_str());
        Self {
            inner: Arc::new(Inner {
                observer,
                metrics,
                names,
                id: fastrand::u64(..),
                l1: L1::new(l1_capacity, l1_max_bytes, settings.max_value_size),
                l2,
                flights: Flights::default(),
                landings: Landings::default(),
                settings,
                keys,
                sealed_prefixes: crate::format::SealedPrefixes::default(),
                counters: Counters::default(),
                generations: Generations::default(),
                pending: Pending::default(),
                listener: OnceLock::new(),
            }),
        }
    }

    /// Sends the invalidations that wait for Redis (see
    /// [`Stats::pending_invalidations`]) now, and returns once Redis has
    /// confirmed every one of them: call it before the process exits, so
    /// that none is left unsent. `Ok` at once when none waits, or without
    /// Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::RedisTimeout`] when Redis could not
    /// take them; they stay queued, and are retried in the background.
    pub async fn flush_invalidations(&self) -> Result<(), Error> {
        let result = self.inner.pending.send_all(&self.inner).await;
        if result.is_err() {
            crate::pending::Pending::retry_in_background(&self.inner);
        }
        result.map_err(Error::from)
    }

    /// Invalidates every entry carrying one of `tags`, in Redis and in the L1
    /// of every instance. O(1) per tag, whatever the number of entries.
    ///
    /// Tag names are used as given: `"org:7"` is what `tags = ["org:{org}"]`
    /// renders for `org = 7`. A value outside `A-Z a-z 0-9 - _ .` is escaped
    /// in rendered tags; render it the same way with
    /// [`key::render`](crate::key::render).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::RedisTimeout`] when Redis has not
    /// confirmed it (yet): this instance is invalidated all the same, at
    /// once, and serves nothing the invalidation covers from Redis; the
    /// invalidation is retried in the background until Redis confirms it
    /// (see [`Cache::flush_invalidations`]). Until then Redis and the other
    /// instances may serve the old values. `Ok` means Redis has it, and
    /// the other instances' L1 as soon as its message reaches them.
    pub async fn invalidate_tags<I>(&self, tags: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.inner
            .invalidate(Invalidation {
                tags: tags.into_iter().map(Into::into).collect(),
                ..Invalidation::default()
            })
            .await
    }

    /// Invalidates one entry: `prefix` and the rendered key, as the macros
    /// build it (`"42"` for `key = "{id}"` with `id = 42`; `"7:en"` for the
    /// default key of `(7, "en")`).
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_tags`].
    pub async fn invalidate_key(&self, prefix: &str, key: &str) -> Result<(), Error> {
        crate::write::invalidate_entry(self, format!("{prefix}:{key}")).await
    }

    /// Invalidates everything cached under `prefix`: O(1).
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_tags`].
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<(), Error> {
        self.inner
            .invalidate(Invalidation {
                prefixes: vec![prefix.to_owned()],
                ..Invalidation::default()
            })
            .await
    }

    /// Invalidates the whole namespace, on every instance: O(1).
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_tags`].
    pub async fn clear(&self) -> Result<(), Error> {
        self.inner
            .invalidate(Invalidation {
                all: true,
                ..Invalidation::default()
            })
            .await
    }

    /// A snapshot of the counters: the totals of every prefix's (see
    /// [`Cache::prefix_stats`]), and the cache's own.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.observer.flush();
        let mut stats = self.inner.counters.snapshot(&self.inner.observer.totals());
        stats.pending_invalidations = self.inner.pending.len();
        stats.l1_entries = self.inner.l1.len() as u64;
        if self.inner.l1.weighs() {
            stats.l1_bytes = self.inner.l1.weight();
        }
        if let Some(l2) = &self.inner.l2 {
            stats.breaker_trips = l2.breaker.trips();
            stats.breaker_open = l2.breaker.is_open();
        }
        stats
    }

    /// What each prefix's calls did, by prefix: hits per layer, loads,
    /// errors and load time, for every prefix called since the cache was
    /// built. Past [`MAX_PREFIXES`](crate::MAX_PREFIXES) prefixes,
    /// the rest are counted together under
    /// [`OTHER_PREFIXES`](crate::OTHER_PREFIXES).
    ///
    /// ```
    /// # async fn run(cache: tiercache_runtime::Cache) {
    /// for (prefix, stats) in cache.prefix_stats() {
    ///     println!("{prefix}: {:.0} % hits, {} loads", 100.0 * stats.hit_ratio(), stats.loads);
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn prefix_stats(&self) -> std::collections::BTreeMap<&'static str, crate::PrefixStats> {
        self.inner.observer.flush();
        self.inner.observer.prefix_stats()
    }

    /// The namespace every Redis key of this cache starts with.
    #[must_use]
    pub fn namespace(&self) -> &str {
        self.inner.names.as_str()
    }

    /// Whether this cache has a Redis layer (configured; it may be down:
    /// see [`Cache::ping`]).
    #[must_use]
    pub fn has_redis(&self) -> bool {
        self.inner.l2.is_some()
    }

    /// Asks Redis whether it answers, within the Redis timeout: for health
    /// checks. `Ok` for a cache without Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::RedisTimeout`] when Redis does not answer.
    pub async fn ping(&self) -> Result<(), Error> {
        match &self.inner.l2 {
            Some(l2) => Ok(l2.warm_up().await?),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.names.as_str())
            .field("redis", &self.inner.l2.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Cache`]. Every setting has a default; `build` checks them.
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    namespace: String,
    redis: Option<RedisSource>,
    /// The master's user and password, with Sentinel.
    sentinel_auth: Option<(String, String)>,
    #[cfg(feature = "tls")]
    tls: Tls,
    l1_capacity: u64,
    l1_max_bytes: Option<u64>,
    redis_timeout: Duration,
    client_tracking: bool,
    breaker: (u32, Duration),
    settings: Settings,
    /// Always `None` without the `encryption` feature.
    keys: Option<crate::crypt::KeyRing>,
}

/// Certificates for `rediss://`, beside the system's roots.
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
struct Tls {
    /// A CA (PEM) to trust instead of the system's roots.
    root: Option<Vec<u8>>,
    /// A client certificate and key (PEM), for mutual TLS.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where the Redis layer connects.
#[derive(Clone)]
enum RedisSource {
    Url(String),
    Client(Box<redis::Client>),
    Sentinel(SentinelSource),
}

/// How [`CacheBuilder::build`] connects: to a client's server, or to the
/// master the sentinels name.
enum Connect {
    Client(redis::Client),
    Sentinel(crate::sentinel::Settings),
}

/// [`CacheBuilder::redis_sentinel`]'s arguments.
#[derive(Clone)]
struct SentinelSource {
    urls: Vec<String>,
    master_name: String,
}

impl SentinelSource {
    /// The sentinels and the master's name, without passwords.
    fn shown(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|url| redacted(url)).collect();
        format!(
            "master {:?} of the sentinels {}",
            self.master_name,
            urls.join(", ")
        )
    }

    /// The sentinels' connections and the master's settings: the database
    /// of the URLs' path (the same in each), and the user and password of
    /// `auth` if given, otherwise of the first URL.
    fn settings(
        &self,
        auth: Option<&(String, String)>,
    ) -> Result<crate::sentinel::Settings, Error> {
        let invalid = |reason| Error::InvalidSetting {
            setting: "redis_sentinel",
            reason,
        };
        if self.master_name.is_empty() {
            return Err(invalid(
                "needs the name the sentinels monitor the master by (`sentinel monitor <name> ...`)",
            ));
        }
        let mut sentinels = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let client = open(url, None).map_err(|source| Error::InvalidRedisUrl {
                url: redacted(url),
                source,
            })?;
            sentinels.push(client.get_connection_info().clone());
        }
        let Some(first) = sentinels
            .first()
            .map(|first| first.redis_settings().clone())
        else {
            return Err(invalid("needs at least one sentinel URL"));
        };
        if sentinels
            .iter()
            .any(|sentinel| sentinel.redis_settings().db() != first.db())
        {
            return Err(invalid(
                "the sentinel URLs name different databases (a URL's path is the master's database)",
            ));
        }
        let tls = sentinels
            .iter()
            .any(|sentinel| matches!(sentinel.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let (user, password) = match auth {
            Some((user, password)) => (Some(user.as_str()), Some(password.as_str())),
            None => (first.username(), first.password()),
        };
        let mut master = redis::RedisConnectionInfo::default()
            .set_db(first.db())
            .set_protocol(first.protocol());
        if let Some(user) = user.filter(|user| !user.is_empty()) {
            master = master.set_username(user);
        }
        if let Some(password) = password.filter(|password| !password.is_empty()) {
            master = master.set_password(password);
        }
        // A sentinel has no databases (`SELECT` is an unknown command).
        let sentinels = sentinels
            .into_iter()
            .map(|sentinel| {
                let settings = sentinel.redis_settings().clone().set_db(0);
                sentinel.set_redis_settings(settings)
            })
            .collect();
        Ok(crate::sentinel::Settings {
            sentinels,
            master_name: self.master_name.clone(),
            master,
            tls,
        })
    }
}

impl fmt::Debug for CacheBuilder {
    /// Shows no credentials: the URL's password is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redis = match &self.redis {
            None => "none".to_owned(),
            Some(RedisSource::Url(url)) => redacted(url),
            Some(RedisSource::Sentinel(sentinel)) => sentinel.shown(),
            Some(RedisSource::Client(client)) => {
                let info = client.get_connection_info();
                format!(
                    "a client of {} (database {})",
                    info.addr(),
                    info.redis_settings().db()
                )
            }
        };
        f.debug_struct("CacheBuilder")
            .field("namespace", &self.namespace)
            .field("redis", &redis)
            .field(
                "redis_sentinel_master_auth",
                &self
                    .sentinel_auth
                    .as_ref()
                    .map(|(user, _)| format!("user {user:?}, password ***")),
            )
            .field("l1_capacity", &self.l1_capacity)
            .field("l1_max_bytes", &self.l1_max_bytes)
            .field("redis_timeout", &self.redis_timeout)
            .field("client_tracking", &self.client_tracking)
            .field("breaker", &self.breaker)
            .field("settings", &self.settings)
            .field("encryption_keys", &self.keys)
            .finish()
    }
}

/// A client for `url`, with the builder's certificates if any.
#[cfg(feature = "tls")]
fn open(url: &str, tls: Option<redis::TlsCertificates>) -> redis::RedisResult<redis::Client> {
    let client = match tls {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    }?;
    provide_crypto(&client);
    Ok(client)
}

/// For a TLS client, the process-wide rustls crypto provider, unless the
/// service installed one: ring (the one this crate compiles in). Without
/// one, rustls cannot pick when the dependency tree holds two.
#[cfg(feature = "tls")]
fn provide_crypto(client: &redis::Client) {
    if matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    ) && rustls::crypto::CryptoProvider::get_default().is_none()
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(not(feature = "tls"))]
fn open(url: &str, _: Option<std::convert::Infallible>) -> redis::RedisResult<redis::Client> {
    if url.starts_with("rediss") {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a rediss:// URL needs tiercache's `tls` feature (on by default)",
        )));
    }
    redis::Client::open(url)
}

/// A Redis URL without its password: the one after the user, and a
/// `pass`/`password` of the query (how `unix://` URLs carry it). A URL that
/// does not parse shows its scheme only.
fn redacted(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        return format!("<a {scheme} URL that does not parse>");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |name: &str| matches!(name, "pass" | "password");
    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Whether Redis answered and refused the credentials.
pub(crate) fn is_auth_error(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// The configuration mistake Redis said `source` is, if it is one (not an
/// outage): credentials refused (user `user`), a command the user may not
/// run, a read-only replica, a client config redis-rs cannot connect with
/// (`url`, shown).
fn refusal(source: &redis::RedisError, user: &str, url: &str) -> Option<Error> {
    let source = source.clone();
    if is_auth_error(&source) {
        let user = user.to_owned();
        return Some(Error::RedisAuth { user, source });
    }
    match source.code() {
        Some("NOPERM") => {
            let user = user.to_owned();
            return Some(Error::RedisPermission { user, source });
        }
        Some("READONLY") => return Some(Error::RedisReadOnly { source }),
        _ => {}
    }
    (source.kind() == redis::ErrorKind::InvalidClientConfig).then(|| Error::InvalidRedisUrl {
        url: url.to_owned(),
        source,
    })
}

impl CacheBuilder {
    #[cfg(feature = "tls")]
    fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        if self.tls.root.is_none() && self.tls.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.tls.client.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.tls.root.clone(),
        })
    }

    #[cfg(not(feature = "tls"))]
    #[allow(clippy::unused_self)]
    fn tls_certificates(&self) -> Option<std::convert::Infallible> {
        None
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            redis: None,
            sentinel_auth: None,
            #[cfg(feature = "tls")]
            tls: Tls::default(),
            l1_capacity: DEFAULT_L1_CAPACITY,
            l1_max_bytes: None,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            client_tracking: true,
            breaker: (DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_COOLDOWN),
            settings: Settings::default(),
            keys: None,
        }
    }
}

impl CacheBuilder {
    /// The first part of every Redis key (default `"tiercache"`): give each
    /// service its own. ASCII letters, digits, `-`, `_`, `.`, `/`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Adds the Redis layer: `redis://[user:password@]host[:port][/db]` or
    /// `unix:///path`. Without it the cache is L1 only.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisSource::Url(url.into()));
        self
    }

    /// Adds the Redis layer from a `redis::Client` the service has already
    /// (its URL, user, database and TLS settings). A client, not a
    /// connection: the cache opens its own connections from it, a
    /// multiplexed one for commands and one for its pub/sub subscription
    /// (a connection that subscribes can run nothing else), and opens them
    /// again after an outage.
    pub fn redis_client(mut self, client: redis::Client) -> Self {
        self.redis = Some(RedisSource::Client(Box::new(client)));
        self
    }

    /// Adds the Redis layer on the master that Redis Sentinel names, and
    /// follows it across failovers. `sentinels` are URLs of sentinels
    /// (`redis://[user:password@]host:26379[/db]`, at least one; the others
    /// are asked when one does not answer); `master_name` is the name they
    /// monitor it by (`sentinel monitor <name> ...`).
    ///
    /// A URL's user and password are sent to its sentinel, and, unless
    /// [`redis_sentinel_master_auth`](Self::redis_sentinel_master_auth)
    /// gives others, the first URL's to the master too (the common setup:
    /// one password for all). The URLs' path is the master's database
    /// (a sentinel has none). `rediss://` sentinels mean a master over TLS
    /// too, verified with the system's roots.
    ///
    /// The cache asks the sentinels again when a sentinel announces a new
    /// master (`+switch-master`, to which it subscribes), when a write is
    /// refused as `READONLY` (the old master, demoted) and when the
    /// connection fails; then it moves its connection and its invalidation
    /// subscription to the new master. Meanwhile calls go on without L2, as
    /// during any outage. Sentinels that do not answer at `build` are no
    /// error: calls run without L2 until they name a master.
    pub fn redis_sentinel<I, S>(mut self, sentinels: I, master_name: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redis = Some(RedisSource::Sentinel(SentinelSource {
            urls: sentinels.into_iter().map(Into::into).collect(),
            master_name: master_name.into(),
        }));
        self
    }

    /// With [`redis_sentinel`](Self::redis_sentinel): the user and
    /// password of the master (and of the replica that takes its place),
    /// when they are not the sentinels'. An empty `username` is the
    /// default user; an empty `password` sends no `AUTH` to the master.
    /// The password is never shown by `Debug`.
    pub fn redis_sentinel_master_auth(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.sentinel_auth = Some((username.into(), password.into()));
        self
    }

    /// For a `rediss://` URL: trust this CA certificate (PEM) instead of
    /// the system's roots (a private CA, a managed Redis's bundle).
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root = Some(pem.into());
        self
    }

    /// For a `rediss://` URL: present this client certificate and key
    /// (PEM), for a Redis that authenticates its clients
    /// (`tls-auth-clients yes`). The key is never shown by `Debug`.
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// The most entries L1 holds (default 10,000); `0` turns L1 off.
    pub fn l1_capacity(mut self, entries: u64) -> Self {
        self.l1_capacity = entries;
        self
    }

    /// Also bounds L1 by memory: about `bytes` in all, as estimated from
    /// each entry's key, its value's serialized size (as read from Redis,
    /// or as JSON for a value loaded) and a fixed overhead per entry; the
    /// entry count bound of [`l1_capacity`](Self::l1_capacity) still
    /// holds. An estimate, not an allocator's count: a value's size in
    /// memory may differ from its serialized size (see the README's "L1
    /// memory" for what was measured). At least 64 KiB.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1_max_bytes = Some(bytes);
        self
    }

    /// The bound on each Redis operation, connecting included (default
    /// 200 ms). Past it the call goes on without Redis.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Whether L2 reads keep the tag versions they read, on a connection
    /// of their own on which Redis tells of each change (RESP3 client-side
    /// caching, `CLIENT TRACKING`): a read is then one `GET` instead of an
    /// `MGET` of the entry and its versions. On by default; a server that
    /// does not offer it (Redis before 7, some proxies, an ACL without
    /// `client|tracking`) is noticed and
    /// asked for the versions every time. Turn it off for a proxy that
    /// accepts `CLIENT TRACKING` but does not pass its messages on.
    pub fn client_tracking(mut self, on: bool) -> Self {
        self.client_tracking = on;
        self
    }

    /// Whether the spans of calls (`cache.key`) and the warnings name the
    /// keys of the calls they are about. Off by default: keys may hold
    /// what a log should not (an email address, a session id), and a key
    /// per span makes every call's trace unique.
    pub fn trace_keys(mut self, trace_keys: bool) -> Self {
        self.settings.trace_keys = trace_keys;
        self
    }

    /// The circuit breaker in front of Redis: after `failures` consecutive
    /// connection failures or timeouts, calls skip Redis (no waiting), and
    /// one call per `cooldown` probes it; a success closes the breaker.
    /// Default: 5 failures, 1 s.
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker = (failures, cooldown);
        self
    }

    /// Whether a miss takes the cross-process lock, so that one process
    /// loads a key while the others wait for its value (default: on; it
    /// needs Redis). A function's `lock = false` turns it off for that
    /// function alone.
    pub fn lock(mut self, lock: bool) -> Self {
        self.settings.lock = lock;
        self
    }

    /// How long a lock holder may load before another process may take
    /// over (default 10 s). The holder renews it every third of it while
    /// its load runs, so this bounds how long the others wait for a
    /// holder that died, not how long a load may take.
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.settings.lock_lease = lease;
        self
    }

    /// How long a caller waits for another caller's load (in this process
    /// or another) before it serves a fail-safe value or loads itself
    /// (default 5 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.settings.lock_wait = wait;
        self
    }

    /// Shortens each fresh period by a random share of up to `share` of
    /// the TTL, so that entries loaded together do not expire together
    /// (default 0.05: up to 5 %). `0.0` turns it off; at most `0.5`.
    pub fn ttl_jitter(mut self, share: f64) -> Self {
        self.settings.jitter = share;
        self
    }

    /// After a fail-safe activation, how long the old value is served
    /// before the load is tried again (default 10 s): a failing database
    /// is not retried on every call.
    pub fn fail_safe_throttle(mut self, pause: Duration) -> Self {
        self.settings.fail_safe_throttle = pause;
        self
    }

    /// How long a load in the background may run when no caller waits
    /// for it — a refresh (`stale`, `refresh_ahead`), or a load whose
    /// callers took a stale or fail-safe value (`timeout`) — before it is
    /// cut off and its key may be loaded again (default 60 s). A function's
    /// `hard_timeout` bounds its loads too.
    pub fn background_load_timeout(mut self, timeout: Duration) -> Self {
        self.settings.background_timeout = timeout;
        self
    }

    /// The largest value, in bytes as stored in Redis, that is read from or
    /// written to Redis (default 4 MiB). A larger value read is a miss,
    /// without being decoded; a larger value loaded is kept in L1 only.
    /// Both count in `oversized_values`.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.settings.max_value_size = bytes;
        self
    }

    /// How values are serialized in Redis, for functions that do not say
    /// (`codec = "…"`): default [`Codec::Json`](crate::Codec::Json). A
    /// reader decodes every codec compiled in, so changing this keeps the
    /// entries already in Redis (see the README's "Formats").
    pub fn codec(mut self, codec: crate::Codec) -> Self {
        self.settings.formats.codec = codec;
        self
    }

    /// How payloads of at least [`compress_above`](Self::compress_above)
    /// bytes are compressed in Redis, for functions that do not say
    /// (`compress = "…"`): default [`Compression::None`](crate::Compression::None).
    pub fn compression(mut self, compression: crate::Compression) -> Self {
        self.settings.formats.compression = compression;
        self
    }

    /// The serialized size, in bytes, from which payloads are compressed
    /// (default [`DEFAULT_COMPRESS_ABOVE`](crate::DEFAULT_COMPRESS_ABOVE),
    /// 1 KiB), for functions that do not say (`compress_above = n`).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.settings.formats.compress_above = bytes;
        self
    }

    /// The keys that encrypt values in Redis: for the functions that say
    /// `encrypt`, or every function with
    /// [`encrypt_all`](Self::encrypt_all). Also decrypts what other
    /// functions find encrypted. L1 holds values in plaintext, in the
    /// process. Its `Debug`, and the builder's, show key ids only.
    #[cfg(feature = "encryption")]
    pub fn encryption_keys(mut self, keys: crate::KeyRing) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Encrypt every function's values in Redis (needs
    /// [`encryption_keys`](Self::encryption_keys)), as if each said
    /// `encrypt`: plaintext entries already there are then misses.
    #[cfg(feature = "encryption")]
    pub fn encrypt_all(mut self, encrypt: bool) -> Self {
        self.settings.formats.encrypt = encrypt;
        self
    }

    /// The key ring, checked: refused when it lists an id twice, or when
    /// `encrypt_all` has none. (Without the `encryption` feature there is
    /// never one.)
    fn take_keys(&mut self) -> Result<Option<crate::crypt::KeyRing>, Error> {
        if let Some(reason) = self.keys.as_ref().and_then(crate::crypt::KeyRing::invalid) {
            return Err(Error::InvalidSetting {
                setting: "encryption_keys",
                reason,
            });
        }
        if self.settings.formats.encrypt && self.keys.is_none() {
            return Err(Error::InvalidSetting {
                setting: "encrypt_all",
                reason: "needs the keys to encrypt with: add encryption_keys(KeyRing::new(id, key))",
            });
        }
        Ok(self.keys.take())
    }

    /// Builds the cache. With Redis configured, it tries to connect within
    /// the Redis timeout; a Redis that is not there yet is no error: calls
    /// run without L2 until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a namespace with characters a key must not
    /// hold, [`Error::InvalidRedisUrl`] for a URL redis-rs cannot parse,
    /// [`Error::InvalidSetting`] for a setting out of range: a duration of
    /// zero or longer than [`MAX_SETTING`](crate::MAX_SETTING) (a day), a
    /// Redis timeout over a minute, a lease shorter than three Redis
    /// timeouts (its renewal, every third of it, must fit a round trip), a
    /// jitter outside 0.0 to 0.5, a `max_value_size` under 1 KiB; with
    /// [`redis_sentinel`](Self::redis_sentinel), no sentinel URL, no master
    /// name, or URLs naming different databases (`InvalidSetting`), a
    /// sentinel URL that does not parse (`InvalidRedisUrl`).
    /// [`Error::RedisTooOld`] when Redis answers and is older than 7.0.
    pub async fn build(mut self) -> Result<Cache, Error> {
        check_name("namespace", &self.namespace)?;
        let keys = self.take_keys()?;
        if self.redis_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "redis_timeout",
                reason: "must be longer than zero",
            });
        }
        let (failures, cooldown) = self.breaker;
        if failures == 0 || cooldown.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "circuit_breaker",
                reason: "needs at least one failure and a cooldown longer than zero",
            });
        }
        let settings = self.settings;
        check_settings(&settings, self.redis_timeout, self.l1_max_bytes)?;
        let mut database = 0;
        #[cfg(feature = "tls")]
        if let Some(root) = &self.tls.root
            && !root
                .windows(27)
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(Error::InvalidSetting {
                setting: "tls_root_certificate",
                reason: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            });
        }
        let certificates = self.tls_certificates();
        let l2 = match self.redis {
            None => None,
            Some(source) => {
                if self.sentinel_auth.is_some() && !matches!(source, RedisSource::Sentinel(_)) {
                    return Err(Error::InvalidSetting {
                        setting: "redis_sentinel_master_auth",
                        reason: "goes with redis_sentinel: a redis URL or client carries its own credentials",
                    });
                }
                let breaker = crate::breaker::Breaker::new(failures, cooldown);
                let (client, shown) = match source {
                    RedisSource::Url(url) => {
                        let client =
                            open(&url, certificates).map_err(|source| Error::InvalidRedisUrl {
                                url: redacted(&url),
                                source,
                            })?;
                        (Connect::Client(client), redacted(&url))
                    }
                    RedisSource::Client(client) => {
                        if certificates.is_some() {
                            return Err(Error::InvalidSetting {
                                setting: "tls_root_certificate",
                                reason: "certificates go on the URL's client: with redis_client, build the client with its own (redis::Client::build_with_tls)",
                            });
                        }
                        #[cfg(feature = "tls")]
                        provide_crypto(&client);
                        let shown = client.get_connection_info().addr().to_string();
                        (Connect::Client(*client), shown)
                    }
                    RedisSource::Sentinel(_) if certificates.is_some() => {
                        return Err(Error::InvalidSetting {
                            setting: "tls_root_certificate",
                            reason: "not with redis_sentinel: sentinels and masters over rediss:// are verified with the system's roots",
                        });
                    }
                    RedisSource::Sentinel(sentinel) => (
                        Connect::Sentinel(sentinel.settings(self.sentinel_auth.as_ref())?),
                        sentinel.shown(),
                    ),
                };
                let (l2, user) = match client {
                    Connect::Client(client) => {
                        let settings = client.get_connection_info().redis_settings();
                        let user = settings.username().unwrap_or("default").to_owned();
                        database = settings.db();
                        let l2 = L2::new(
                            client,
                            self.redis_timeout,
                            breaker,
                            &self.namespace,
                            self.client_tracking,
                        )
                        .map_err(|source| Error::InvalidRedisUrl {
                            url: shown.clone(),
                            source,
                        })?;
                        (l2, user)
                    }
                    Connect::Sentinel(settings) => {
                        let user = settings.master.username().unwrap_or("default").to_owned();
                        database = settings.master.db();
                        let l2 = L2::sentinel(
                            settings,
                            self.redis_timeout,
                            breaker,
                            &self.namespace,
                            self.client_tracking,
                        )
                        .await
                        .map_err(|source| {
                            refusal(&source, &user, &shown).unwrap_or_else(|| {
                                Error::InvalidRedisUrl {
                                    url: shown.clone(),
                                    source,
                                }
                            })
                        })?;
                        (l2, user)
                    }
                };
                let refused = |error: &crate::l2::L2Error| match error {
                    crate::l2::L2Error::Redis(source) => refusal(source, &user, &shown),
                    _ => None,
                };
                match l2.warm_up().await {
                    Ok(()) => {
                        match l2.version().await {
                            Ok((version, false)) => return Err(Error::RedisTooOld { version }),
                            Ok((version, true)) => tracing::debug!(version, "Redis answers"),
                            Err(error) => {
                                if let Some(refused) = refused(&error) {
                                    return Err(refused);
                                }
                                tracing::warn!(%error, "cannot read the Redis version");
                            }
                        }
                        let probe = Names::new(self.namespace.clone()).in_database(database);
                        if let Err(error) = l2.probe(&probe).await
                            && let Some(refused) = refused(&error)
                        {
                            return Err(refused);
                        }
                    }
                    Err(error) => {
                        if let Some(refused) = refused(&error) {
                            return Err(refused);
                        }
                        tracing::warn!(%error, "Redis is not reachable yet; running on L1 until it is");
                    }
                }
                Some(l2)
            }
        };
        let names = Names::new(self.namespace).in_database(database);
        let l1 = (self.l1_capacity, self.l1_max_bytes);
        let cache = Cache::from_parts(names, l1, l2, settings, keys);
        if cache.inner.l2.is_some() {
            let subscribed = Arc::new(Notify::new());
            let first = subscribed.notified();
            let listener = crate::coherence::spawn(
                Arc::downgrade(&cache.inner),
                cache.inner.names.channel(),
                subscribed.clone(),
            );
            let _ = cache.inner.listener.set(listener);
            // Listening before the first call makes invalidations reliable
            // from the start; a Redis that is down does not hold build up.
            let _ = tokio::time::timeout(self.redis_timeout, first).await;
        }
        Ok(cache)
    }
}

/// Every setting in range, or the first one that is not, with what to set.
fn check_settings(
    settings: &Settings,
    redis_timeout: Duration,
    l1_max_bytes: Option<u64>,
) -> Result<(), Error> {
    let invalid = |setting, reason| Err(Error::InvalidSetting { setting, reason });
    if redis_timeout > Duration::from_secs(60) {
        return invalid("redis_timeout", "must be at most a minute");
    }
    if !(0.0..=0.5).contains(&settings.jitter) {
        return invalid("ttl_jitter", "must be between 0.0 and 0.5");
    }
    let durations = [
        ("lock_lease", settings.lock_lease),
        ("lock_wait", settings.lock_wait),
        ("fail_safe_throttle", settings.fail_safe_throttle),
        ("background_load_timeout", settings.background_timeout),
    ];
    for (setting, value) in durations {
        if value.is_zero() || value > crate::spec::MAX_SETTING {
            return invalid(setting, "must be longer than zero and at most a day");
        }
    }
    if settings.lock_lease < redis_timeout * 3 {
        return invalid(
            "lock_lease",
            "must be at least three times redis_timeout: the holder renews it every third of it, and a renewal may take a whole timeout",
        );
    }
    if l1_max_bytes.is_some_and(|bytes| !(64 << 10..=1 << 48).contains(&bytes)) {
        return invalid(
            "l1_max_bytes",
            "must be at least 64 KiB and at most 256 TiB",
        );
    }
    if settings.max_value_size < 1024 {
        return invalid("max_value_size", "must be at least 1024 bytes");
    }
    if let Some(reason) = settings.formats.compression.invalid() {
        return invalid("compression", reason);
    }
    Ok(())
}

static GLOBAL: OnceLock<Cache> = OnceLock::new();

/// Makes `cache` the one cached functions use when they name none.
///
/// Call it once at start-up, before any cached function runs: the first
/// cached call without a global sets it to [`Cache::in_memory`].
///
/// # Errors
///
/// [`Error::GlobalAlreadySet`] if a global is already in place (set before,
/// or defaulted by an earlier cached call); `cache` is dropped.
pub fn set_global(cache: Cache) -> Result<(), Error> {
    GLOBAL.set(cache).map_err(|_| Error::GlobalAlreadySet)
}

/// The global cache, used by cached functions that name none:
/// [`Cache::in_memory`] unless [`set_global`] came first (calling this fixes
/// that choice, as a cached call does).
pub fn global() -> &'static Cache {
    GLOBAL.get_or_init(Cache::in_memory)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::l1::Entry;

    /// A cache without Redis, holding `l1_capacity` entries.
    fn local(l1_capacity: u64) -> Arc<Inner> {
        let names = Names::new(DEFAULT_NAMESPACE.to_owned());
        Cache::from_parts(names, (l1_capacity, None), None, Settings::default(), None).inner
    }

    /// Every entry covered by an invalidation is unservable once it returns,
    /// whatever moka has or has not processed yet. (moka's own
    /// `invalidate_entries_if` left 216 of these 100,000 entries servable.)
    #[test]
    fn nothing_invalidated_is_served() {
        let inner = local(300_000);
        let fill = |prefix: &str, tags: &[String]| {
            for i in 0..100_000 {
                let key = format!("{prefix}:{i}");
                let generations = inner.generations.snapshot(prefix, tags, &key);
                let entry = Entry::shared(
                    Arc::new(i),
                    Duration::from_secs(60),
                    generations,
                    inner.observer.prefix("p"),
                );
                inner.keep_in_l1(&key, entry);
            }
        };
        let served = |prefix: &str| {
            (0..100_000)
                .filter(|i| inner.l1.get(&format!("{prefix}:{i}")).is_some())
                .count()
        };

        fill("tagged", &["t".to_owned()]);
        fill("other", &[]);
        inner.apply_locally(&Invalidation {
            tags: vec!["t".into()],
            ..Invalidation::default()
        });
        assert_eq!(served("tagged"), 0, "after a tag invalidation");
        assert_eq!(served("other"), 100_000, "untagged entries stay");

        inner.apply_locally(&Invalidation {
            prefixes: vec!["other".into()],
            ..Invalidation::default()
        });
        assert_eq!(served("other"), 0, "after a prefix invalidation");

        fill("again", &[]);
        inner.forget_l1();
        assert_eq!(served("again"), 0, "after the namespace");
    }

    /// A fill that checked its generations before a key invalidation
    /// cannot put its value in L1 after the invalidation returned: the
    /// invalidation waits for it (the fill checks and inserts under its
    /// stripe's lock). Raced on two threads: after each invalidation, what
    /// L1 holds of the key was loaded after it.
    #[test]
    fn a_key_invalidation_leaves_no_older_fill_servable() {
        let inner = local(1_000);
        /// Stops the filler however the rounds end (a failed assertion
        /// included: the scope joins it before the panic goes on).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let _stop = Stop(&done);
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let generations = inner.generations.snapshot("p", &[], "p:k");
                    let entry = Entry::shared(
                        Arc::new(0_u8),
                        Duration::from_secs(60),
                        generations,
                        inner.observer.prefix("p"),
                    );
                    inner.keep_in_l1("p:k", entry);
                }
            });
            for round in 0..200_000 {
                inner.apply_locally(&Invalidation {
                    keys: vec!["p:k".into()],
                    ..Invalidation::default()
                });
                if let Some(entry) = inner.l1.entry("p:k") {
                    assert!(
                        entry.is_current(),
                        "round {round}: a value loaded before the invalidation is in L1"
                    );
                }
            }
        });
    }

    /// A fail-safe value kept serving never replaces a value loaded
    /// meanwhile: checked and inserted under the fills' lock, as loads are.
    #[test]
    fn a_kept_fail_safe_value_does_not_replace_a_newer_one() {
        let inner = local(1_000);
        let entry = |value: u8| {
            let generations = inner.generations.snapshot("p", &[], "p:k");
            Entry::shared(
                Arc::new(value),
                Duration::from_secs(60),
                generations,
                inner.observer.prefix("p"),
            )
        };
        inner.keep_in_l1_unless_filled("p:k", entry(1));
        assert!(
            inner
                .l1
                .get("p:k")
                .is_some_and(|hit| hit.downcast_ref() == Some(&1_u8))
        );
        inner.keep_in_l1("p:k", entry(2));
        inner.keep_in_l1_unless_filled("p:k", entry(1));
        let held = inner
            .l1
            .get("p:k")
            .and_then(|hit| hit.downcast_ref::<u8>().copied());
        assert_eq!(held, Some(2), "the newer value stays");
    }
}
