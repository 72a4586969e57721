//! The cache handle, its builder and the global instance.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::flight::Flights;
use crate::key::check_name;
use crate::l1::L1;
use crate::l2::L2;
use crate::stats::{Counters, Stats};

/// The default namespace, the first part of every Redis key.
pub const DEFAULT_NAMESPACE: &str = "tiercache";
/// The default L1 capacity, in entries.
pub const DEFAULT_L1_CAPACITY: u64 = 10_000;
/// The default bound on each Redis operation.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(200);

/// A two-level cache: an in-process L1 (moka) in front of an optional shared
/// L2 (Redis).
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
    pub(crate) namespace: String,
    pub(crate) l1: L1,
    pub(crate) l2: Option<L2>,
    pub(crate) flights: Flights,
    pub(crate) counters: Counters,
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
        Self::from_parts(DEFAULT_NAMESPACE.to_owned(), DEFAULT_L1_CAPACITY, None)
    }

    fn from_parts(namespace: String, l1_capacity: u64, l2: Option<L2>) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace,
                l1: L1::new(l1_capacity),
                l2,
                flights: Flights::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// The namespace every Redis key of this cache starts with.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Whether this cache has a Redis layer (configured; it may be down).
    #[must_use]
    pub fn has_redis(&self) -> bool {
        self.inner.l2.is_some()
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.namespace)
            .field("redis", &self.inner.l2.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Cache`]. Every setting has a default; `build` checks them.
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheBuilder {
    namespace: String,
    redis_url: Option<String>,
    l1_capacity: u64,
    redis_timeout: Duration,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            redis_url: None,
            l1_capacity: DEFAULT_L1_CAPACITY,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
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
        self.redis_url = Some(url.into());
        self
    }

    /// The most entries L1 holds (default 10,000); `0` turns L1 off.
    pub fn l1_capacity(mut self, entries: u64) -> Self {
        self.l1_capacity = entries;
        self
    }

    /// The bound on each Redis operation, connecting included (default
    /// 200 ms). Past it the call goes on without Redis.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Builds the cache. With Redis configured, it tries to connect within
    /// the Redis timeout; a Redis that is not there yet is no error: calls
    /// run without L2 until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a namespace with characters a key must not
    /// hold, [`Error::InvalidRedisUrl`] for a URL redis-rs cannot parse,
    /// [`Error::InvalidSetting`] for a zero Redis timeout.
    pub async fn build(self) -> Result<Cache, Error> {
        check_name("namespace", &self.namespace)?;
        if self.redis_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "redis_timeout",
                reason: "must be longer than zero",
            });
        }
        let l2 = match self.redis_url {
            None => None,
            Some(url) => {
                let invalid = |source| Error::InvalidRedisUrl {
                    url: url.clone(),
                    source,
                };
                let client = redis::Client::open(url.as_str()).map_err(invalid)?;
                let l2 = L2::new(client, self.redis_timeout).map_err(invalid)?;
                if let Err(error) = l2.warm_up().await {
                    tracing::warn!(%error, "Redis is not reachable yet; running on L1 until it is");
                }
                Some(l2)
            }
        };
        Ok(Cache::from_parts(self.namespace, self.l1_capacity, l2))
    }
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

/// The global cache; [`Cache::in_memory`] unless [`set_global`] came first.
pub fn global() -> &'static Cache {
    GLOBAL.get_or_init(Cache::in_memory)
}
