//! Health, readiness, metrics, OpenAPI and its interactive docs.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bonde_pressure_core::CallId;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::state::AppState;

/// Health answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = HealthBody)))]
pub async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// Readiness: the store answers a read within 2 s.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = HealthBody), (status = 503, body = HealthBody))
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let probe = state.service.store().get(CallId::new());
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => Json(HealthBody { status: "ready" }).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthBody {
                    status: "unavailable",
                }),
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!("readiness: store timed out");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthBody {
                    status: "unavailable",
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.record_spool(&state.service.spool_stats());
    state.metrics.record_pool();
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The OpenAPI document of every route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bonde-pressure",
        description = "Phone pressure campaigns: the campaign page starts a call, the activist is called, confirms, and is connected to a target. Drop-in for the previous FastAPI service.",
    ),
    paths(
        crate::routes::phone::start::start_call,
        crate::routes::phone::status::call_status,
        crate::routes::phone::details::call_details,
        crate::routes::phone::sse::call_events,
        crate::routes::people::erase_person,
        crate::routes::admin::add_to_do_not_call,
        crate::routes::results::widget_stats,
        crate::routes::results::widget_calls_csv,
        crate::routes::results::widget_events,
        crate::routes::webhooks::answer,
        crate::routes::webhooks::status_callback,
        crate::routes::webhooks::amd_status_callback,
        crate::routes::webhooks::dial,
        crate::routes::webhooks::dial_status_callback,
        crate::routes::webhooks::dial_amd_status_callback,
        crate::routes::webhooks::conference_status_callback,
        crate::routes::webhooks::after_dial,
        healthz,
        readyz,
        metrics,
    ),
    tags(
        (name = "phone", description = "The campaign page's routes"),
        (name = "calls", description = "Call details and live updates"),
        (name = "twilio", description = "Twilio webhooks (X-Twilio-Signature checked)"),
        (name = "ops", description = "Health and metrics"),
        (name = "admin", description = "Operator routes (admin token)"),
        (name = "results", description = "Campaign results for organisers (admin token)"),
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `/openapi.json`.
pub async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>bonde-pressure API</title>
</head>
<body>
  <script id="api-reference" data-url="/openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1/dist/browser/standalone.js" crossorigin="anonymous"></script>
  <noscript>The interactive documentation needs JavaScript; the spec is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body>
</html>
"#;

/// `/docs`: Scalar's API reference (loaded from a CDN, version pinned, so
/// the page does not change under us) over `/openapi.json`.
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}
