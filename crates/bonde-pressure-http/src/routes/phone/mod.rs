//! The campaign page's routes, by concern: [`start`] (`POST
//! /v1/phone/call`), [`status`] (the page's polling), [`details`] (a call in
//! detail) and [`sse`] (live updates), plus the admin token checks the
//! other routes share. The read models are core's
//! ([`bonde_pressure_core::view`]): these handlers parse, call core and map.

mod auth;
pub mod details;
pub mod sse;
pub mod start;
pub mod status;

use bonde_pressure_core::{Call, CallId};

pub(crate) use auth::{admin, authorised, privacy};
pub use details::call_details;
pub use sse::call_events;
pub use start::start_call;
pub use status::call_status;

use crate::error::AppError;
use crate::state::AppState;

async fn load(state: &AppState, id: CallId) -> Result<Call, AppError> {
    state
        .service
        .call(id)
        .await
        .map_err(|e| AppError::reading_call(id, e))?
        .ok_or_else(|| AppError::not_found("Call not found."))
}
