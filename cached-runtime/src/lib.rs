//! The engine behind [tiercache](https://docs.rs/tiercache): keys, the L2
//! envelope, L1 (quick_cache), L2 (Redis), single-flight and stats.
//!
//! Depend on `tiercache`, not on this crate: it re-exports everything here
//! that is public, with the macros. Items under `__private` exist for the
//! code the macros generate and are not part of the API.

mod aside;
mod breaker;
mod cache;
mod coherence;
mod envelope;
mod error;
mod flight;
mod generations;
pub mod key;
mod l1;
mod l2;
mod shape;
mod stats;
pub mod tags;

pub use cache::{
    Cache, CacheBuilder, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES, DEFAULT_L1_CAPACITY,
    DEFAULT_NAMESPACE, DEFAULT_REDIS_TIMEOUT, global, set_global,
};
pub use error::Error;
pub use key::{KeyPart, KeyWriter};
pub use stats::Stats;

/// For generated code only: not part of the API, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::aside::{
        Cacheable, Codec, Spec, When, invalidating, l1_get, l1_get_rendered, load, write_through,
    };
    pub use crate::cache::{Cache, global};
    pub use crate::key::{KeyPart, KeyWriter, TagPart, is_valid_prefix};
    pub use crate::shape::{Fallible, FallibleOptional, Optional, Outcome, Plain, Shape};

    /// Checks that a cached value's type can be cached and returns what the
    /// cache paths need of it; spanned on the return type so that the error
    /// points there, once.
    #[must_use]
    pub const fn codec<T: Cacheable>() -> Codec<T> {
        Codec::new()
    }
}
