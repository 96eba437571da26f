//! Request bodies: refused at once when their `Content-Length` is over
//! `MAX_BODY_BYTES` (413, without waiting for the body), and received
//! within a **total** deadline (`REQUEST_BODY_TIMEOUT_MS`, 408 after it).
//!
//! tower-http's body timeout restarts on every frame, so a client sending a
//! byte a second never trips it; here the whole body must arrive before one
//! deadline. The body is buffered (every route reads it whole, and it is at
//! most `MAX_BODY_BYTES`), then handed to the handler, whose own time is
//! bounded separately (see [`crate::deadline`]).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use crate::error::AppError;
use crate::state::AppState;

fn too_large() -> Response {
    AppError::client(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.").into_response()
}

/// Middleware: checks `Content-Length` up front, then receives the whole
/// body within the body deadline.
pub async fn receive_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let max = state.options.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        // Answered before a byte of the body is read; hyper closes the
        // connection rather than read the rest.
        return too_large();
    }
    if declared == Some(0) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let collect = Limited::new(body, max).collect();
    let deadline = state.options.request_body_timeout;
    let collected = if deadline.is_zero() {
        collect.await
    } else {
        match tokio::time::timeout(deadline, collect).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!(
                    timeout_ms = deadline.as_millis() as u64,
                    "request body not received in time"
                );
                return AppError::client(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request body not received in time.",
                )
                .into_response();
            }
        }
    };
    match collected {
        Ok(c) => {
            next.run(Request::from_parts(parts, Body::from(c.to_bytes())))
                .await
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => too_large(),
        Err(_) => AppError::client(StatusCode::BAD_REQUEST, "Could not read the request body.")
            .into_response(),
    }
}
