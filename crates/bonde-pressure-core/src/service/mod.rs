//! `PressureService`: starts calls, applies events, runs effects, decides scripts.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::call::{Call, UiStatus};
use crate::do_not_call::{DoNotCallHasher, DoNotCallList, DoNotCallSource, InMemoryDoNotCallList};
use crate::domain::{CallId, NumberPolicy, NumberType, PhoneNumber, Region};
use crate::fakes::NoopActionRecorder;
use crate::limits::{InMemoryRateLimiter, Quota, RateLimiter, RequestLimits};
use crate::ports::{
    ActionRecorder, CallStore, CampaignDirectory, Clock, StoreError, SystemClock, Telephony,
};
use crate::spool::{DEFAULT_SPOOL_CAPACITY, PayloadSpool, SpoolFull};

mod events;
mod reconcile;
mod script;
mod start;

pub use events::HandleOutcome;
pub use reconcile::{ReconcileReport, Reconciler};
pub use start::{
    ActivistInput, FieldError, StartCallRequest, StartError, StartedCall, TargetInput,
};

/// Tunables of the service.
///
/// Built from [`ServiceConfig::default`] and the `with_*` setters (or by
/// assigning its fields).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Region for numbers typed without a country code.
    pub default_region: Region,
    /// Country calling codes activists may be called in (empty: any).
    /// Non-geographic codes ([`crate::domain::NON_GEOGRAPHIC_CODES`]) are
    /// refused for activists and targets alike unless listed here.
    pub allowed_country_codes: Vec<u16>,
    /// Number types that may be called (activists and targets); see
    /// [`NumberPolicy`]. Default: mobile, fixed line, fixed line or mobile.
    pub allowed_number_types: Vec<NumberType>,
    /// Commit attempts per event before giving up on contention.
    pub max_commit_attempts: u32,
    /// Reconciliation looks at unfinished calls not updated for this long.
    pub stale_after: Duration,
    /// Reconciliation declares an unfinished call failed this long after its creation.
    pub expire_after: Duration,
    /// How long the page keeps showing `ringing` after the target joined
    /// while its answering-machine verdict is pending (see
    /// [`Call::page_status`]).
    pub machine_verdict_grace: Duration,
    /// How often one activist number may be called, whoever asks (`None`:
    /// no cap). Default: 10 per 24 h. Charged when the call is placed.
    pub activist_calls: Option<Quota>,
    /// How often one target may be dialled (`None`: no cap). Default: 60
    /// per hour. Peeked when a call is requested, charged when the target
    /// is dialled.
    pub target_dials: Option<Quota>,
    /// The key that, pressed during the greeting, puts the activist's
    /// number on the do-not-call list (`None`: disabled). Default `9`.
    pub do_not_call_digit: Option<char>,
    /// The most payloads kept in memory while the store cannot take them
    /// (see [`PressureService::flush_spool`]). Default
    /// [`DEFAULT_SPOOL_CAPACITY`].
    pub spool_capacity: usize,
}

impl ServiceConfig {
    /// The number policy: [`ServiceConfig::allowed_number_types`], with the
    /// non-geographic codes listed in [`ServiceConfig::allowed_country_codes`].
    pub fn number_policy(&self) -> NumberPolicy {
        NumberPolicy::new(
            self.allowed_number_types.clone(),
            self.allowed_country_codes.clone(),
        )
    }

    /// With this [`ServiceConfig::default_region`].
    pub fn with_default_region(mut self, region: Region) -> Self {
        self.default_region = region;
        self
    }

    /// With these [`ServiceConfig::allowed_country_codes`] (empty: any).
    pub fn with_allowed_country_codes(mut self, codes: impl Into<Vec<u16>>) -> Self {
        self.allowed_country_codes = codes.into();
        self
    }

    /// With these [`ServiceConfig::allowed_number_types`].
    pub fn with_allowed_number_types(mut self, types: impl Into<Vec<NumberType>>) -> Self {
        self.allowed_number_types = types.into();
        self
    }

    /// With this [`ServiceConfig::max_commit_attempts`].
    pub fn with_max_commit_attempts(mut self, attempts: u32) -> Self {
        self.max_commit_attempts = attempts;
        self
    }

    /// With this [`ServiceConfig::stale_after`].
    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// With this [`ServiceConfig::expire_after`].
    pub fn with_expire_after(mut self, expire_after: Duration) -> Self {
        self.expire_after = expire_after;
        self
    }

    /// With this [`ServiceConfig::machine_verdict_grace`].
    pub fn with_machine_verdict_grace(mut self, grace: Duration) -> Self {
        self.machine_verdict_grace = grace;
        self
    }

    /// With this cap on calls per activist number (`None`: no cap).
    pub fn with_activist_calls(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.activist_calls = quota.into();
        self
    }

    /// With this cap on dials per target (`None`: no cap).
    pub fn with_target_dials(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.target_dials = quota.into();
        self
    }

    /// With this do-not-call key (`None`: disabled).
    pub fn with_do_not_call_digit(mut self, key: impl Into<Option<char>>) -> Self {
        self.do_not_call_digit = key.into();
        self
    }

    /// With this [`ServiceConfig::spool_capacity`].
    pub fn with_spool_capacity(mut self, capacity: usize) -> Self {
        self.spool_capacity = capacity;
        self
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            default_region: Region::BRAZIL,
            allowed_country_codes: vec![55],
            allowed_number_types: NumberType::DEFAULT_ALLOWED.to_vec(),
            max_commit_attempts: 100,
            stale_after: Duration::from_secs(120),
            expire_after: Duration::from_secs(2 * 60 * 60),
            machine_verdict_grace: Duration::from_secs(4),
            activist_calls: Some(Quota::per_day(10)),
            target_dials: Some(Quota::per_hour(60)),
            do_not_call_digit: Some('9'),
            spool_capacity: DEFAULT_SPOOL_CAPACITY,
        }
    }
}

/// The ports the service runs on.
#[derive(Clone)]
#[non_exhaustive]
pub struct Dependencies {
    /// Persistence.
    pub store: Arc<dyn CallStore>,
    /// Calls.
    pub telephony: Arc<dyn Telephony>,
    /// Campaigns.
    pub directory: Arc<dyn CampaignDirectory>,
    /// Action recording.
    pub recorder: Arc<dyn ActionRecorder>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl Dependencies {
    /// These ports, with no action recording ([`NoopActionRecorder`]) and
    /// the system clock ([`SystemClock`]); see the `with_*` setters.
    pub fn new(
        store: Arc<dyn CallStore>,
        telephony: Arc<dyn Telephony>,
        directory: Arc<dyn CampaignDirectory>,
    ) -> Self {
        Self {
            store,
            telephony,
            directory,
            recorder: Arc::new(NoopActionRecorder),
            clock: Arc::new(SystemClock),
        }
    }

    /// With this action recorder.
    pub fn with_recorder(mut self, recorder: Arc<dyn ActionRecorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// With this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Why handling an event failed.
///
/// Whatever the error, a payload handed in with the event is kept (stored
/// once, or waiting in the spool for the store: see
/// [`PressureService::handle`]), except on [`ServiceError::SpoolFull`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No such call (the payload was kept without a call).
    #[error("call {0} not found")]
    CallNotFound(CallId),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many concurrent writers kept winning; the event was not applied
    /// (its payload was kept).
    #[error("gave up after {0} conflicting commits")]
    Contention(u32),
    /// The event was not applied, the store could not take its payload and
    /// the spool is full: the payload was **not** kept. Adapters ask the
    /// provider to send it again (HTTP 503).
    #[error(transparent)]
    SpoolFull(#[from] SpoolFull),
}

/// The orchestration service: everything between the HTTP adapter and the ports.
pub struct PressureService {
    pub(crate) deps: Dependencies,
    config: ServiceConfig,
    /// Publishes every commit ([`PressureService::live_updates`]).
    live: crate::live::LiveUpdates,
    /// The campaigns of recent calls, for [`PressureService::fallback_script`].
    recent: crate::recent::RecentWidgets,
    limiter: Arc<dyn RateLimiter>,
    request_limits: RequestLimits,
    do_not_call: Arc<dyn DoNotCallList>,
    hasher: DoNotCallHasher,
    /// Damaged rows already reported (logged once per call).
    unreadable: std::sync::Mutex<std::collections::HashSet<Option<CallId>>>,
    /// Damaged calls first met outside reconciliation, for the next
    /// report's `unreadable_new`.
    unreadable_pending: std::sync::Mutex<Vec<Option<CallId>>>,
    /// Payloads the store could not take yet.
    spool: PayloadSpool,
    /// Serialises this process's commits to one call (striped by call id).
    commit_locks: CommitLocks,
    /// Calls for [`PressureService::cached_summary`] (`None`: off).
    cache: Option<Arc<crate::cache::CallCache>>,
}

/// Striped locks that serialise, within one process, the read–apply–commit
/// of events to the same call: callbacks for one call arriving together
/// (the provider's retries and duplicates) queue here instead of racing
/// for the row version and retrying. Other processes still meet on the
/// version check. A fixed number of stripes bounds the memory; two calls
/// sharing a stripe only wait for each other's (short) commit.
struct CommitLocks(Box<[tokio::sync::Mutex<()>]>);

impl CommitLocks {
    const STRIPES: usize = 1024;

    fn new() -> Self {
        Self(
            (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }

    fn of(&self, id: CallId) -> &tokio::sync::Mutex<()> {
        let bytes = id.as_uuid().as_u128();
        let folded = (bytes ^ (bytes >> 64)) as u64;
        &self.0[(folded % Self::STRIPES as u64) as usize]
    }
}

impl std::fmt::Debug for PressureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PressureService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PressureService {
    /// A service over these ports.
    pub fn new(deps: Dependencies, config: ServiceConfig) -> Self {
        let limiter = Arc::new(InMemoryRateLimiter::new(deps.clock.clone()));
        let spool = PayloadSpool::new(config.spool_capacity);
        Self {
            spool,
            deps,
            config,
            live: crate::live::LiveUpdates::default(),
            recent: crate::recent::RecentWidgets::new(10_000),
            unreadable: Default::default(),
            unreadable_pending: Default::default(),
            limiter,
            request_limits: RequestLimits::default(),
            do_not_call: Arc::new(InMemoryDoNotCallList::new()),
            hasher: DoNotCallHasher::default(),
            commit_locks: CommitLocks::new(),
            cache: None,
        }
    }

    /// With this [`CallCache`](crate::cache::CallCache) (its capacity and
    /// age limit) behind [`PressureService::cached_summary`], kept coherent by
    /// this service's [`LiveUpdates`](crate::live::LiveUpdates) (default:
    /// none).
    ///
    /// Event handling uses it too: a commit starts from the cached call
    /// (no read) and reads the call only when the store's version check
    /// refuses it; created, read and committed calls are cached.
    ///
    /// Only turn it on when the hub sees every commit made to the store:
    /// this process is its only writer (SQLite, the in-memory store), or
    /// other replicas' commits are fed into
    /// [`PressureService::live_updates`] by a listener that reports its
    /// gaps ([`LiveUpdates::feed_lost`](crate::live::LiveUpdates::feed_lost)).
    pub fn with_call_cache(mut self, cache: crate::cache::CallCache) -> Self {
        let cache = Arc::new(cache);
        cache.attach(&self.live);
        self.cache = Some(cache);
        self
    }

    /// The call cache, if on ([`PressureService::with_call_cache`]).
    pub fn call_cache(&self) -> Option<&Arc<crate::cache::CallCache>> {
        self.cache.as_ref()
    }

    /// The call cache when it may be used: on, and the live updates are
    /// complete (it holds no call older than the store's).
    pub(super) fn usable_cache(&self) -> Option<&Arc<crate::cache::CallCache>> {
        self.cache.as_ref().filter(|_| self.live.is_complete())
    }

    /// Where call `id` is now ([`PressureService::call_summary`]), read
    /// from the call cache when it is on, holds the call and the live
    /// updates are complete ([`LiveUpdates::is_complete`](crate::live::LiveUpdates::is_complete)),
    /// else from the store (and then cached). The answer is the one
    /// [`PressureService::call`] and [`PressureService::call_summary`] give:
    /// the page status is computed now, from the cached call, so the
    /// answering-machine grace still runs out on time. `Ok(None)`: no such
    /// call (never cached). Errors as [`PressureService::call`].
    pub async fn cached_summary(
        &self,
        id: CallId,
    ) -> Result<Option<crate::view::CallSummary>, StoreError> {
        let Some(cache) = self.usable_cache() else {
            return Ok(self.call(id).await?.map(|c| self.call_summary(&c)));
        };
        if let Some(call) = cache.get(id) {
            return Ok(Some(self.call_summary(&call)));
        }
        let ticket = cache.ticket();
        Ok(self.call(id).await?.map(|c| {
            let call = cache.fill(ticket, c);
            self.call_summary(&call)
        }))
    }

    /// With this rate limiter for the caps and the request limits
    /// (default: an [`InMemoryRateLimiter`] on the service's clock).
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// With these limits on start requests, charged by
    /// [`PressureService::admit_client`] and [`PressureService::start`]
    /// (default: none).
    pub fn with_request_limits(mut self, limits: RequestLimits) -> Self {
        self.request_limits = limits;
        self
    }

    /// The limits on start requests.
    pub fn request_limits(&self) -> RequestLimits {
        self.request_limits
    }

    /// With this do-not-call list and hasher (default: an
    /// [`InMemoryDoNotCallList`] and the public default key).
    pub fn with_do_not_call(
        mut self,
        list: Arc<dyn DoNotCallList>,
        hasher: DoNotCallHasher,
    ) -> Self {
        self.do_not_call = list;
        self.hasher = hasher;
        self
    }

    /// Whether `phone` is on the do-not-call list.
    pub async fn is_on_do_not_call_list(&self, phone: &PhoneNumber) -> Result<bool, StoreError> {
        self.do_not_call.contains(&self.hasher.hash(phone)).await
    }

    /// Puts numbers on the do-not-call list (hashed); returns how many were
    /// not listed yet.
    pub async fn add_to_do_not_call_list(
        &self,
        phones: &[PhoneNumber],
        source: DoNotCallSource,
    ) -> Result<usize, StoreError> {
        let now = self.deps.clock.now();
        let mut added = 0;
        for phone in phones {
            if self
                .do_not_call
                .add(&self.hasher.hash(phone), source, now)
                .await?
            {
                added += 1;
            }
        }
        info!(
            added,
            given = phones.len(),
            source = source.as_str(),
            "do-not-call list fed"
        );
        Ok(added)
    }

    /// The live updates this service publishes after every call it creates
    /// or commits (see [`crate::live`]): subscribe per call or per widget,
    /// or observe every update. The service publishes its own commits;
    /// other replicas' commits appear when an adapter feeds them in (the
    /// PostgreSQL store's listener).
    pub fn live_updates(&self) -> &crate::live::LiveUpdates {
        &self.live
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The store (read models, health checks).
    pub fn store(&self) -> &Arc<dyn CallStore> {
        &self.deps.store
    }

    /// Now, on the service's [`Clock`]: adapters stamp what they receive
    /// with it ([`crate::RawEvent::received_at`]), so one clock dates
    /// everything the service stores.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.deps.clock.now()
    }

    /// The number policy of this configuration.
    pub fn number_policy(&self) -> NumberPolicy {
        self.config.number_policy()
    }

    /// What the campaign page shows for `call` now ([`Call::page_status`]
    /// with this service's clock and
    /// [`ServiceConfig::machine_verdict_grace`]).
    pub fn page_status(&self, call: &Call) -> UiStatus {
        call.page_status(self.deps.clock.now(), self.config.machine_verdict_grace)
    }

    /// Loads a call.
    ///
    /// A call whose stored row cannot be read ([`StoreError::Unreadable`])
    /// is logged (error) and counted the first time the service meets it,
    /// here, in [`PressureService::handle`] or in reconciliation (one set
    /// for all three), not on every read: adapters log it at debug level.
    pub async fn call(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        let loaded = self.deps.store.get(id).await;
        match &loaded {
            Err(error) => self.note_unreadable(error),
            Ok(Some(c)) => {
                self.note_readable(id);
                self.recent.remember(c.id, c.widget_id);
            }
            Ok(None) => {}
        }
        loaded
    }

    /// Damaged calls met (by reads, events or reconciliation) and not seen
    /// repaired since: each was logged once.
    pub fn unreadable_calls_met(&self) -> usize {
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Logs a damaged call the first time it is met, and queues it for the
    /// next reconciliation report's `unreadable_new` (the metric counts
    /// each damaged call once, wherever it was met).
    fn note_unreadable(&self, error: &StoreError) {
        let StoreError::Unreadable(damaged) = error else {
            return;
        };
        let mut seen = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(damaged.call_id) {
            tracing::error!(call_id = ?damaged.call_id, reason = %damaged.reason, "stored call cannot be read; reported once until repaired");
            self.unreadable_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(damaged.call_id);
        }
    }

    /// A call read back fine: repaired since, report it again should it
    /// break again.
    fn note_readable(&self, id: CallId) {
        let mut seen = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.is_empty() {
            seen.remove(&Some(id));
        }
    }
}
