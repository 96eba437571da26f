//! Live updates: the one in-process notification of committed calls.
//!
//! [`PressureService`](crate::PressureService) publishes a [`CallUpdate`] on
//! its [`LiveUpdates`] after every successful commit (and after it creates
//! a call), whoever caused it: a start, a provider callback, a
//! reconciliation pass. Adapters follow it:
//!
//! - [`LiveUpdates::subscribe_call`] and [`LiveUpdates::subscribe_widget`]
//!   give a [`Subscription`] that wakes on one call's or one widget's
//!   updates (server-sent events, a dashboard);
//! - [`LiveUpdates::observe`] runs a function on every update, in the
//!   committing task, and never misses one (metrics).
//!
//! Subscriptions are bounded and lag-tolerant: the hub keeps the last
//! `capacity` updates; a subscriber that falls further behind is told
//! [`Notice::Lagged`] (some updates were skipped: re-read the store) instead
//! of slowing the service down. Publishing never blocks and never fails.
//!
//! The service publishes its own commits only. Commits made by another
//! replica (another process over the same store) reach the hub when an
//! adapter feeds them in with [`LiveUpdates::publish`] (the PostgreSQL
//! store's listener does: `LISTEN/NOTIFY`). Such a feed can lose updates
//! (its connection drops); it then calls [`LiveUpdates::feed_lost`] at
//! once and [`LiveUpdates::resync`] when it listens again, and every
//! subscription is told [`Notice::Resync`]: re-read what it follows from
//! the store. An update is a hint to re-read, and the store, with its
//! versions, stays the truth: an update with an older or equal version than
//! what a subscriber already has changes nothing.
//!
//! [`LiveUpdates::is_complete`] says whether the hub is known to see every
//! commit (no feed has lost its connection since its last resync); a cache
//! kept coherent by the hub ([`crate::cache::CallCache`]) serves only then.
//!
//! ```
//! use bonde_pressure_core::live::{CallUpdate, LiveUpdates, Notice};
//! use bonde_pressure_core::{CallId, DetailedState, WidgetId};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let live = LiveUpdates::new(16);
//! let (call, other) = (CallId::new(), CallId::new());
//! let widget = WidgetId::new(7).unwrap();
//! let mut sub = live.subscribe_call(call);
//! live.publish(CallUpdate::new(other, widget, 1, DetailedState::Created));
//! live.publish(CallUpdate::new(call, widget, 1, DetailedState::Created));
//! match sub.next().await {
//!     Some(Notice::Update(u)) => assert_eq!((u.call_id, u.version), (call, 1)),
//!     other => panic!("{other:?}"),
//! }
//! # });
//! ```

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::call::{Call, DetailedState};
use crate::domain::{CallId, WidgetId};

/// Updates kept for slow subscribers by [`LiveUpdates::default`].
pub const DEFAULT_LIVE_CAPACITY: usize = 1024;

/// One committed change of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallUpdate {
    /// The call.
    pub call_id: CallId,
    /// Its widget (widget-level subscriptions filter on it).
    pub widget_id: WidgetId,
    /// Its version after the commit.
    pub version: u64,
    /// Its state after the commit.
    pub state: DetailedState,
}

impl CallUpdate {
    /// Call `call_id` of widget `widget_id` is at `version`, in `state`.
    pub fn new(call_id: CallId, widget_id: WidgetId, version: u64, state: DetailedState) -> Self {
        Self {
            call_id,
            widget_id,
            version,
            state,
        }
    }

    /// The update describing `call` as committed.
    pub fn of(call: &Call) -> Self {
        Self::new(call.id, call.widget_id, call.version, call.state())
    }
}

type Observer = Arc<dyn Fn(&CallUpdate) + Send + Sync>;
type ResyncObserver = Arc<dyn Fn() + Send + Sync>;

/// What the broadcast channel carries.
#[derive(Debug, Clone, Copy)]
enum Message {
    Update(CallUpdate),
    Resync,
}

struct Hub {
    tx: broadcast::Sender<Message>,
    observers: RwLock<Vec<Observer>>,
    resync_observers: RwLock<Vec<ResyncObserver>>,
    /// Feeds that lost their connection and have not resynchronised yet.
    gaps: std::sync::atomic::AtomicUsize,
}

/// The hub of [`CallUpdate`]s: cheap to clone (clones share it).
#[derive(Clone)]
pub struct LiveUpdates {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for LiveUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveUpdates")
            .field("subscribers", &self.hub.tx.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Default for LiveUpdates {
    fn default() -> Self {
        Self::new(DEFAULT_LIVE_CAPACITY)
    }
}

impl LiveUpdates {
    /// A hub keeping up to `capacity` (at least 1) updates for slow
    /// subscribers; one further behind skips ahead ([`Notice::Lagged`]).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            hub: Arc::new(Hub {
                tx,
                observers: RwLock::new(Vec::new()),
                resync_observers: RwLock::new(Vec::new()),
                gaps: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Publishes `update` to every observer, then every subscription (none
    /// is fine). Never blocks on a subscriber.
    pub fn publish(&self, update: CallUpdate) {
        let observers = self.hub.observers.read().unwrap_or_else(|p| p.into_inner());
        for observe in observers.iter() {
            observe(&update);
        }
        drop(observers);
        if self.hub.tx.receiver_count() > 0 {
            // No receiver is not an error: nobody is watching.
            let _ = self.hub.tx.send(Message::Update(update));
        }
    }

    /// A feed of other replicas' commits lost its connection: updates are
    /// being missed until it calls [`LiveUpdates::resync`]. Meanwhile
    /// [`LiveUpdates::is_complete`] is `false` and every resync observer
    /// runs now (a cache flushes). Subscriptions are not woken: what they
    /// would re-read now may change unseen; they hear
    /// [`Notice::Resync`] once the feed is back (their periodic re-read, if
    /// any, covers the gap).
    ///
    /// Each call must be matched by one [`LiveUpdates::resync`] (several
    /// feeds may be out at once).
    pub fn feed_lost(&self) {
        self.hub
            .gaps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.run_resync_observers();
    }

    /// Updates may have been missed (a feed that reported
    /// [`LiveUpdates::feed_lost`] listens again, or a caller knows the hub
    /// missed commits): every resync observer runs (a cache flushes), then
    /// every subscription, whatever it follows, gets [`Notice::Resync`] and
    /// re-reads the store. Closes one gap opened by
    /// [`LiveUpdates::feed_lost`] (none open: nothing to close).
    pub fn resync(&self) {
        let _ = self.hub.gaps.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
        self.run_resync_observers();
        if self.hub.tx.receiver_count() > 0 {
            let _ = self.hub.tx.send(Message::Resync);
        }
    }

    /// Whether the hub sees every commit: `false` between a
    /// [`LiveUpdates::feed_lost`] and its [`LiveUpdates::resync`].
    pub fn is_complete(&self) -> bool {
        self.hub.gaps.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Runs `observer` whenever updates may have been missed
    /// ([`LiveUpdates::feed_lost`], [`LiveUpdates::resync`]), in the
    /// calling task: it must be quick (flush a cache).
    pub fn observe_resync(&self, observer: impl Fn() + Send + Sync + 'static) {
        self.hub
            .resync_observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(observer));
    }

    fn run_resync_observers(&self) {
        let observers = self
            .hub
            .resync_observers
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for observe in observers.iter() {
            observe();
        }
    }

    /// Runs `observer` on every update published from now on, in the
    /// publishing task: it must be quick and must not block (count, log).
    /// Unlike a subscription it never misses an update.
    pub fn observe(&self, observer: impl Fn(&CallUpdate) + Send + Sync + 'static) {
        self.hub
            .observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(observer));
    }

    /// Every update published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscription(Filter::All)
    }

    /// The updates of call `call_id` published from now on.
    pub fn subscribe_call(&self, call_id: CallId) -> Subscription {
        self.subscription(Filter::Call(call_id))
    }

    /// The updates of the calls of widget `widget_id` published from now on.
    pub fn subscribe_widget(&self, widget_id: WidgetId) -> Subscription {
        self.subscription(Filter::Widget(widget_id))
    }

    fn subscription(&self, filter: Filter) -> Subscription {
        Subscription {
            rx: Some(self.hub.tx.subscribe()),
            filter,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Filter {
    All,
    Call(CallId),
    Widget(WidgetId),
}

impl Filter {
    /// The notice `message` gives this filter, if any.
    fn notice(&self, message: Message) -> Option<Notice> {
        match message {
            Message::Update(u) if self.matches(&u) => Some(Notice::Update(u)),
            Message::Update(_) => None,
            Message::Resync => Some(Notice::Resync),
        }
    }

    fn matches(&self, u: &CallUpdate) -> bool {
        match self {
            Filter::All => true,
            Filter::Call(id) => u.call_id == *id,
            Filter::Widget(w) => u.widget_id == *w,
        }
    }
}

/// What a [`Subscription`] woke up for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A matching update.
    Update(CallUpdate),
    /// The subscriber fell behind and this many updates (matching or not)
    /// were skipped: re-read what it follows from the store.
    Lagged(u64),
    /// Updates may have been missed (a feed of other replicas' commits
    /// lost its connection and listens again; see
    /// [`LiveUpdates::resync`]): re-read what it follows from the store.
    Resync,
}

/// A subscriber's view of a [`LiveUpdates`] hub, filtered to a call, a
/// widget or nothing. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: Option<broadcast::Receiver<Message>>,
    filter: Filter,
}

impl Subscription {
    /// Waits for the next matching update (or a [`Notice::Lagged`] or
    /// [`Notice::Resync`]).
    /// `None`: every handle on the hub is gone, so nothing will come again
    /// (later calls answer `None` at once). Cancel-safe: use it in
    /// `tokio::select!` beside a timer.
    pub async fn next(&mut self) -> Option<Notice> {
        loop {
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(m) => match self.filter.notice(m) {
                    Some(notice) => return Some(notice),
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Notice::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => self.rx = None,
            }
        }
    }

    /// The next matching update already published, without waiting: `None`
    /// when there is none now (or the hub is gone).
    pub fn try_next(&mut self) -> Option<Notice> {
        loop {
            let rx = self.rx.as_mut()?;
            match rx.try_recv() {
                Ok(m) => match self.filter.notice(m) {
                    Some(notice) => return Some(notice),
                    None => continue,
                },
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Some(Notice::Lagged(n)),
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.rx = None;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn update(call: CallId, widget: i64, version: u64) -> CallUpdate {
        CallUpdate::new(
            call,
            WidgetId::new(widget).unwrap(),
            version,
            DetailedState::Created,
        )
    }

    fn drain(sub: &mut Subscription) -> Vec<Notice> {
        std::iter::from_fn(|| sub.try_next()).collect()
    }

    #[test]
    fn subscriptions_see_only_what_they_follow() {
        let live = LiveUpdates::new(16);
        let (a, b) = (CallId::new(), CallId::new());
        let mut all = live.subscribe();
        let mut call_a = live.subscribe_call(a);
        let mut widget_2 = live.subscribe_widget(WidgetId::new(2).unwrap());
        live.publish(update(a, 1, 1));
        live.publish(update(b, 2, 1));
        live.publish(update(a, 1, 2));
        assert_eq!(drain(&mut all).len(), 3);
        assert_eq!(
            drain(&mut call_a),
            [
                Notice::Update(update(a, 1, 1)),
                Notice::Update(update(a, 1, 2))
            ]
        );
        assert_eq!(drain(&mut widget_2), [Notice::Update(update(b, 2, 1))]);
    }

    #[test]
    fn a_slow_subscriber_is_told_it_lagged_and_then_catches_up() {
        let live = LiveUpdates::new(2);
        let a = CallId::new();
        let mut sub = live.subscribe_call(a);
        for v in 1..=5 {
            live.publish(update(a, 1, v));
        }
        assert_eq!(
            drain(&mut sub),
            [
                Notice::Lagged(3),
                Notice::Update(update(a, 1, 4)),
                Notice::Update(update(a, 1, 5))
            ]
        );
    }

    #[test]
    fn observers_see_every_update_even_without_subscribers() {
        let live = LiveUpdates::new(1);
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        live.clone().observe(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        for v in 1..=10 {
            live.publish(update(CallId::new(), 1, v));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn a_resync_reaches_every_subscription_and_a_gap_makes_the_hub_incomplete() {
        let live = LiveUpdates::new(16);
        let (a, b) = (CallId::new(), CallId::new());
        let mut call_a = live.subscribe_call(a);
        let mut widget_2 = live.subscribe_widget(WidgetId::new(2).unwrap());
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        live.observe_resync(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(live.is_complete());
        live.feed_lost();
        assert!(!live.is_complete());
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        // The gap itself wakes nobody.
        assert!(drain(&mut call_a).is_empty());
        live.publish(update(b, 2, 1));
        live.resync();
        assert!(live.is_complete());
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
        assert_eq!(drain(&mut call_a), [Notice::Resync]);
        assert_eq!(
            drain(&mut widget_2),
            [Notice::Update(update(b, 2, 1)), Notice::Resync]
        );
        // Two feeds out: complete only when both are back; an extra resync
        // does not go below zero.
        live.feed_lost();
        live.feed_lost();
        live.resync();
        assert!(!live.is_complete());
        live.resync();
        live.resync();
        assert!(live.is_complete());
        live.feed_lost();
        assert!(!live.is_complete());
    }

    #[tokio::test]
    async fn next_waits_for_a_match_and_ends_when_the_hub_is_gone() {
        let live = LiveUpdates::default();
        let a = CallId::new();
        let mut sub = live.subscribe_call(a);
        let publisher = live.clone();
        let task = tokio::spawn(async move {
            publisher.publish(update(CallId::new(), 1, 1));
            publisher.publish(update(a, 1, 9));
        });
        assert_eq!(sub.next().await, Some(Notice::Update(update(a, 1, 9))));
        task.await.unwrap();
        drop(live);
        assert_eq!(sub.next().await, None);
        assert_eq!(sub.next().await, None);
    }
}
