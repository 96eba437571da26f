//! Who is asking: the admin token and the audit log that unmasked reads
//! and erasures need.

use axum::http::{HeaderMap, StatusCode, header};
use bonde_pressure_core::{ActorId, Privacy};
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::state::AppState;

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
