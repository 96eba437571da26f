//! `DELETE /v1/phone/people`: erase one person's data (LGPD requests).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use bonde_pressure_core::PersonKey;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody, ValidationItem};
use crate::routes::phone::{admin, privacy};
use crate::state::AppState;

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureResponse {
    /// `phone` or `email`: what the person was found by.
    #[schema(example = "phone")]
    pub erased_by: String,
    /// Finished calls of the person whose name, e-mail and number were
    /// replaced by placeholders now.
    pub calls_erased: u64,
    /// Calls of the person still in progress: left whole so they finish,
    /// erased by the first retention pass after they end.
    pub calls_pending: u64,
    /// Raw webhook payloads deleted (those of the erased calls, and any
    /// other quoting the number or e-mail, orphans included).
    pub events_deleted: u64,
}

fn query_error(e: QueryRejection) -> AppError {
    AppError::Validation(vec![ValidationItem::new(
        vec!["query".into()],
        e.body_text(),
        "value_error.query",
    )])
}

/// Erases one person's personal data: every call placed to `phone`, or
/// whose activist gave `email` (exactly one of the two). Admin token
/// required. Finished calls are erased now, calls in progress once they
/// end; do-not-call entries the person asked for are kept (hashed). The
/// request is written to the audit log (the key's kind, never its value).
#[utoipa::path(
    delete, path = "/v1/phone/people", tag = "calls",
    params(
        ("phone" = Option<String>, Query, description = "The activist's number (E.164 or national, read in DEFAULT_REGION)"),
        ("email" = Option<String>, Query, description = "The activist's e-mail (case-insensitive)"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ErasureResponse),
        (status = 401, description = "No or a wrong admin token", body = MessageBody),
        (status = 422, description = "Not exactly one valid `phone` or `email`", body = ValidationBody),
        (status = 503, description = "No audit log configured", body = MessageBody),
    )
)]
pub async fn erase_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ErasureResponse>, AppError> {
    let Some(actor) = admin(&state, &headers)? else {
        return Err(AppError::client(
            StatusCode::UNAUTHORIZED,
            "Not authenticated.",
        ));
    };
    let Query(params) = query.map_err(query_error)?;
    let region = state.service.config().default_region;
    let who = PersonKey::from_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), region)
        .map_err(|fields| {
        AppError::Validation(
            fields
                .into_iter()
                .map(|f| {
                    ValidationItem::new(f.loc.into_iter().map(Into::into).collect(), f.msg, f.kind)
                })
                .collect(),
        )
    })?;
    let report = privacy(&state)?
        .erase(&who, &actor)
        .await
        .map_err(AppError::internal)?;
    tracing::info!(
        by = who.kind(),
        actor = %actor,
        calls_erased = report.calls_erased,
        calls_pending = report.calls_pending,
        events_deleted = report.events_deleted,
        "personal data erased on request"
    );
    Ok(Json(ErasureResponse {
        erased_by: who.kind().to_owned(),
        calls_erased: report.calls_erased,
        calls_pending: report.calls_pending,
        events_deleted: report.events_deleted,
    }))
}
