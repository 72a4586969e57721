//! Encryption of values in Redis: XChaCha20-Poly1305 under a [`KeyRing`].
//!
//! A sealed envelope is its header, the key id (1 byte), a random nonce
//! (24 bytes), then the payload (compressed first, if it is) encrypted
//! with a 16-byte tag. The associated data is the Redis key (with its
//! length) and everything before the ciphertext, so a ciphertext moved to
//! another key, or a header edited (its flags, expiry, tag versions, key
//! id), does not decrypt.
//!
//! Why XChaCha20-Poly1305 rather than AES-GCM: its 192-bit nonce can be
//! drawn at random for every value with no practical bound on how many
//! values one key seals (AES-GCM's 96-bit random nonces are limited to
//! 2^32 messages per key), and it is constant-time in software, with or
//! without AES instructions.

#[cfg(feature = "encryption")]
mod sealed {
    use std::fmt;

    use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    /// The nonce's length in an envelope.
    pub(crate) const NONCE_LEN: usize = 24;
    /// The tag's length after the ciphertext.
    pub(crate) const TAG_LEN: usize = 16;

    /// The keys values are encrypted with in Redis (feature `encryption`):
    /// one current key that encrypts, and older ones that still decrypt,
    /// each with a one-byte id recorded in every value.
    ///
    /// To rotate: make the new key current and keep the old one listed
    /// ([`KeyRing::with_old_key`]) until every value it encrypted has
    /// expired (the longest TTL plus stale and fail-safe windows), then
    /// drop it. A value under a key id the ring does not list, under a
    /// wrong key, or tampered with, is a miss (reloaded and overwritten)
    /// and counts in [`Stats::undecryptable`](crate::Stats::undecryptable),
    /// never an error to the caller.
    ///
    /// Keys are 32 random bytes (e.g. `openssl rand -hex 32`, decoded);
    /// its `Debug` shows the ids only.
    ///
    /// ```
    /// use tiercache_runtime::KeyRing;
    /// # let (new_key, old_key) = ([7u8; 32], [9u8; 32]);
    /// let keys = KeyRing::new(2, new_key).with_old_key(1, old_key);
    /// assert_eq!(format!("{keys:?}"), "KeyRing { current: 2, old: [1] }");
    /// ```
    #[derive(Clone)]
    pub struct KeyRing {
        current: u8,
        keys: Vec<(u8, XChaCha20Poly1305)>,
        /// An id listed twice: `build()` refuses the ring.
        duplicate: Option<u8>,
    }

    impl KeyRing {
        /// A ring whose current key, `key`, has the id `id`.
        #[must_use]
        pub fn new(id: u8, key: [u8; 32]) -> Self {
            Self {
                current: id,
                keys: vec![(id, XChaCha20Poly1305::new(&key.into()))],
                duplicate: None,
            }
        }

        /// Also decrypts (never encrypts) with `key`, of id `id`: a key
        /// being rotated out. An id listed twice is a `build()` error.
        #[must_use]
        pub fn with_old_key(mut self, id: u8, key: [u8; 32]) -> Self {
            if self.keys.iter().any(|(known, _)| *known == id) {
                self.duplicate.get_or_insert(id);
            }
            self.keys.push((id, XChaCha20Poly1305::new(&key.into())));
            self
        }

        /// Why `build()` refuses the ring, if it does.
        pub(crate) fn invalid(&self) -> Option<&'static str> {
            self.duplicate.map(
                |_| "a key id is listed twice (new and with_old_key): give each key its own id",
            )
        }

        /// Appends the current key's id and a fresh nonce to `out` (whose
        /// bytes so far are the envelope's header), then `plaintext`
        /// encrypted and its tag. `Err` only when the system's random
        /// source fails.
        pub(crate) fn seal(
            &self,
            redis_key: &[u8],
            out: &mut Vec<u8>,
            plaintext: Vec<u8>,
        ) -> Result<(), &'static str> {
            let Some((id, cipher)) = self.keys.iter().find(|(id, _)| *id == self.current) else {
                return Err("the key ring has no current key");
            };
            let nonce = XNonce::try_generate().map_err(|_| "the system's random source failed")?;
            out.push(*id);
            out.extend_from_slice(&nonce);
            let aad = associated(redis_key, out);
            let mut buffer = plaintext;
            buffer.reserve_exact(TAG_LEN);
            cipher
                .encrypt_in_place(&nonce, &aad, &mut buffer)
                .map_err(|_| "the value is too large to encrypt")?;
            out.extend_from_slice(&buffer);
            Ok(())
        }

        /// The plaintext of a sealed payload; `header` is every byte
        /// before the ciphertext (the key id and nonce last). `None` for
        /// an unknown key id, a wrong key or tampered bytes.
        pub(crate) fn open(
            &self,
            redis_key: &[u8],
            header: &[u8],
            key_id: u8,
            nonce: &[u8; NONCE_LEN],
            ciphertext: &[u8],
        ) -> Option<Vec<u8>> {
            let (_, cipher) = self.keys.iter().find(|(id, _)| *id == key_id)?;
            let aad = associated(redis_key, header);
            let mut buffer = ciphertext.to_vec();
            cipher
                .decrypt_in_place(&XNonce::from(*nonce), &aad, &mut buffer)
                .ok()?;
            Some(buffer)
        }
    }

    /// The associated data: the Redis key's length and bytes, then the
    /// envelope's bytes before the ciphertext. The length makes the split
    /// between the two unambiguous.
    fn associated(redis_key: &[u8], header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(8 + redis_key.len() + header.len());
        aad.extend_from_slice(&(redis_key.len() as u64).to_le_bytes());
        aad.extend_from_slice(redis_key);
        aad.extend_from_slice(header);
        aad
    }

    impl fmt::Debug for KeyRing {
        /// The ids only: never key material.
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let old: Vec<u8> = self
                .keys
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.current)
                .collect();
            f.debug_struct("KeyRing")
                .field("current", &self.current)
                .field("old", &old)
                .finish()
        }
    }
}

#[cfg(feature = "encryption")]
pub use sealed::KeyRing;
#[cfg(feature = "encryption")]
pub(crate) use sealed::NONCE_LEN;

/// Without the `encryption` feature: a ring that cannot exist, so that
/// sealed envelopes are misses and nothing is sealed.
#[cfg(not(feature = "encryption"))]
mod sealed {
    /// Never made without the feature.
    #[derive(Debug, Clone)]
    pub(crate) enum KeyRing {}

    pub(crate) const NONCE_LEN: usize = 24;

    impl KeyRing {
        pub(crate) fn invalid(&self) -> Option<&'static str> {
            match *self {}
        }

        pub(crate) fn seal(
            &self,
            _: &[u8],
            _: &mut Vec<u8>,
            _: Vec<u8>,
        ) -> Result<(), &'static str> {
            match *self {}
        }

        pub(crate) fn open(
            &self,
            _: &[u8],
            _: &[u8],
            _: u8,
            _: &[u8; NONCE_LEN],
            _: &[u8],
        ) -> Option<Vec<u8>> {
            match *self {}
        }
    }
}

#[cfg(not(feature = "encryption"))]
pub(crate) use sealed::{KeyRing, NONCE_LEN};
