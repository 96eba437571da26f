//! `GET /v1/phone/calls/{call_id}/events`: Server-Sent Events, one
//! `state` event (core's [`CallSummary`](bonde_pressure_core::CallSummary)) per change, until the call ends.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::live;
use bonde_pressure_core::{CallId, UiStatus};
use serde::Serialize;
use utoipa::ToSchema;

use super::load;
use crate::error::{AppError, MessageBody, ValidationBody};
use crate::extract::CallIdPath;
use crate::state::AppState;

/// One server-sent event as it appears on the stream (documentation only).
#[derive(Debug, Serialize, ToSchema)]
pub struct SseStateEvent {
    /// Always `state`.
    #[schema(example = "state")]
    pub event: String,
    /// The call's version (send it back as `Last-Event-ID`).
    #[schema(example = "7")]
    pub id: String,
    /// A `CallSummary` as JSON.
    #[schema(
        example = r#"{"call_id":"b1f7afd0-8e24-4beb-b8be-72cd77040a40","state":"connecting","status":"ringing","version":7,"terminal":false}"#
    )]
    pub data: String,
}

struct Subscription {
    state: AppState,
    id: CallId,
    live: live::Subscription,
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
        // Core's live updates wake us for this call's commits, this
        // replica's and (PostgreSQL listener) the others'; a lag or a
        // resync wakes us too: re-read. The poll is the fallback when no
        // listener runs.
        tokio::select! {
            _ = sleep.as_mut() => {}
            notice = self.live.next() => {
                if notice.is_none() {
                    // The service is gone: only the poll remains.
                    sleep.as_mut().await;
                }
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
            let data = self.state.service.call_summary(&call);
            let status = data.status;
            if self.last_version.is_some_and(|v| v >= call.version) {
                // A resumed stream starts from the status it finds.
                let previous = *self.last_status.get_or_insert(status);
                if previous == status {
                    continue;
                }
            }
            self.last_version = Some(call.version.max(self.last_version.unwrap_or(0)));
            self.last_status = Some(status);
            self.done = data.terminal;
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
        (status = 200, description = "`text/event-stream` of `state` events: each has `event: state`, `id:` the call's version, and `data:` a `CallSummary` as JSON", body = SseStateEvent, content_type = "text/event-stream"),
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
    let state_metrics = state.metrics.clone();
    let sub = Subscription {
        live: state.service.live_updates().subscribe_call(id),
        state,
        id,
        last_version: seen,
        last_status: None,
        first: true,
        done: false,
    };
    // Counted open until the stream ends or the client goes.
    let open = state_metrics.open_stream("call");
    let stream = futures::stream::unfold((sub, open), |(mut sub, open)| async move {
        let e = sub.next_event().await?;
        Some((Ok::<_, Infallible>(e), (sub, open)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
