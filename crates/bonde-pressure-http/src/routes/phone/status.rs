//! `GET /v1/phone/status/{call_id}`: the page's status of a call (from
//! core's [`CallSummary`](bonde_pressure_core::CallSummary)).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody};
use crate::extract::CallIdPath;
use crate::state::AppState;

/// `GET /v1/phone/status/{call_id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// The call.
    pub call_id: String,
    /// One of `initiated ringing in-progress completed busy no-answer failed canceled`.
    #[schema(example = "ringing")]
    pub status: String,
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
    // From core's call cache when it is on (see docs/performance.md); the
    // page status is still computed now.
    let summary = state
        .service
        .cached_summary(id)
        .await
        .map_err(|e| AppError::reading_call(id, e))?
        .ok_or_else(|| AppError::not_found("Call not found."))?;
    let mut r = Json(StatusResponse {
        call_id: summary.call_id.to_string(),
        status: summary.status.as_str().to_owned(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
