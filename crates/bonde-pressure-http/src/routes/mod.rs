//! The router: every route, CORS, body limit and total body deadline
//! ([`crate::body`]), the per-request store deadline ([`crate::deadline`]),
//! tracing, response metrics,
//! JSON answers for unknown routes and methods, and a generic JSON 500 for a
//! handler that panics.

pub mod admin;
pub mod ops;
pub mod pages;
pub mod people;
pub mod phone;
pub mod results;
pub mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bonde_pressure_twilio::urls;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::CorsOrigins;
use crate::error::AppError;
use crate::metrics;
use crate::state::AppState;

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::CACHE_CONTROL,
            header::AUTHORIZATION,
            HeaderName::from_static("ngrok-skip-browser-warning"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state.metrics.observe(
        metrics::HTTP_DURATION,
        &[("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    state.metrics.inc(
        metrics::HTTP_RESPONSES,
        &[("route", &route), ("status", response.status().as_str())],
    );
    response
}

/// A handler panicked: log it, answer the generic JSON 500 (never a reset
/// connection or a plain-text body).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let cause = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    AppError::internal(format!("handler panicked: {cause}")).into_response()
}

async fn not_found() -> AppError {
    AppError::not_found("Not Found")
}

async fn method_not_allowed() -> AppError {
    AppError::client(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// The whole HTTP API over `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.options.max_body_bytes;
    let cors = cors(&state.options.cors_origins);
    Router::new()
        .route("/v1/phone/call", post(phone::start_call))
        .route("/v1/phone/status/{call_id}", get(phone::call_status))
        .route("/v1/phone/calls/{call_id}", get(phone::call_details))
        .route("/v1/phone/calls/{call_id}/events", get(phone::call_events))
        .route("/v1/phone/people", delete(people::erase_person))
        .route("/v1/phone/do-not-call", post(admin::add_to_do_not_call))
        .route(urls::ANSWER_PATH, post(webhooks::answer))
        .route(urls::STATUS_CALLBACK_PATH, post(webhooks::status_callback))
        .route(
            urls::AMD_STATUS_CALLBACK_PATH,
            post(webhooks::amd_status_callback),
        )
        .route(urls::DIAL_PATH, post(webhooks::dial))
        .route(
            urls::DIAL_STATUS_CALLBACK_PATH,
            post(webhooks::dial_status_callback),
        )
        .route(
            urls::DIAL_AMD_STATUS_CALLBACK_PATH,
            post(webhooks::dial_amd_status_callback),
        )
        .route(
            urls::CONFERENCE_STATUS_CALLBACK_PATH,
            post(webhooks::conference_status_callback),
        )
        .route(urls::AFTER_DIAL_PATH, post(webhooks::after_dial))
        .route(
            "/v1/phone/widgets/{widget_id}/stats",
            get(results::widget_stats),
        )
        .route(
            "/v1/phone/widgets/{widget_id}/calls.csv",
            get(results::widget_calls_csv),
        )
        .route(
            "/v1/phone/widgets/{widget_id}/events",
            get(results::widget_events),
        )
        .route("/", get(pages::demo))
        .route("/demo.js", get(pages::demo_js))
        .route("/demo/config.json", get(pages::demo_config))
        .route("/dashboard", get(pages::dashboard))
        .route("/dashboard.js", get(pages::dashboard_js))
        .route("/app.css", get(pages::app_css))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::docs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::deadline::request_budget,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::body::receive_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn panics_become_the_generic_json_500() {
        async fn boom() -> &'static str {
            panic!("secret detail")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let resp = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"detail":"Internal server error."}"#);
    }
}
