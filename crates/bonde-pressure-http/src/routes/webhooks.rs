//! Twilio's webhooks (the shared route contract of
//! [`bonde_pressure_twilio::urls`]): form-encoded, signature-checked,
//! parsed into core events, stored raw, applied by the service.
//!
//! For each request, in order:
//! 1. the `X-Twilio-Signature` is checked against the public URL
//!    (`BASE_URL` + path + query) and the form: a missing or wrong one is a
//!    403 and nothing is stored (unauthenticated payloads never reach the
//!    database);
//! 2. a malformed call id, or a form the route cannot use, is a 404/400 and
//!    the payload is handed to core as is
//!    ([`PressureService::record_unparsed`](bonde_pressure_core::PressureService::record_unparsed));
//! 3. the event is applied with its raw payload (`service.handle`, or
//!    `service.script` for the TwiML routes); an unknown call is a 404;
//!    commit contention is a 503; the store unavailable (down, or the
//!    request's store deadline spent, see [`crate::deadline`]) is a 503 with
//!    `Retry-After`, another store failure a 500;
//! 4. TwiML routes never answer an error once the call id and form are
//!    good: when the script cannot be had (store unavailable, contention,
//!    any failure), they answer fallback TwiML — an apology in the
//!    campaign's voice, then hang up
//!    ([`PressureService::fallback_script`](bonde_pressure_core::PressureService::fallback_script)).
//!
//! Storing the payload is core's promise, not this route's: whatever the
//! outcome, core stores it exactly once, or keeps it in its spool while the
//! store is unavailable ([`bonde_pressure_core::spool`]; the
//! [`crate::spool`] flusher stores it as soon as the store answers). Only a
//! full spool loses a payload: a callback then answers 503 with
//! `Retry-After`, so Twilio may send it again; a TwiML route answers the
//! fallback TwiML (the call goes on with an apology), and that payload is
//! lost, counted as `dropped` in `bonde_pressure_spooled_payloads_total`.
//! Core's work for a webhook runs in its own task, so a client that hangs
//! up mid-request does not cut it short.
//!
//! Callbacks answer `204 No Content`; TwiML routes `200 text/xml`.

use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::{CallId, ServiceError, SpoolFull};
use bonde_pressure_twilio::signature::{SIGNATURE_HEADER, validate};
use bonde_pressure_twilio::webhook::{decode_form, parse, raw_event};
use bonde_pressure_twilio::{
    AmdForm, CallForm, CallStatusForm, ConferenceForm, GatherForm, Route, twiml,
};

use crate::deadline;
use crate::error::{AppError, MessageBody};
use crate::extract::RawBody;
use crate::metrics;
use crate::state::{AppState, SignatureCheck};

struct Outcome {
    label: &'static str,
    response: Response,
}

fn outcome(label: &'static str, response: impl IntoResponse) -> Outcome {
    Outcome {
        label,
        response: response.into_response(),
    }
}

/// The URL Twilio signed: the public base URL, then the path and query as received.
fn signed_url(state: &AppState, uri: &axum::http::Uri) -> String {
    let pq = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| uri.path());
    state.webhooks.urls.signed_url(pq)
}

/// A payload core could not keep (its spool is full): 503 with
/// `Retry-After`, so Twilio sends it again.
fn not_kept(full: SpoolFull) -> Outcome {
    outcome("unavailable", deadline::store_unavailable(full))
}

/// Fallback TwiML: an apology in the campaign's voice, then hang up.
/// Runs `work` in its own task, within the request's store budget, and
/// waits for it: the work finishes even if the request's future is dropped
/// (the client disconnected), so core's payload promise is never cut short
/// half-way.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let budget = deadline::current_budget();
    let work = async move {
        match budget {
            Some(budget) => deadline::with_budget(budget, work).await,
            None => work.await,
        }
    };
    match tokio::spawn(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn fallback_twiml(state: &AppState, call_id: CallId) -> Response {
    let script = state.service.fallback_script(call_id).await;
    twiml_response(twiml::render(&script, &state.webhooks.urls))
}

fn twiml_response(xml: String) -> Response {
    let mut r = xml.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

async fn webhook(
    route: Route,
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let form = decode_form(body);
    match &state.webhooks.check {
        SignatureCheck::Off => {}
        SignatureCheck::RejectAll => {
            return outcome(
                "forbidden",
                AppError::client(StatusCode::FORBIDDEN, "Invalid signature."),
            );
        }
        SignatureCheck::Verify(token) => {
            let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
            let url = signed_url(state, uri);
            if let Err(e) = validate(token.expose(), &url, &form, signature) {
                tracing::warn!(route = route.as_str(), error = %e, "webhook signature refused");
                return outcome(
                    "forbidden",
                    AppError::client(StatusCode::FORBIDDEN, "Invalid signature."),
                );
            }
        }
    }

    let raw = raw_event(
        route,
        &String::from_utf8_lossy(body),
        &form,
        state.service.now(),
    );
    let call_id = id.ok().and_then(|Path(s)| s.parse::<CallId>().ok());
    let Some(call_id) = call_id else {
        let service = state.service.clone();
        return match detached(async move { service.record_unparsed(None, raw).await }).await {
            Ok(()) => outcome("not_found", AppError::not_found("Call not found.")),
            Err(full) => not_kept(full),
        };
    };
    let event = match parse(route, &form) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%call_id, route = route.as_str(), error = %e, "malformed webhook");
            let service = state.service.clone();
            return match detached(async move { service.record_unparsed(Some(call_id), raw).await })
                .await
            {
                Ok(()) => outcome(
                    "malformed",
                    AppError::client(StatusCode::BAD_REQUEST, format!("Malformed webhook: {e}")),
                ),
                Err(full) => not_kept(full),
            };
        }
    };

    // The payload goes to the service with the event: core stores it, or
    // keeps it until the store answers, whatever the outcome.
    // Run to completion even if Twilio hangs up on this request (its
    // timeout): a dropped future could stop between a failed commit and
    // keeping the payload.
    let service = state.service.clone();
    let result = match route.moment() {
        Some(moment) => {
            detached(async move { service.script(call_id, moment, event, Some(raw)).await })
                .await
                .map(|script| twiml_response(twiml::render(&script, &state.webhooks.urls)))
        }
        None => detached(async move { service.handle(call_id, event, Some(raw)).await })
            .await
            .map(|_| StatusCode::NO_CONTENT.into_response()),
    };
    match result {
        Ok(r) => outcome("ok", r),
        Err(ServiceError::CallNotFound(_)) => {
            outcome("not_found", AppError::not_found("Call not found."))
        }
        // Not applied. The activist on a TwiML route hears the apology
        // rather than Twilio's "application error".
        Err(ServiceError::Contention(n)) => {
            tracing::warn!(%call_id, attempts = n, route = route.as_str(), "commit contention");
            if route.moment().is_some() {
                return outcome("fallback", fallback_twiml(state, call_id).await);
            }
            outcome(
                "contention",
                AppError::Upstream {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    public: "Busy. Try again.",
                    detail: format!("commit contention after {n} attempts"),
                    retry_after: None,
                },
            )
        }
        // A damaged call (core logged it once): a status callback's payload
        // is kept by core, and a retry could not help (it would only store
        // a duplicate), so Twilio gets its 2xx. A TwiML route answers the
        // fallback below.
        Err(ServiceError::Store(bonde_pressure_core::StoreError::Unreadable(u)))
            if route.moment().is_none() =>
        {
            tracing::debug!(%call_id, reason = %u.reason, route = route.as_str(), "webhook for a damaged call: payload stored, not applied");
            outcome("unreadable", StatusCode::NO_CONTENT)
        }
        // The store could not take the payload and core's spool is full.
        Err(ServiceError::SpoolFull(full)) => {
            if route.moment().is_some() {
                tracing::error!(%call_id, route = route.as_str(), error = %full, "TwiML request failed; answering the fallback");
                return outcome("fallback", fallback_twiml(state, call_id).await);
            }
            not_kept(full)
        }
        // A store failure (the payload is kept by core either way).
        Err(other) => {
            let unavailable =
                matches!(&other, ServiceError::Store(e) if deadline::is_unavailable(e));
            if route.moment().is_some() {
                tracing::error!(%call_id, route = route.as_str(), error = %other, "TwiML request failed; answering the fallback");
                return outcome("fallback", fallback_twiml(state, call_id).await);
            }
            if unavailable {
                return outcome("unavailable", deadline::store_unavailable(other));
            }
            outcome("error", AppError::internal(other))
        }
    }
}

async fn run(
    route: Route,
    state: AppState,
    id: Result<Path<String>, PathRejection>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: RawBody,
) -> Response {
    let started = std::time::Instant::now();
    let o = webhook(route, &state, id, &uri.0, &headers, &body.0).await;
    state.metrics.observe(
        metrics::WEBHOOK_DURATION,
        &[("route", route.as_str())],
        started.elapsed().as_secs_f64(),
    );
    // A payload core could not store now waits in its spool: flush it as
    // soon as the store answers.
    state.spool_flusher.kick();
    state.metrics.inc(
        metrics::WEBHOOKS,
        &[("route", route.as_str()), ("outcome", o.label)],
    );
    o.response
}

macro_rules! webhook_route {
    ($(#[$doc:meta])* $name:ident, $route:expr, $path:literal, $form:ty, twiml) => {
        $(#[$doc])*
        #[utoipa::path(
            post, path = $path, tag = "twilio",
            params(("call_id" = uuid::Uuid, Path, description = "Our call id"), ("X-Twilio-Signature" = String, Header, description = "Twilio's signature")),
            request_body(content = $form, content_type = "application/x-www-form-urlencoded", description = "Twilio's form (the fields this service reads; Twilio sends more, all kept in the event log)"),
            responses(
                (status = 200, description = "TwiML; while the store is unavailable, fallback TwiML (an apology, then hang up)", content_type = "text/xml", body = String),
                (status = 400, description = "Malformed form (stored)", body = MessageBody),
                (status = 403, description = "Missing or invalid signature", body = MessageBody),
                (status = 404, description = "Unknown call (payload stored)", body = MessageBody),
                (status = 503, description = "Malformed form or unknown call whose payload could not be kept (store unavailable and spool full; see Retry-After)", body = MessageBody),
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            id: Result<Path<String>, PathRejection>,
            uri: OriginalUri,
            headers: HeaderMap,
            body: RawBody,
        ) -> Response {
            run($route, state, id, uri, headers, body).await
        }
    };
    ($(#[$doc:meta])* $name:ident, $route:expr, $path:literal, $form:ty) => {
        $(#[$doc])*
        #[utoipa::path(
            post, path = $path, tag = "twilio",
            params(("call_id" = uuid::Uuid, Path, description = "Our call id"), ("X-Twilio-Signature" = String, Header, description = "Twilio's signature")),
            request_body(content = $form, content_type = "application/x-www-form-urlencoded", description = "Twilio's form (the fields this service reads; Twilio sends more, all kept in the event log)"),
            responses(
                (status = 204, description = "Applied"),
                (status = 400, description = "Malformed form (stored)", body = MessageBody),
                (status = 403, description = "Missing or invalid signature", body = MessageBody),
                (status = 404, description = "Unknown call (payload stored)", body = MessageBody),
                (status = 503, description = "Store unavailable (see Retry-After) or commit contention; payload stored or queued (a full queue: not kept, see Retry-After)", body = MessageBody),
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            id: Result<Path<String>, PathRejection>,
            uri: OriginalUri,
            headers: HeaderMap,
            body: RawBody,
        ) -> Response {
            run($route, state, id, uri, headers, body).await
        }
    };
}

webhook_route!(
    /// The activist answered: greeting and confirmation prompt (TwiML).
    answer, Route::Answer, "/v1/phone/answer/{call_id}", CallForm, twiml
);
webhook_route!(
    /// Status callback of the activist's leg.
    status_callback, Route::StatusCallback, "/v1/phone/status-callback/{call_id}", CallStatusForm
);
webhook_route!(
    /// Asynchronous answering-machine detection of the activist's leg.
    amd_status_callback, Route::AmdStatusCallback, "/v1/phone/amd-status-callback/{call_id}", AmdForm
);
webhook_route!(
    /// The confirmation (gather action): join the conference (TwiML).
    dial, Route::Dial, "/v1/phone/dial/{call_id}", GatherForm, twiml
);
webhook_route!(
    /// Status callback of the target's leg (Participants API).
    dial_status_callback, Route::DialStatusCallback, "/v1/phone/dial-status-callback/{call_id}", CallStatusForm
);
webhook_route!(
    /// Answering-machine detection of the target's leg.
    dial_amd_status_callback, Route::DialAmdStatusCallback, "/v1/phone/dial-amd-status-callback/{call_id}", AmdForm
);
webhook_route!(
    /// Conference status callback (start, end, join, leave).
    conference_status_callback, Route::ConferenceStatusCallback, "/v1/phone/conference-status-callback/{call_id}", ConferenceForm
);
webhook_route!(
    /// After the conference (the `<Dial action>`): closing message (TwiML).
    after_dial, Route::AfterDial, "/v1/phone/after-dial/{call_id}", CallForm, twiml
);

#[cfg(test)]
mod tests {
    use bonde_pressure_twilio::urls;

    #[test]
    fn routes_follow_the_shared_contract() {
        // The router registers the twilio crate's templates; these are the contract's names.
        assert_eq!(
            urls::STATUS_CALLBACK_PATH,
            "/v1/phone/status-callback/{call_id}"
        );
        assert_eq!(urls::DIAL_PATH, "/v1/phone/dial/{call_id}");
        assert_eq!(urls::AFTER_DIAL_PATH, "/v1/phone/after-dial/{call_id}");
    }
}
