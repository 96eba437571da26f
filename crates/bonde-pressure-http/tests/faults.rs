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
    let app = app_with(&[
        "--database-url",
        &url,
        "--stale-after",
        "0",
        "--webhook-signature-check",
        "false",
        // The row is damaged behind the service's back (SQL, no commit): a
        // status cache would keep serving the call as it was committed.
        "--status-cache-size",
        "0",
    ])
    .await;
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

    // Its status callbacks' payloads are kept, and (a retry could not
    // help) Twilio gets a 2xx.
    let payload = "CallSid=CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&CallStatus=completed";
    let resp = send(
        &r,
        axum::http::Request::post(format!("/v1/phone/status-callback/{bad}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(payload))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let bad_id: bonde_pressure_core::CallId = bad.parse().unwrap();
    let events = app.service.store().events(bad_id).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.raw.payload == payload).count(),
        1,
        "the payload is stored once"
    );

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

/// A call whose row is damaged while its page listens: the stream ends
/// (a damaged row does not read better on the next poll) instead of
/// re-reading it, and warning, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_of_a_damaged_call_ends() {
    let dir = std::env::temp_dir().join(format!("bps-faults-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("calls.db").display());
    let app = app_with(&[
        "--database-url",
        &url,
        // One scripted step an hour: the call stays unfinished.
        "--simulated-tick",
        "3600000",
        "--sse-poll-interval",
        "20",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let resp = send(&r, get(&format!("/v1/phone/calls/{id}/events"))).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let pool = sqlx::sqlite::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}' WHERE id = ?1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let body = tokio::time::timeout(Duration::from_secs(10), body_bytes(resp))
        .await
        .expect("the stream of a damaged call ends");
    let text = String::from_utf8(body).unwrap();
    // At most the state read before the damage (the body is read lazily),
    // nothing after it.
    assert!(text.matches("event: state").count() <= 1, "{text}");
    let damaged: bonde_pressure_core::CallId = id.parse().unwrap();
    assert!(matches!(
        app.service.call(damaged).await,
        Err(bonde_pressure_core::StoreError::Unreadable(_))
    ));
    assert_eq!(app.service.unreadable_calls_met(), 1);
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
    // The fragment is not part of the signed URL: signing the callback URL
    // as configured (with it) gives Twilio's signature.
    assert_eq!(
        sign(TOKEN, &status_callback, &params),
        sign(TOKEN, &requested, &params),
    );
    assert_eq!(
        send(&r, deliver(&status_callback)).await.status(),
        StatusCode::NO_CONTENT,
    );
}

/// The real Twilio client, end to end: the activist confirms, but both the
/// `conference-start` and the activist's `participant-join` are lost.
/// Reconciliation finds the conference by its friendly name, sees the
/// activist in it, and adds the target, once.
#[tokio::test]
async fn reconciliation_recovers_a_lost_join_through_twilio() {
    const CF: &str = "CFcccccccccccccccccccccccccccccccc";
    const B: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let server = MockServer::start().await;
    let account = format!("/2010-04-01/Accounts/{AC}");
    Mock::given(method("POST"))
        .and(path(format!("{account}/Calls.json")))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": A, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{account}/Calls/{A}.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sid": A, "status": "in-progress"})),
        )
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
        "--stale-after",
        "0",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    Mock::given(method("GET"))
        .and(path(format!("{account}/Conferences.json")))
        .and(wiremock::matchers::query_param("FriendlyName", id.as_str()))
        .and(wiremock::matchers::query_param("Status", "in-progress"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "conferences": [{"sid": CF, "friendly_name": id, "status": "in-progress"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{account}/Conferences/{CF}/Participants.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "participants": [{"call_sid": A, "conference_sid": CF, "label": "activist", "status": "connected"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{account}/Calls/{B}.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sid": B, "status": "ringing"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "{account}/Conferences/{id}/Participants.json"
        )))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"call_sid": B, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let signed = |route: &str, pairs: &[(&str, &str)]| {
        let p = format!("/v1/phone/{route}/{id}");
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            body.append_pair(k, v);
        }
        axum::http::Request::post(&p)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "x-twilio-signature",
                sign(TOKEN, &format!("{BASE}{p}"), &params),
            )
            .body(axum::body::Body::from(body.finish()))
            .unwrap()
    };
    for (route, pairs) in [
        (
            "status-callback",
            vec![("CallSid", A), ("CallStatus", "in-progress")],
        ),
        ("answer", vec![("CallSid", A)]),
        ("dial", vec![("CallSid", A), ("Digits", "1")]),
    ] {
        assert!(
            send(&r, signed(route, &pairs)).await.status().is_success(),
            "{route}"
        );
    }
    // Without the join, nothing dials the target.
    let v = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(v["state"], "connecting", "{v}");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = app.service.reconcile(10).await.unwrap();
    assert_eq!(report.conferences_fetched, 1, "{report:?}");
    assert_eq!(report.joins_recovered, 1, "{report:?}");
    // A second pass finds the target dialled: no listing, no second dial.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = app.service.reconcile(10).await.unwrap();
    assert_eq!(report.conferences_fetched, 0, "{report:?}");
    let v = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(v["legs"]["target"]["sid"], B, "{v}");
    assert_eq!(v["state"], "target_ringing", "{v}");
}

/// `TWILIO_CALLBACK_OVERRIDES` sets the fragment (empty: none); a malformed
/// value refuses to start.
#[tokio::test]
async fn callback_overrides_are_configurable() {
    for (setting, expected) in [("rc=3&rp=all", "#rc=3&rp=all"), ("", "")] {
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
            "--twilio-callback-overrides",
            setting,
        ])
        .await;
        let id = start(&router(&app), "11 91234-5678").await;
        let requests = server.received_requests().await.unwrap();
        let callback = form_urlencoded::parse(&requests[0].body)
            .into_owned()
            .find(|(k, _)| k == "StatusCallback")
            .unwrap()
            .1;
        assert_eq!(
            callback,
            format!("{BASE}/v1/phone/status-callback/{id}{expected}"),
            "{setting:?}"
        );
    }
    let config = bonde_pressure_http::config::Config::from_args([
        "bonde-pressure",
        "--database-url",
        "memory:",
        "--twilio-account-sid",
        AC,
        "--twilio-auth-token",
        TOKEN,
        "--twilio-phone-number",
        "+5511987650000",
        "--base-url",
        BASE,
        "--twilio-callback-overrides",
        "rc=2#x",
    ])
    .unwrap();
    let refused = bonde_pressure_http::wiring::build(&config).await;
    assert!(refused.is_err(), "malformed overrides refused at start-up");
}
