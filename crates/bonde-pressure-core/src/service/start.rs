//! Starting a call: the start request's input types, the request limits and
//! caps, validation and authorisation, placing the activist's leg.

use crate::chain::error_chain;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::call::{Call, CallEvent, Leg, LegError, LegStatus, UiStatus};
use crate::domain::{
    Activist, CallId, Email, LegId, NumberRefusal, PersonName, PhoneNumber, Target, WidgetId,
    mask_email, mask_phone,
};
use crate::limits::{Admission, LimitKey, LimitKind, Quota};
use crate::ports::{ActivistCallRequest, DirectoryError, StoreError, TelephonyError, WidgetAction};
use crate::script::{CallerIdPolicy, CampaignSettings};

use super::{PressureService, ServiceError};

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
    /// for the [`RequestLimits`](crate::limits::RequestLimits) per client and per activist number).
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
    /// caller's request limits ([`RequestLimits::per_activist`](crate::limits::RequestLimits::per_activist)): only when
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
    /// Charges a cap; a limiter failure admits (logged).
    pub(super) async fn charge(&self, key: &LimitKey, quota: Quota) -> Admission {
        self.limiter
            .charge(key, quota)
            .await
            .unwrap_or_else(|error| {
                warn!(error = %error_chain(&error), kind = key.kind.as_str(), "rate limiter failed; admitting");
                Admission::Admitted
            })
    }

    /// Charges one start request to `client`
    /// ([`RequestLimits::per_client`](crate::limits::RequestLimits::per_client)). Adapters call it first, for every
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
    /// ([`RequestLimits::per_activist`](crate::limits::RequestLimits::per_activist)), read leniently (any number that
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
    pub(super) async fn refund(&self, key: &LimitKey, quota: Quota) {
        if let Err(error) = self.limiter.refund(key, quota).await {
            warn!(error = %error_chain(&error), kind = key.kind.as_str(), "rate limiter refund failed");
        }
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
    /// ([`RequestLimits::per_activist`](crate::limits::RequestLimits::per_activist); over it,
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
        let ticket = self.usable_cache().map(|cache| cache.ticket());
        if let Err(e) = self.deps.store.create(&call).await {
            refund_activist().await;
            return Err(e.into());
        }
        self.live.publish(crate::live::CallUpdate::of(&call));
        if let (Some(cache), Some(ticket)) = (self.usable_cache(), ticket) {
            // Its first callback commits from here without reading it.
            cache.fill(ticket, call.clone());
        }
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
}
