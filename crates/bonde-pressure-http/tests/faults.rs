//! Faults that must stay one call's problem, and callbacks Twilio is asked
//! to retry: a damaged stored call answers a JSON error naming it while the
//! others are served; callback URLs carry connection overrides that never
//! enter the URL the signature is checked against.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use bonde_pressure_twilio::signature::sign;
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_call_answers_a_json_error_and_the_others_are_served() {
    let dir = std::env::temp_dir().join(format!("bps-faults-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("calls.db").display());
    let app = app_with(&["--database-url", &url, "--stale-after", "0"]).await;
    let r = router(&app);
    // Activist busy (last digit 1, shown as `canceled`): over after three callbacks.
    let good = start(&r, "11 91234-5671").await;
    let bad = start(&r, "11 91234-5681").await;
    for id in [&good, &bad] {
        assert_eq!(
            poll_final(&r, id, Duration::from_secs(10)).await,
            "canceled"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let pool = sqlx::sqlite::SqlitePool::connect(&url).await.unwrap();
    // Damaged facts, and listed as unsettled so reconciliation meets it.
    sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}', settled = 0 WHERE id = ?1")
        .bind(&bad)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let damaged = json!({
        "detail": format!("Call {bad} cannot be read: its stored record is damaged.")
    });
    for route in ["status", "calls"] {
        let resp = send(&r, get(&format!("/v1/phone/{route}/{bad}"))).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{route}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{route}"
        );
        assert_eq!(json_body(resp).await, damaged, "{route}");

        let resp = send(&r, get(&format!("/v1/phone/{route}/{good}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
    }

    // Reconciliation goes on, counting the damaged row every pass and the
    // call once.
    let metrics = bonde_pressure_http::metrics::Metrics::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let report = app.service.reconcile(10).await.unwrap();
        assert_eq!(report.unreadable, 1, "{report:?}");
        bonde_pressure_http::wiring::record_reconcile(&metrics, &report);
    }
    let reconcile = |what| metrics.get(bonde_pressure_http::metrics::RECONCILE, &[("what", what)]);
    assert_eq!(reconcile("passes"), 2);
    assert_eq!(reconcile("unreadable_rows"), 2);
    assert_eq!(reconcile("unreadable_calls"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const A: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN: &str = "test-auth-token";
const BASE: &str = "https://pressure.example.org";

/// Twilio is asked to retry callbacks (`#rc=2&rp=ct,5xx`); the fragment is
/// not part of the request Twilio makes, so the signature of a callback is
/// over the URL without it, and that is what the server checks.
#[tokio::test]
async fn callback_urls_ask_for_retries_and_fragments_stay_out_of_signatures() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": A, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = app_with(&[
        "--twilio-account-sid",
        AC,
        "--twilio-auth-token",
        TOKEN,
        "--twilio-phone-number",
        "+5511987650000",
        "--twilio-api-base",
        &uri,
        "--base-url",
        BASE,
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;

    let requests = server.received_requests().await.unwrap();
    let form: Vec<(String, String)> = form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} sent"))
    };
    let status_callback = field("StatusCallback");
    assert_eq!(
        status_callback,
        format!("{BASE}/v1/phone/status-callback/{id}#rc=2&rp=ct,5xx")
    );
    assert!(field("AsyncAmdStatusCallback").ends_with("#rc=2&rp=ct,5xx"));
    // The voice URL returns TwiML: no overrides there.
    assert!(!field("Url").contains('#'));

    // What Twilio requests: the URL without its fragment.
    let requested = status_callback.split('#').next().unwrap().to_owned();
    let path_only = requested.strip_prefix(BASE).unwrap().to_owned();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("CallSid", A)
        .append_pair("CallStatus", "ringing")
        .finish();
    let params: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let deliver = |signed_over: &str| {
        axum::http::Request::post(&path_only)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sign(TOKEN, signed_over, &params))
            .body(axum::body::Body::from(body.clone()))
            .unwrap()
    };
    assert_eq!(
        send(&r, deliver(&requested)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&r, deliver(&status_callback)).await.status(),
        StatusCode::FORBIDDEN,
        "the fragment is not part of the signed URL"
    );
}
