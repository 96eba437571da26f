//! Admin routes (admin token required): feeding the do-not-call list.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bonde_pressure_core::PhoneNumber;
use bonde_pressure_core::do_not_call::DoNotCallSource;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody, ValidationItem};
use crate::extract::RawBody;
use crate::routes::phone::authorised;
use crate::state::AppState;

/// `POST /v1/phone/do-not-call`'s request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DoNotCallRequest {
    /// Numbers (E.164 or national, read in the default region).
    #[schema(example = json!(["+5511912345678", "(11) 91234-5679"]))]
    pub phones: Vec<String>,
}

/// `POST /v1/phone/do-not-call`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoNotCallResponse {
    /// Numbers newly listed.
    pub added: usize,
    /// Numbers that were already listed.
    pub already_listed: usize,
}

/// The most numbers one request may list.
pub const MAX_NUMBERS: usize = 1000;

/// Puts numbers on the do-not-call list (stored as keyed hashes): a `POST
/// /v1/phone/call` to any of them is refused with 422
/// `value_error.phone.do_not_call`. All or nothing: one invalid number
/// refuses the request.
#[utoipa::path(
    post, path = "/v1/phone/do-not-call", tag = "admin",
    request_body(content = DoNotCallRequest, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = DoNotCallResponse),
        (status = 401, description = "No or a wrong admin token", body = MessageBody),
        (status = 422, description = "A malformed body or number", body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn add_to_do_not_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<DoNotCallResponse>, AppError> {
    if !authorised(&state, &headers)? {
        return Err(AppError::client(StatusCode::UNAUTHORIZED, "Invalid token."));
    }
    let req: DoNotCallRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::Validation(vec![ValidationItem::body(
            &["phones"],
            format!("expected {{\"phones\": [\"+55…\", …]}}: {e}"),
            "value_error.jsondecode",
        )])
    })?;
    if req.phones.len() > MAX_NUMBERS {
        return Err(AppError::Validation(vec![ValidationItem::body(
            &["phones"],
            format!("at most {MAX_NUMBERS} numbers per request"),
            "value_error.list.max_items",
        )]));
    }
    let region = state.service.config().default_region;
    let mut numbers = Vec::with_capacity(req.phones.len());
    let mut errors = Vec::new();
    for (i, raw) in req.phones.iter().enumerate() {
        match PhoneNumber::parse(raw, region) {
            Ok(n) => numbers.push(n),
            Err(e) => errors.push(ValidationItem::new(
                vec![Value::from("body"), Value::from("phones"), Value::from(i)],
                e.to_string(),
                "value_error.phone",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    numbers.sort();
    numbers.dedup();
    let added = state
        .service
        .add_to_do_not_call_list(&numbers, DoNotCallSource::Admin)
        .await
        .map_err(crate::deadline::store_error)?;
    Ok(Json(DoNotCallResponse {
        added,
        already_listed: numbers.len() - added,
    }))
}
