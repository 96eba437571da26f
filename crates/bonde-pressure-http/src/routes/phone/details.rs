//! `GET /v1/phone/calls/{call_id}`: a call in detail, core's
//! [`CallDetails`] read model (masked unless the admin token is presented
//! and the read is in the audit log).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::{CallDetails, Disclosure};

use super::auth::{admin, privacy};
use super::load;
use crate::deadline::store_error;
use crate::error::{AppError, MessageBody, ValidationBody};
use crate::extract::CallIdPath;
use crate::state::AppState;

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
    let details = state
        .service
        .call_details(&call, Disclosure::unmasked_if(unmasked))
        .await
        .map_err(store_error)?;
    let mut r = Json(details).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
