//! Personal data over HTTP: the audit log of unmasked reads, erasure
//! requests (`DELETE /v1/phone/people`), and the retention task.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bonde_pressure_core::{AuditEntry, Privacy};
use bonde_pressure_http::metrics::{self, Metrics};
use bonde_pressure_http::privacy::{run_pass, spawn_retention, token_id};
use bonde_pressure_http::wiring::App;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-admin-token";

async fn admin_app() -> App {
    app_with(&["--admin-token", TOKEN]).await
}

fn privacy(app: &App) -> &Privacy {
    app.state.privacy.as_deref().expect("wired with privacy")
}

async fn audit(app: &App) -> Vec<AuditEntry> {
    privacy(app).store().audit_entries(100).await.unwrap()
}

fn details(id: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(format!("/v1/phone/calls/{id}"));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

fn erase(query: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::delete(format!("/v1/phone/people{query}"));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

/// A call that ended `completed` and is settled: the page's final status
/// can come before the legs' last callbacks, and a live call's erasure
/// waits for it to settle.
async fn finished_call(app: &App, phone: &str) -> String {
    let r = router(app);
    let id = start(&r, phone).await;
    assert_eq!(
        poll_final(&r, &id, Duration::from_secs(10)).await,
        "completed"
    );
    let call_id = id.parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let call = app.state.service.call(call_id).await.unwrap().unwrap();
        if call.is_settled() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "call never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    id
}

#[tokio::test]
async fn unmasked_reads_are_audited_and_masked_reads_are_not() {
    let app = admin_app().await;
    let r = router(&app);
    let id = finished_call(&app, "11 91234-5670").await;

    let v = json_body(send(&r, details(&id, None)).await).await;
    assert_eq!(v["unmasked"], false);
    assert!(audit(&app).await.is_empty(), "a masked read is not audited");

    let resp = send(&r, details(&id, Some("wrong"))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        audit(&app).await.is_empty(),
        "a refused read is not audited"
    );

    let v = json_body(send(&r, details(&id, Some(TOKEN))).await).await;
    assert_eq!(v["unmasked"], true);
    assert_eq!(v["activist"]["phone"], "+5511912345670");
    let entries = audit(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e.action, AuditEntry::READ_CALL);
    assert_eq!(e.call_id.map(|c| c.to_string()), Some(id.clone()));
    assert_eq!(e.actor, token_id(TOKEN));
    assert_eq!(e.detail.as_deref(), Some("GET /v1/phone/calls/{call_id}"));
    let text = format!("{entries:?}");
    assert!(
        !text.contains(TOKEN) && !text.contains("5511912345670"),
        "{text}"
    );
    assert!((chrono::Utc::now() - e.at).num_seconds().abs() < 60);

    // Every unmasked read is one entry.
    send(&r, details(&id, Some(TOKEN))).await;
    assert_eq!(audit(&app).await.len(), 2);
}

#[tokio::test]
async fn erasure_needs_the_admin_token() {
    let app = admin_app().await;
    let r = router(&app);
    for (token, detail) in [
        (None, "Not authenticated."),
        (Some("wrong"), "Invalid token."),
    ] {
        let resp = send(&r, erase("?phone=11912345670", token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_body(resp).await, json!({"detail": detail}));
    }
    // No token configured: every token is wrong.
    let open = common::app().await;
    let resp = send(&router(&open), erase("?phone=11912345670", Some(TOKEN))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(audit(&app).await.is_empty());
}

#[tokio::test]
async fn erasure_takes_exactly_one_valid_phone_or_email() {
    let app = admin_app().await;
    let r = router(&app);
    let cases: [(&str, Vec<Value>, &str); 6] = [
        (
            "",
            vec![json!(["query", "phone"]), json!(["query", "email"])],
            "missing",
        ),
        (
            "?foo=1",
            vec![json!(["query", "phone"]), json!(["query", "email"])],
            "missing",
        ),
        (
            "?phone=11912345670&email=ana%40example.org",
            vec![json!(["query"])],
            "value_error.exclusive",
        ),
        (
            "?phone=0800",
            vec![json!(["query", "phone"])],
            "value_error.phone",
        ),
        (
            "?email=not-an-email",
            vec![json!(["query", "email"])],
            "value_error.email",
        ),
        (
            "?phone=11912345670&phone=11912345671",
            vec![json!(["query", "phone"])],
            "value_error.duplicate",
        ),
    ];
    for (query, locs, kind) in cases {
        let items = validation_items(send(&r, erase(query, Some(TOKEN))).await).await;
        let got: Vec<Value> = items.iter().map(|i| i["loc"].clone()).collect();
        assert_eq!(got, locs, "{query}");
        assert!(
            items.iter().all(|i| i["type"] == kind),
            "{query}: {items:?}"
        );
    }
    assert!(
        audit(&app).await.is_empty(),
        "refused requests erase nothing"
    );
}

#[tokio::test]
async fn erasure_by_phone_erases_that_number_only_and_the_call_still_reads() {
    let app = admin_app().await;
    let r = router(&app);
    let mine = [
        finished_call(&app, "11 91234-5670").await,
        finished_call(&app, "+55 11 91234-5670").await,
    ];
    let other = finished_call(&app, "11 91234-5680").await;

    // National format, read in DEFAULT_REGION.
    let resp = send(&r, erase("?phone=(11)%2091234-5670", Some(TOKEN))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_body(resp).await;
    assert_eq!(v["erased_by"], "phone");
    assert_eq!(v["calls_erased"], 2);
    assert_eq!(v["calls_pending"], 0);
    assert!(v["events_deleted"].as_u64().unwrap() >= 20, "{v}");

    for id in &mine {
        // The page's status and the details still load.
        let s = json_body(send(&r, get(&format!("/v1/phone/status/{id}"))).await).await;
        assert_eq!(s["status"], "completed");
        let d = json_body(send(&r, details(id, Some(TOKEN))).await).await;
        assert_eq!(d["state"], "completed");
        assert_eq!(d["activist"]["name"], "[erased]");
        assert_eq!(d["activist"]["email"], "erased@erased.invalid");
        assert_eq!(d["activist"]["phone"], "+0");
        assert_eq!(d["target"]["phone"], "+5561999990000");
        assert_eq!(d["timeline"], json!([]));
        assert!(!d.to_string().contains("5511912345670"));
    }
    let d = json_body(send(&r, details(&other, Some(TOKEN))).await).await;
    assert_eq!(d["activist"]["phone"], "+5511912345680");
    assert!(!d["timeline"].as_array().unwrap().is_empty());

    // The erasure is audited (kind, counts; never the number), the reads
    // of erased calls are not (nothing personal shown), the other one is.
    let entries = audit(&app).await;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, [AuditEntry::READ_CALL, AuditEntry::ERASE_PERSON]);
    let erase_detail = entries[1].detail.clone().unwrap();
    assert!(
        erase_detail.starts_with("by phone: 2 calls erased"),
        "{erase_detail}"
    );
    assert!(!format!("{entries:?}").contains("91234"));

    // Again: nothing left.
    let v = json_body(send(&r, erase("?phone=11912345670", Some(TOKEN))).await).await;
    assert_eq!(
        (v["calls_erased"].clone(), v["events_deleted"].clone()),
        (json!(0), json!(0))
    );
}

#[tokio::test]
async fn erasure_by_email_is_case_insensitive() {
    let app = admin_app().await;
    let r = router(&app);
    let id = finished_call(&app, "11 91234-5670").await;
    let v = json_body(send(&r, erase("?email=ANA%40Example.org", Some(TOKEN))).await).await;
    assert_eq!(
        (v["erased_by"].clone(), v["calls_erased"].clone()),
        (json!("email"), json!(1))
    );
    let d = json_body(send(&r, details(&id, Some(TOKEN))).await).await;
    assert_eq!(d["activist"]["email"], "erased@erased.invalid");
}

#[tokio::test]
async fn a_call_in_progress_finishes_and_is_erased_by_the_next_pass() {
    let app = app_with(&["--admin-token", TOKEN, "--simulated-tick", "30"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let v = json_body(send(&r, erase("?phone=11912345670", Some(TOKEN))).await).await;
    assert_eq!(
        (v["calls_erased"].clone(), v["calls_pending"].clone()),
        (json!(0), json!(1))
    );
    // Not broken: it runs to its end with the activist's data intact.
    assert_eq!(
        poll_final(&r, &id, Duration::from_secs(20)).await,
        "completed"
    );
    let d = json_body(send(&r, details(&id, Some(TOKEN))).await).await;
    assert_eq!(d["activist"]["phone"], "+5511912345670");

    // Settled (the simulator's last callbacks may still be arriving).
    let metrics = Metrics::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        run_pass(privacy(&app), &metrics).await;
        let d = json_body(send(&r, details(&id, Some(TOKEN))).await).await;
        if d["activist"]["phone"] == "+0" {
            assert_eq!(d["state"], "completed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never erased: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metrics.get(metrics::RETENTION, &[("what", "calls_erased")]),
        1
    );
}

#[tokio::test]
async fn the_retention_task_runs_passes_until_stopped() {
    let app = admin_app().await;
    let metrics = std::sync::Arc::new(Metrics::new());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = spawn_retention(
        app.state.privacy.clone().unwrap(),
        metrics.clone(),
        Duration::from_millis(20),
        rx,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.get(metrics::RETENTION, &[("what", "passes")]) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no passes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test]
async fn retention_settings_come_from_the_configuration() {
    let app = app_with(&["--retention-days", "30", "--retention-batch", "7"]).await;
    let cfg = privacy(&app).config();
    assert_eq!(cfg.retention, chrono::TimeDelta::days(30));
    assert_eq!(cfg.batch, 7);
    assert_eq!(app.retention_interval, Duration::from_secs(3600));
    let config = bonde_pressure_http::config::Config::from_args(["x", "--retention-days", "0"]);
    assert!(config.is_err(), "zero days is refused");
}

/// An audit log that cannot be written.
struct BrokenAudit;

#[async_trait::async_trait]
impl bonde_pressure_core::PersonalDataStore for BrokenAudit {
    async fn retention_pass(
        &self,
        _: chrono::DateTime<chrono::Utc>,
        _: chrono::DateTime<chrono::Utc>,
        _: u32,
    ) -> Result<bonde_pressure_core::RetentionPass, bonde_pressure_core::StoreError> {
        Err(bonde_pressure_core::StoreError::backend(
            std::io::Error::other("down"),
        ))
    }
    async fn erase_person(
        &self,
        _: &bonde_pressure_core::PersonKey,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<bonde_pressure_core::ErasureReport, bonde_pressure_core::StoreError> {
        Err(bonde_pressure_core::StoreError::backend(
            std::io::Error::other("down"),
        ))
    }
    async fn append_audit(&self, _: &AuditEntry) -> Result<(), bonde_pressure_core::StoreError> {
        Err(bonde_pressure_core::StoreError::backend(
            std::io::Error::other("down"),
        ))
    }
    async fn audit_entries(
        &self,
        _: u32,
    ) -> Result<Vec<AuditEntry>, bonde_pressure_core::StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn no_audit_entry_no_unmasked_read() {
    let app = admin_app().await;
    let id = finished_call(&app, "11 91234-5670").await;
    let broken = std::sync::Arc::new(Privacy::new(
        std::sync::Arc::new(BrokenAudit),
        std::sync::Arc::new(bonde_pressure_core::SystemClock),
        bonde_pressure_core::RetentionConfig::default(),
    ));
    let r = bonde_pressure_http::router(app.state.clone().with_privacy(broken));
    let resp = send(&r, details(&id, Some(TOKEN))).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(
        !text.contains("5511912345670") && !text.contains("ana@"),
        "{text}"
    );
    // The masked view does not need the audit log.
    let resp = send(&r, details(&id, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Without an audit log at all: 503 for unmasked reads and erasures.
    let mut state = app.state.clone();
    state.privacy = None;
    let r = bonde_pressure_http::router(state);
    assert_eq!(
        send(&r, details(&id, Some(TOKEN))).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&r, erase("?phone=11912345670", Some(TOKEN)))
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_results_csv_export_is_audited_and_shows_erased_calls_as_placeholders() {
    let app = admin_app().await;
    let r = router(&app);
    finished_call(&app, "11 91234-5670").await;
    let csv = |token: &str| {
        Request::get("/v1/phone/widgets/1/calls.csv")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&r, csv("wrong")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(audit(&app).await.is_empty());
    let resp = send(&r, csv(TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(text.contains("5511912345670"), "{text}");
    let entries = audit(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].action, AuditEntry::EXPORT_CALLS);
    assert_eq!(entries[0].actor, token_id(TOKEN));
    assert!(
        entries[0].detail.as_deref().unwrap().contains("widget 1"),
        "{entries:?}"
    );

    send(&r, erase("?phone=11912345670", Some(TOKEN))).await;
    let text = String::from_utf8(body_bytes(send(&r, csv(TOKEN)).await).await).unwrap();
    assert!(
        !text.contains("5511912345670") && !text.contains("ana@"),
        "{text}"
    );
    assert!(text.contains("[erased]"), "{text}");
}
