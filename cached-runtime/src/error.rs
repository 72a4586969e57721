//! The error type of the explicit API.

/// Errors of the explicit API ([`CacheBuilder::build`](crate::CacheBuilder::build),
/// [`set_global`](crate::set_global)). Cached functions never return it: they
/// keep their own signature, and a Redis failure only turns a hit into a load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidRedisUrl {
        /// The URL as given.
        url: String,
        /// What redis-rs said of it.
        #[source]
        source: redis::RedisError,
    },
    /// A namespace or prefix holds a character a key must not contain.
    #[error(
        "invalid {what} {name:?}: use a non-empty name of ASCII letters, digits and `-`, `_`, `.`, `/`"
    )]
    InvalidName {
        /// `"namespace"` or `"prefix"`.
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// A builder setting is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// Why the value was refused.
        reason: &'static str,
    },
    /// [`set_global`](crate::set_global) was called when the global cache was
    /// already set, or already used (which sets it to [`Cache::in_memory`](crate::Cache::in_memory)).
    #[error(
        "the global cache is already set (by an earlier set_global, or to the in-memory default by a cached call made before set_global): call set_global once, at start-up, before any cached function runs"
    )]
    GlobalAlreadySet,
    /// The Redis server is older than 7.0, which the cache needs
    /// (`PEXPIRE … GT`, `SET … KEEPTTL`).
    #[error(
        "Redis {version} is too old: tiercache needs Redis 7.0 or newer (PEXPIRE ... GT); upgrade the server, or build the cache without `.redis(...)`"
    )]
    RedisTooOld {
        /// The version the server reported.
        version: String,
    },
    /// Redis answered and refused the credentials (a user or password of
    /// the URL or client that it does not accept): a configuration
    /// mistake, so `build` fails. An unreachable Redis is not an error.
    #[error(
        "Redis refused the credentials of user {user:?}: check the user and password of the Redis URL (`redis://user:password@host`) and the user's ACL ({source})"
    )]
    RedisAuth {
        /// The user given (`default` without one); never the password.
        user: String,
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
    /// Redis accepted the credentials but the user may not run a command
    /// the cache needs (`NOPERM`: its ACL lacks `GET`, `SET`, `EVALSHA`,
    /// `PUBLISH`, … or the namespace's keys or channels).
    #[error(
        "the Redis user {user:?} may not run what the cache needs: give it `+@read +@write +@scripting +@pubsub +ping +info` on the namespace's keys and channels ({source})"
    )]
    RedisPermission {
        /// The user given (`default` without one).
        user: String,
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis the cache was given is a read-only replica: it takes no
    /// entry and no invalidation.
    #[error("Redis is a read-only replica: give the cache the master's URL ({source})")]
    RedisReadOnly {
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
    /// Redis refused or failed an operation (an invalidation, for instance).
    /// Cached calls never return it: for them a Redis failure is a miss.
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the configured timeout.
    #[error("Redis did not answer within {0:?}")]
    RedisTimeout(std::time::Duration),
    /// A value given to be stored ([`Entry::set`](crate::Entry::set), a
    /// function's `_set` companion) is not in the cache: the entry was
    /// invalidated in its place, so no reader finds the value it replaced.
    #[error("the value for {key:?} was not stored ({reason}); the entry was invalidated instead")]
    NotStored {
        /// The rendered `prefix:key`.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Redis was not asked: it failed repeatedly and the circuit breaker is
    /// open until a probe succeeds.
    #[error("Redis is unavailable: the circuit breaker is open after repeated failures")]
    RedisUnavailable,
}

impl From<crate::l2::L2Error> for Error {
    fn from(error: crate::l2::L2Error) -> Self {
        match error {
            crate::l2::L2Error::Timeout(after) | crate::l2::L2Error::Busy(after) => {
                Self::RedisTimeout(after)
            }
            crate::l2::L2Error::Redis(error) => Self::Redis(error),
            crate::l2::L2Error::BreakerOpen => Self::RedisUnavailable,
        }
    }
}

/// A load cut off by `hard_timeout`: the error a `#[cache_aside]` function
/// with `hard_timeout` returns, through its error type's
/// `From<LoadTimeout>`, when no fail-safe value is at hand.
///
/// ```
/// #[derive(Debug)]
/// enum DbError {
///     Timeout(tiercache_runtime::LoadTimeout),
///     // ...
/// }
///
/// impl From<tiercache_runtime::LoadTimeout> for DbError {
///     fn from(timeout: tiercache_runtime::LoadTimeout) -> Self {
///         Self::Timeout(timeout)
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the load did not finish within {after:?} (`hard_timeout`)")]
pub struct LoadTimeout {
    /// The `hard_timeout` that ran out.
    pub after: std::time::Duration,
}

impl LoadTimeout {
    /// For generated code.
    #[doc(hidden)]
    #[must_use]
    pub const fn after_ms(ms: u64) -> Self {
        Self {
            after: std::time::Duration::from_millis(ms),
        }
    }
}
