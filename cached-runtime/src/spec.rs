//! What one cached function asks for ([`Spec`], built by the macro as a
//! `const`) and what the cache decides for all of them ([`Settings`], from
//! the builder).
//!
//! An entry's life, from its load:
//!
//! ```text
//! 0 ─────────── fresh (ttl, minus jitter) ──────────┬── stale ──┬── fail-safe ──┐
//!   served; with refresh_ahead, refreshed early     │ served at │ served only   │ gone
//!   (XFetch) in the background                      │ once, one │ when the load │
//!                                                   │ refresh   │ fails / times │
//!                                                   │ runs      │ out           │
//! ```
//!
//! Both later windows count from the end of the fresh period, and the entry
//! is kept (in L1 and in Redis) until the later one ends. An invalidated
//! entry is never served, stale or not.

use std::time::Duration;

/// What one call site asks for: built by the macro as a `const`, or by an
/// [`Entry`](crate::Entry) at run time.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub(crate) prefix: &'static str,
    pub(crate) ttl: Duration,
    /// Past `ttl`, serve the old value at once while one refresh runs.
    pub(crate) stale: Duration,
    /// Past `ttl`, serve the old value when the load fails or times out.
    pub(crate) fail_safe: Duration,
    /// XFetch's β; 0 turns early refresh off.
    pub(crate) refresh_beta: f64,
    /// With a fail-safe value at hand, stop waiting for the load after this.
    pub(crate) soft_timeout: Option<Duration>,
    /// Give up on the load after this.
    pub(crate) hard_timeout: Option<Duration>,
    /// Cache "nothing" (`None`, `Ok(None)`) for this long.
    pub(crate) cache_none: Option<Duration>,
    /// The cross-process lock; `None`: the cache's default.
    pub(crate) lock: Option<bool>,
    /// Codec, compression and encryption; `None`s: the cache's.
    pub(crate) format: crate::format::Chosen,
}

const fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl Spec {
    /// `prefix` as in the key; `ttl_ms`: how long a value stays fresh
    /// (checked by the macro to be above zero).
    #[must_use]
    pub const fn new(prefix: &'static str, ttl_ms: u64) -> Self {
        Self {
            prefix,
            ttl: ms(ttl_ms),
            stale: Duration::ZERO,
            fail_safe: Duration::ZERO,
            refresh_beta: 0.0,
            soft_timeout: None,
            hard_timeout: None,
            cache_none: None,
            lock: None,
            format: crate::format::Chosen {
                codec: None,
                compression: None,
                compress_above: None,
                encrypt: false,
            },
        }
    }

    /// `stale = "…"`.
    #[must_use]
    pub const fn stale(mut self, ms_: u64) -> Self {
        self.stale = ms(ms_);
        self
    }

    /// `fail_safe = "…"`.
    #[must_use]
    pub const fn fail_safe(mut self, ms_: u64) -> Self {
        self.fail_safe = ms(ms_);
        self
    }

    /// `refresh_ahead = β`.
    #[must_use]
    pub const fn refresh_ahead(mut self, beta: f64) -> Self {
        // Negative or NaN would panic in `Duration::mul_f64`: off instead.
        self.refresh_beta = if beta > 0.0 && beta <= 1000.0 {
            beta
        } else {
            0.0
        };
        self
    }

    /// `timeout = "…"`.
    #[must_use]
    pub const fn timeout(mut self, ms_: u64) -> Self {
        self.soft_timeout = Some(ms(ms_));
        self
    }

    /// `hard_timeout = "…"`.
    #[must_use]
    pub const fn hard_timeout(mut self, ms_: u64) -> Self {
        self.hard_timeout = Some(ms(ms_));
        self
    }

    /// `cache_none = "…"`.
    #[must_use]
    pub const fn cache_none(mut self, ms_: u64) -> Self {
        self.cache_none = Some(ms(ms_));
        self
    }

    /// `lock = …`.
    #[must_use]
    pub const fn lock(mut self, lock: bool) -> Self {
        self.lock = Some(lock);
        self
    }

    /// `codec = "…"`.
    #[must_use]
    pub const fn codec(mut self, codec: crate::format::Codec) -> Self {
        self.format.codec = Some(codec);
        self
    }

    /// `compress = "…"`.
    #[must_use]
    pub const fn compress(mut self, compression: crate::format::Compression) -> Self {
        self.format.compression = Some(compression);
        self
    }

    /// `compress_above = n`.
    #[must_use]
    pub const fn compress_above(mut self, bytes: usize) -> Self {
        self.format.compress_above = Some(bytes);
        self
    }

    /// `encrypt`.
    #[must_use]
    pub const fn encrypt(mut self, encrypt: bool) -> Self {
        self.format.encrypt = encrypt;
        self
    }

    /// How long a loaded value stays fresh.
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long an entry is kept past its fresh period: the longer of the
    /// stale and fail-safe windows.
    pub(crate) fn keep(&self) -> Duration {
        self.stale.max(self.fail_safe)
    }

    /// How long an entry lives in Redis past a fresh period of `fresh`.
    pub(crate) fn lifetime(&self, fresh: Duration) -> Duration {
        fresh.saturating_add(self.keep())
    }

    /// Whether entries of this function need their fresh period checked on
    /// a hit (they outlive it, or may be refreshed before its end).
    pub(crate) fn timed(&self) -> bool {
        !self.keep().is_zero() || self.refresh_beta > 0.0
    }
}

/// The defaults of the cache, from [`CacheBuilder`](crate::CacheBuilder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The cross-process lock on a miss, for functions that do not say.
    pub(crate) lock: bool,
    /// How long a lock holder may load before its lease runs out (renewed
    /// while it loads).
    pub(crate) lock_lease: Duration,
    /// How long a caller waits for another process's load before it loads
    /// itself (or serves a fail-safe value).
    pub(crate) lock_wait: Duration,
    /// Fresh periods are shortened by up to this share, at random.
    pub(crate) jitter: f64,
    /// After a fail-safe activation, the stale value is served for this
    /// long before the load is tried again; after a failed background
    /// refresh, no other starts for this long.
    pub(crate) fail_safe_throttle: Duration,
    /// A load in the background that no caller waits for (a refresh, or a
    /// load whose callers took a stale or fail-safe value) is cut off after
    /// this.
    pub(crate) background_timeout: Duration,
    /// A value larger than this (in bytes, as stored in Redis) is neither
    /// decoded from Redis nor written to it.
    pub(crate) max_value_size: usize,
    /// Whether spans and warnings name the keys of calls.
    pub(crate) trace_keys: bool,
    /// Codec, compression and encryption of functions that do not say.
    pub(crate) formats: crate::format::Format,
}

/// The default lease of the cross-process lock.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(10);
/// The default bound on waiting for another process's load.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);
/// The default TTL jitter: fresh periods are up to 5 % shorter.
pub const DEFAULT_TTL_JITTER: f64 = 0.05;
/// The default pause between loads after a fail-safe activation.
pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(10);
/// The default bound on a background load nobody waits for.
pub const DEFAULT_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// The default largest value read from or written to Redis: 4 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 4 << 20;
/// The longest duration a setting may have: a day.
pub const MAX_SETTING: Duration = Duration::from_secs(86_400);
/// The longest TTL or window an entry may have: a year.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

impl Default for Settings {
    fn default() -> Self {
        Self {
            lock: true,
            lock_lease: DEFAULT_LOCK_LEASE,
            lock_wait: DEFAULT_LOCK_WAIT,
            jitter: DEFAULT_TTL_JITTER,
            fail_safe_throttle: DEFAULT_FAIL_SAFE_THROTTLE,
            background_timeout: DEFAULT_BACKGROUND_TIMEOUT,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            trace_keys: false,
            formats: crate::format::Format::default(),
        }
    }
}

impl Settings {
    /// A fresh period for a value loaded now: `ttl` shortened by up to
    /// `jitter` of it, so that entries loaded together expire apart.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 - self.jitter * fastrand::f64())
            .max(Duration::from_millis(1))
    }
}

/// `now + d`, or a century from now for a `d` too long for an `Instant`
/// (a setting or an envelope's expiry far in the future).
pub(crate) fn later(now: std::time::Instant, d: Duration) -> std::time::Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d.min(CENTURY))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// XFetch (Vattani et al., "Optimal Probabilistic Cache Stampede
/// Prevention"): refresh early when `now - delta·β·ln(rand) >= expiry`,
/// where `delta` is how long the last load took. `gap` is the time left
/// until expiry and `scale` is `delta·β`. Early refreshes cluster in the
/// last few `delta`s, more eagerly for slower loads.
#[inline]
pub(crate) fn xfetch(gap: Duration, scale: Duration) -> bool {
    if scale.is_zero() {
        return false;
    }
    // -ln(rand) exceeds 20 with probability e^-20: skip the draw far from
    // expiry, which is almost every hit.
    if gap > scale.saturating_mul(20) {
        return false;
    }
    let draw = -(1.0 - fastrand::f64()).ln();
    scale.mul_f64(draw) >= gap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_shortens() {
        let settings = Settings {
            jitter: 0.1,
            ..Settings::default()
        };
        let ttl = Duration::from_secs(100);
        let spread: Vec<Duration> = (0..1000).map(|_| settings.jittered(ttl)).collect();
        assert!(spread.iter().all(|d| *d <= ttl && *d >= ttl.mul_f64(0.9)));
        let (min, max) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
        assert!(
            *max - *min > Duration::from_secs(8),
            "spread: {min:?}..{max:?}"
        );
        let none = Settings {
            jitter: 0.0,
            ..Settings::default()
        };
        assert_eq!(none.jittered(ttl), ttl);
    }

    #[test]
    fn xfetch_fires_near_expiry_only() {
        let scale = Duration::from_millis(50);
        let fired = |gap| (0..10_000).filter(|_| xfetch(gap, scale)).count();
        assert_eq!(fired(Duration::from_secs(10)), 0);
        let near = fired(Duration::from_millis(25)); // P = e^-0.5 ≈ 0.61
        assert!((5_500..6_600).contains(&near), "{near}");
        let far = fired(Duration::from_millis(200)); // P = e^-4 ≈ 0.018
        assert!((80..300).contains(&far), "{far}");
        assert_eq!(fired(Duration::ZERO), 10_000);
        assert!(!xfetch(Duration::ZERO, Duration::ZERO));
    }
}
