//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring::{self, App};
use futures::FutureExt;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};
use tower::ServiceExt;

/// The tests' settings: CLI-style arguments only (`Config::from_args`
/// reads no environment variable, so an exported `TWILIO_*` or
/// `GRAPHQL_API_URL` changes nothing), the in-memory store, a simulated
/// telephony with no delay, no reconciliation task, rate limits off unless
/// `extra` sets them.
pub fn test_config(extra: &[&str]) -> Config {
    let mut args = vec![
        "bonde-pressure",
        "--database-url",
        "memory:",
        "--simulated-tick",
        "0",
        "--reconcile-interval",
        "0",
        "--rate-limit-per-ip",
        "off",
        "--rate-limit-per-activist",
        "off",
        "--rate-limit-per-target",
        "off",
    ];
    args.extend_from_slice(extra);
    Config::from_args(args).expect("test config")
}

/// An app from [`test_config`].
pub async fn app_with(extra: &[&str]) -> App {
    wiring::build(&test_config(extra)).await.expect("wired app")
}

/// The default test app.
pub async fn app() -> App {
    app_with(&[]).await
}

/// The router of an app.
pub fn router(app: &App) -> Router {
    bonde_pressure_http::router(app.state.clone())
}

/// The front-end's exact request body, with this activist phone.
pub fn front_end_body(phone: &str) -> Value {
    json!({
        "widget_id": 1,
        "activist": {
            "name": "Ana Silva",
            "first_name": "Ana",
            "last_name": "Silva",
            "email": "ana@example.org",
            "phone": phone
        },
        "target": {"name": "Demo Target", "phone": "+5561999990000"}
    })
}

/// Sends one request through the router.
pub async fn send(router: &Router, req: Request<Body>) -> Response<Body> {
    router.clone().oneshot(req).await.expect("infallible")
}

/// Reads a body as bytes.
pub async fn body_bytes(resp: Response<Body>) -> Vec<u8> {
    axum::body::to_bytes(resp.into_body(), 10 * 1024 * 1024)
        .await
        .expect("body")
        .to_vec()
}

/// Reads a JSON body.
pub async fn json_body(resp: Response<Body>) -> Value {
    let bytes = body_bytes(resp).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// `POST /v1/phone/call` with a JSON value.
pub fn post_call(body: &Value) -> Request<Body> {
    Request::post("/v1/phone/call")
        .header("content-type", "application/json")
        .header("origin", "https://www.bonde.org")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `GET` a path.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// Starts a call and returns its id.
pub async fn start(router: &Router, phone: &str) -> String {
    let resp = send(router, post_call(&front_end_body(phone))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    json_body(resp).await["call_id"]
        .as_str()
        .expect("call_id")
        .to_owned()
}

/// Polls the page's status route until a final status (or panics after `timeout`).
pub async fn poll_final(router: &Router, call_id: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let resp = send(
            router,
            Request::get(format!("/v1/phone/status/{call_id}"))
                .header("cache-control", "no-cache")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v = json_body(resp).await;
        let status = v["status"].as_str().unwrap().to_owned();
        if ["completed", "busy", "canceled", "failed", "no-answer"].contains(&status.as_str()) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call {call_id} still {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts a FastAPI 422 body and returns its items.
pub async fn validation_items(resp: Response<Body>) -> Vec<Value> {
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json_body(resp).await;
    let items = v["detail"].as_array().expect("detail array").clone();
    assert!(!items.is_empty());
    for i in &items {
        assert!(
            i["loc"].is_array() && i["msg"].is_string() && i["type"].is_string(),
            "{i}"
        );
    }
    items
}

// ---------------------------------------------------------------------------
// A scratch PostgreSQL database (tests of several replicas on one database)
// ---------------------------------------------------------------------------

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

pub fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "CI=true but {reason}: PostgreSQL tests cannot run"
    );
    // Not `eprintln!`: libtest captures it, a write to the handle is not.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

/// Runs `check` with the URL of a PostgreSQL database created for it at
/// `TEST_DATABASE_URL`, migrated once, and a pool on it; drops the database
/// afterwards, even if the check panics.
pub async fn with_fresh_postgres(check: impl AsyncFnOnce(String, PgPool)) {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        skip("TEST_DATABASE_URL not set");
        return;
    };
    let admin_options = PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL parses");
    let mut admin = match PgConnection::connect_with(&admin_options).await {
        Ok(c) => c,
        Err(e) => {
            skip(&format!(
                "PostgreSQL at TEST_DATABASE_URL unreachable ({e})"
            ));
            return;
        }
    };
    let name = format!("bp_replicas_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let db_url = scratch_url(&url, &name);
    // Migrated once, here: the replicas find the schema up to date.
    bonde_pressure_store::migrate_url(&db_url)
        .await
        .expect("migrations");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_options.clone().database(&name))
        .await
        .expect("connect to test database");
    let outcome = std::panic::AssertUnwindSafe(check(db_url, pool.clone()))
        .catch_unwind()
        .await;
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `url` with its database name replaced by `name` (query kept).
pub fn scratch_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let base = if rest.contains('/') {
        base.rsplit_once('/').map_or(base, |(b, _)| b)
    } else {
        base
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}
