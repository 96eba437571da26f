//! `PressureService`: starts calls, applies events, runs effects, decides scripts.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::call::{
    Call, CallEvent, Confirmation, DetailedState, Effect, Leg, LegError, LegStatus, UiStatus,
};
use crate::chain::error_chain;
use crate::do_not_call::{DoNotCallHasher, DoNotCallList, DoNotCallSource, InMemoryDoNotCallList};
use crate::domain::{
    Activist, CallId, Email, LegId, NumberPolicy, NumberRefusal, NumberType, PersonName,
    PhoneNumber, Region, Target, WidgetId, mask_email, mask_phone,
};
use crate::fakes::NoopActionRecorder;
use crate::limits::{
    Admission, InMemoryRateLimiter, LimitKey, LimitKind, Quota, RateLimiter, RequestLimits,
};
use crate::ports::{
    ActionRecorder, ActivistCallRequest, CallStore, CampaignDirectory, Clock, DirectoryError,
    EventSink, RawEvent, StoreError, SystemClock, TargetCallRequest, Telephony, TelephonyError,
    WidgetAction,
};
use crate::script::{CallerIdPolicy, CampaignSettings, ScriptMoment, VoiceScript, script_with_key};
use crate::spool::{DEFAULT_SPOOL_CAPACITY, PayloadSpool, SpoolFull, SpoolStats, store_once};

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

/// The activist as the form sends it (unvalidated).
///
/// `Debug` masks the phone number and the e-mail (only its domain shows).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(description = "The activist as the form sends it.")
)]
#[non_exhaustive]
pub struct ActivistInput {
    /// Full name.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Ana Silva", min_length = 1, max_length = 200)
    )]
    pub name: String,
    /// First name (optional).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "Ana", max_length = 200))]
    pub first_name: Option<String>,
    /// Last name (optional).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "Silva", max_length = 200))]
    pub last_name: Option<String>,
    /// E-mail.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "ana@example.org",
            format = "email",
            min_length = 3,
            max_length = 254
        )
    )]
    pub email: String,
    /// Phone: E.164 or national (`11 91234-5678`, read in the default region).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "11 91234-5678", pattern = r"^\+?[0-9 ().-]{8,24}$")
    )]
    pub phone: String,
}

impl ActivistInput {
    /// An activist with these name, e-mail and phone, without first or
    /// last name (see the `with_*` setters).
    pub fn new(
        name: impl Into<String>,
        email: impl Into<String>,
        phone: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            first_name: None,
            last_name: None,
            email: email.into(),
            phone: phone.into(),
        }
    }

    /// With this first name.
    pub fn with_first_name(mut self, first_name: impl Into<String>) -> Self {
        self.first_name = Some(first_name.into());
        self
    }

    /// With this last name.
    pub fn with_last_name(mut self, last_name: impl Into<String>) -> Self {
        self.last_name = Some(last_name.into());
        self
    }
}

/// The target as the form sends it (unvalidated).
///
/// `Debug` masks the phone number.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(description = "The target as the form sends it.")
)]
#[non_exhaustive]
pub struct TargetInput {
    /// Name.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Demo Target", min_length = 1, max_length = 200)
    )]
    pub name: String,
    /// Phone, compared (normalised) with the widget's targets.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "+5561999990000", pattern = r"^\+?[0-9 ().-]{8,24}$")
    )]
    pub phone: String,
}

impl TargetInput {
    /// A target with this name and phone.
    pub fn new(name: impl Into<String>, phone: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            phone: phone.into(),
        }
    }
}

/// `POST /v1/phone/call`'s body.
///
/// `Debug` masks phone numbers and e-mails (see [`ActivistInput`], [`TargetInput`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(description = "`POST /v1/phone/call`'s request.")
)]
#[non_exhaustive]
pub struct StartCallRequest {
    /// The campaign widget.
    #[cfg_attr(feature = "openapi", schema(example = 1, minimum = 1))]
    pub widget_id: i64,
    /// Who is called first.
    pub activist: ActivistInput,
    /// Whom the activist talks to (one of the widget's targets).
    pub target: TargetInput,
}

impl StartCallRequest {
    /// `activist` asks to call `target` from widget `widget_id`.
    pub fn new(widget_id: i64, activist: ActivistInput, target: TargetInput) -> Self {
        Self {
            widget_id,
            activist,
            target,
        }
    }
}

impl std::fmt::Debug for ActivistInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivistInput")
            .field("name", &self.name)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("email", &mask_email(&self.email))
            .field("phone", &mask_phone(&self.phone))
            .finish()
    }
}

impl std::fmt::Debug for TargetInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetInput")
            .field("name", &self.name)
            .field("phone", &mask_phone(&self.phone))
            .finish()
    }
}

impl std::fmt::Debug for StartCallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartCallRequest")
            .field("widget_id", &self.widget_id)
            .field("activist", &self.activist)
            .field("target", &self.target)
            .finish()
    }
}

/// One invalid field: `loc` is its path (`["activist", "phone"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FieldError {
    /// Path of the field.
    pub loc: Vec<String>,
    /// What is wrong.
    pub msg: String,
    /// A machine-readable kind (`value_error.phone`...).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// The field at `loc` is wrong: `msg`, of kind `kind`.
    pub fn new(loc: &[&str], msg: impl ToString, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.to_string(),
            kind: kind.into(),
        }
    }
}

/// Why a call was not started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Some fields are invalid.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldError>),
    /// Upstream's "Widget not found.".
    #[error("Widget not found.")]
    WidgetNotFound,
    /// Upstream's "Widget is not a 'phone' kind.".
    #[error("Widget is not a 'phone' kind.")]
    WidgetNotPhone,
    /// Upstream's "Target is not present in Widget settings.".
    #[error("Target is not present in Widget settings.")]
    TargetNotInWidget,
    /// The directory could not be asked.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The call was stored but the telephony refused to place it (the call is `failed`).
    #[error("could not call the activist (call {call_id})")]
    Telephony {
        /// The stored (failed) call.
        call_id: CallId,
        /// Why (also this error's [`source`](std::error::Error::source)).
        #[source]
        error: TelephonyError,
    },
    /// Other service failure.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A limit is used up (`scope`: `activist_calls` for the activist's
    /// daily calls, `target` for the target's dials, `ip` and `activist`
    /// for the [`RequestLimits`] per client and per activist number).
    #[error("rate limited ({scope})")]
    RateLimited {
        /// Which limit.
        scope: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
}

impl StartError {
    /// Whether this refused start still counts as an attempt against the
    /// caller's request limits ([`RequestLimits::per_activist`]): only when
    /// the telephony's refusal does
    /// ([`TelephonyError::counts_against_limits`]: a call may have been
    /// placed, or the number itself was refused). Refusals on our side —
    /// validation, the widget, the directory, the store, a used-up cap, the
    /// provider refusing us — do not. [`PressureService::start`] applies
    /// this rule itself.
    pub fn counts_against_limits(&self) -> bool {
        matches!(self, StartError::Telephony { error, .. } if error.counts_against_limits())
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

/// A started call (`POST /v1/phone/call`'s answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StartedCall {
    /// Our id.
    pub call_id: CallId,
    /// The front-end's status.
    pub status: UiStatus,
    /// The provider's id of the activist's leg.
    pub leg_id: Option<LegId>,
    /// The activist leg's status as the telephony answered.
    pub leg_status: Option<LegStatus>,
}

impl StartedCall {
    /// Call `call_id`, shown as `status`, its activist leg not known (see
    /// the `with_*` setters).
    pub fn new(call_id: CallId, status: UiStatus) -> Self {
        Self {
            call_id,
            status,
            leg_id: None,
            leg_status: None,
        }
    }

    /// With the activist leg's provider id (if known).
    pub fn with_leg_id(mut self, leg_id: impl Into<Option<LegId>>) -> Self {
        self.leg_id = leg_id.into();
        self
    }

    /// With the activist leg's status as the telephony answered (if any).
    pub fn with_leg_status(mut self, status: impl Into<Option<LegStatus>>) -> Self {
        self.leg_status = status.into();
        self
    }
}

/// What handling one event led to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleOutcome {
    /// The call as committed.
    pub call: Call,
    /// The effects this event's transition requested (already performed).
    pub effects: Vec<Effect>,
}

impl HandleOutcome {
    /// `call` as committed, after `effects`.
    pub fn new(call: Call, effects: Vec<Effect>) -> Self {
        Self { call, effects }
    }
}

/// What a reconciliation pass did.
///
/// Starts from [`ReconcileReport::default`] (all zero); its fields are
/// counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Unfinished stale calls looked at.
    pub examined: usize,
    /// Legs whose status was fetched.
    pub legs_fetched: usize,
    /// Calls declared expired.
    pub expired: usize,
    /// Legs hung up directly because their call's state was terminal.
    pub legs_hung_up: usize,
    /// Target dials that never reported back, recorded as failed.
    pub lost_dials: usize,
    /// Conferences whose participants were listed (calls waiting for the
    /// activist's join); a listing that found no conference (or a
    /// telephony without the listing) is not counted.
    pub conferences_fetched: usize,
    /// Calls whose activist was found in the conference by that listing,
    /// so the target was dialled (the join's callbacks were lost).
    pub joins_recovered: usize,
    /// Listed rows that could not be decoded (damaged), skipped: counted
    /// every pass while they stay damaged.
    pub unreadable: usize,
    /// Of those, the calls reported for the first time (logged once per
    /// call, not every pass), plus the damaged calls first met since the
    /// last pass by [`PressureService::call`] or [`PressureService::handle`]
    /// (each call is in one report only).
    pub unreadable_new: Vec<Option<CallId>>,
    /// Opted-out activists' numbers put on the do-not-call list by this
    /// pass (their first listing had failed).
    pub opt_outs_listed: usize,
    /// Payloads waiting in the spool that this pass stored first
    /// ([`PressureService::flush_spool`]).
    pub payloads_flushed: usize,
    /// Errors met (logged).
    pub errors: usize,
}

impl PressureService {
    /// The do-not-call key turns a "confirmation" into an opt-out: it never confirms.
    fn opt_out_or(&self, event: CallEvent) -> CallEvent {
        match (&event, self.config.do_not_call_digit) {
            (CallEvent::Confirmed(Confirmation::Digits(d)), Some(key))
                if d.trim().len() == key.len_utf8() && d.trim().starts_with(key) =>
            {
                CallEvent::OptedOut
            }
            _ => event,
        }
    }
}

/// The orchestration service: everything between the HTTP adapter and the ports.
pub struct PressureService {
    deps: Dependencies,
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
}

impl std::fmt::Debug for PressureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PressureService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn parse_name(errors: &mut Vec<FieldError>, loc: &[&str], value: &str) -> Option<PersonName> {
    PersonName::parse(value)
        .map_err(|e| errors.push(FieldError::new(loc, e, "value_error.name")))
        .ok()
}

fn parse_optional_name(
    errors: &mut Vec<FieldError>,
    loc: &[&str],
    value: Option<&str>,
) -> Option<PersonName> {
    match value.map(str::trim) {
        None | Some("") => None,
        Some(v) => parse_name(errors, loc, v),
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
        }
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

    /// Charges a cap; a limiter failure admits (logged).
    async fn charge(&self, key: &LimitKey, quota: Quota) -> Admission {
        self.limiter
            .charge(key, quota)
            .await
            .unwrap_or_else(|error| {
                warn!(error = %error_chain(&error), kind = key.kind.as_str(), "rate limiter failed; admitting");
                Admission::Admitted
            })
    }

    /// Charges one start request to `client`
    /// ([`RequestLimits::per_client`]). Adapters call it first, for every
    /// request to their start endpoint, before reading the request (so
    /// garbage counts too), then [`PressureService::start`] with what they
    /// parsed. Over the limit: [`StartError::RateLimited`] with scope `ip`.
    /// The charge is never given back. A limiter failure admits (logged).
    pub async fn admit_client(&self, client: IpAddr) -> Result<(), StartError> {
        let Some(quota) = self.request_limits.per_client else {
            return Ok(());
        };
        let key = LimitKey::new(LimitKind::ClientIp, client.to_string());
        match self.charge(&key, quota).await {
            Admission::Admitted => Ok(()),
            Admission::Exhausted { retry_after } => Err(StartError::RateLimited {
                scope: "ip",
                retry_after,
            }),
        }
    }

    /// Charges the request to its activist number
    /// ([`RequestLimits::per_activist`]), read leniently (any number that
    /// parses, before the number policy: the request is validated after).
    /// Returns the charge to give back should the start not count.
    async fn charge_activist_request(
        &self,
        req: &StartCallRequest,
    ) -> Result<Option<(LimitKey, Quota)>, StartError> {
        let Some(quota) = self.request_limits.per_activist else {
            return Ok(None);
        };
        let Ok(phone) = PhoneNumber::parse(&req.activist.phone, self.config.default_region) else {
            return Ok(None);
        };
        let key = LimitKey::new(LimitKind::ActivistRequests, phone.as_e164());
        match self.charge(&key, quota).await {
            Admission::Admitted => Ok(Some((key, quota))),
            Admission::Exhausted { retry_after } => Err(StartError::RateLimited {
                scope: "activist",
                retry_after,
            }),
        }
    }

    /// The daily cap per called number, counted in the store
    /// ([`CallStore::count_recent_calls_to`]): shared by replicas and kept
    /// across restarts. `None` when the store does not count or failed
    /// (logged): the caller falls back to the in-process limiter.
    ///
    /// One indexed count per request. Check-then-insert is not atomic: two
    /// requests for the same number at the same instant on different
    /// replicas may both pass with one slot left (at most one extra call
    /// per concurrent request).
    async fn daily_cap_from_store(&self, phone: &PhoneNumber, quota: Quota) -> Option<Admission> {
        let now = self.deps.clock.now();
        let window = chrono::Duration::from_std(quota.window).unwrap_or(chrono::Duration::MAX);
        let since = now
            .checked_sub_signed(window)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        match self.deps.store.count_recent_calls_to(phone, since).await {
            Ok(Some(recent)) if recent.count < u64::from(quota.limit) => Some(Admission::Admitted),
            Ok(Some(recent)) => {
                let frees_at = recent
                    .oldest
                    .and_then(|t| t.checked_add_signed(window))
                    .unwrap_or(now);
                let retry_after = (frees_at - now)
                    .to_std()
                    .unwrap_or_default()
                    .max(std::time::Duration::from_millis(1));
                Some(Admission::Exhausted { retry_after })
            }
            Ok(None) => None,
            Err(error) => {
                warn!(error = %error_chain(&error), "counting recent calls failed; using the in-process limiter");
                None
            }
        }
    }

    /// Gives a charge back; a failure is logged.
    async fn refund(&self, key: &LimitKey, quota: Quota) {
        if let Err(error) = self.limiter.refund(key, quota).await {
            warn!(error = %error_chain(&error), kind = key.kind.as_str(), "rate limiter refund failed");
        }
    }

    /// The live updates this service publishes after every call it creates
    /// or commits (see [`crate::live`]): subscribe per call or per widget,
    /// or observe every update. In-process only: other replicas' commits
    /// are not seen.
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

    /// The number policy of this configuration.
    pub fn number_policy(&self) -> NumberPolicy {
        self.config.number_policy()
    }

    /// Parses a number and checks it against the number policy.
    fn parse_phone(
        &self,
        errors: &mut Vec<FieldError>,
        loc: &[&str],
        value: &str,
    ) -> Option<PhoneNumber> {
        match self
            .number_policy()
            .parse(value, self.config.default_region)
        {
            Ok(phone) => Some(phone),
            Err(e) => {
                if let NumberRefusal::Policy(_) = e {
                    info!(field = loc.join("."), phone = %mask_phone(value), refusal = e.kind(), "number refused by the number policy");
                }
                errors.push(FieldError::new(loc, &e, e.kind()));
                None
            }
        }
    }

    /// Validates the form and authorises the target against the widget.
    async fn authorise(
        &self,
        req: &StartCallRequest,
    ) -> Result<(WidgetId, Activist, Target, CampaignSettings), StartError> {
        let mut errors = Vec::new();
        let widget_id = WidgetId::new(req.widget_id)
            .map_err(|e| errors.push(FieldError::new(&["widget_id"], e, "value_error.widget_id")))
            .ok();
        let a = &req.activist;
        let name = parse_name(&mut errors, &["activist", "name"], &a.name);
        let first_name = parse_optional_name(
            &mut errors,
            &["activist", "first_name"],
            a.first_name.as_deref(),
        );
        let last_name = parse_optional_name(
            &mut errors,
            &["activist", "last_name"],
            a.last_name.as_deref(),
        );
        let email = Email::parse(&a.email)
            .map_err(|e| {
                errors.push(FieldError::new(
                    &["activist", "email"],
                    e,
                    "value_error.email",
                ))
            })
            .ok();
        let phone = self.parse_phone(&mut errors, &["activist", "phone"], &a.phone);
        if let Some(p) = &phone {
            let allowed = &self.config.allowed_country_codes;
            if !allowed.is_empty() && !allowed.contains(&p.country_code()) {
                errors.push(FieldError::new(
                    &["activist", "phone"],
                    format!(
                        "calls to country code +{} are not allowed",
                        p.country_code()
                    ),
                    "value_error.phone.country",
                ));
            }
        }
        let target_name = parse_name(&mut errors, &["target", "name"], &req.target.name);
        let target_phone = self.parse_phone(&mut errors, &["target", "phone"], &req.target.phone);
        if let (Some(p), Some(t)) = (&phone, &target_phone) {
            if p == t {
                errors.push(FieldError::new(
                    &["activist", "phone"],
                    "the activist's and the target's numbers must differ",
                    "value_error.phone.same",
                ));
            }
        }
        let (
            Some(widget_id),
            Some(name),
            Some(email),
            Some(phone),
            Some(target_name),
            Some(target_phone),
            true,
        ) = (
            widget_id,
            name,
            email,
            phone,
            target_name,
            target_phone,
            errors.is_empty(),
        )
        else {
            return Err(StartError::Invalid(errors));
        };

        let widget = self
            .deps
            .directory
            .widget(widget_id)
            .await?
            .ok_or(StartError::WidgetNotFound)?;
        if !widget.phone_pressure {
            return Err(StartError::WidgetNotPhone);
        }
        let configured = widget
            .targets
            .iter()
            .find(|t| {
                PhoneNumber::parse(&t.phone, self.config.default_region)
                    .is_ok_and(|p| p == target_phone)
            })
            .ok_or(StartError::TargetNotInWidget)?;
        // The campaign's own spelling of the name is what the voice reads out.
        let target_name = PersonName::parse(&configured.name).unwrap_or(target_name);
        let activist = Activist {
            name,
            first_name,
            last_name,
            email,
            phone,
        };
        let target = Target {
            name: target_name,
            phone: target_phone,
        };
        Ok((widget_id, activist, target, widget.settings))
    }

    /// Starts a pressure call: charges the request to its activist number
    /// ([`RequestLimits::per_activist`]; over it,
    /// [`StartError::RateLimited`] with scope `activist`), validates,
    /// authorises, stores, calls the activist, records the action.
    ///
    /// The request's charge is taken first, so a burst of valid requests
    /// cannot overshoot the limit, and given back when the start is refused
    /// without an attempt that counts ([`StartError::counts_against_limits`]):
    /// invalid requests cannot lock an activist out.
    pub async fn start(&self, req: &StartCallRequest) -> Result<StartedCall, StartError> {
        let charged = self.charge_activist_request(req).await?;
        let started = self.place(req).await;
        if let (Err(error), Some((key, quota))) = (&started, charged) {
            if !error.counts_against_limits() {
                self.refund(&key, quota).await;
            }
        }
        started
    }

    /// [`PressureService::start`] after the request limit.
    async fn place(&self, req: &StartCallRequest) -> Result<StartedCall, StartError> {
        let (widget_id, activist, target, settings) = self.authorise(req).await?;
        if self.is_on_do_not_call_list(&activist.phone).await? {
            info!(activist = %activist.phone, "number on the do-not-call list: not called");
            return Err(StartError::Invalid(vec![FieldError::new(
                &["activist", "phone"],
                "This number asked not to be called again.",
                "value_error.phone.do_not_call",
            )]));
        }
        // The target's budget is only looked at here: it is charged when
        // the target is dialled, after the activist confirmed.
        let target_key = LimitKey::new(LimitKind::TargetDials, target.phone.as_e164());
        if let Some(quota) = self.config.target_dials {
            match self.limiter.peek(&target_key, quota).await {
                Ok(Admission::Exhausted { retry_after }) => {
                    return Err(StartError::RateLimited {
                        scope: "target",
                        retry_after,
                    });
                }
                Ok(Admission::Admitted) => {}
                Err(error) => warn!(error = %error_chain(&error), "rate limiter failed; admitting"),
            }
        }
        let activist_key = LimitKey::new(LimitKind::ActivistCalls, activist.phone.as_e164());
        let mut charged_in_process = false;
        if let Some(quota) = self.config.activist_calls {
            let admission = match self.daily_cap_from_store(&activist.phone, quota).await {
                Some(admission) => admission,
                None => {
                    charged_in_process = true;
                    self.charge(&activist_key, quota).await
                }
            };
            if let Admission::Exhausted { retry_after } = admission {
                info!(activist = %activist.phone, "activist number called too often today");
                return Err(StartError::RateLimited {
                    scope: "activist_calls",
                    retry_after,
                });
            }
        }
        let refund_activist = async || {
            if let (Some(quota), true) = (self.config.activist_calls, charged_in_process) {
                self.refund(&activist_key, quota).await;
            }
        };
        let caller_id = match settings.caller_id {
            CallerIdPolicy::OurNumber => None,
            CallerIdPolicy::ActivistNumber => Some(activist.phone.clone()),
        };
        let mut call = Call::new(
            CallId::new(),
            widget_id,
            activist,
            target,
            caller_id,
            self.deps.clock.now(),
        );
        // Both legs of this call use the detection setting it started with.
        call.facts.machine_detection = Some(settings.detect_machines);
        if let Err(e) = self.deps.store.create(&call).await {
            refund_activist().await;
            return Err(e.into());
        }
        self.live.publish(crate::live::CallUpdate::of(&call));
        self.recent.remember(call.id, call.widget_id);
        info!(call_id = %call.id, widget_id = %widget_id, activist = %call.activist.phone, "call created");

        let request = ActivistCallRequest {
            call_id: call.id,
            to: call.activist.phone.clone(),
            timeout_secs: settings.activist_timeout_secs,
            detect_machine: settings.detect_machines,
        };
        let leg = match self.deps.telephony.call_activist(&request).await {
            Ok(leg) => leg,
            Err(error) => {
                warn!(call_id = %call.id, error = %error_chain(&error), "activist call refused");
                if !error.counts_against_limits() {
                    refund_activist().await;
                }
                let failed = CallEvent::DialFailed {
                    leg: Leg::Activist,
                    error: LegError {
                        code: error.code(),
                        message: error.to_string(),
                    },
                };
                if let Err(store_error) = self.handle(call.id, failed, None).await {
                    // Reconciliation expires the call, which stays `created`.
                    warn!(call_id = %call.id, error = %error_chain(&store_error), "refused activist call not recorded");
                }
                return Err(StartError::Telephony {
                    call_id: call.id,
                    error,
                });
            }
        };
        // The activist's phone is ringing now: whatever happens to this
        // commit, the call is started. Its callbacks carry the leg's id.
        let dialed = CallEvent::LegDialed {
            leg: Leg::Activist,
            leg_id: leg.leg_id.clone(),
            status: leg.status,
        };
        let status = match self.handle(call.id, dialed, None).await {
            Ok(outcome) => self.page_status(&outcome.call),
            Err(error) => {
                warn!(call_id = %call.id, leg_id = %leg.leg_id, error = %error_chain(&error), "activist leg placed but not recorded; callbacks will record it");
                self.page_status(&call)
            }
        };

        let action = WidgetAction {
            widget_id,
            call_id: call.id,
            activist: call.activist.clone(),
        };
        if let Err(error) = self.deps.recorder.record(&action).await {
            warn!(call_id = %call.id, error = %error_chain(&error), "widget action not recorded; the call goes on");
        }
        Ok(StartedCall {
            call_id: call.id,
            status,
            leg_id: Some(leg.leg_id),
            leg_status: leg.status,
        })
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

    /// What to play at a script moment of `call_id` when its script cannot
    /// be had because the store is unavailable (see
    /// [`crate::script::unavailable_script`]): an apology in the call's
    /// campaign voice and language, then hang up. The campaign is known if
    /// this process created or loaded the call recently; otherwise (another
    /// replica's call) the default settings' voice is used. The campaign
    /// directory is given one second at most.
    pub async fn fallback_script(&self, call_id: CallId) -> VoiceScript {
        let settings = match self.recent.get(call_id) {
            Some(widget_id) => {
                tokio::time::timeout(Duration::from_secs(1), self.settings(widget_id))
                    .await
                    .unwrap_or_default()
            }
            None => CampaignSettings::default(),
        };
        crate::script::unavailable_script(&settings, call_id)
    }

    /// Applies an event to a call: load, apply, commit if the version is
    /// unchanged (retrying on conflict), then performs the effects the
    /// committed transition requested, feeding their results back as events.
    ///
    /// The raw payload (the provider's delivery, if any) is stored exactly
    /// once, whatever fails:
    /// - with the event's commit;
    /// - alone ([`CallStore::append_events`]) when there is no such commit:
    ///   the call is unknown ([`ServiceError::CallNotFound`]: stored without
    ///   a call) or unreadable, the commit failed, contention gave up — not
    ///   if the call's event log already holds the same delivery (a commit
    ///   whose answer was lost);
    /// - when the store cannot take it now, it waits in the service's spool
    ///   until [`PressureService::flush_spool`] stores it (the error is the
    ///   one that stopped the event); a full spool refuses it
    ///   ([`ServiceError::SpoolFull`], the only error after which the
    ///   payload is not kept).
    ///
    /// A follow-up commit (an effect's result) that fails returns its error;
    /// the payload was stored with the first commit.
    pub async fn handle(
        &self,
        call_id: CallId,
        event: CallEvent,
        raw: Option<RawEvent>,
    ) -> Result<HandleOutcome, ServiceError> {
        let event = self.opt_out_or(event);
        let committed = self
            .commit_event(call_id, &event, raw.as_slice())
            .await
            .inspect_err(|error| {
                if let ServiceError::Store(error) = error {
                    self.note_unreadable(error);
                }
            });
        let mut first = match (committed, raw) {
            (Ok(first), _) => first,
            (Err(error), None) => return Err(error),
            (Err(error), Some(raw)) => {
                // No commit took the payload: it is stored alone.
                let owner = match error {
                    ServiceError::CallNotFound(_) => None,
                    _ => Some(call_id),
                };
                self.keep_payload(owner, raw).await?;
                return Err(error);
            }
        };
        if first.call.opt_out_pending() {
            // The opt-out (this event's, or an earlier one whose listing
            // failed) goes on the list before anything else happens.
            if let Some(listed) = self.list_opt_out(&first.call).await {
                first.call = listed;
            }
        }
        let mut pending: VecDeque<(Call, Effect)> = first
            .effects
            .iter()
            .map(|e| (first.call.clone(), e.clone()))
            .collect();
        let mut last = first.call.clone();
        while let Some((call, effect)) = pending.pop_front() {
            if let Some(follow_up) = self.perform(&call, &effect).await {
                let next = self.commit_event(call_id, &follow_up, &[]).await?;
                pending.extend(next.effects.iter().map(|e| (next.call.clone(), e.clone())));
                last = next.call;
            }
        }
        if last.version > first.call.version {
            Ok(HandleOutcome {
                call: last,
                effects: first.effects,
            })
        } else {
            Ok(first)
        }
    }

    /// Puts an opted-out call's activist number on the do-not-call list
    /// and records it in the call's facts (`CallEvent::OptOutListed`);
    /// returns the call as committed. On failure (logged) the call keeps
    /// `opt_out_pending`, stays unsettled, and the next handling of the
    /// call or reconciliation tries again.
    async fn list_opt_out(&self, call: &Call) -> Option<Call> {
        let phone = &call.activist.phone;
        if let Err(error) = self
            .add_to_do_not_call_list(std::slice::from_ref(phone), DoNotCallSource::Keypress)
            .await
        {
            warn!(call_id = %call.id, activist = %phone, error = %error_chain(&error), "do-not-call entry not stored; retried later");
            return None;
        }
        info!(call_id = %call.id, activist = %phone, "activist asked not to be called again");
        match self
            .commit_event(call.id, &CallEvent::OptOutListed, &[])
            .await
        {
            Ok(outcome) => Some(outcome.call),
            Err(error) => {
                // Listed; only the fact is missing: the next pass adds it again (idempotent).
                warn!(call_id = %call.id, error = %error_chain(&error), "do-not-call entry stored but not recorded in the call");
                None
            }
        }
    }

    /// Records a provider payload the adapter could not parse or route (a
    /// malformed call id or form): stored alone, once, with its call if
    /// `call_id` names a known one, else without a call; if the store cannot
    /// take it now, kept in the spool like [`PressureService::handle`]'s.
    /// Fails only when the spool is full ([`SpoolFull`]: not kept).
    pub async fn record_unparsed(
        &self,
        call_id: Option<CallId>,
        raw: RawEvent,
    ) -> Result<(), SpoolFull> {
        debug!(?call_id, kind = %raw.kind, "recording a payload that was not parsed");
        self.keep_payload(call_id, raw).await
    }

    /// Stores the payloads waiting in the spool (the store could not take
    /// them when they arrived), in arrival order, each once, and returns
    /// how many it stored. Stops at the first store failure (the rest keep
    /// waiting for the next flush). Reconciliation calls it at the start of
    /// every pass; adapters may call it sooner (for example, with a
    /// backoff, as soon as [`PressureService::spool_stats`] shows a payload
    /// waiting). While another flush runs, returns `Ok(0)` at once. Never
    /// sleeps: the caller owns the cadence.
    pub async fn flush_spool(&self) -> Result<usize, StoreError> {
        let clock = &self.deps.clock;
        self.spool
            .flush(self.deps.store.as_ref(), || clock.now())
            .await
    }

    /// What the spool holds and has done (waiting payloads, totals).
    pub fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Stores a payload no commit took, once; queues it when the store
    /// cannot take it now.
    async fn keep_payload(&self, call_id: Option<CallId>, raw: RawEvent) -> Result<(), SpoolFull> {
        match store_once(self.deps.store.as_ref(), call_id, &raw).await {
            Ok(()) => Ok(()),
            Err(cause) => self.spool.push(call_id, raw, self.deps.clock.now(), cause),
        }
    }

    async fn commit_event(
        &self,
        call_id: CallId,
        event: &CallEvent,
        raws: &[RawEvent],
    ) -> Result<HandleOutcome, ServiceError> {
        let store = &self.deps.store;
        for attempt in 0..self.config.max_commit_attempts {
            let Some(call) = store.get(call_id).await? else {
                return Err(ServiceError::CallNotFound(call_id));
            };
            self.recent.remember(call.id, call.widget_id);
            let (mut next, effects) = call.apply(event, self.deps.clock.now());
            match store.commit(&next, raws).await {
                Ok(version) => {
                    next.version = version;
                    self.live.publish(crate::live::CallUpdate::of(&next));
                    if let CallEvent::Ignored { what } = event {
                        debug!(%call_id, what, "event stored and ignored");
                    }
                    if call.state() != next.state() {
                        info!(%call_id, from = call.state().as_str(), to = next.state().as_str(), event = event.kind(), "call state changed");
                    }
                    return Ok(HandleOutcome {
                        call: next,
                        effects,
                    });
                }
                Err(StoreError::Conflict) => backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        warn!(%call_id, event = event.kind(), "commit contention: giving up");
        Err(ServiceError::Contention(self.config.max_commit_attempts))
    }

    async fn settings(&self, widget_id: WidgetId) -> CampaignSettings {
        match self.deps.directory.widget(widget_id).await {
            Ok(Some(w)) => w.settings,
            Ok(None) => CampaignSettings::default(),
            Err(error) => {
                warn!(%widget_id, error = %error_chain(&error), "campaign settings unavailable; using defaults");
                CampaignSettings::default()
            }
        }
    }

    /// Carries out one effect; returns the event that reports its result, if any.
    async fn perform(&self, call: &Call, effect: &Effect) -> Option<CallEvent> {
        let t = &self.deps.telephony;
        let result = match effect {
            Effect::DialTarget => {
                let target_key = LimitKey::new(LimitKind::TargetDials, call.target.phone.as_e164());
                if let Some(quota) = self.config.target_dials {
                    if let Admission::Exhausted { .. } = self.charge(&target_key, quota).await {
                        info!(call_id = %call.id, target = %call.target.phone, "target's dial budget used up: not dialled");
                        return Some(CallEvent::TargetLimited);
                    }
                }
                let settings = self.settings(call.widget_id).await;
                let req = TargetCallRequest {
                    call_id: call.id,
                    to: call.target.phone.clone(),
                    caller_id: call.target_caller_id.clone(),
                    timeout_secs: settings.target_timeout_secs,
                    detect_machine: call
                        .facts
                        .machine_detection
                        .unwrap_or(settings.detect_machines),
                };
                info!(call_id = %call.id, target = %call.target.phone, "dialling target");
                return Some(match t.add_target(&req).await {
                    Ok(leg) => CallEvent::LegDialed {
                        leg: Leg::Target,
                        leg_id: leg.leg_id,
                        status: leg.status,
                    },
                    Err(e) => {
                        warn!(call_id = %call.id, error = %error_chain(&e), "target dial refused");
                        if let Some(quota) = self.config.target_dials {
                            if !e.counts_against_limits() {
                                self.refund(&target_key, quota).await;
                            }
                        }
                        CallEvent::DialFailed {
                            leg: Leg::Target,
                            error: LegError {
                                code: e.code(),
                                message: e.to_string(),
                            },
                        }
                    }
                });
            }
            Effect::HangUpActivist { leg_id, how } | Effect::HangUpTarget { leg_id, how } => {
                t.hang_up(call.id, leg_id, *how).await
            }
            Effect::EndConference { conference_id } => {
                t.end_conference(call.id, conference_id).await
            }
        };
        match result {
            Ok(()) | Err(TelephonyError::NotFound { .. }) => {}
            Err(error) => {
                warn!(call_id = %call.id, ?effect, error = %error_chain(&error), "effect failed; reconciliation will follow up")
            }
        }
        None
    }

    /// Records a voice moment (with its event and raw payload) and returns
    /// what to play. `event` is what the moment's request says (`Prompted`,
    /// `Confirmed`, or the dial's outcome as `Ignored`).
    pub async fn script(
        &self,
        call_id: CallId,
        moment: ScriptMoment,
        event: CallEvent,
        raw: Option<RawEvent>,
    ) -> Result<VoiceScript, ServiceError> {
        let outcome = self.handle(call_id, event, raw).await?;
        let settings = self.settings(outcome.call.widget_id).await;
        Ok(script_with_key(
            &settings,
            &outcome.call,
            moment,
            self.config.do_not_call_digit,
        ))
    }

    /// One reconciliation pass: first the payloads waiting in the spool are
    /// stored ([`PressureService::flush_spool`]; a failure is counted in
    /// `errors` and the pass goes on), then the calls that are not settled
    /// ([`Call::is_settled`]) and had no news for `stale_after` are
    /// looked at:
    /// - their live legs' status is fetched from the telephony (a leg the
    ///   provider does not know is recorded as ended);
    /// - a target dial that was already requested, without leg id or refusal,
    ///   when the call was listed is recorded as failed (lost dial);
    /// - if the call's state is terminal but a leg is still live (an effect
    ///   that should have ended it failed), that leg is hung up directly
    ///   (completed if answered, else canceled; idempotent at the provider;
    ///   a failure is logged and retried by the next pass);
    /// - those created more than `expire_after` ago that are still not
    ///   terminal are declared expired (state `error` unless completed,
    ///   live legs hung up).
    pub async fn reconcile(&self, limit: u32) -> Result<ReconcileReport, ServiceError> {
        let now = self.deps.clock.now();
        let stale_before =
            now - chrono::Duration::from_std(self.config.stale_after).unwrap_or_default();
        let expire_before =
            now - chrono::Duration::from_std(self.config.expire_after).unwrap_or_default();
        let mut report = ReconcileReport::default();
        match self.flush_spool().await {
            Ok(n) => report.payloads_flushed = n,
            Err(error) => {
                report.errors += 1;
                warn!(%error, waiting = self.spool_stats().waiting, "reconciliation: the payload spool could not be flushed");
            }
        }
        let rows = self
            .deps
            .store
            .list_unfinished_rows(stale_before, limit)
            .await?;
        let calls = self.skip_unreadable(rows, &mut report);
        for call in calls {
            report.examined += 1;
            if call.opt_out_pending() {
                match self.list_opt_out(&call).await {
                    Some(_) => report.opt_outs_listed += 1,
                    None => report.errors += 1,
                }
            }
            for leg in [Leg::Activist, Leg::Target] {
                let facts = call.facts.leg(leg);
                let Some(leg_id) = facts.leg_id.clone() else {
                    continue;
                };
                if facts.is_terminal() {
                    continue;
                }
                match self.deps.telephony.fetch_leg(&leg_id).await {
                    Ok(snap) => {
                        report.legs_fetched += 1;
                        let mut events = vec![CallEvent::LegStatus {
                            leg,
                            leg_id: Some(snap.leg_id.clone()),
                            status: snap.status,
                            duration_secs: snap.duration_secs,
                            sip_response_code: None,
                            // The provider's end time; otherwise stamped on receipt.
                            at: snap.ended_at.filter(|_| snap.status.is_terminal()),
                        }];
                        if let Some(answered_by) = snap.answered_by {
                            events.push(CallEvent::AnsweredBy {
                                leg,
                                leg_id: Some(snap.leg_id),
                                answered_by,
                            });
                        }
                        for e in events {
                            if let Err(error) = self.handle(call.id, e, None).await {
                                report.errors += 1;
                                warn!(call_id = %call.id, error = %error_chain(&error), "reconciliation update failed");
                            }
                        }
                    }
                    // The provider has no such call (a simulated telephony
                    // that restarted, another account): it is not up. Record
                    // it as ended, or the call would be listed forever.
                    Err(TelephonyError::NotFound { .. }) => {
                        report.legs_fetched += 1;
                        let status = if call.facts.leg_answered(leg) {
                            LegStatus::Completed
                        } else {
                            LegStatus::Canceled
                        };
                        warn!(call_id = %call.id, leg = leg.as_str(), status = status.as_str(), "leg unknown to the telephony; recorded as ended");
                        let ended = CallEvent::LegStatus {
                            leg,
                            leg_id: Some(leg_id),
                            status,
                            duration_secs: None,
                            sip_response_code: None,
                            at: None,
                        };
                        if let Err(error) = self.handle(call.id, ended, None).await {
                            report.errors += 1;
                            warn!(call_id = %call.id, error = %error_chain(&error), "reconciliation update failed");
                        }
                    }
                    Err(error) => {
                        report.errors += 1;
                        warn!(call_id = %call.id, leg = leg.as_str(), error = %error_chain(&error), "reconciliation fetch failed");
                    }
                }
            }
            if awaits_join(&call) {
                self.recover_join(call.id, &mut report).await;
            }
            if dial_was_lost(&call) {
                self.fail_lost_dial(call.id, &mut report).await;
            }
            let Some(call) = self.hang_up_leftover_legs(call.id, &mut report).await else {
                continue;
            };
            // Only a call that is still unfinished after what this pass
            // learnt is expired: an outcome just fetched is kept.
            if call.created_at < expire_before && !call.is_terminal() {
                match self.handle(call.id, CallEvent::Expired, None).await {
                    Ok(o) if o.call.state() == DetailedState::Error => report.expired += 1,
                    Ok(_) => {}
                    Err(error) => {
                        report.errors += 1;
                        warn!(call_id = %call.id, error = %error_chain(&error), "expiring call failed");
                    }
                }
            }
        }
        Ok(report)
    }
}

impl PressureService {
    /// Keeps the readable calls of a listing; a damaged row is counted,
    /// and logged the first time its call is met (not every pass).
    fn skip_unreadable(
        &self,
        rows: Vec<Result<Call, crate::ports::UnreadableCall>>,
        report: &mut ReconcileReport,
    ) -> Vec<Call> {
        report.unreadable_new.append(
            &mut self
                .unreadable_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut seen = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        let mut calls = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(call) => {
                    // Repaired since: report it again should it break again.
                    if !seen.is_empty() {
                        seen.remove(&Some(call.id));
                    }
                    calls.push(call);
                }
                Err(damaged) => {
                    report.unreadable += 1;
                    if seen.insert(damaged.call_id) {
                        tracing::error!(call_id = ?damaged.call_id, reason = %damaged.reason, "stored call cannot be read; skipped by reconciliation until repaired");
                        report.unreadable_new.push(damaged.call_id);
                    }
                }
            }
        }
        calls
    }

    /// The call waits for the activist's join (see [`awaits_join`]): asks
    /// the telephony who is in the call's conference, and records every
    /// participant in it as joined. Before the target is dialled the
    /// activist is the only possible participant, so this is the join, and
    /// the usual rules dial the target (once: the commit that requests it
    /// wins). Reloads the call first: the pass's fetches may have ended it.
    async fn recover_join(&self, call_id: CallId, report: &mut ReconcileReport) {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return;
            }
        };
        if !awaits_join(&call) {
            return;
        }
        let conference = match self
            .deps
            .telephony
            .conference_participants(call_id, call.facts.conference_id.clone())
            .await
        {
            Ok(Some(conference)) => conference,
            // Nothing known (no such conference, or a telephony without
            // the listing): nothing was fetched.
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation: listing the conference failed");
                return;
            }
        };
        report.conferences_fetched += 1;
        let mut dialled = false;
        for p in conference
            .participants
            .into_iter()
            .filter(|p| p.in_conference)
        {
            let joined = CallEvent::ParticipantJoined {
                conference_id: conference.conference_id.clone(),
                leg_id: p.leg_id,
                leg: p.leg,
            };
            match self.handle(call_id, joined, None).await {
                Ok(o) => dialled |= o.effects.contains(&Effect::DialTarget),
                Err(error) => {
                    report.errors += 1;
                    warn!(%call_id, error = %error_chain(&error), "reconciliation update failed");
                }
            }
        }
        if dialled {
            warn!(%call_id, "the activist's join was never reported; found in the conference, target dialled");
            report.joins_recovered += 1;
        }
    }

    /// Records a lost target dial (see [`dial_was_lost`], checked on the
    /// call as listed, i.e. silent for `stale_after`) as failed, so the
    /// usual effects follow (the conference ends, the activist hears the
    /// closing message) instead of the activist waiting until expiry. The
    /// reloaded call is checked again: a dial reported meanwhile wins.
    async fn fail_lost_dial(&self, call_id: CallId, report: &mut ReconcileReport) {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return;
            }
        };
        if !dial_was_lost(&call) {
            return;
        }
        warn!(%call_id, "the target's dial never reported back; recording it as failed");
        let lost = CallEvent::DialFailed {
            leg: Leg::Target,
            error: LegError {
                code: None,
                message: "the request to dial the target never reported back".into(),
            },
        };
        match self.handle(call_id, lost, None).await {
            Ok(_) => report.lost_dials += 1,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "recording a lost dial failed");
            }
        }
    }

    /// A call whose state is terminal must not keep a leg up: hangs up the
    /// legs that are still live after the fetch (the effect that should have
    /// ended them failed, e.g. ending the conference after a busy target).
    ///
    /// Returns the call as reloaded before the hang-ups (`None` if it could
    /// not be read).
    async fn hang_up_leftover_legs(
        &self,
        call_id: CallId,
        report: &mut ReconcileReport,
    ) -> Option<Call> {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return None,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return None;
            }
        };
        if !call.is_terminal() {
            return Some(call);
        }
        for leg in call.live_legs() {
            let Some(leg_id) = call.facts.leg(leg).leg_id.clone() else {
                continue; // dial requested, leg id never came back: `fail_lost_dial` settles it
            };
            let how = call.hang_up_mode(leg);
            info!(%call_id, leg = leg.as_str(), state = call.state().as_str(), ?how, "hanging up a leg left live by a terminal call");
            match self.deps.telephony.hang_up(call_id, &leg_id, how).await {
                Ok(()) | Err(TelephonyError::NotFound { .. }) => report.legs_hung_up += 1,
                Err(error) => {
                    report.errors += 1;
                    warn!(%call_id, leg = leg.as_str(), error = %error_chain(&error), "hanging up a leftover leg failed; the next pass retries");
                }
            }
        }
        Some(call)
    }
}

/// The activist confirmed (was sent to the conference) but no evidence of
/// the join arrived, so the target was never dialled: the activist's
/// `participant-join` and the conference's start were both lost. Checked on
/// a call silent for `stale_after`, far longer than joining takes.
fn awaits_join(call: &Call) -> bool {
    let f = &call.facts;
    f.confirmed
        && !f.requested.dial_target
        && !f.activist_left_before_dial()
        && !f.conference_ended
        && !f.expired
}

/// The target was to be dialled, but neither the dialled leg nor a refusal
/// was recorded, and no participant other than the activist was seen (a
/// target whose `LegDialed` and callbacks were lost but who joined is not
/// lost). Checked on a call listed as silent for `stale_after`, this means
/// the replica that won the `DialTarget` commit died before the request or
/// before recording its answer: a dialled target reports `initiated` within
/// seconds, and a dial in progress returns within the telephony's bounded
/// time ([`crate::Telephony`]: seconds), far less than `stale_after` (2 min).
fn dial_was_lost(call: &Call) -> bool {
    let f = &call.facts;
    let activist = f.activist.leg_id.as_ref();
    f.requested.dial_target
        && !f.target_limited
        && f.target.leg_id.is_none()
        && f.target.status.is_none()
        && f.participants.keys().all(|leg_id| Some(leg_id) == activist)
}

async fn backoff(attempt: u32) {
    if attempt < 3 {
        tokio::task::yield_now().await;
        return;
    }
    // Jitter from the clock's sub-second digits: enough to de-synchronise contenders.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cap_us = 200 * u64::from(attempt.min(20));
    tokio::time::sleep(Duration::from_micros(u64::from(nanos) % cap_us + 50)).await;
}

#[async_trait]
impl EventSink for PressureService {
    async fn deliver(&self, call_id: CallId, event: CallEvent, raw: Option<RawEvent>) {
        if let Err(error) = self.handle(call_id, event, raw).await {
            warn!(%call_id, error = %error_chain(&error), "simulated event not applied");
        }
    }
}
