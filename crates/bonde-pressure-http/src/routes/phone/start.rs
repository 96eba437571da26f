//! `POST /v1/phone/call`: parse, call core's start, map its refusals to
//! the API's answers (and `call_requests_total`'s labels).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bonde_pressure_core::{StartCallRequest, StartError, TelephonyError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody, ValidationItem};
use crate::extract::{RawBody, body_errors, parse_start_call};
use crate::metrics;
use crate::state::{AppState, ClientIp};

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
        StartError::Invalid(fields) => body_errors(fields).into(),
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
            detail: bonde_pressure_core::error_chain(&e).to_string(),
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
                detail: format!(
                    "call {call_id}: {}",
                    bonde_pressure_core::error_chain(&other)
                ),
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
    request_body(content = StartCallRequest, content_type = "application/json"),
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
