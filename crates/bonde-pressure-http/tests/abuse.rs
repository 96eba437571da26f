//! Issue 8's reproductions through the HTTP API: the number policy, the
//! do-not-call list, the caps, and the bearer scheme.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bonde_pressure_core::simulated::TelephonyCommand;
use common::*;
use serde_json::{Value, json};

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn webhook(route: &str, id: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    Request::post(format!("/v1/phone/{route}/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form(pairs)))
        .unwrap()
}

fn kinds(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| {
            let loc: Vec<String> = i["loc"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    l.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| l.to_string())
                })
                .collect();
            (loc.join("."), i["type"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn calls_placed(app: &bonde_pressure_http::wiring::App) -> usize {
    app.simulated
        .as_ref()
        .unwrap()
        .commands()
        .iter()
        .filter(|c| matches!(c, TelephonyCommand::CallActivist(_)))
        .count()
}

/// Reproduction 1: `0900` numbers are refused as premium rate
/// (`value_error.phone.type`; they also do not read back as themselves), and a row stored by the old parser still loads: status,
/// details and reconciliation work.
#[tokio::test]
async fn premium_0900_numbers_are_refused_and_an_old_row_still_loads() {
    let app = app_with(&[
        "--database-url",
        "sqlite::memory:",
        "--simulated-tick",
        "3600000",
        "--webhook-signature-check",
        "false",
        // Every unfinished row is stale at once, so reconciliation examines it.
        "--stale-after",
        "0",
    ])
    .await;
    let r = router(&app);
    for phone in [
        "0900 123 4567",
        "0900-123-4567",
        "(0900) 123 4567",
        "09001234567",
        "+55 0900 123 4567",
    ] {
        let resp = send(&r, post_call(&front_end_body(phone))).await;
        let items = validation_items(resp).await;
        assert_eq!(
            kinds(&items),
            [(
                "body.activist.phone".to_string(),
                "value_error.phone.type".to_string()
            )],
            "{phone}"
        );
        assert!(
            items[0]["msg"]
                .as_str()
                .is_some_and(|m| m.contains("premium-rate")),
            "{phone}: {items:?}"
        );
    }
    assert_eq!(calls_placed(&app), 0, "nothing was called");

    // A row the old parser stored (`+559001234567`): it loads.
    let v = json_body(send(&r, post_call(&front_end_body("11 91234-5670"))).await).await;
    let id = v["call_id"].as_str().unwrap().to_owned();
    let sid = v["twilio_call_sid"].as_str().unwrap().to_owned();
    store_an_old_number(&app, &id).await;
    // Reconciliation reads the unfinished row with the old number.
    let report = app
        .service
        .reconcile(10)
        .await
        .expect("a reconciliation pass");
    assert_eq!(report.examined, 1, "{report:?}");
    assert_eq!(report.unreadable, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let resp = send(&r, get(&format!("/v1/phone/status/{id}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(&r, get(&format!("/v1/phone/calls/{id}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_body(resp).await;
    assert_eq!(v["activist"]["phone"], "+5590****4567");
    let resp = send(
        &r,
        webhook(
            "status-callback",
            &id,
            &[("CallSid", &sid), ("CallStatus", "busy")],
        ),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let report = app
        .service
        .reconcile(10)
        .await
        .expect("a reconciliation pass");
    assert_eq!((report.unreadable, report.errors), (0, 0), "{report:?}");
}

/// Replaces the call's activist number by the one the old parser stored,
/// through the store's own API (a commit of the call with that number).
async fn store_an_old_number(app: &bonde_pressure_http::wiring::App, id: &str) {
    let id: bonde_pressure_core::CallId = id.parse().unwrap();
    let store = app.service.store();
    let mut call = store.get(id).await.unwrap().unwrap();
    call.activist.phone =
        bonde_pressure_core::PhoneNumber::from_trusted_e164("+559001234567").unwrap();
    store.commit(&call, &[]).await.unwrap();
    let reloaded = store.get(id).await.unwrap().unwrap();
    assert_eq!(reloaded.activist.phone.as_e164(), "+559001234567");
}

/// Reproduction 2: costly types, non-geographic codes (even with `*`),
/// letters and a repeated `+` are refused with a field error.
#[tokio::test]
async fn costly_numbers_and_junk_are_refused() {
    let app = app_with(&["--simulated-tick", "3600000"]).await;
    let r = router(&app);
    for (phone, kind) in [
        ("0800 123 4567", "value_error.phone.type"),
        ("0300 123 4567", "value_error.phone.type"),
        ("0303 123 4567", "value_error.phone.type"),
        ("3003 1234", "value_error.phone.type"),
        ("4003 1234", "value_error.phone.type"),
        ("4004 1234", "value_error.phone.type"),
        ("0500 123 4567", "value_error.phone.type"),
        ("11 9123A-5678", "value_error.phone"),
        ("++5511912345678", "value_error.phone"),
    ] {
        let items = validation_items(send(&r, post_call(&front_end_body(phone))).await).await;
        assert_eq!(
            kinds(&items),
            [("body.activist.phone".to_string(), kind.to_string())],
            "{phone}"
        );
        assert!(!items[0]["msg"].as_str().unwrap().is_empty());
    }
    let items = validation_items(send(&r, post_call(&front_end_body("0800 123 4567"))).await).await;
    assert!(
        items[0]["msg"].as_str().unwrap().contains("toll-free"),
        "{items:?}"
    );

    let app = app_with(&[
        "--allowed-country-codes",
        "*",
        "--simulated-tick",
        "3600000",
    ])
    .await;
    let r = router(&app);
    for (phone, kind) in [
        ("+881 612345678", "value_error.phone.country"),
        ("+882 3421234", "value_error.phone.country"),
        ("+870 301234567", "value_error.phone.country"),
        ("+351 760 123 456", "value_error.phone.type"),
        ("+33 8 91 12 34 56", "value_error.phone.type"),
    ] {
        let items = validation_items(send(&r, post_call(&front_end_body(phone))).await).await;
        assert_eq!(
            kinds(&items),
            [("body.activist.phone".to_string(), kind.to_string())],
            "{phone}"
        );
    }
    assert_eq!(calls_placed(&app), 0);

    // Listed explicitly, a non-geographic code is allowed.
    let app = app_with(&[
        "--allowed-country-codes",
        "55,881",
        "--simulated-tick",
        "3600000",
    ])
    .await;
    let r = router(&app);
    start(&r, "+881 612345678").await;
}

/// Reproduction 3: the activist presses 9 during the greeting, hears goodbye,
/// and is never called again; the list is also fed by the admin API.
#[tokio::test]
async fn pressing_9_puts_the_number_on_the_do_not_call_list() {
    let app = app_with(&[
        "--webhook-signature-check",
        "false",
        "--simulated-tick",
        "3600000",
        "--admin-token",
        "tok",
    ])
    .await;
    let r = router(&app);
    let resp = send(&r, post_call(&front_end_body("11 91234-5670"))).await;
    let v = json_body(resp).await;
    let id = v["call_id"].as_str().unwrap().to_owned();
    let sid = v["twilio_call_sid"].as_str().unwrap().to_owned();

    let resp = send(
        &r,
        webhook(
            "answer",
            &id,
            &[("CallSid", &sid), ("CallStatus", "in-progress")],
        ),
    )
    .await;
    let xml = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(xml.contains("aperte 9"), "{xml}");

    let resp = send(
        &r,
        webhook("dial", &id, &[("CallSid", &sid), ("Digits", "9")]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(
        !xml.contains("<Conference"),
        "9 is not a confirmation: {xml}"
    );
    assert!(
        xml.contains("não receberá mais") && xml.contains("<Hangup"),
        "{xml}"
    );
    let v = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(v["opted_out"], true);
    assert_eq!(v["confirmed"], false);

    let placed = calls_placed(&app);
    let items =
        validation_items(send(&r, post_call(&front_end_body("+55 11 91234-5670"))).await).await;
    assert_eq!(
        kinds(&items),
        [(
            "body.activist.phone".to_string(),
            "value_error.phone.do_not_call".to_string()
        )]
    );
    assert_eq!(calls_placed(&app), placed, "not called again");

    // The admin API: a token is required.
    let feed = |auth: Option<&str>, body: Value| {
        let mut req =
            Request::post("/v1/phone/do-not-call").header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(Body::from(body.to_string())).unwrap()
    };
    let body = json!({"phones": ["11 91234-5671", "+5511912345670"]});
    assert_eq!(
        send(&r, feed(None, body.clone())).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&r, feed(Some("Bearer nope"), body.clone()))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = send(&r, feed(Some("bearer tok"), body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        json_body(resp).await,
        json!({"added": 1, "already_listed": 1})
    );
    let items = validation_items(
        send(
            &r,
            feed(
                Some("Bearer tok"),
                json!({"phones": ["+5511912345672", "call me"]}),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(
        kinds(&items),
        [("body.phones.1".to_string(), "value_error.phone".to_string())]
    );
    let items = validation_items(send(&r, post_call(&front_end_body("11 91234-5671"))).await).await;
    assert_eq!(items[0]["type"], "value_error.phone.do_not_call");
}

/// The operator's file feeds the list at start-up.
#[tokio::test]
async fn the_do_not_call_file_is_loaded_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnc.txt");
    std::fs::write(&path, "# asked by e-mail\n+5511912345673\n").unwrap();
    let app = app_with(&[
        "--do-not-call-file",
        path.to_str().unwrap(),
        "--do-not-call-hash-key",
        "a secret",
    ])
    .await;
    let r = router(&app);
    let items = validation_items(send(&r, post_call(&front_end_body("11 91234-5673"))).await).await;
    assert_eq!(items[0]["type"], "value_error.phone.do_not_call");
    start(&r, "11 91234-5674").await;
}

/// Reproduction 3: one number is called at most N times a day, whoever asks
/// (different IPs, no per-activist request limit).
#[tokio::test]
async fn an_activist_number_is_called_at_most_n_times_a_day() {
    let app = app_with(&[
        "--activist-calls-per-day",
        "3",
        "--simulated-tick",
        "3600000",
    ])
    .await;
    let r = router(&app);
    for _ in 0..3 {
        start(&r, "11 91234-5670").await;
    }
    let resp = send(&r, post_call(&front_end_body("(11) 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((86_000..=86_400).contains(&retry), "{retry}");
    assert_eq!(calls_placed(&app), 3);
}

/// The daily cap is counted in the database: a restarted server (or another
/// replica) on the same database still refuses the number.
#[tokio::test]
async fn the_daily_cap_is_kept_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calls.db").display());
    let args = [
        "--database-url",
        url.as_str(),
        "--activist-calls-per-day",
        "2",
        "--simulated-tick",
        "3600000",
    ];
    let first = app_with(&args).await;
    for _ in 0..2 {
        start(&router(&first), "11 91234-5670").await;
    }
    drop(first);
    let restarted = app_with(&args).await;
    let resp = send(
        &router(&restarted),
        post_call(&front_end_body("11 91234-5670")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls_placed(&restarted), 0);
    // Another number is not affected.
    start(&router(&restarted), "11 91234-5672").await;
}

/// Reproduction 4: 30 requests with made-up activists, never confirmed, do
/// not lock the target out; the target's budget goes only on real dials.
#[tokio::test]
async fn unconfirmed_requests_do_not_lock_a_target_out() {
    let app = app_with(&[
        "--rate-limit-per-target",
        "2/h",
        "--simulated-tick",
        "3600000",
    ])
    .await;
    let r = router(&app);
    for i in 0..30 {
        start(&r, &format!("11 91234-56{i:02}")).await;
    }
    // A real activist still gets through.
    start(&r, "11 98765-4320").await;
}

#[tokio::test]
async fn a_target_is_charged_when_dialled_not_when_requested() {
    let app = app_with(&["--rate-limit-per-target", "1/h"]).await;
    let r = router(&app);
    // Ends in 0: the success scenario (confirmed, target dialled).
    let id = start(&r, "11 91234-5680").await;
    assert_eq!(
        poll_final(&r, &id, Duration::from_secs(10)).await,
        "completed"
    );
    let resp = send(&r, post_call(&front_end_body("11 91234-5690"))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Reproduction 5: the bearer scheme is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = app_with(&["--admin-token", "s3cret", "--simulated-tick", "3600000"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = Request::get(format!("/v1/phone/calls/{id}"))
            .header("authorization", format!("{scheme} s3cret"))
            .body(Body::empty())
            .unwrap();
        let resp = send(&r, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
        let v = json_body(resp).await;
        assert_eq!(v["activist"]["phone"], "+5511912345670", "{scheme}");
    }
    for bad in ["Basic s3cret", "Bearers3cret", "s3cret", "Bearer wrong"] {
        let req = Request::get(format!("/v1/phone/calls/{id}"))
            .header("authorization", bad)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&r, req).await.status(),
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
}
