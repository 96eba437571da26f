//! The pages the binary serves: the organisers' dashboard (`/dashboard`)
//! and the demo campaign page (`/`). Each is one HTML file with its script
//! and the shared style sheet served as separate files from the binary
//! (`include_str!`): no external resource, no build step, and a strict
//! Content-Security-Policy (no inline script or style).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::AppError;
use crate::state::AppState;

/// The Content-Security-Policy of every page and asset: same-origin
/// scripts, styles, fetches and images only; no inline code, no frames,
/// no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
    frame-ancestors 'none'";

const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard.js");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");
const DEMO_JS: &str = include_str!("../../assets/demo.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// What the demo page offers: one widget and its targets.
#[derive(Debug, Clone, Serialize)]
pub struct DemoPage {
    /// The widget the demo form starts calls on.
    pub widget_id: i64,
    /// Its targets.
    pub targets: Vec<DemoTarget>,
}

/// A target the demo form lists.
#[derive(Debug, Clone, Serialize)]
pub struct DemoTarget {
    /// Name.
    pub name: String,
    /// Phone, as the widget's settings list it.
    pub phone: String,
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /dashboard`: the results dashboard (the admin token is asked for
/// in the page and kept in session storage).
pub async fn dashboard(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.results.is_none() {
        return Err(AppError::not_found("Not Found"));
    }
    Ok(asset(DASHBOARD_HTML, "text/html; charset=utf-8"))
}

/// `GET /dashboard.js`.
pub async fn dashboard_js() -> Response {
    asset(DASHBOARD_JS, "text/javascript; charset=utf-8")
}

/// `GET /app.css`: the pages' style sheet.
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `GET /`: the demo campaign page, when on (404 otherwise).
pub async fn demo(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.options.demo_page.is_none() {
        return Err(AppError::not_found("Not Found"));
    }
    Ok(asset(DEMO_HTML, "text/html; charset=utf-8"))
}

/// `GET /demo.js`, when the demo page is on.
pub async fn demo_js(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.options.demo_page.is_none() {
        return Err(AppError::not_found("Not Found"));
    }
    Ok(asset(DEMO_JS, "text/javascript; charset=utf-8"))
}

/// `GET /demo/config.json`: the demo widget and its targets.
pub async fn demo_config(State(state): State<AppState>) -> Result<Response, AppError> {
    let demo = state
        .options
        .demo_page
        .clone()
        .ok_or_else(|| AppError::not_found("Not Found"))?;
    Ok(Json(demo).into_response())
}
