//! [`CallCache`]: committed calls kept in memory, coherent with the store
//! through the [`LiveUpdates`] hub.
//!
//! Reads that only need a call's state (the page's polling of
//! [`PressureService::cached_summary`](crate::PressureService::cached_summary))
//! can skip the store when the call is cached. The cache is only as
//! coherent as the hub is complete:
//!
//! - every commit the service makes is published on its hub, and
//!   [`CallCache::attach`] makes the cache forget a call as soon as an
//!   update with a newer version is published (a local commit, or another
//!   replica's fed in by a listener);
//! - when a feed loses updates ([`LiveUpdates::feed_lost`] and
//!   [`LiveUpdates::resync`]) the cache is flushed, and
//!   `PressureService::cached_summary` does not use it while
//!   [`LiveUpdates::is_complete`] is `false`;
//! - a store read racing a commit cannot put back the older call: the
//!   update leaves a marker (the version it announced) and a fill with an
//!   older version is refused; each fill carries a [`FillTicket`] taken
//!   before the read, and a flush (or the eviction of markers) turns every
//!   outstanding ticket stale.
//!
//! So a process that is the only writer (SQLite, the in-memory store) or
//! that hears every other replica's commits (PostgreSQL with its listener)
//! serves the same answers with or without the cache; replicas that write
//! the same database without feeding each other's commits must not use it.
//!
//! A cached call is served for at most its age limit
//! ([`CallCache::with_max_age`], 10 s by default), which bounds how long a
//! commit whose notification was lost can go unseen.
//!
//! Memory is bounded: at most `capacity` entries (calls or markers), in two
//! generations; when the young one is full the old one is dropped (an
//! approximate least-recently-used policy: a hit in the old generation
//! moves the entry to the young one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::call::Call;
use crate::domain::CallId;
use crate::live::{CallUpdate, LiveUpdates};

/// Entries kept by [`CallCache::default`].
pub const DEFAULT_CALL_CACHE_CAPACITY: usize = 100_000;

/// How long a cached call is served by default ([`CallCache::with_max_age`]).
pub const DEFAULT_CALL_CACHE_MAX_AGE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Slot {
    /// The call as committed, and when it was cached.
    Call(Arc<Call>, Instant),
    /// Not cached; a commit announced this version, so a fill with an
    /// older one is refused.
    AtLeast(u64),
}

#[derive(Debug, Default)]
struct Inner {
    young: HashMap<CallId, Slot>,
    old: HashMap<CallId, Slot>,
    /// Bumped by every flush and every drop of the old generation: a
    /// ticket from before may have lost its marker.
    generation: u64,
}

/// Taken by [`CallCache::ticket`] before reading a call from the store,
/// handed to [`CallCache::fill`] with what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillTicket(u64);

/// Calls in memory, forgotten as soon as a newer version is announced (see
/// the [module documentation](self)). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct CallCache {
    inner: Mutex<Inner>,
    /// Entries per generation.
    half: usize,
    /// A cached call older than this is not served.
    max_age: Duration,
}

impl Default for CallCache {
    fn default() -> Self {
        Self::new(DEFAULT_CALL_CACHE_CAPACITY)
    }
}

impl CallCache {
    /// A cache of at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            half: (capacity / 2).max(1),
            max_age: DEFAULT_CALL_CACHE_MAX_AGE,
        }
    }

    /// With this age limit: a call cached longer ago is read again (default
    /// [`DEFAULT_CALL_CACHE_MAX_AGE`]). It bounds how long a commit whose
    /// notification was lost (a feed that cannot guarantee delivery) can go
    /// unseen; with a hub that sees every commit it only costs a re-read.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Keeps the cache coherent with `live`: every update published there
    /// forgets older versions ([`CallCache::invalidate`]), every resync
    /// flushes it ([`CallCache::clear`]).
    pub fn attach(self: &Arc<Self>, live: &LiveUpdates) {
        let cache = Arc::downgrade(self);
        live.observe(move |u| {
            if let Some(cache) = cache.upgrade() {
                cache.invalidate(u);
            }
        });
        let cache = Arc::downgrade(self);
        live.observe_resync(move || {
            if let Some(cache) = cache.upgrade() {
                cache.clear();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached call `id`, if any (and cached within the age limit).
    pub fn get(&self, id: CallId) -> Option<Arc<Call>> {
        self.lookup(id, self.max_age)
    }

    /// The cached call `id`, if any, however long ago it was cached: a
    /// starting point for an optimistic commit, which the store's version
    /// check guards (a stale copy costs a refused commit and a read), not
    /// an answer to serve.
    pub fn last_known(&self, id: CallId) -> Option<Arc<Call>> {
        self.lookup(id, Duration::MAX)
    }

    fn lookup(&self, id: CallId, max_age: Duration) -> Option<Arc<Call>> {
        let mut inner = self.lock();
        let fresh = |at: &Instant| at.elapsed() <= max_age;
        if let Some(Slot::Call(c, at)) = inner.young.get(&id) {
            return fresh(at).then(|| c.clone());
        }
        let slot = inner.old.remove(&id)?;
        let found = match &slot {
            Slot::Call(c, at) if fresh(at) => Some(c.clone()),
            _ => None,
        };
        self.put(&mut inner, id, slot);
        found
    }

    /// A ticket for a store read about to start (see [`CallCache::fill`]).
    pub fn ticket(&self) -> FillTicket {
        FillTicket(self.lock().generation)
    }

    /// Caches `call`, read from the store after `ticket` was taken, unless
    /// a newer version was announced meanwhile or the cache was flushed
    /// since (then it is returned uncached).
    pub fn fill(&self, ticket: FillTicket, call: Call) -> Arc<Call> {
        let call = Arc::new(call);
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return call;
        }
        let id = call.id;
        let current = inner.young.get(&id).or_else(|| inner.old.get(&id));
        let newer_known = match current {
            Some(Slot::AtLeast(v)) => *v > call.version,
            Some(Slot::Call(c, _)) => c.version > call.version,
            None => false,
        };
        if !newer_known {
            inner.old.remove(&id);
            self.put(&mut inner, id, Slot::Call(call.clone(), Instant::now()));
        }
        call
    }

    /// Forgets call `update.call_id` unless the cached version is at least
    /// `update.version`, and remembers that version so that an older read
    /// is not cached afterwards.
    pub fn invalidate(&self, update: &CallUpdate) {
        let mut inner = self.lock();
        let id = update.call_id;
        let current = inner.young.get(&id).or_else(|| inner.old.get(&id));
        let at_least = match current {
            Some(Slot::Call(c, _)) if c.version >= update.version => return,
            Some(Slot::AtLeast(v)) => (*v).max(update.version),
            _ => update.version,
        };
        inner.old.remove(&id);
        self.put(&mut inner, id, Slot::AtLeast(at_least));
    }

    /// Forgets everything (updates may have been missed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.young = HashMap::new();
        inner.old = HashMap::new();
        inner.generation += 1;
    }

    /// Entries held (calls and markers).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.young.len() + inner.old.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `slot` in the young generation, dropping the old one first
    /// when the young one is full.
    fn put(&self, inner: &mut Inner, id: CallId, slot: Slot) {
        if inner.young.len() >= self.half && !inner.young.contains_key(&id) {
            inner.old = std::mem::take(&mut inner.young);
            inner.generation += 1;
        }
        inner.young.insert(id, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::DetailedState;
    use crate::domain::WidgetId;

    fn call(version: u64) -> Call {
        use crate::domain::{Activist, Email, PersonName, PhoneNumber, Target};
        let phone = |s| PhoneNumber::parse_e164(s).unwrap();
        let mut c = Call::new(
            CallId::new(),
            WidgetId::new(1).unwrap(),
            Activist {
                name: PersonName::parse("Ana").unwrap(),
                first_name: None,
                last_name: None,
                email: Email::parse("ana@example.org").unwrap(),
                phone: phone("+5511912345678"),
            },
            Target {
                name: PersonName::parse("Target").unwrap(),
                phone: phone("+5561999990000"),
            },
            None,
            chrono::Utc::now(),
        );
        c.version = version;
        c
    }

    fn update(c: &Call, version: u64) -> CallUpdate {
        CallUpdate::new(c.id, c.widget_id, version, DetailedState::Created)
    }

    #[test]
    fn a_newer_version_forgets_the_call_and_an_older_read_is_not_put_back() {
        let cache = CallCache::new(100);
        let c1 = call(1);
        let t = cache.ticket();
        cache.fill(t, c1.clone());
        assert_eq!(cache.get(c1.id).unwrap().version, 1);
        // The same version again (our own commit heard back): kept.
        cache.invalidate(&update(&c1, 1));
        assert!(cache.get(c1.id).is_some());
        // A read of version 1 starts, version 2 is committed and
        // announced, then the read finishes: not cached.
        cache.invalidate(&update(&c1, 2));
        let t = cache.ticket();
        assert!(cache.get(c1.id).is_none());
        cache.fill(t, c1.clone());
        assert!(cache.get(c1.id).is_none());
        // A read of version 2 is cached.
        cache.fill(t, call_with(&c1, 2));
        assert_eq!(cache.get(c1.id).unwrap().version, 2);
        // An older read never replaces a newer cached call.
        cache.fill(cache.ticket(), c1.clone());
        assert_eq!(cache.get(c1.id).unwrap().version, 2);
    }

    fn call_with(c: &Call, version: u64) -> Call {
        let mut c = c.clone();
        c.version = version;
        c
    }

    #[test]
    fn a_call_older_than_the_age_limit_is_read_again() {
        let cache = CallCache::new(100).with_max_age(Duration::from_millis(30));
        let c = call(1);
        cache.fill(cache.ticket(), c.clone());
        assert!(cache.get(c.id).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(cache.get(c.id).is_none());
        // Still known as a start for an optimistic commit...
        assert_eq!(cache.last_known(c.id).map(|k| k.version), Some(c.version));
        // ...but not once a newer version was announced.
        cache.invalidate(&update(&c, c.version + 1));
        assert!(cache.last_known(c.id).is_none());
        // Refilled: served again.
        let c = call_with(&c, c.version + 1);
        cache.fill(cache.ticket(), c.clone());
        assert!(cache.get(c.id).is_some());
    }

    #[test]
    fn a_flush_makes_tickets_taken_before_it_stale() {
        let cache = CallCache::new(100);
        let c = call(3);
        let t = cache.ticket();
        cache.clear();
        cache.fill(t, c.clone());
        assert!(cache.get(c.id).is_none());
        cache.fill(cache.ticket(), c.clone());
        assert!(cache.get(c.id).is_some());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_recent_hits_survive() {
        let cache = CallCache::new(10);
        let keep = call(1);
        cache.fill(cache.ticket(), keep.clone());
        for _ in 0..100 {
            cache.fill(cache.ticket(), call(1));
            // Touched often: stays.
            assert!(cache.get(keep.id).is_some());
            assert!(cache.len() <= 10);
        }
    }

    #[test]
    fn attached_it_follows_the_hub() {
        let live = LiveUpdates::new(4);
        let cache = Arc::new(CallCache::new(100));
        cache.attach(&live);
        let c = call(1);
        cache.fill(cache.ticket(), c.clone());
        live.publish(update(&c, 2));
        assert!(cache.get(c.id).is_none());
        cache.fill(cache.ticket(), call_with(&c, 2));
        assert!(cache.get(c.id).is_some());
        let t = cache.ticket();
        live.feed_lost();
        assert!(cache.is_empty());
        cache.fill(t, call_with(&c, 2));
        assert!(cache.is_empty());
        live.resync();
        assert!(cache.is_empty());
    }
}
