//! The do-not-call list: numbers that asked never to be called again.
//!
//! An activist adds their own number by pressing a key (9 by default) while
//! the greeting plays; operators feed it from a file or the admin API. A
//! `POST /v1/phone/call` to a listed number is refused.
//!
//! # Hashing, and its limits
//! Numbers are never stored: the list holds the HMAC-SHA256 of the E.164
//! number under a key the operator configures ([`DoNotCallHasher`]). A plain
//! hash of a phone number would be no protection: there are few enough
//! numbers (about 10^11 in Brazil) to hash them all and read the list back.
//! With a keyed hash, whoever reads the table without the key learns nothing
//! but its size. The limits:
//! - whoever holds the key can still test numbers one by one (the service
//!   itself must), and enumerate the list with it: the key is a secret like a
//!   database password;
//! - changing the key empties the list in effect (no stored entry matches
//!   any more); entries added by keypress are lost, those fed from a file
//!   can be fed again;
//! - without a configured key a fixed, public default key is used: the
//!   stored values are then as enumerable as a plain hash (the service logs
//!   a warning at start-up).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::PhoneNumber;
use crate::ports::StoreError;

/// The key used when none is configured (public: offers no secrecy).
pub const DEFAULT_KEY: &[u8] = b"bonde-pressure do-not-call default key";

/// A listed number's keyed hash: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DoNotCallHash(String);

impl DoNotCallHash {
    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads a stored digest (64 hex digits); `None` otherwise.
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(s.to_ascii_lowercase()))
    }
}

impl std::fmt::Debug for DoNotCallHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DoNotCallHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// Hashes numbers for the list with the operator's key (HMAC-SHA256 of the
/// E.164 text). `Debug` never shows the key.
#[derive(Clone)]
pub struct DoNotCallHasher {
    key: Vec<u8>,
    default_key: bool,
}

impl Default for DoNotCallHasher {
    /// The public default key (see the module docs).
    fn default() -> Self {
        Self {
            key: DEFAULT_KEY.to_vec(),
            default_key: true,
        }
    }
}

impl std::fmt::Debug for DoNotCallHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoNotCallHasher")
            .field("default_key", &self.default_key)
            .finish_non_exhaustive()
    }
}

impl DoNotCallHasher {
    /// A hasher with this key (an empty key means the default one).
    pub fn new(key: &[u8]) -> Self {
        if key.is_empty() {
            return Self::default();
        }
        Self {
            key: key.to_vec(),
            default_key: false,
        }
    }

    /// Whether this is the public default key.
    pub fn is_default_key(&self) -> bool {
        self.default_key
    }

    /// The number's hash.
    pub fn hash(&self, phone: &PhoneNumber) -> DoNotCallHash {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(phone.as_e164().as_bytes());
        let digest = mac.finalize().into_bytes();
        DoNotCallHash(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// How a number came to be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DoNotCallSource {
    /// The person pressed the do-not-call key during the greeting.
    Keypress,
    /// The operator's file.
    File,
    /// The admin API.
    Admin,
}

impl DoNotCallSource {
    /// `keypress`, `file` or `admin`, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            DoNotCallSource::Keypress => "keypress",
            DoNotCallSource::File => "file",
            DoNotCallSource::Admin => "admin",
        }
    }
}

/// Where the do-not-call list is kept (separate from [`crate::CallStore`]).
///
/// # What implementations must guarantee
/// - Only hashes are stored, never numbers; `add` is idempotent (adding a
///   listed hash again changes nothing and returns `false`).
/// - Entries are never removed by the service; once `add` returned `Ok`,
///   `contains` answers `true` for that hash, on every replica sharing the
///   backend (read-your-writes).
/// - Errors mean "could not tell": the service refuses to start a call it
///   cannot check (a listed number must never be called).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait DoNotCallList: Send + Sync + 'static {
    /// Whether the hash is listed.
    async fn contains(&self, hash: &DoNotCallHash) -> Result<bool, StoreError>;
    /// Lists the hash; `true` if it was not listed yet.
    async fn add(
        &self,
        hash: &DoNotCallHash,
        source: DoNotCallSource,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}

/// The list in memory (tests, the zero-config binary's `memory:` store).
#[derive(Debug, Default)]
pub struct InMemoryDoNotCallList {
    entries: Mutex<HashMap<DoNotCallHash, (DoNotCallSource, DateTime<Utc>)>>,
    failing_adds: std::sync::atomic::AtomicUsize,
}

impl InMemoryDoNotCallList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many hashes are listed.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the next `n` calls to `add` fail (a backend outage, for tests);
    /// they list nothing.
    pub fn fail_next_adds(&self, n: usize) {
        self.failing_adds
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl DoNotCallList for InMemoryDoNotCallList {
    async fn contains(&self, hash: &DoNotCallHash) -> Result<bool, StoreError> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(hash))
    }

    async fn add(
        &self,
        hash: &DoNotCallHash,
        source: DoNotCallSource,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .failing_adds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Backend(
                "do-not-call list unavailable (injected failure)".into(),
            ));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(hash) {
            return Ok(false);
        }
        entries.insert(hash.clone(), (source, at));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_never_show_the_number() {
        let n = PhoneNumber::parse_e164("+5511912345678").unwrap();
        let a = DoNotCallHasher::new(b"secret one").hash(&n);
        let b = DoNotCallHasher::new(b"secret two").hash(&n);
        assert_ne!(a, b, "the key changes the hash");
        assert_eq!(a, DoNotCallHasher::new(b"secret one").hash(&n));
        assert_eq!(a.as_str().len(), 64);
        assert!(!a.as_str().contains("912345678"));
        assert_eq!(DoNotCallHash::from_hex(a.as_str()), Some(a.clone()));
        assert_eq!(DoNotCallHash::from_hex("+5511912345678"), None);
        assert!(DoNotCallHasher::default().is_default_key());
        assert!(DoNotCallHasher::new(b"").is_default_key());
        assert!(!format!("{:?}", DoNotCallHasher::new(b"secret one")).contains("secret"));
    }

    #[tokio::test]
    async fn the_in_memory_list_is_idempotent() {
        let list = InMemoryDoNotCallList::new();
        let h =
            DoNotCallHasher::default().hash(&PhoneNumber::parse_e164("+5511912345678").unwrap());
        assert!(!list.contains(&h).await.unwrap());
        assert!(
            list.add(&h, DoNotCallSource::Keypress, Utc::now())
                .await
                .unwrap()
        );
        assert!(
            !list
                .add(&h, DoNotCallSource::File, Utc::now())
                .await
                .unwrap()
        );
        assert!(list.contains(&h).await.unwrap());
        assert_eq!(list.len(), 1);
    }
}
