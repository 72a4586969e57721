//! One entry's L2 protocol: its read (the entry and its versions, one round
//! trip) and its writes (after a load, conditional; a write-through,
//! announced), over the commands of [`crate::l2`].
//!
//! A read answers [`L2Read::Found`] only for a value of the caller's type
//! whose recorded versions all match, that no invalidation pending on this
//! instance covers, and that is no larger than `max_value_size`: anything
//! else (absent, a tombstone, foreign, corrupt, oversized, invalidated) is
//! a miss that the load overwrites.

use std::time::{Duration, Instant};

use crate::cache::Inner;
use crate::codec::TypeCodec;
use crate::envelope::{EncodeError, Framing, Meta, Undecoded};
use crate::format::Format;
use crate::l2::{L2, L2Error};
use crate::lock::Lease;
use crate::spec::Spec;
use crate::stats::Counters;
use crate::tags::version_ttl;

/// What an L2 read found.
pub(crate) enum L2Read<V> {
    /// A value of type `V` (or a cached "nothing") that no invalidation
    /// outdated: fresh or not, see its `meta`.
    Found(Found<V>),
    /// No valid value.
    Miss(Seen),
    /// Redis did not answer.
    Unavailable,
}

/// A valid entry read from L2.
pub(crate) struct Found<V> {
    pub(crate) meta: Meta,
    /// `None`: a cached "nothing".
    pub(crate) value: Option<V>,
    /// Its serialized size (uncompressed, decrypted): what L1 weighs it by.
    pub(crate) size: usize,
    pub(crate) seen: Seen,
}

/// What a read saw, for the lock and the write that follow a load.
pub(crate) struct Seen {
    /// The current versions of the entry's tags.
    versions: Vec<u64>,
    /// The entry's bytes as read, if any. Hashed (see [`crate::l2::seen`])
    /// only when the lock or the write compares them: a hit never does.
    entry: Option<Vec<u8>>,
    /// When the read was sent: a write long after it stays out of Redis
    /// (see [`crate::l2::WRITE_HORIZON`]).
    pub(crate) at: Instant,
}

impl Seen {
    /// Whether the read found nothing to serve (no entry, or a tombstone):
    /// what read-or-lock takes the lock for (see `Run::consult`), unlike an
    /// entry refused for its versions, which it returns as it is.
    pub(crate) fn found_nothing(&self) -> bool {
        self.entry.as_deref().is_none_or(crate::l2::is_tombstone)
    }

    /// The digest the lock and write scripts compare with.
    pub(crate) fn digest(&self) -> String {
        crate::l2::seen(self.entry.as_deref())
    }
}

/// How an entry is written.
pub(crate) enum Write<'a> {
    /// After a cache-aside load: only if the entry is still as it was seen;
    /// releases the lock if the loader holds it.
    IfUnchanged(Seen, Option<&'a mut Lease>),
    /// A write-through: only if the entry is still as the writer read it
    /// before its body ran (with the tag versions read then), announced to
    /// the other instances with the message given.
    Announced(Seen, Vec<u8>),
}

/// Why a write did not store its value.
#[derive(Debug)]
pub(crate) enum NotWritten {
    /// The entry changed since it was read: another value is newer.
    Changed,
    /// The value cannot go to Redis (it does not serialize, or it is over
    /// `max_value_size`).
    Refused,
    /// Redis did not take it.
    Failed,
}

/// One entry's L2 operations: its Redis key and tag version keys.
pub(crate) struct L2Call<'a> {
    inner: &'a Inner,
    pub(crate) l2: &'a L2,
    spec: &'a Spec,
    /// The rendered `prefix:…` key.
    key: &'a str,
    tags: &'a [String],
    pub(crate) entry_key: String,
    version_keys: Vec<String>,
    /// How the entry is written and read.
    format: Format,
}

impl<'a> L2Call<'a> {
    pub(crate) fn new(
        inner: &'a Inner,
        spec: &'a Spec,
        key: &'a str,
        tags: &'a [String],
    ) -> Option<Self> {
        let l2 = inner.l2.as_ref()?;
        let formats = inner.settings.formats;
        let format = inner
            .sealed_prefixes
            .format(spec.prefix, spec.format, formats);
        Some(Self {
            inner,
            l2,
            spec,
            key,
            tags,
            entry_key: inner.names.entry(key),
            version_keys: inner.names.versions_of(spec.prefix, tags),
            format,
        })
    }

    fn redis_failed(&self, error: &L2Error, what: &str) {
        self.inner.counters.redis_failed(error);
        let (prefix, key) = (self.spec.prefix, self.shown_key());
        tracing::debug!(%error, prefix, key, "L2 {what} failed");
    }

    /// How this entry is written and read.
    fn framing(&self) -> Framing<'_> {
        Framing {
            format: self.format,
            keys: self.inner.keys.as_ref(),
            redis_key: self.entry_key.as_bytes(),
            max_len: self.inner.settings.max_value_size,
        }
    }

    /// The key, for a log that may show it (`trace_keys`).
    fn shown_key(&self) -> Option<&str> {
        self.inner.observer.shown(&self.entry_key)
    }

    /// The entry's tag version keys (namespace, prefix, tags).
    pub(crate) fn version_keys(&self) -> &[String] {
        &self.version_keys
    }

    /// How long version keys live: past the entry's last servable moment.
    pub(crate) fn version_ttl(&self) -> Duration {
        version_ttl(self.spec.lifetime(self.spec.ttl))
    }

    /// Reads the entry and the current versions of its tags: one round trip.
    /// Anything but a value of type `V` whose recorded versions all match
    /// (absent, foreign, corrupt, oversized, invalidated, covered by an
    /// invalidation this instance has not had confirmed) is a miss;
    /// whether it is still fresh is for the caller to see.
    pub(crate) async fn read<V>(&self, codec: TypeCodec<V>) -> L2Read<V> {
        let at = Instant::now();
        // Before the read is sent: Redis may not have these yet.
        let pending = self.inner.pending.snapshot();
        let read = match self
            .l2
            .read(&self.entry_key, &self.version_keys, self.version_ttl())
            .await
        {
            Ok(read) => read,
            Err(error) => {
                self.redis_failed(&error, "read");
                return L2Read::Unavailable;
            }
        };
        self.classify(codec, read.entry, read.versions, pending.as_ref(), at)
    }

    /// [`L2Call::read`], with `lock` taken in the same round trip if the
    /// entry is absent or a tombstone.
    pub(crate) async fn read_or_acquire<V>(
        &self,
        codec: TypeCodec<V>,
        lock: crate::l2::Acquire<'_>,
    ) -> (L2Read<V>, ReadLock) {
        let at = Instant::now();
        let pending = self.inner.pending.snapshot();
        let read = self
            .l2
            .read_or_acquire(
                &self.entry_key,
                &self.version_keys,
                self.version_ttl(),
                lock,
            )
            .await;
        let (read, acquired) = match read {
            Ok((Ok(read), acquired)) => (read, acquired),
            // The lock's outcome known, the read failed after it.
            Ok((Err(error), acquired)) => {
                self.redis_failed(&error, "read");
                let lock = acquired.map_or(ReadLock::NotTried, ReadLock::Tried);
                return (L2Read::Unavailable, lock);
            }
            // Refused, not failed (out of memory: a script that may write
            // is refused whole, where a read is not; or what came after the
            // script): a plain read, and the lock asked for on its own, and
            // plain reads for this function until one misses again.
            Err(crate::l2::L2Error::Redis(error))
                if !error.is_timeout() && !crate::breaker::is_connection_failure(&error) =>
            {
                tracing::debug!(%error, "read-or-lock refused; reading alone");
                return (self.read(codec).await, ReadLock::Refused);
            }
            // Nothing sent (the script's pipeline skipped).
            Err(error) if error.skipped() => {
                self.redis_failed(&error, "read");
                return (L2Read::Unavailable, ReadLock::NotTried);
            }
            Err(error) => {
                self.redis_failed(&error, "read");
                return (L2Read::Unavailable, ReadLock::Unknown);
            }
        };
        let read = self.classify(codec, read.entry, read.versions, pending.as_ref(), at);
        let lock = acquired.map_or(ReadLock::NotTried, ReadLock::Tried);
        (read, lock)
    }

    /// What an entry read at `at` (with the current `versions` of its tags,
    /// and the invalidations pending here before it was sent) is for a
    /// reader of `V`: see [`L2Call::read`].
    pub(crate) fn classify<V>(
        &self,
        codec: TypeCodec<V>,
        entry: Option<Vec<u8>>,
        versions: Vec<u64>,
        pending: Option<&crate::pending::Snapshot>,
        at: Instant,
    ) -> L2Read<V> {
        // Made once, on whichever path ends the read.
        let seen = |versions, entry| Seen {
            versions,
            entry,
            at,
        };
        let Some(bytes) = entry else {
            return L2Read::Miss(seen(versions, None));
        };
        if bytes.len() > self.inner.settings.max_value_size {
            Counters::bump(&self.inner.counters.oversized_values);
            let (prefix, key, len) = (self.spec.prefix, self.shown_key(), bytes.len());
            crate::observe::warn_throttled!(
                prefix,
                key,
                len,
                "L2 value over max_value_size; not decoded, loading"
            );
            return L2Read::Miss(seen(versions, Some(bytes)));
        }
        if crate::l2::is_tombstone(&bytes) {
            return L2Read::Miss(seen(versions, Some(bytes))); // invalidated
        }
        let (meta, value, size) = match (codec.decode)(&bytes, &self.framing()) {
            Ok(decoded) => decoded,
            Err(Undecoded::Foreign) => {
                let expected = std::any::type_name::<V>();
                tracing::debug!(
                    prefix = self.spec.prefix,
                    key = self.shown_key(),
                    expected,
                    "L2 value does not decode; loading"
                );
                return L2Read::Miss(seen(versions, Some(bytes)));
            }
            Err(Undecoded::Undecryptable) => {
                Counters::bump(&self.inner.counters.undecryptable);
                self.inner.metrics.undecryptable();
                let (prefix, key) = (self.spec.prefix, self.shown_key());
                crate::observe::warn_throttled!(
                    prefix,
                    key,
                    "L2 value does not decrypt (an unknown key id, a wrong key, tampered, or not encrypted); loading"
                );
                return L2Read::Miss(seen(versions, Some(bytes)));
            }
        };
        let invalidated = meta.tag_versions != versions
            || pending.is_some_and(|p| p.covers(self.key, self.spec.prefix, self.tags));
        if invalidated {
            return L2Read::Miss(seen(versions, Some(bytes)));
        }
        let seen = seen(versions, Some(bytes));
        L2Read::Found(Found {
            meta,
            value,
            size,
            seen,
        })
    }

    /// The entry as it is (bytes, not decoded) and the current versions of
    /// its tags, before a write-through's body runs: one round trip. An
    /// absent entry is marked first (a tombstone, one more round trip), so
    /// that "absent" is never what the write compares with: another
    /// writer's value that expired or was evicted meanwhile would look the
    /// same. `None` when Redis is out of reach (or the entry appeared
    /// meanwhile): then the write-through invalidates instead.
    pub(crate) async fn before_write(&self) -> Option<Seen> {
        let at = Instant::now();
        let read = self
            .l2
            .read(&self.entry_key, &self.version_keys, self.version_ttl())
            .await
            .map_err(|error| self.redis_failed(&error, "read before a write"))
            .ok()?;
        let entry = match read.entry {
            Some(entry) => entry,
            None => {
                let marker = crate::l2::tombstone();
                let planted = self
                    .l2
                    .plant(&self.entry_key, &marker, crate::l2::WRITE_HORIZON)
                    .await
                    .map_err(|error| self.redis_failed(&error, "mark before a write"))
                    .ok()?;
                planted.then_some(marker)?
            }
        };
        Some(Seen {
            versions: read.versions,
            entry: Some(entry),
            at,
        })
    }

    /// The envelope of a value (`None`: a cached "nothing") fresh for
    /// `fresh` (until the Unix ms given), with the tag versions `seen`
    /// before it was loaded or written; refused when it does not serialize
    /// or is over `max_value_size`.
    pub(crate) fn envelope<V>(
        &self,
        codec: TypeCodec<V>,
        value: Option<&V>,
        load_time: Duration,
        (fresh, expires_at_ms): (Duration, u64),
        seen: &Seen,
    ) -> Result<Vec<u8>, NotWritten> {
        let meta = Meta {
            tag_versions: seen.versions.clone(),
            expires_at_ms,
            ..Meta::fresh((codec.fingerprint)(), fresh, load_time)
        };
        let (prefix, key) = (self.spec.prefix, self.shown_key());
        let bytes = match (codec.encode)(&meta, value, &self.framing()) {
            Ok(bytes) => bytes,
            Err(error) => {
                if let EncodeError::Oversized(_) = error {
                    Counters::bump(&self.inner.counters.oversized_values);
                }
                crate::observe::warn_throttled!(
                    %error,
                    prefix,
                    key,
                    "value not written to Redis; kept in L1 only"
                );
                return Err(NotWritten::Refused);
            }
        };
        if bytes.len() > self.inner.settings.max_value_size {
            Counters::bump(&self.inner.counters.oversized_values);
            let len = bytes.len();
            crate::observe::warn_throttled!(
                prefix,
                key,
                len,
                "value over max_value_size; kept in L1 only"
            );
            return Err(NotWritten::Refused);
        }
        Ok(bytes)
    }

    /// Writes the value (`None`: a cached "nothing"), fresh for `fresh`
    /// (until the Unix ms given) and kept through the stale and fail-safe
    /// windows, with the tag versions read before it was loaded or written:
    /// one round trip. A lease given is released by the same script, or,
    /// when the write fails, by the lease's drop.
    pub(crate) async fn write<V>(
        &self,
        codec: TypeCodec<V>,
        value: Option<&V>,
        load_time: Duration,
        (fresh, expires_at_ms): (Duration, u64),
        how: Write<'_>,
    ) -> Result<(), NotWritten> {
        let seen = match &how {
            Write::IfUnchanged(seen, _) | Write::Announced(seen, _) => seen,
        };
        let bytes = self.envelope(codec, value, load_time, (fresh, expires_at_ms), seen)?;
        let key = &self.entry_key;
        let (ttl, version_ttl) = (self.spec.lifetime(fresh), self.version_ttl());
        let written = match how {
            Write::IfUnchanged(seen, lease) => {
                let channel = self.inner.names.landed_channel();
                let held = lease.as_deref().map(|lease| lease.held(&channel));
                let stored = self
                    .l2
                    .write_if_unchanged(
                        key,
                        &seen.digest(),
                        &bytes,
                        ttl,
                        &self.version_keys,
                        version_ttl,
                        held,
                    )
                    .await;
                if stored.is_ok()
                    && let Some(lease) = lease
                {
                    lease.released();
                }
                stored
            }
            Write::Announced(seen, message) => {
                let channel = self.inner.names.channel();
                let announce = (channel.as_str(), message.as_slice());
                self.l2
                    .write_through(
                        key,
                        &seen.digest(),
                        &bytes,
                        ttl,
                        &self.version_keys,
                        version_ttl,
                        announce,
                    )
                    .await
            }
        };
        match written {
            Ok(true) => Ok(()),
            Ok(false) => {
                let (prefix, key) = (self.spec.prefix, self.shown_key());
                tracing::debug!(
                    prefix,
                    key,
                    "entry changed since it was read; not overwritten"
                );
                Err(NotWritten::Changed)
            }
            Err(error) => {
                self.redis_failed(&error, "write");
                // Other instances do not see this value (they load it
                // themselves), and it is not where a write-through would
                // compare against.
                let (prefix, key) = (self.spec.prefix, self.shown_key());
                crate::observe::warn_throttled!(
                    %error,
                    prefix,
                    key,
                    "a value did not reach Redis; kept in L1 only"
                );
                Err(NotWritten::Failed)
            }
        }
    }
}

/// What [`L2Call::read_or_acquire`] did with the lock.
pub(crate) enum ReadLock {
    /// Tried, with this outcome.
    Tried(crate::l2::Acquired),
    /// Not tried: the entry was there, or nothing was sent.
    NotTried,
    /// Maybe taken: the script may have run (a timeout, a failure after it).
    Unknown,
    /// Maybe taken, and the script refused (out of memory, or what came
    /// after it failed): the read was made alone, and this function's
    /// reads had better be plain until one finds nothing again.
    Refused,
}
