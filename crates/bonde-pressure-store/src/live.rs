//! Other replicas' commits as live updates: PostgreSQL `LISTEN/NOTIFY`.
//!
//! After every [`PgCallStore`] commit (and every call it creates) the store
//! queues a notification; one background task per store sends the queued
//! ones with a single `SELECT pg_notify(…) FROM unnest(…)` per batch (so
//! PostgreSQL's commit-time notification lock is taken once per batch, not
//! once per commit — a `NOTIFY` inside each commit's transaction serialised
//! concurrent commits: docs/storage.md has the figures). A notification is
//! lost if the process dies between a commit and its batch, if the queue
//! (10 000) is full, or if PostgreSQL refuses the batch three times
//! ([`PgCallStore::notifications_lost`]); subscribers' periodic re-reads and
//! the call cache's age limit cover that. Each payload names the call, its
//! widget, its new version and state, and the store that wrote it — no
//! personal data:
//!
//! ```text
//! 1 <origin uuid> <call uuid> <widget id> <version> <state>
//! ```
//!
//! [`PgCallStore::spawn_live_listener`] holds one extra connection that
//! `LISTEN`s and publishes what other stores committed on core's
//! [`LiveUpdates`] (its own store's notifications are skipped: the service
//! already published them). When that connection drops, notifications sent
//! meanwhile are lost, so the listener reports the gap
//! ([`LiveUpdates::feed_lost`]), reconnects (backing off up to 5 s) and,
//! once it listens again, calls [`LiveUpdates::resync`]: every subscriber
//! re-reads the store, and caches fed by the hub are flushed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bonde_pressure_core::live::{CallUpdate, LiveUpdates};
use bonde_pressure_core::{CallId, DetailedState, WidgetId};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::PgCallStore;

/// The `NOTIFY` channel of committed calls.
pub const LIVE_CHANNEL: &str = "bonde_pressure_calls";

/// Notifications waiting to be sent, at most.
const QUEUE: usize = 10_000;

/// Notifications per `pg_notify` batch, at most.
const BATCH: usize = 500;

/// Sends a store's notifications after commit, batched.
#[derive(Debug)]
pub(crate) struct Notifier {
    pool: PgPool,
    tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<String>>,
    lost: Arc<AtomicU64>,
}

impl Notifier {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            tx: std::sync::OnceLock::new(),
            lost: Arc::default(),
        }
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Queues `payload` (never waits); the sending task starts on first use
    /// (from a commit, so inside the runtime).
    pub(crate) fn send(&self, payload: String) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            tokio::spawn(send_batches(self.pool.clone(), rx, self.lost.clone()));
            tx
        });
        if tx.try_send(payload).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("live updates: notification queue full; one notification dropped");
        }
    }
}

/// Sends what is queued, a batch at a time, until the store is dropped.
async fn send_batches(
    pool: PgPool,
    mut rx: tokio::sync::mpsc::Receiver<String>,
    lost: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(LIVE_CHANNEL)
                .bind(&batch)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => break,
                Err(error) if attempt < 3 => {
                    tracing::debug!(%error, attempt, "live updates: NOTIFY failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(error) => {
                    lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(%error, dropped = batch.len(), "live updates: NOTIFY failed; notifications dropped");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A notification's payload (format version 1).
pub(crate) fn payload(
    origin: Uuid,
    call: CallId,
    widget: WidgetId,
    version: u64,
    state: DetailedState,
) -> String {
    format!(
        "1 {} {} {} {} {}",
        origin.simple(),
        call.as_uuid().simple(),
        widget.get(),
        version,
        state.as_str()
    )
}

/// `payload` read back: its origin and the update; `None` if it is not one
/// of ours (another format version, another writer on the channel).
pub(crate) fn parse(payload: &str) -> Option<(Uuid, CallUpdate)> {
    let mut parts = payload.split(' ');
    if parts.next()? != "1" {
        return None;
    }
    let origin = Uuid::parse_str(parts.next()?).ok()?;
    let call = CallId::from(Uuid::parse_str(parts.next()?).ok()?);
    let widget = WidgetId::new(parts.next()?.parse().ok()?).ok()?;
    let version = parts.next()?.parse().ok()?;
    let state = DetailedState::parse(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((origin, CallUpdate::new(call, widget, version, state)))
}

/// A running listener ([`PgCallStore::spawn_live_listener`]); dropping it
/// (or [`LiveListener::stop`]) stops it.
#[derive(Debug)]
pub struct LiveListener {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    heard: AtomicU64,
}

impl LiveListener {
    /// How many times it started listening (1 + reconnections).
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Other stores' updates it published.
    pub fn heard(&self) -> u64 {
        self.stats.heard.load(Ordering::Relaxed)
    }

    /// Stops listening (the hub is left as is).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for LiveListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgCallStore {
    /// Listens on [`LIVE_CHANNEL`] over one extra connection (its own
    /// one-connection pool, with the store's connect options) and publishes
    /// the commits of every *other* store on `live` — normally
    /// `PressureService::live_updates()` of the service over this store.
    ///
    /// Until it first listens, and whenever its connection drops, the hub
    /// is incomplete ([`LiveUpdates::feed_lost`]); each time it listens
    /// again it calls [`LiveUpdates::resync`]. Needs a session (not a
    /// transaction-pooling pgbouncer: `LISTEN` is per session). Must be
    /// called inside a Tokio runtime.
    pub fn spawn_live_listener(&self, live: LiveUpdates) -> LiveListener {
        let options = (*self.pool().connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(listen(pool, self.origin(), live, stats.clone()));
        LiveListener { task, stats }
    }
}

async fn listen(pool: PgPool, origin: Uuid, live: LiveUpdates, stats: Arc<Stats>) {
    // Nothing is heard until LISTEN runs.
    live.feed_lost();
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "live updates: cannot LISTEN");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if stats.connections.fetch_add(1, Ordering::Relaxed) > 0 {
            tracing::info!("live updates: listening again; subscribers resynchronise");
        }
        live.resync();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match parse(n.payload()) {
                    Some((from, update)) if from != origin => {
                        stats.heard.fetch_add(1, Ordering::Relaxed);
                        live.publish(update);
                    }
                    Some(_) => {}
                    None => tracing::debug!("live updates: unknown payload ignored"),
                },
                Ok(None) => {
                    tracing::warn!("live updates: listener connection lost; reconnecting");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "live updates: listener failed; reconnecting");
                    break;
                }
            }
        }
        live.feed_lost();
        drop(listener);
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(LIVE_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_and_foreign_ones_are_refused() {
        let origin = Uuid::new_v4();
        let call = CallId::new();
        let widget = WidgetId::new(42).unwrap();
        let p = payload(origin, call, widget, 7, DetailedState::Connected);
        assert!(p.len() < 200, "{p}");
        let (o, u) = parse(&p).unwrap();
        assert_eq!(o, origin);
        assert_eq!(
            u,
            CallUpdate::new(call, widget, 7, DetailedState::Connected)
        );
        for bad in [
            "",
            "2 x",
            &p.replacen('1', "2", 1),
            &format!("{p} extra"),
            &p.replace("connected", "nonsense"),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
