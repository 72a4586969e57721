//! Cache an `async fn` with one attribute.
//!
//! tiercache puts a two-level cache in front of your function: an in-process
//! L1 ([quick_cache]) that answers in nanoseconds, and an optional shared L2
//! ([Redis]) so that every instance of your service sees the same entries.
//! Concurrent callers of a cold key share one load, keys cannot collide,
//! and a Redis that is down, slow or full of garbage never fails a call.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use tiercache::{Cache, cache_aside};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct User { id: u64, name: String }
//!
//! # #[derive(Debug)] struct DbError;
//! # struct Db;
//! # impl Db { async fn fetch_user(&self, id: u64) -> Result<User, DbError> { Ok(User { id, name: "Ada".into() }) } }
//! #[cache_aside(prefix = "user", ttl = "5m", key = "{id}", skip(db))]
//! async fn get_user(db: &Db, id: u64) -> Result<User, DbError> {
//!     db.fetch_user(id).await
//! }
//!
//! # async fn run(db: Db) -> Result<(), Box<dyn std::error::Error>> {
//! // Once at start-up; without it the global cache is `Cache::in_memory()`.
//! let cache = Cache::builder()
//!     .namespace("shop")
//!     .redis("redis://127.0.0.1:6379")
//!     .build()
//!     .await?;
//! tiercache::set_global(cache.clone())?;
//!
//! let user = get_user(&db, 42).await; // loads, stores in L1 and Redis
//! let again = get_user(&db, 42).await; // L1 hit: no Redis, no deserialization
//! println!("{:?}", cache.stats());
//! # Ok(()) }
//! ```
//!
//! # The attribute
//!
//! `#[cache_aside(prefix = "...", ttl = "...", ...)]` on an `async fn`:
//!
//! | option | meaning |
//! |---|---|
//! | `prefix = "user"` | **required.** Names what the function caches: keys are `{namespace}:{prefix}:{key}`. Not derived from the function name, so renaming a function does not drop its entries and two modules' `get` never collide. |
//! | `ttl = "5m"` | **required.** How long a value stays fresh: `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"1d"`, or an integer of seconds. |
//! | `key = "{id}:{lang}"` | The key, from argument names (and fields: `{self.tenant}`, `{query.page}`), separated by one of `: / \| @ = ;`. Every argument must be in the template or in `skip`. Default: every argument but the receiver and `skip`ped ones. |
//! | `skip(db, conn)` | Arguments that do not change the result (handles, clients, loggers). |
//! | `tags = ["org:{org}"]` | Tags the entry carries; invalidating one forgets every entry carrying it, in O(1). |
//! | `stale = "1h"` | Past `ttl`, serve the old value at once while one background refresh runs. |
//! | `fail_safe = "1h"` | When the load fails or times out, serve a value up to this far past its `ttl`. |
//! | `timeout = "2s"` | With a fail-safe value at hand, answer a slower load with it (the load goes on). |
//! | `hard_timeout = "10s"` | Give a load up: the fail-safe value, or `Err(E::from(LoadTimeout))`. |
//! | `refresh_ahead` | Refresh shortly before expiry, in the background (XFetch; `= 2.0` sets β). |
//! | `lock = false` | No cross-process lock for this function. |
//! | `cache_none = "30s"` | Cache a `None` for this long. |
//! | `cache = self.cache` | The [`Cache`] to use: any expression of type `Cache`, `&Cache`, `Arc<Cache>`…. Default: the [global](set_global) one. |
//! | `crate = "path"` | Where tiercache is, for crates that re-export it. |
//!
//! Return types: `T`, `Option<T>`, `Result<T, E>` or `Result<Option<T>, E>`
//! (`io::Result<T>` and a `$ret:ty` of `macro_rules!` included; an alias that
//! hides the `Result` or `Option`, like `type ApiResult<T> = Result<T, E>;`,
//! is a compile error that says what to write). Only a value is cached — `T`,
//! `Some(v)`, `Ok(v)`, `Ok(Some(v))`; `Err` is returned as it is and never
//! cached, `None` only with `cache_none`. `T` must be `Serialize + DeserializeOwned + Clone +
//! Send + Sync + 'static`.
//!
//! Misuse is a compile error on the token at fault, saying what to write
//! instead: a missing or malformed `ttl`, an unknown option (with the closest
//! valid one), a template naming an argument that does not exist, an argument
//! type that cannot be part of a key ([`KeyPart`]), a type parameter a key
//! template leaves out, a return type with nothing to cache.
//!
//! The attributes take ordinary Rust: methods, trait impls and
//! `#[async_trait]` impls; futures that are `Send` exactly when the uncached
//! ones are, whatever the error type; type and const parameters, which are
//! part of the key (`std::any::type_name`, or the constant; `{T}` in a
//! template); raw identifiers, `#[cfg]` arguments, options forwarded by
//! `macro_rules!`, `#![no_implicit_prelude]`. The README's "What the
//! attributes accept" has the details.
//!
//! # Writes
//!
//! - [`macro@write_through`] (`prefix`, `ttl`, `key` required, `tags`, `skip`,
//!   `cache`, `crate`): runs the body and stores the value it returns under
//!   the key the matching `#[cache_aside]` reads, in L1 and Redis; other
//!   instances drop their L1 copy. `Err` and `None` store nothing.
//! - [`macro@invalidates`] (`tags`, `keys = ["prefix:{arg}"]`, `prefixes`,
//!   `when = "after" | "before" | "always"`, `cache`, `crate`): runs the body
//!   and, when it succeeds, invalidates what it lists.
//! - [`Cache::invalidate_tags`], [`Cache::invalidate_key`],
//!   [`Cache::invalidate_prefix`], [`Cache::clear`]: the same, explicitly.
//!
//! Invalidation is O(1) whatever the number of entries (versioned tags: see
//! [`tags`]), race-free (a load that started before an invalidation is never
//! served after it), and reaches the L1 of every instance over Redis pub/sub.
//!
//! # Beyond the attributes
//!
//! - **Companions**: every `#[cache_aside]` function `get_user` generates
//!   `get_user_invalidate`, `get_user_refresh`, `get_user_peek` and
//!   `get_user_set` beside itself, taking the same arguments (`companions =
//!   false` in a trait impl). `#[write_through(get_user(db, id))]` and
//!   `#[invalidates(get_user(db, id))]` name the reader's call and take its
//!   prefix, key, TTL and tags from it.
//! - **Programmatic entries**: [`Cache::entry`] (`.ttl(d).try_get_with(..)`,
//!   `get`, `set`, `invalidate`), the same entries and engine as the
//!   attributes; [`Key`] for keys of several parts.
//! - **Batch loads**: [`Cache::entries`] and [`macro@cache_batch`] — one L1
//!   pass, one Redis round trip, one loader call for the keys found
//!   nowhere.
//! - **Warming**: [`warm`], with bounded concurrency, progress and
//!   cancellation.
//! - **Shared values**: a function returning `Arc<T>` hands out the same
//!   allocation on every hit, without serde's `rc` feature.
//!
//! # Keys
//!
//! Arguments are encoded by [`KeyPart`], escaped so that no value can forge
//! another key (`"1:admin"`, `"*"`, `"{x}"` all stay inside their part) and
//! stable across builds and machines. See the [`key`] module for the
//! encodings and how to implement `KeyPart` for your own types.
//!
//! # Behaviour
//!
//! - **L1 hit**: a typed lookup; the value is cloned out. No Redis, no
//!   deserialization. L1 entries never outlive their TTL.
//! - **L2 hit**: one `MGET` of the entry and its tag versions; the envelope
//!   (format version, type fingerprint, load time, expiry) is checked, the
//!   value fills L1.
//! - **Miss**: one caller per key runs the body, across processes (a lease
//!   lock in Redis; the others wait, woken over pub/sub, and share its
//!   value); the value is written to L1 and, in one round trip, to Redis.
//! - **Stampedes and failures**, per function: `stale = "1h"` serves an
//!   expired value at once while one background refresh runs;
//!   `refresh_ahead` refreshes hot keys before they expire (XFetch);
//!   `fail_safe = "1h"` serves the old value when the load fails (`timeout`
//!   when it is slow, `hard_timeout` to give up with [`LoadTimeout`]);
//!   `cache_none = "30s"` caches a `None`. Fresh periods get a few percent
//!   of TTL jitter. See the README's "Stampedes and failures".
//! - **Bad data**: a value that does not decode (garbage, another type, an
//!   older format) is a miss, and the fresh load overwrites it.
//! - **Redis down or slow**: each Redis operation is bounded
//!   ([`CacheBuilder::redis_timeout`], default 200 ms); a failure turns a hit
//!   into a load and a write into a no-op. Calls never fail because of Redis,
//!   and L2 is used again as soon as Redis answers.
//!
//! [quick_cache]: https://docs.rs/quick_cache
//! [Redis]: https://redis.io

pub use tiercache_macros::{cache_aside, cache_batch, invalidates, write_through};
#[cfg(feature = "encryption")]
pub use tiercache_runtime::KeyRing;
#[cfg(feature = "http")]
pub use tiercache_runtime::http;
pub use tiercache_runtime::{
    Cache, CacheBuilder, Codec, Compression, DEFAULT_BACKGROUND_TIMEOUT, DEFAULT_BREAKER_COOLDOWN,
    DEFAULT_BREAKER_FAILURES, DEFAULT_COMPRESS_ABOVE, DEFAULT_FAIL_SAFE_THROTTLE,
    DEFAULT_L1_CAPACITY, DEFAULT_LOCK_LEASE, DEFAULT_LOCK_WAIT, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_NAMESPACE, DEFAULT_REDIS_TIMEOUT, DEFAULT_TTL_JITTER, DEFAULT_ZSTD_LEVEL, Entries,
    Entry, EntryKey, Error, Key, KeyPart, KeyWriter, LoadTimeout, MAX_PREFIXES, MAX_SETTING,
    MAX_TTL, OTHER_PREFIXES, PrefixStats, Stats, entry, global, key, set_global, tags, warm,
};

/// The macros and the types they work with, for a glob import.
pub mod prelude {
    pub use crate::{Cache, KeyPart, cache_aside, cache_batch, invalidates, write_through};
}

/// For generated code only: not part of the API, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use tiercache_runtime::__private::*;
}

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
