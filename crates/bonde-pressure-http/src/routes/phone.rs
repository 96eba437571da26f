//! The campaign page's routes and the call read models.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::ports::StoredEvent;
use bonde_pressure_core::{
    ActorId, Call, CallId, PhoneNumber, Privacy, StartError, TelephonyError, UiStatus,
    call::{CallFacts, Leg},
    domain::mask_phone,
};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody, ValidationItem};
use crate::extract::{CallIdPath, RawBody, parse_start_call};
use crate::metrics;
use crate::state::{AppState, ClientIp};

/// `POST /v1/phone/call`'s request (documentation only; parsed by hand for
/// FastAPI-shaped errors).
#[derive(Debug, Serialize, ToSchema)]
pub struct StartCallDoc {
    /// The campaign widget.
    #[schema(example = 1, minimum = 1)]
    pub widget_id: i64,
    /// Who is called first.
    pub activist: ActivistDoc,
    /// Whom the activist talks to (one of the widget's targets).
    pub target: TargetDoc,
}

/// The activist as the form sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivistDoc {
    /// Full name.
    #[schema(example = "Ana Silva", min_length = 1, max_length = 200)]
    pub name: String,
    /// First name (optional).
    #[schema(example = "Ana", max_length = 200)]
    pub first_name: Option<String>,
    /// Last name (optional).
    #[schema(example = "Silva", max_length = 200)]
    pub last_name: Option<String>,
    /// E-mail.
    #[schema(
        example = "ana@example.org",
        format = "email",
        min_length = 3,
        max_length = 254
    )]
    pub email: String,
    /// Phone: E.164 or national (`11 91234-5678`, read in the default region).
    #[schema(example = "11 91234-5678", pattern = r"^\+?[0-9 ().-]{8,24}$")]
    pub phone: String,
}

/// The target as the form sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetDoc {
    /// Name.
    #[schema(example = "Demo Target", min_length = 1, max_length = 200)]
    pub name: String,
    /// Phone, compared (normalised) with the widget's targets.
    #[schema(example = "+5561999990000", pattern = r"^\+?[0-9 ().-]{8,24}$")]
    pub phone: String,
}

/// `POST /v1/phone/call`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartCallResponse {
    /// Our call id (poll `/v1/phone/status/{call_id}`).
    pub call_id: String,
    /// The page's status: `initiated` at first.
    #[schema(example = "initiated")]
    pub status: String,
    /// The activist leg's Twilio Call SID.
    pub twilio_call_sid: Option<String>,
    /// The activist leg's status as Twilio answered (`queued`).
    #[schema(example = "queued")]
    pub twilio_call_status: Option<String>,
}

/// `GET /v1/phone/status/{call_id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// The call.
    pub call_id: String,
    /// One of `initiated ringing in-progress completed busy no-answer failed canceled`.
    #[schema(example = "ringing")]
    pub status: String,
}

/// Upstream's widget errors: FastAPI's `HTTPException(status_code=422,
/// detail=[{"loc": ["body", "widget_id"], "msg": …, "type": "value_error"}])`.
fn widget_error(msg: &str) -> AppError {
    AppError::Validation(vec![ValidationItem::body(
        &["widget_id"],
        msg,
        "value_error",
    )])
}

/// A refused start: the answer and its label in `call_requests_total`.
struct Refused {
    label: &'static str,
    error: AppError,
}

impl Refused {
    fn new(label: &'static str, error: AppError) -> Self {
        Self { label, error }
    }
}

impl From<AppError> for Refused {
    fn from(error: AppError) -> Self {
        let label = match &error {
            AppError::Validation(_) => "invalid",
            AppError::Client { .. } => "rejected",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Upstream { .. } => "upstream_error",
            AppError::Unreadable { .. } | AppError::Internal(_) => "error",
        };
        Self { label, error }
    }
}

fn start_error(e: StartError) -> Refused {
    match e {
        StartError::Invalid(fields) => AppError::Validation(
            fields
                .into_iter()
                .map(|f| {
                    let mut loc = vec![Value::from("body")];
                    loc.extend(f.loc.into_iter().map(Value::from));
                    ValidationItem::new(loc, f.msg, f.kind)
                })
                .collect(),
        )
        .into(),
        StartError::WidgetNotFound => {
            Refused::new("widget_not_found", widget_error("Widget not found."))
        }
        StartError::WidgetNotPhone => {
            Refused::new("rejected", widget_error("Widget is not a 'phone' kind."))
        }
        StartError::TargetNotInWidget => Refused::new(
            "rejected",
            widget_error("Target is not present in Widget settings."),
        ),
        StartError::Directory(e) => AppError::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            public: "Campaign directory unavailable. Try again later.",
            detail: e.to_string(),
            retry_after: None,
        }
        .into(),
        StartError::Telephony { call_id, error } => match error {
            TelephonyError::DestinationNotPermitted { code, .. } => {
                // Our account's geographic permissions, not the activist's number.
                tracing::warn!(%call_id, ?code, "telephony refused the destination country: check the account's geo permissions");
                AppError::Validation(vec![ValidationItem::body(
                    &["activist", "phone"],
                    "Calls to this number's country are not enabled.",
                    "value_error.phone.geo_permission",
                )])
                .into()
            }
            TelephonyError::InvalidNumber { code, .. } => {
                tracing::info!(%call_id, ?code, "telephony refused the activist's number");
                AppError::Validation(vec![ValidationItem::body(
                    &["activist", "phone"],
                    "This phone number cannot be called.",
                    "value_error.phone.unreachable",
                )])
                .into()
            }
            TelephonyError::RateLimited { retry_after, .. } => AppError::Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                public: "Too many calls right now. Try again later.",
                detail: format!("call {call_id}: telephony rate limit"),
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(5))),
            }
            .into(),
            other => AppError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                public: "Could not place the call. Try again later.",
                detail: format!("call {call_id}: {other}"),
                retry_after: None,
            }
            .into(),
        },
        StartError::RateLimited { scope, retry_after } => {
            AppError::RateLimited { scope, retry_after }.into()
        }
        StartError::Service(bonde_pressure_core::ServiceError::Contention(n)) => {
            AppError::Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                public: "Busy. Try again.",
                detail: format!("commit contention after {n} attempts"),
                retry_after: Some(Duration::from_secs(1)),
            }
            .into()
        }
        StartError::Store(e) | StartError::Service(bonde_pressure_core::ServiceError::Store(e))
            if crate::deadline::is_unavailable(&e) =>
        {
            crate::deadline::store_unavailable(e).into()
        }
        other => AppError::internal(other).into(),
    }
}

/// Starts a pressure call.
///
/// Rate limits (core's): the client IP's first (before the body is
/// parsed); the activist's request limit counts only requests that pass
/// validation and the widget checks. Core then refuses (429) an activist
/// number called too often in 24 h (`activist_calls`) and a target whose
/// dial budget is used up (`target`; only checked here, charged at dial).
/// 422 `value_error.phone.type` / `.country` for numbers the number policy
/// refuses, `value_error.phone.do_not_call` for a number on the
/// do-not-call list.
#[utoipa::path(
    post, path = "/v1/phone/call", tag = "phone",
    request_body(content = StartCallDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The activist is being called", body = StartCallResponse),
        (status = 413, description = "Body too large", body = MessageBody),
        (status = 422, description = "Invalid fields (FastAPI shape), or upstream's widget errors with `loc: [\"body\", \"widget_id\"]`, `type: value_error` and `msg` one of `Widget not found.`, `Widget is not a 'phone' kind.`, `Target is not present in Widget settings.`", body = ValidationBody),
        (status = 429, description = "Rate limited; see Retry-After", body = MessageBody),
        (status = 502, description = "The telephony refused the call", body = MessageBody),
        (status = 408, description = "The body did not arrive within REQUEST_BODY_TIMEOUT_MS", body = MessageBody),
        (status = 503, description = "Campaign directory, telephony or store unavailable (store: with Retry-After)", body = MessageBody),
    )
)]
pub async fn start_call(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawBody(body): RawBody,
) -> Result<Json<StartCallResponse>, AppError> {
    let result = start_call_inner(&state, ip, &body).await;
    let label = match &result {
        Ok(_) => "started",
        Err(r) => r.label,
    };
    state
        .metrics
        .inc(metrics::CALLS_STARTED, &[("outcome", label)]);
    result.map(Json).map_err(|r| r.error)
}

/// The limits are core's ([`PressureService::admit_client`],
/// [`PressureService::start`]): the client IP's request is charged first,
/// for every request (garbage included), before the body is parsed; core
/// then charges the activist number's request (given back when the start
/// is refused without an attempt that counts), and its caps on the numbers
/// called. This handler only parses, calls core and maps the errors.
///
/// [`PressureService::admit_client`]: bonde_pressure_core::PressureService::admit_client
/// [`PressureService::start`]: bonde_pressure_core::PressureService::start
async fn start_call_inner(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    body: &[u8],
) -> Result<StartCallResponse, Refused> {
    if let Some(ip) = ip {
        state.service.admit_client(ip).await.map_err(start_error)?;
    }
    let req = parse_start_call(body)?;
    let started = state.service.start(&req).await.map_err(start_error)?;
    Ok(StartCallResponse {
        call_id: started.call_id.to_string(),
        status: started.status.as_str().to_owned(),
        twilio_call_sid: started.leg_id.map(|s| s.as_str().to_owned()),
        twilio_call_status: started.leg_status.map(|s| s.as_str().to_owned()),
    })
}

use crate::deadline::store_error;

async fn load(state: &AppState, id: CallId) -> Result<Call, AppError> {
    state
        .service
        .call(id)
        .await
        .map_err(|e| AppError::reading_call(id, e))?
        .ok_or_else(|| AppError::not_found("Call not found."))
}

/// The page's status of a call (polled every 2 s).
#[utoipa::path(
    get, path = "/v1/phone/status/{call_id}", tag = "phone",
    params(("call_id" = uuid::Uuid, Path, description = "The call id (UUID)")),
    responses(
        (status = 200, body = StatusResponse),
        (status = 404, description = "`Call not found.`", body = MessageBody),
        (status = 500, description = "`Call <id> cannot be read: its stored record is damaged.` (that call only)", body = MessageBody),
        (status = 422, description = "Malformed id", body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn call_status(
    State(state): State<AppState>,
    CallIdPath(id): CallIdPath,
) -> Result<Response, AppError> {
    let call = load(&state, id).await?;
    let mut r = Json(StatusResponse {
        call_id: id.to_string(),
        status: state.service.page_status(&call).as_str().to_owned(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// A person in the call details (phone masked unless authorised).
#[derive(Debug, Serialize, ToSchema)]
pub struct PartyView {
    /// Name.
    pub name: String,
    /// E-mail (activist only; masked unless authorised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number (E.164, masked unless authorised).
    pub phone: String,
}

/// One leg in the call details.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegView {
    /// Twilio Call SID.
    pub sid: Option<String>,
    /// Highest status seen (`queued` … `completed`, `busy`...).
    pub status: Option<String>,
    /// Answering-machine verdict.
    pub answered_by: Option<String>,
    /// Seen in the conference.
    pub joined_conference: bool,
    /// Seen leaving the conference.
    pub left_conference: bool,
    /// Duration in seconds, once ended.
    pub duration_secs: Option<u32>,
    /// SIP response code.
    pub sip_response_code: Option<u16>,
    /// Provider error code, when it failed.
    pub error_code: Option<u32>,
    /// First seen ringing.
    pub ringing_at: Option<String>,
    /// First seen answered.
    pub answered_at: Option<String>,
    /// First seen ended.
    pub ended_at: Option<String>,
}

impl LegView {
    fn of(f: &CallFacts, leg: Leg) -> Self {
        let l = f.leg(leg);
        Self {
            sid: l.leg_id.as_ref().map(|s| s.as_str().to_owned()),
            status: l.status.map(|s| s.as_str().to_owned()),
            answered_by: l.answered_by.map(|a| a.as_str().to_owned()),
            // By the leg's own reports or by its SID among the participants
            // (the activist joins through TwiML, reported by SID).
            joined_conference: f.joined(leg),
            left_conference: f.left(leg),
            duration_secs: l.duration_secs,
            sip_response_code: l.sip_response_code,
            error_code: l.error.as_ref().and_then(|e| e.code),
            ringing_at: l.ringing_at.map(|t| t.to_rfc3339()),
            answered_at: l.answered_at.map(|t| t.to_rfc3339()),
            ended_at: l.ended_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Both legs.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegsView {
    /// Leg A.
    pub activist: LegView,
    /// Leg B.
    pub target: LegView,
}

/// One entry of the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// Store id (increasing).
    pub id: i64,
    /// Route or report kind (`status-callback`, `simulated`...).
    pub kind: String,
    /// When it was received.
    pub received_at: String,
    /// The Call SID it names.
    pub call_sid: Option<String>,
    /// Twilio's SequenceNumber.
    pub sequence_number: Option<i64>,
    /// The payload's non-personal fields (status, event, answered-by...).
    #[schema(value_type = Object)]
    pub summary: serde_json::Map<String, Value>,
    /// The raw payload (authorised requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// `GET /v1/phone/calls/{id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallDetails {
    /// The call.
    pub call_id: String,
    /// The widget.
    pub widget_id: i64,
    /// Detailed state (`awaiting_confirmation`, `target_no_answer`...).
    pub state: String,
    /// The page's status.
    pub status: String,
    /// The call is over.
    pub terminal: bool,
    /// Optimistic-concurrency version (grows with every committed event).
    pub version: u64,
    /// Created.
    pub created_at: String,
    /// Last updated.
    pub updated_at: String,
    /// The activist.
    pub activist: PartyView,
    /// The target.
    pub target: PartyView,
    /// The legs.
    pub legs: LegsView,
    /// The greeting was played.
    pub prompted: bool,
    /// The activist confirmed.
    pub confirmed: bool,
    /// Conference SID.
    pub conference_sid: Option<String>,
    /// Conference started.
    pub conference_started: bool,
    /// Conference ended.
    pub conference_ended: bool,
    /// Reconciliation gave up on the call.
    pub expired: bool,
    /// The activist pressed the do-not-call key during the greeting.
    pub opted_out: bool,
    /// The target was not dialled: its dial budget was used up.
    pub target_limited: bool,
    /// Talk time of a completed call.
    pub connected_secs: Option<u32>,
    /// The event log, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Phone numbers are shown unmasked (admin token presented).
    pub unmasked: bool,
}

fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Payload keys safe to show to anyone (no numbers, no names).
const SAFE_KEYS: &[&str] = &[
    "CallStatus",
    "StatusCallbackEvent",
    "AnsweredBy",
    "ParticipantLabel",
    "ReasonConferenceEnded",
    "ReasonParticipantLeft",
    "ParticipantCallStatus",
    "CallDuration",
    "SipResponseCode",
    "SequenceNumber",
    "Timestamp",
    "ErrorCode",
    "type",
    "status",
    "leg",
    "answered_by",
];

fn summarise(payload: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(payload) {
        for k in SAFE_KEYS {
            if let Some(v) = m.get(*k).filter(|v| v.is_string() || v.is_number()) {
                out.insert((*k).into(), v.clone());
            }
        }
        return out;
    }
    for pair in payload.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if SAFE_KEYS.contains(&k) {
            let v = v.replace('+', " ");
            let v = percent_decode(&v);
            out.insert(k.to_owned(), Value::from(v));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin behind the request: `Ok(None)` without an `Authorization`
/// header, their token's audit id with the right token, 401 otherwise.
pub(crate) fn admin(state: &AppState, headers: &HeaderMap) -> Result<Option<ActorId>, AppError> {
    if !authorised(state, headers)? {
        return Ok(None);
    }
    Ok(state
        .options
        .admin_token
        .as_ref()
        .map(|t| crate::privacy::token_id(t.expose())))
}

/// The audit log, required before any unmasked read or erasure.
pub(crate) fn privacy(state: &AppState) -> Result<&Privacy, AppError> {
    state.privacy.as_deref().ok_or_else(|| {
        AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "Personal data cannot be disclosed or erased: no audit log is configured.",
        )
    })
}

/// Whether the request carries the admin token: `Ok(false)` without an
/// `Authorization` header, 401 with a wrong one. The scheme is matched
/// case-insensitively (`Bearer`, `bearer`, `BEARER`), as HTTP auth schemes are.
pub(crate) fn authorised(state: &AppState, headers: &HeaderMap) -> Result<bool, AppError> {
    let Some(presented) = headers.get(header::AUTHORIZATION) else {
        return Ok(false);
    };
    let Some(token) = &state.options.admin_token else {
        return Err(AppError::client(StatusCode::UNAUTHORIZED, "Invalid token."));
    };
    let presented = presented
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials)
        .unwrap_or_default()
        .trim();
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(true)
    } else {
        Err(AppError::client(StatusCode::UNAUTHORIZED, "Invalid token."))
    }
}

fn details(call: &Call, status: &str, events: Vec<StoredEvent>, unmasked: bool) -> CallDetails {
    let phone = |p: &PhoneNumber| {
        if unmasked {
            p.as_e164().to_owned()
        } else {
            mask_phone(p.as_e164())
        }
    };
    let f = &call.facts;
    CallDetails {
        call_id: call.id.to_string(),
        widget_id: call.widget_id.get(),
        state: call.state().as_str().to_owned(),
        status: status.to_owned(),
        terminal: call.is_terminal(),
        version: call.version,
        created_at: call.created_at.to_rfc3339(),
        updated_at: call.updated_at.to_rfc3339(),
        activist: PartyView {
            name: call.activist.name.as_str().to_owned(),
            email: Some(if unmasked {
                call.activist.email.as_str().to_owned()
            } else {
                mask_email(call.activist.email.as_str())
            }),
            phone: phone(&call.activist.phone),
        },
        target: PartyView {
            name: call.target.name.as_str().to_owned(),
            email: None,
            phone: phone(&call.target.phone),
        },
        legs: LegsView {
            activist: LegView::of(f, Leg::Activist),
            target: LegView::of(f, Leg::Target),
        },
        prompted: f.prompted,
        confirmed: f.confirmed,
        conference_sid: f.conference_id.as_ref().map(|s| s.as_str().to_owned()),
        conference_started: f.conference_started,
        conference_ended: f.conference_ended,
        expired: f.expired,
        opted_out: f.opted_out,
        target_limited: f.target_limited,
        connected_secs: call.connected_secs(),
        timeline: events
            .into_iter()
            .map(|e| TimelineEntry {
                id: e.id,
                summary: summarise(&e.raw.payload),
                kind: e.raw.kind,
                received_at: e.raw.received_at.to_rfc3339(),
                call_sid: e.raw.leg_id,
                sequence_number: e.raw.sequence_number,
                payload: unmasked.then_some(e.raw.payload),
            })
            .collect(),
        unmasked,
    }
}

/// A call in detail: state, legs, event log.
#[utoipa::path(
    get, path = "/v1/phone/calls/{call_id}", tag = "calls",
    params(("call_id" = uuid::Uuid, Path, description = "The call id (UUID)")),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, body = CallDetails),
        (status = 401, description = "A wrong admin token", body = MessageBody),
        (status = 404, body = MessageBody),
        (status = 500, description = "`Call <id> cannot be read: its stored record is damaged.` (that call only)", body = MessageBody),
        (status = 422, body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn call_details(
    State(state): State<AppState>,
    CallIdPath(id): CallIdPath,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let actor = admin(&state, &headers)?;
    let call = load(&state, id).await?;
    // Personal data is shown only once the read is in the audit log; an
    // erased call has none to show, so its read is not recorded.
    let unmasked = match &actor {
        Some(actor) => {
            privacy(&state)?
                .record_unmasked_read(actor, "GET /v1/phone/calls/{call_id}", &call)
                .await
                .map_err(AppError::internal)?;
            true
        }
        None => false,
    };
    let events = state
        .service
        .store()
        .events(id)
        .await
        .map_err(store_error)?;
    let status = state.service.page_status(&call);
    let mut r = Json(details(&call, status.as_str(), events, unmasked)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// One server-sent event as it appears on the stream (documentation only).
#[derive(Debug, Serialize, ToSchema)]
pub struct SseStateEvent {
    /// Always `state`.
    #[schema(example = "state")]
    pub event: String,
    /// The call's version (send it back as `Last-Event-ID`).
    #[schema(example = "7")]
    pub id: String,
    /// A [`StateEvent`] as JSON.
    #[schema(
        example = r#"{"call_id":"b1f7afd0-8e24-4beb-b8be-72cd77040a40","state":"connecting","status":"ringing","version":7,"terminal":false}"#
    )]
    pub data: String,
}

/// One SSE `state` event's `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateEvent {
    /// The call.
    pub call_id: String,
    /// Detailed state.
    pub state: String,
    /// The page's status.
    pub status: String,
    /// The call's version.
    pub version: u64,
    /// The call is over (the stream ends after this event; a reconnection
    /// with this event's id as `Last-Event-ID` gets `204 No Content`).
    pub terminal: bool,
}

struct Subscription {
    state: AppState,
    id: CallId,
    rx: Option<broadcast::Receiver<crate::events::CallUpdate>>,
    last_version: Option<u64>,
    last_status: Option<UiStatus>,
    first: bool,
    done: bool,
}

impl Subscription {
    async fn wait(&mut self) {
        let poll = self.state.options.sse_poll_interval;
        let sleep = tokio::time::sleep(poll);
        tokio::pin!(sleep);
        loop {
            let Some(rx) = self.rx.as_mut() else {
                sleep.as_mut().await;
                return;
            };
            tokio::select! {
                _ = sleep.as_mut() => return,
                r = rx.recv() => match r {
                    Ok(u) if u.call_id == self.id => return,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => self.rx = None,
                },
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if !self.first {
                self.wait().await;
            }
            self.first = false;
            let call = match self.state.service.call(self.id).await {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                // A damaged call will not read better next time (core
                // logged it once): the stream ends.
                Err(bonde_pressure_core::StoreError::Unreadable(_)) => {
                    tracing::debug!(call_id = %self.id, "SSE: stored call cannot be read; stream ends");
                    self.done = true;
                    return None;
                }
                Err(error) => {
                    tracing::warn!(call_id = %self.id, %error, "SSE: store read failed");
                    continue;
                }
            };
            // The page status can change without a commit (the wait for
            // the target's machine-detection verdict runs out): such a
            // change is sent too, with the same version as its id.
            let status = self.state.service.page_status(&call);
            if self.last_version.is_some_and(|v| v >= call.version) {
                // A resumed stream starts from the status it finds.
                let previous = *self.last_status.get_or_insert(status);
                if previous == status {
                    continue;
                }
            }
            self.last_version = Some(call.version.max(self.last_version.unwrap_or(0)));
            self.last_status = Some(status);
            let terminal = call.is_terminal();
            self.done = terminal;
            let data = StateEvent {
                call_id: self.id.to_string(),
                state: call.state().as_str().to_owned(),
                status: status.as_str().to_owned(),
                version: call.version,
                terminal,
            };
            let event = Event::default()
                .event("state")
                .id(call.version.to_string())
                .json_data(&data)
                .unwrap_or_default();
            return Some(event);
        }
    }
}

/// The `Last-Event-ID` a reconnecting `EventSource` sends (our versions).
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Server-Sent Events: a `state` event now and one per committed update
/// (each carries the call's version as its `id`), until the call ends.
///
/// A browser's `EventSource` reconnects when a stream ends. When it comes
/// back with a `Last-Event-ID` at or past the version of a call that is
/// over, it has seen the last event: the answer is `204 No Content`, which
/// makes it stop. A `Last-Event-ID` of an unfinished call resumes after that
/// version.
#[utoipa::path(
    get, path = "/v1/phone/calls/{call_id}/events", tag = "calls",
    params(
        ("call_id" = uuid::Uuid, Path, description = "The call id (UUID)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "The last version received (sent by a reconnecting EventSource)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream` of `state` events: each has `event: state`, `id:` the call's version, and `data:` a `StateEvent` as JSON", body = SseStateEvent, content_type = "text/event-stream"),
        (status = 204, description = "The call is over and `Last-Event-ID` is at or past its last version: nothing more will come"),
        (status = 404, body = MessageBody),
        (status = 422, body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn call_events(
    State(state): State<AppState>,
    CallIdPath(id): CallIdPath,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let call = load(&state, id).await?;
    let last_seen = last_event_id(&headers);
    if call.is_terminal() && last_seen.is_some_and(|v| v >= call.version) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Resume after the last version seen; an id from the future (another
    // call's, a forged one) is ignored rather than waited for.
    let seen = last_seen.filter(|v| *v <= call.version);
    let sub = Subscription {
        rx: state.hub.as_ref().map(|h| h.subscribe()),
        state,
        id,
        last_version: seen,
        last_status: None,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(sub, |mut sub| async move {
        let e = sub.next_event().await?;
        Some((Ok::<_, Infallible>(e), sub))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_keep_only_safe_fields() {
        let s = summarise(
            "CallSid=CA1&From=%2B5511912345678&CallStatus=in-progress&To=%2B5561999990000&SequenceNumber=2",
        );
        assert_eq!(s.get("CallStatus").unwrap(), "in-progress");
        assert_eq!(s.get("SequenceNumber").unwrap(), "2");
        assert!(!s.contains_key("From") && !s.contains_key("To"));
        let s =
            summarise(r#"{"type":"leg_status","leg":"activist","status":"ringing","sid":"CA1"}"#);
        assert_eq!(s.get("type").unwrap(), "leg_status");
        assert!(!s.contains_key("sid"));
        assert_eq!(percent_decode("a%2Bb%zz%2"), "a+b%zz%2");
    }

    #[test]
    fn emails_are_masked() {
        assert_eq!(mask_email("ana@nossas.org"), "a***@nossas.org");
        assert_eq!(mask_email("nope"), "***");
    }
}
