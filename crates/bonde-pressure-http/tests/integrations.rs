//! The wiring of BONDE's GraphQL (widgets and actions) and of the
//! reconciliation task.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn widgets_come_from_graphql_and_the_action_is_recorded_with_the_call_id() {
    let bonde = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-hasura-admin-secret", "hasura-secret"))
        .and(body_string_contains("widgets_by_pk"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"widgets_by_pk": {"id": 1, "kind": "phone", "settings": {
                "targets": [{"name": "Demo Target", "phone": "61 99999-0000"}]
            }}}
        })))
        // one lookup for the start; the simulated calls' scripts hit the cache
        .expect(1)
        .mount(&bonde)
        .await;
    Mock::given(method("POST"))
        .and(header("x-hasura-admin-secret", "hasura-secret"))
        .and(body_string_contains("create_widget_action"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"create_widget_action": {"data": {}}}})),
        )
        .expect(1)
        .mount(&bonde)
        .await;
    let uri = bonde.uri();
    let app = app_with(&[
        "--graphql-api-url",
        &uri,
        "--graphql-api-token",
        "hasura-secret",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    assert_eq!(
        poll_final(&r, &id, Duration::from_secs(10)).await,
        "completed"
    );

    let requests = bonde.received_requests().await.unwrap();
    let action = requests
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("create_widget_action"))
        .expect("action recorded");
    let body: serde_json::Value = serde_json::from_slice(&action.body).unwrap();
    assert_eq!(body["variables"]["input"]["custom_fields"]["call"], id);
    assert_eq!(body["variables"]["widget_id"], 1);
    assert_eq!(body["variables"]["activist"]["phone"], "+5511912345670");
    bonde.verify().await;
}

#[tokio::test]
async fn an_unreachable_directory_is_a_503_and_a_failing_recorder_does_not_fail_the_call() {
    let bonde = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&bonde)
        .await;
    let uri = bonde.uri();
    let app = app_with(&["--graphql-api-url", &uri, "--graphql-api-token", "t"]).await;
    let r = router(&app);
    let resp = send(&r, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_body(resp).await,
        json!({"detail": "Campaign directory unavailable. Try again later."})
    );
}

#[tokio::test]
async fn the_reconciliation_task_expires_calls_that_never_end() {
    let app = app_with(&[
        // the simulated world would take an hour per step
        "--simulated-tick",
        "3600000",
        "--stale-after",
        "0",
        "--expire-after",
        "0",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let v = json_body(send(&r, get(&format!("/v1/phone/status/{id}"))).await).await;
    assert_eq!(v["status"], "initiated");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = bonde_pressure_http::wiring::spawn_reconciler(
        app.service.clone(),
        app.state.metrics.clone(),
        Duration::from_millis(20),
        stop_rx,
    );
    assert_eq!(poll_final(&r, &id, Duration::from_secs(10)).await, "failed");
    let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(d["state"], "error");
    assert_eq!(d["expired"], true);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.state.metrics.get(
            bonde_pressure_http::metrics::RECONCILE,
            &[("what", "expired")]
        ) >= 1
    );
}
