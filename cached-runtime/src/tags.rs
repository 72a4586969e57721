//! Versioned tags: O(1) invalidation without a stale-set race.
//!
//! Every tag has a *version key* in Redis holding a random 64-bit nonce. An
//! entry records, in its envelope, the versions of its tags as they were
//! **before** its load started; it is valid only while every recorded version
//! is still the current one. Invalidating a tag writes a new nonce: one
//! `SET`, whatever the number of entries carrying the tag.
//!
//! - **No stale-set race.** A load that started before an invalidation
//!   recorded the old nonce, so its value is refused however late it lands.
//! - **No clocks.** Nonces are compared for equality, never ordered.
//! - **Eviction is safe.** A version key that Redis evicted is re-created
//!   with a fresh nonce on the next read; an absent or new nonce never
//!   matches what an older entry recorded, so the worst case is a miss.
//! - **Implicit tags.** Every entry also carries the version of its prefix
//!   and of its namespace, so "forget this function" and "forget everything"
//!   are one `SET` too.
//! - **Keys.** A key invalidation has no version to bump (a version per key
//!   would be one more key on every read): it replaces the entry with a
//!   tombstone, which the conditional write of a load in flight compares
//!   with what it read, and refuses.
//!
//! # Redis keys
//!
//! | key | holds |
//! |---|---|
//! | `{ns}:{prefix}:{key}` | an entry (envelope) |
//! | `{ns}:#t:{tag}` | the version of a tag |
//! | `{ns}:#p:{prefix}` | the version of a prefix |
//! | `{ns}:#ns` | the version of the namespace |
//! | `{ns}:#lock:{prefix}:{key}` | the load lock of an entry: a random token, with a lease |
//! | `{ns}:#lock:{prefix}:{key}#w` | raised while another process waits for that lock |
//! | channel `{ns}:#events` | invalidations, for the L1 of other instances |
//! | channel `{ns}:#landed` | `{prefix}:{key}` of each load that released its lock |
//!
//! `#` never appears in a prefix or an escaped value, so these never collide
//! with entries.
//!
//! An entry's key expires at the end of its fresh period plus its function's
//! `stale` and `fail_safe` windows; the envelope records where the fresh
//! period ends. A version key lives at least as long as the longest
//! entry written with it: its TTL is twice that, and a write extends it
//! (`PEXPIRE … GT`) when less than half of it is left, so it never expires
//! under a live entry; if it is evicted anyway, see above.
//!
//! # Round trips
//!
//! - Read: one `GET` of the entry, over the tracked connection, when the
//!   versions are known (see `tracking.rs`); otherwise `CLIENT CACHING
//!   YES`, an `MGET` of the versions and the `GET`, in one pipeline (one
//!   `MGET` of the entry and its versions without tracking). Only when a
//!   version key does not exist yet (the first read of a tag) a second
//!   round trip creates it (`SET NX`, then `GET`). While a function's reads
//!   miss, the read is a script that also takes the lock when the entry is
//!   absent or a tombstone (read-or-lock, `l2.rs`): a miss is then that
//!   read and the write.
//! - Write after a load: one script: `SET` of the entry if it is still as
//!   the load saw it, `PEXPIRE … GT` of its tag versions, and, when the
//!   loader holds the lock, its release and a `PUBLISH` of the landing.
//!   Write-through: one `MGET` before its body (the entry as it is, and
//!   the versions), then one script: `SET` of the entry if it is still as
//!   read then, `PEXPIRE … GT` of its versions, `PUBLISH`; an entry that
//!   changed meanwhile (another write, an invalidation) is invalidated
//!   instead, since either side may hold the newer data.
//! - Lock (on a miss, with Redis): one script, `SET NX PX` or the holder's
//!   time left.
//! - Invalidate: one pipeline: `SET … XX KEEPTTL` of each version (a version
//!   key that does not exist has no valid entry to invalidate), `SET … PX`
//!   of a *tombstone* in place of each key's entry (a random marker, no
//!   envelope: a miss for readers, and unlike what any load in flight read,
//!   so its conditional write is refused; see `l2.rs`),
//!   and one `PUBLISH`. Sent in order, retried until Redis confirms it (see
//!   `pending.rs`).
//!
//! # Redis Cluster
//!
//! The reads and writes above touch several keys at once. They need no
//! atomicity (each command is safe alone), so on a cluster the plan is to
//! split the `MGET` and the pipelines per slot and send the parts in
//! parallel: still one round trip of latency, several of work. Entries and
//! their versions are deliberately not forced into one slot with hash tags,
//! which would put a whole namespace on one shard. Not implemented yet: the
//! cache accepts single-node URLs only.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The Redis keys and channel of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    namespace: String,
    /// What scopes the channels to the Redis database (channels are
    /// server-wide): empty for database 0, `#db3` for database 3.
    database: String,
}

impl Names {
    pub(crate) fn new(namespace: String) -> Self {
        Self {
            namespace,
            database: String::new(),
        }
    }

    /// The names of a namespace in Redis database `db`: the keys are the
    /// same (the database holds them apart), the channels are its own.
    pub(crate) fn in_database(mut self, db: i64) -> Self {
        self.database = if db == 0 {
            String::new()
        } else {
            format!("#db{db}")
        };
        self
    }

    /// The namespace itself.
    pub(crate) fn as_str(&self) -> &str {
        &self.namespace
    }

    /// The namespace, then `parts`: one allocation, no formatting (these
    /// names are made on every L2 call).
    fn name(&self, parts: &[&str]) -> String {
        let len = self.namespace.len() + parts.iter().map(|part| part.len()).sum::<usize>();
        let mut name = String::with_capacity(len);
        name.push_str(&self.namespace);
        parts.iter().for_each(|part| name.push_str(part));
        name
    }

    /// `key` is the rendered `prefix:…` key.
    pub(crate) fn entry(&self, key: &str) -> String {
        self.name(&[":", key])
    }

    pub(crate) fn tag(&self, tag: &str) -> String {
        self.name(&[":#t:", tag])
    }

    pub(crate) fn prefix(&self, prefix: &str) -> String {
        self.name(&[":#p:", prefix])
    }

    pub(crate) fn namespace_version(&self) -> String {
        self.name(&[":#ns"])
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:#events{}", self.namespace, self.database)
    }

    /// The cross-process load lock of an entry (`key`: `prefix:…`).
    pub(crate) fn lock(&self, key: &str) -> String {
        self.name(&[":#lock:", key])
    }

    /// Where a lock holder announces that it is done: the message is the
    /// entry's `prefix:…` key.
    /// Where the permission probe at `build` publishes (nobody listens).
    pub(crate) fn probe_channel(&self) -> String {
        format!("{}:#probe{}", self.namespace, self.database)
    }

    pub(crate) fn landed_channel(&self) -> String {
        format!("{}:#landed{}", self.namespace, self.database)
    }

    /// The version keys an entry of `prefix` with `tags` records: the
    /// namespace's, the prefix's, then the tags' in sorted order, each
    /// once, so that readers and writers that list the same tags in
    /// another order (a batch's shared and per-key tags) agree.
    pub(crate) fn versions_of(&self, prefix: &str, tags: &[String]) -> Vec<String> {
        let mut sorted: Vec<&String> = tags.iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut keys = Vec::with_capacity(2 + sorted.len());
        keys.push(self.namespace_version());
        keys.push(self.prefix(prefix));
        keys.extend(sorted.into_iter().map(|tag| self.tag(tag)));
        keys
    }
}

/// How long a version key lives: well past any entry written with it.
pub(crate) fn version_ttl(entry_ttl: Duration) -> Duration {
    entry_ttl.saturating_mul(2).max(Duration::from_secs(3600))
}

/// A fresh version nonce, as stored in Redis (16 hex digits).
pub(crate) fn fresh_version() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Reads a stored version. Anything that is not 16 hex digits (written by
/// something else) still gets a stable number, so it can be recorded and
/// compared like any other.
pub(crate) fn parse_version(raw: &[u8]) -> u64 {
    std::str::from_utf8(raw)
        .ok()
        .filter(|s| s.len() == 16)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or_else(|| crate::envelope::stable_hash(raw))
}

/// What one invalidation covers. Published on the namespace's channel so
/// that every instance drops the matching L1 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Invalidation {
    /// The instance that sent it, which applied it already.
    #[serde(rename = "from")]
    pub(crate) sender: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// Rendered `prefix:…` keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) prefixes: Vec<String>,
    /// The whole namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) all: bool,
}

impl Invalidation {
    pub(crate) fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.keys.is_empty() && self.prefixes.is_empty() && !self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide_with_entries() {
        let names = Names::new("shop".to_owned());
        assert_eq!(names.entry("user:42"), "shop:user:42");
        assert_eq!(names.tag("org:7"), "shop:#t:org:7");
        assert_eq!(names.prefix("user"), "shop:#p:user");
        assert_eq!(names.as_str(), "shop");
        assert_eq!(names.namespace_version(), "shop:#ns");
        assert_eq!(names.channel(), "shop:#events");
        assert_eq!(
            names.versions_of("user", &["org:7".into()]),
            ["shop:#ns", "shop:#p:user", "shop:#t:org:7"]
        );
    }

    #[test]
    fn versions_parse_and_foreign_ones_are_stable() {
        let fresh = fresh_version();
        assert_eq!(format!("{:016x}", parse_version(fresh.as_bytes())), fresh);
        assert_ne!(fresh_version(), fresh_version());
        assert_eq!(parse_version(b"garbage"), parse_version(b"garbage"));
        assert_ne!(parse_version(b"garbage"), parse_version(b"other"));
    }

    #[test]
    fn version_keys_outlive_entries() {
        assert_eq!(
            version_ttl(Duration::from_secs(60)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            version_ttl(Duration::from_secs(86_400)),
            Duration::from_secs(172_800)
        );
    }

    #[test]
    fn invalidations_round_trip_compactly() {
        let message = Invalidation {
            sender: 7,
            tags: vec!["org:7".into()],
            ..Invalidation::default()
        };
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(json, r#"{"from":7,"tags":["org:7"]}"#);
        assert_eq!(
            serde_json::from_str::<Invalidation>(&json).unwrap(),
            message
        );
        assert!(Invalidation::default().is_empty());
    }
}
