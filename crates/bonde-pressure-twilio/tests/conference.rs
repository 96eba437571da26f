//! Listing the call's conference (reconciliation's evidence of a lost join)
//! against a wiremock Twilio: one server per test; method, path, Basic auth
//! and query asserted; 4xx/5xx mapped.

use std::time::Duration;

use base64::Engine as _;
use bonde_pressure_core::ports::ParticipantSnapshot;
use bonde_pressure_core::{
    CallId, ConferenceId, Leg, LegId, PhoneNumber, Telephony, TelephonyError,
};
use bonde_pressure_twilio::{Credentials, RetryPolicy, TwilioClient, TwilioConfig};
use serde_json::json;
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token";
const A: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CF: &str = "CFcccccccccccccccccccccccccccccccc";

fn call_id() -> CallId {
    "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".parse().unwrap()
}

fn client(server: &MockServer) -> TwilioClient {
    let config = TwilioConfig::new(
        AC,
        Credentials::AuthToken(TOKEN.into()),
        PhoneNumber::parse_e164("+551140028922").unwrap(),
        "https://pressure.example.org",
    )
    .unwrap()
    .with_api_base(&server.uri())
    .unwrap()
    .with_request_timeout(Duration::from_secs(5))
    .with_retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
        retry_unsafe_timeouts: false,
    });
    TwilioClient::new(config).unwrap()
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{AC}:{TOKEN}"))
    )
}

/// A GET of `p` with our Basic auth and no body.
fn get(p: String) -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(p))
        .and(header("authorization", basic().as_str()))
        .and(body_string(""))
}

fn participants_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Conferences/{CF}/Participants.json")
}

/// The lookup of the call's live conference by friendly name.
fn by_name() -> MockBuilder {
    get(format!("/2010-04-01/Accounts/{AC}/Conferences.json"))
        .and(query_param("FriendlyName", call_id().to_string()))
        .and(query_param("Status", "in-progress"))
}

fn participant(call_sid: &str, label: Option<&str>, status: &str) -> serde_json::Value {
    json!({
        "account_sid": AC,
        "call_sid": call_sid,
        "conference_sid": CF,
        "label": label,
        "status": status,
        "muted": false,
        "hold": false,
    })
}

fn sid(s: &str) -> LegId {
    s.parse().unwrap()
}

fn cf() -> ConferenceId {
    CF.parse().unwrap()
}

#[tokio::test]
async fn a_known_conference_lists_its_participants() {
    let server = MockServer::start().await;
    get(participants_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "participants": [
                participant(A, Some("activist"), "connected"),
                participant(B, Some("target"), "ringing"),
            ],
            "page": 0,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let snapshot = client(&server)
        .conference_participants(call_id(), Some(cf()))
        .await
        .unwrap()
        .expect("a live conference");
    assert_eq!(snapshot.conference_id, cf());
    assert_eq!(
        snapshot.participants,
        [
            ParticipantSnapshot::new(sid(A), Some(Leg::Activist), true),
            ParticipantSnapshot::new(sid(B), Some(Leg::Target), false),
        ]
    );
    // No lookup by name when the SID is known.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unknown_conference_is_found_by_friendly_name() {
    let server = MockServer::start().await;
    by_name()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "conferences": [{"sid": CF, "friendly_name": call_id().to_string(), "status": "in-progress"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    get(participants_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            // The activist joins through TwiML; no label when none was set.
            "participants": [participant(A, None, "connected")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let snapshot = client(&server)
        .conference_participants(call_id(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.conference_id, cf());
    assert_eq!(
        snapshot.participants,
        [ParticipantSnapshot::new(sid(A), None, true)]
    );
}

#[tokio::test]
async fn no_conference_in_progress_is_none() {
    let server = MockServer::start().await;
    by_name()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"conferences": []})))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server)
            .conference_participants(call_id(), None)
            .await
            .unwrap(),
        None
    );
    // The participants were not asked for.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_conference_twilio_does_not_know_is_none() {
    let server = MockServer::start().await;
    get(participants_path())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "code": 20404, "message": "The requested resource was not found", "status": 404,
        })))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server)
            .conference_participants(call_id(), Some(cf()))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn auth_failures_are_reported_not_retried() {
    let server = MockServer::start().await;
    by_name()
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": 20003, "message": "Authenticate", "status": 401,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .conference_participants(call_id(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Auth { .. }), "{e:?}");
}

#[tokio::test]
async fn server_errors_are_retried_then_unavailable() {
    let server = MockServer::start().await;
    get(participants_path())
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "code": 20500, "message": "Internal Server Error", "status": 500,
        })))
        .expect(3)
        .mount(&server)
        .await;
    let e = client(&server)
        .conference_participants(call_id(), Some(cf()))
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_malformed_listing_is_unavailable_not_a_panic() {
    for body in [
        json!({"participants": [{"call_sid": "nonsense", "status": "connected"}]}),
        json!({"participants": "nope"}),
        json!([1, 2]),
    ] {
        let server = MockServer::start().await;
        get(participants_path())
            .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let e = client(&server)
            .conference_participants(call_id(), Some(cf()))
            .await
            .unwrap_err();
        assert!(
            matches!(e, TelephonyError::Unavailable { .. }),
            "{body}: {e:?}"
        );
    }
}
