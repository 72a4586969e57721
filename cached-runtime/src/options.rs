//! What a programmatic entry ([`crate::Entry`]) or batch
//! ([`crate::Entries`]) asks for, checked as it is set: a setting out of
//! range is recorded, never a panic, and the call then runs uncached.

use std::time::Duration;

use crate::entry::MAX_TAGS;
use crate::error::Error;
use crate::key::is_valid_prefix;
use crate::spec::{MAX_SETTING, MAX_TTL, Spec};

/// A builder's spec and tags, and the first setting it refused.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) spec: Spec,
    pub(crate) tags: Vec<String>,
    /// The first setting out of range: nothing is cached.
    pub(crate) refused: Option<Refused>,
}

/// A setting refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    /// A prefix a key cannot hold.
    Prefix(&'static str),
    Setting {
        setting: &'static str,
        reason: &'static str,
    },
}

impl Refused {
    /// The error that says so.
    pub(crate) fn error(self) -> Error {
        match self {
            Self::Prefix(name) => Error::InvalidName {
                what: "prefix",
                name: name.to_owned(),
            },
            Self::Setting { setting, reason } => Error::InvalidSetting { setting, reason },
        }
    }
}

const TTL_RANGE: &str = "a TTL must be above zero and at most a year";
const WINDOW_RANGE: &str = "a window must be at most a year";

impl Options {
    /// No TTL yet (`0`: read only), no tags.
    pub(crate) fn new(prefix: &'static str) -> Self {
        Self {
            spec: Spec::new(prefix, 0),
            tags: Vec::new(),
            refused: (!is_valid_prefix(prefix)).then_some(Refused::Prefix(prefix)),
        }
    }

    /// The error of a refused setting, if any.
    pub(crate) fn error(&self) -> Option<Error> {
        self.refused.map(Refused::error)
    }

    fn check(&mut self, ok: bool, setting: &'static str, reason: &'static str) {
        if !ok && self.refused.is_none() {
            self.refused = Some(Refused::Setting { setting, reason });
        }
    }

    pub(crate) fn ttl(&mut self, ttl: Duration) {
        self.spec.ttl = ttl;
        self.check(!ttl.is_zero() && ttl <= MAX_TTL, "ttl", TTL_RANGE);
    }

    pub(crate) fn tags<I>(&mut self, tags: I)
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        let ok = self.tags.len() <= MAX_TAGS;
        self.check(ok, "tags", "an entry carries at most 253 tags");
    }

    pub(crate) fn cache_none(&mut self, ttl: Duration) {
        self.spec.cache_none = Some(ttl);
        self.check(!ttl.is_zero() && ttl <= MAX_TTL, "cache_none", TTL_RANGE);
    }

    pub(crate) fn fail_safe(&mut self, window: Duration) {
        self.spec.fail_safe = window;
        self.check(window <= MAX_TTL, "fail_safe", WINDOW_RANGE);
    }

    pub(crate) fn stale(&mut self, window: Duration) {
        self.spec.stale = window;
        self.check(window <= MAX_TTL, "stale", WINDOW_RANGE);
    }

    pub(crate) fn timeout(&mut self, timeout: Duration) {
        self.spec.soft_timeout = Some(timeout);
        let ok = !timeout.is_zero() && timeout <= MAX_SETTING;
        self.check(
            ok,
            "timeout",
            "a timeout must be above zero and at most a day",
        );
    }

    pub(crate) fn refresh_ahead(&mut self, beta: f64) {
        let ok = beta > 0.0 && beta <= 1000.0;
        self.spec.refresh_beta = if ok { beta } else { 0.0 };
        self.check(ok, "refresh_ahead", "beta must be in (0, 1000]");
    }
}
