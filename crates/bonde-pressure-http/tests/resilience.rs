//! Failures below the HTTP layer: a store that fails or keeps conflicting,
//! a dependency that panics. Webhook payloads must be stored exactly once
//! whatever the outcome, and nothing answers anything but JSON.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bonde_pressure_core::ports::{DirectoryError, StoredEvent, Widget};
use bonde_pressure_core::simulated::TelephonyCommand;
use bonde_pressure_core::{
    Call, CallId, CallStore, CampaignDirectory, Dependencies, InMemoryCallStore,
    NoopActionRecorder, PressureService, RawEvent, ScenarioPicker, ServiceConfig,
    SimulatedTelephony, StaticCampaignDirectory, StoreError, SystemClock, WidgetId,
};
use bonde_pressure_http::{AppState, SignatureCheck, WebhookAuth};
use chrono::{DateTime, Utc};
use common::{body_bytes, front_end_body, json_body, post_call, send};
use serde_json::json;

/// What the next commits do.
#[derive(Debug, Clone, Copy)]
enum Next {
    Succeed,
    Fail,
    Conflict,
}

/// The in-memory store, whose commits can be told to fail or conflict.
struct FlakyStore {
    inner: InMemoryCallStore,
    plan: Mutex<VecDeque<Next>>,
}

impl FlakyStore {
    fn new() -> Self {
        Self {
            inner: InMemoryCallStore::new(),
            plan: Mutex::new(VecDeque::new()),
        }
    }

    fn then(&self, next: impl IntoIterator<Item = Next>) {
        self.plan.lock().unwrap().extend(next);
    }
}

#[async_trait]
impl CallStore for FlakyStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        self.inner.get(id).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let next = self.plan.lock().unwrap().pop_front();
        match next.unwrap_or(Next::Succeed) {
            Next::Succeed => self.inner.commit(call, events).await,
            Next::Fail => Err(StoreError::backend(std::io::Error::other("disk on fire"))),
            Next::Conflict => Err(StoreError::Conflict),
        }
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        self.inner.append_events(call_id, events).await
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(call_id).await
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.inner.list_unfinished(updated_before, limit).await
    }
}

struct Fixture {
    router: Router,
    store: Arc<FlakyStore>,
    telephony: Arc<SimulatedTelephony>,
}

/// A service on the flaky store and a simulated telephony that plays nothing
/// back (the test delivers every callback), webhooks unsigned.
fn fixture(directory: Arc<dyn CampaignDirectory>) -> Fixture {
    let store = Arc::new(FlakyStore::new());
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::ByActivistLastDigit,
        std::time::Duration::ZERO,
    ));
    let service = PressureService::new(
        Dependencies::new(store.clone(), telephony.clone(), directory)
            .with_recorder(Arc::new(NoopActionRecorder))
            .with_clock(Arc::new(SystemClock)),
        ServiceConfig::default().with_max_commit_attempts(3),
    );
    let state = AppState::new(Arc::new(service)).with_webhooks(
        WebhookAuth::new("http://localhost", SignatureCheck::Off).expect("base URL"),
    );
    Fixture {
        router: bonde_pressure_http::router(state),
        store,
        telephony,
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn deliver(r: &Router, route: &str, id: &str, body: &str) -> StatusCode {
    let req = Request::post(format!("/v1/phone/{route}/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = send(r, req).await;
    let status = resp.status();
    if status.is_server_error() {
        // 5xx bodies are generic, whatever the cause.
        let v = json_body(resp).await;
        assert!(
            v == json!({"detail": "Internal server error."})
                || v == json!({"detail": "Busy. Try again."})
                || v == json!({"detail": "Service temporarily unavailable. Try again later."}),
            "{v}"
        );
    } else {
        body_bytes(resp).await;
    }
    status
}

/// Starts a call; returns its id and the activist's SID.
async fn start(r: &Router) -> (String, String) {
    let resp = send(r, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_body(resp).await;
    (
        v["call_id"].as_str().unwrap().to_owned(),
        v["twilio_call_sid"].as_str().unwrap().to_owned(),
    )
}

/// How many times the call's event log holds this payload.
async fn stored(store: &FlakyStore, id: &str, payload: &str) -> usize {
    let id: CallId = id.parse().unwrap();
    store
        .events(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.raw.payload == payload)
        .count()
}

#[tokio::test]
async fn a_payload_whose_commit_fails_is_still_stored_once() {
    let f = fixture(Arc::new(StaticCampaignDirectory::demo()));
    let (id, a) = start(&f.router).await;
    let body = form(&[("CallSid", &a), ("CallStatus", "ringing")]);
    f.store.then([Next::Fail]);
    // A backend failure is the store being unavailable: 503, not a 500.
    assert_eq!(
        deliver(&f.router, "status-callback", &id, &body).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(stored(&f.store, &id, &body).await, 1);

    // The same for a TwiML route, which answers the fallback TwiML.
    let body = form(&[("CallSid", &a), ("CallStatus", "in-progress")]);
    f.store.then([Next::Fail]);
    assert_eq!(
        deliver(&f.router, "answer", &id, &body).await,
        StatusCode::OK
    );
    assert_eq!(stored(&f.store, &id, &body).await, 1);

    // Twilio's retry is applied and stored with its commit.
    assert_eq!(
        deliver(&f.router, "answer", &id, &body).await,
        StatusCode::OK
    );
    assert_eq!(stored(&f.store, &id, &body).await, 2);
}

#[tokio::test]
async fn a_payload_lost_to_contention_is_stored_once() {
    let f = fixture(Arc::new(StaticCampaignDirectory::demo()));
    let (id, a) = start(&f.router).await;
    let body = form(&[("CallSid", &a), ("CallStatus", "ringing")]);
    f.store.then([Next::Conflict; 3]);
    assert_eq!(
        deliver(&f.router, "status-callback", &id, &body).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Stored unapplied (by the core), not a second time here.
    assert_eq!(stored(&f.store, &id, &body).await, 1);

    // A TwiML route answers the fallback (an apology, then hang up), not an
    // error Twilio would read out as "application error".
    let body = form(&[("CallSid", &a), ("CallStatus", "in-progress")]);
    f.store.then([Next::Conflict; 3]);
    let resp = send(
        &f.router,
        Request::post(format!("/v1/phone/answer/{id}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(
        xml.contains("<Say") && xml.ends_with("<Hangup/></Response>") && !xml.contains("<Gather"),
        "{xml}"
    );
    assert_eq!(stored(&f.store, &id, &body).await, 1);
}

#[tokio::test]
async fn a_payload_committed_before_a_follow_up_fails_is_not_stored_twice() {
    let f = fixture(Arc::new(StaticCampaignDirectory::demo()));
    let (id, a) = start(&f.router).await;
    let cf = "CFcccccccccccccccccccccccccccccccc";
    for (route, body) in [
        (
            "status-callback",
            form(&[("CallSid", &a), ("CallStatus", "in-progress")]),
        ),
        ("answer", form(&[("CallSid", &a)])),
        // No `conference-start`: it would be the first evidence of the
        // activist in the conference, and dial the target itself.
        ("dial", form(&[("CallSid", &a), ("Digits", "1")])),
    ] {
        assert!(
            deliver(&f.router, route, &id, &body).await.is_success(),
            "{route}"
        );
    }
    // The activist joins: committed with its payload, then the target is
    // dialled and recording that (a second commit) fails.
    let join = form(&[
        ("StatusCallbackEvent", "participant-join"),
        ("ConferenceSid", cf),
        ("CallSid", &a),
        ("ParticipantLabel", "activist"),
    ]);
    f.store.then([Next::Succeed, Next::Fail]);
    assert_eq!(
        deliver(&f.router, "conference-status-callback", &id, &join).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        f.telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::AddTarget(_))),
        "the follow-up commit was reached"
    );
    assert_eq!(stored(&f.store, &id, &join).await, 1);
}

#[tokio::test]
async fn unknown_calls_keep_their_payload_once() {
    let f = fixture(Arc::new(StaticCampaignDirectory::demo()));
    let unknown = CallId::new();
    let body = form(&[
        ("CallSid", "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("CallStatus", "busy"),
    ]);
    assert_eq!(
        deliver(&f.router, "status-callback", &unknown.to_string(), &body).await,
        StatusCode::NOT_FOUND
    );
    // Stored once, without a call.
    let copies = f
        .store
        .inner
        .all_events()
        .into_iter()
        .filter(|e| e.raw.payload == body)
        .count();
    assert_eq!(copies, 1);
}

/// A directory that panics (a bug in a dependency).
struct PanickingDirectory;

#[async_trait]
impl CampaignDirectory for PanickingDirectory {
    async fn widget(&self, _id: WidgetId) -> Result<Option<Widget>, DirectoryError> {
        panic!("bug with a secret in its message")
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_the_generic_json_500() {
    let f = fixture(Arc::new(PanickingDirectory));
    let resp = send(&f.router, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert_eq!(text, r#"{"detail":"Internal server error."}"#);
    // The service keeps serving.
    let resp = send(&f.router, common::get("/healthz")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
