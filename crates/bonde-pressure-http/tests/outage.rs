//! Fail fast while the store is unavailable: a store whose operations hang
//! (a database holding a connection that never answers) and one whose
//! operations fail (a database that is down). JSON routes answer 503 with
//! `Retry-After` within the per-request deadline, callbacks 503, TwiML
//! routes valid fallback TwiML in the campaign's voice; the payloads are
//! stored once the store answers again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};

use bonde_pressure_core::ports::StoredEvent;
use bonde_pressure_core::{
    Call, CallId, CallStore, Clock, Dependencies, InMemoryCallStore, ManualClock,
    NoopActionRecorder, PressureService, RawEvent, ScenarioPicker, ServiceConfig,
    SimulatedTelephony, StaticCampaignDirectory, StoreError, SystemClock,
};
use bonde_pressure_http::deadline::DeadlineStore;
use bonde_pressure_http::{AppState, HttpOptions, SignatureCheck, WebhookAuth};
use chrono::{DateTime, Utc};
use common::{body_bytes, front_end_body, json_body, post_call, send};
use serde_json::json;

const WORKING: u8 = 0;
const HANGING: u8 = 1;
const FAILING: u8 = 2;

/// The in-memory store, switchable to hang or fail on every operation.
struct OutageStore {
    inner: InMemoryCallStore,
    mode: AtomicU8,
}

impl OutageStore {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    async fn gate(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            HANGING => std::future::pending().await,
            FAILING => Err(StoreError::backend(std::io::Error::other(
                "connection refused",
            ))),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl CallStore for OutageStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        self.gate().await?;
        self.inner.get(id).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        self.gate().await?;
        self.inner.commit(call, events).await
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.append_events(call_id, events).await
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        self.gate().await?;
        self.inner.events(call_id).await
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.gate().await?;
        self.inner.list_unfinished(updated_before, limit).await
    }
}

const DEADLINE: Duration = Duration::from_millis(300);
const VOICE: &str = "Polly.Vitoria";
const LANGUAGE: &str = "pt-PT";
const APOLOGY: &str = "Pedimos desculpa: tente mais tarde.";

struct Fixture {
    router: Router,
    store: Arc<OutageStore>,
    state: AppState,
}

/// The demo widget with its own voice and apology; the store behind the
/// deadline (as `wiring::build` installs it); webhooks unsigned.
fn fixture() -> Fixture {
    fixture_with(ServiceConfig::default())
}

fn fixture_with(config: ServiceConfig) -> Fixture {
    fixture_on(config, Arc::new(SystemClock))
}

fn fixture_on(config: ServiceConfig, clock: Arc<dyn Clock>) -> Fixture {
    let store = Arc::new(OutageStore {
        inner: InMemoryCallStore::new(),
        mode: AtomicU8::new(WORKING),
    });
    let mut widget = bonde_pressure_core::demo_widget();
    widget.settings.voice = VOICE.into();
    widget.settings.language = LANGUAGE.into();
    widget.settings.messages.unavailable = APOLOGY.into();
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(DeadlineStore::new(store.clone())),
            Arc::new(SimulatedTelephony::new(
                ScenarioPicker::ByActivistLastDigit,
                Duration::ZERO,
            )),
            Arc::new(StaticCampaignDirectory::new([widget])),
        )
        .with_recorder(Arc::new(NoopActionRecorder))
        .with_clock(clock),
        config,
    );
    let state = AppState::new(Arc::new(service))
        .with_options(HttpOptions {
            request_timeout: DEADLINE,
            ..HttpOptions::default()
        })
        .with_webhooks(
            WebhookAuth::new("http://localhost", SignatureCheck::Off).expect("base URL"),
        );
    Fixture {
        router: bonde_pressure_http::router(state.clone()),
        store,
        state,
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn webhook(route: &str, id: &str, body: &str) -> Request<Body> {
    Request::post(format!("/v1/phone/{route}/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// Asserts the 503 shape: `Retry-After`, `{"detail": "..."}`.
async fn assert_unavailable(resp: axum::http::Response<Body>, what: &str) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(resp.headers()["retry-after"], "5", "{what}");
    assert_eq!(resp.headers()["content-type"], "application/json", "{what}");
    assert_eq!(
        json_body(resp).await,
        json!({"detail": "Service temporarily unavailable. Try again later."}),
        "{what}"
    );
}

/// Parses fallback TwiML: one `<Say>` with this voice and language, then `<Hangup/>`.
fn assert_fallback_twiml(xml: &str, voice: &str, language: &str, text: &str) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response", "{xml}");
    let verbs: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(verbs.len(), 2, "{xml}");
    assert_eq!(verbs[0].tag_name().name(), "Say", "{xml}");
    assert_eq!(verbs[0].attribute("voice"), Some(voice), "{xml}");
    assert_eq!(verbs[0].attribute("language"), Some(language), "{xml}");
    assert_eq!(verbs[0].text(), Some(text), "{xml}");
    assert_eq!(verbs[1].tag_name().name(), "Hangup", "{xml}");
}

async fn start(f: &Fixture) -> (String, String) {
    let resp = send(&f.router, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_body(resp).await;
    (
        v["call_id"].as_str().unwrap().to_owned(),
        v["twilio_call_sid"].as_str().unwrap().to_owned(),
    )
}

/// Copies of `payload` in the store, once it answers.
fn copies(store: &OutageStore, payload: &str) -> usize {
    store
        .inner
        .all_events()
        .iter()
        .filter(|e| e.raw.payload == payload)
        .count()
}

async fn each_route_fails_fast(mode: u8) {
    let f = fixture();
    let (id, sid) = start(&f).await;
    f.store.set(mode);
    let limit = DEADLINE + Duration::from_secs(2);

    // JSON routes: 503 + Retry-After, within the deadline.
    for path in [
        format!("/v1/phone/status/{id}"),
        format!("/v1/phone/calls/{id}"),
        format!("/v1/phone/calls/{id}/events"),
    ] {
        let t = Instant::now();
        let resp = send(&f.router, common::get(&path)).await;
        assert!(t.elapsed() < limit, "{path} took {:?}", t.elapsed());
        assert_unavailable(resp, &path).await;
    }
    let t = Instant::now();
    let resp = send(&f.router, post_call(&front_end_body("11 91234-5671"))).await;
    assert!(t.elapsed() < limit, "start took {:?}", t.elapsed());
    assert_unavailable(resp, "POST /v1/phone/call").await;

    // A callback: 503 + Retry-After.
    let callback = form(&[("CallSid", &sid), ("CallStatus", "ringing")]);
    let t = Instant::now();
    let resp = send(&f.router, webhook("status-callback", &id, &callback)).await;
    assert!(t.elapsed() < limit, "callback took {:?}", t.elapsed());
    assert_unavailable(resp, "status-callback").await;

    // TwiML routes: the campaign's apology, then hang up.
    let mut twiml_payloads = Vec::new();
    for (route, body) in [
        (
            "answer",
            form(&[("CallSid", &sid), ("CallStatus", "in-progress")]),
        ),
        ("dial", form(&[("CallSid", &sid), ("Digits", "1")])),
        (
            "after-dial",
            form(&[("CallSid", &sid), ("DialCallStatus", "completed")]),
        ),
    ] {
        let t = Instant::now();
        let resp = send(&f.router, webhook(route, &id, &body)).await;
        assert!(t.elapsed() < limit, "{route} took {:?}", t.elapsed());
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
        assert_eq!(
            resp.headers()["content-type"],
            "text/xml; charset=utf-8",
            "{route}"
        );
        let xml = String::from_utf8(body_bytes(resp).await).unwrap();
        assert_fallback_twiml(&xml, VOICE, LANGUAGE, APOLOGY);
        twiml_payloads.push(body);
    }

    // Another replica's call (never seen here): the default voice.
    let other = CallId::new().to_string();
    let body = form(&[("CallSid", "CA0123456789abcdef0123456789abcdef")]);
    let resp = send(&f.router, webhook("answer", &other, &body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = String::from_utf8(body_bytes(resp).await).unwrap();
    let defaults = bonde_pressure_core::CampaignSettings::default();
    assert_fallback_twiml(
        &xml,
        &defaults.voice,
        &defaults.language,
        &defaults.messages.unavailable,
    );
    let waiting = || f.state.service.spool_stats().waiting;
    assert!(waiting() >= 5, "queued: {}", waiting());

    // Readiness says so.
    let resp = send(&f.router, common::get("/readyz")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Liveness does not depend on the store.
    let resp = send(&f.router, common::get("/healthz")).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // The store comes back: every payload is stored, once.
    f.store.set(WORKING);
    let t = Instant::now();
    while waiting() > 0 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting(), 0, "spool drained");
    // The flusher, not a reconciliation pass (none runs here), stored them.
    let stats = f.state.service.spool_stats();
    assert_eq!(stats.stored, stats.queued);
    assert_eq!(stats.refused, 0);
    let resp = send(&f.router, common::get("/metrics")).await;
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    let line = format!(
        "bonde_pressure_spooled_payloads_total{{outcome=\"stored\"}} {}",
        stats.stored
    );
    assert!(text.contains(&line), "{text}");
    assert_eq!(copies(&f.store, &callback), 1, "callback payload");
    for body in twiml_payloads {
        assert_eq!(copies(&f.store, &body), 1, "{body}");
    }
    assert_eq!(copies(&f.store, &body), 1, "the unknown call's payload");
    let resp = send(&f.router, common::get(&format!("/v1/phone/status/{id}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_hanging_store_gives_503s_and_fallback_twiml_within_the_deadline() {
    // Without the deadline this would hang: fail instead.
    tokio::time::timeout(Duration::from_secs(60), each_route_fails_fast(HANGING))
        .await
        .expect("every request answered");
}

#[tokio::test]
async fn a_failing_store_gives_503s_and_fallback_twiml_at_once() {
    each_route_fails_fast(FAILING).await;
}

/// A store that is slow, not down: within the deadline, requests succeed.
#[tokio::test]
async fn a_slow_store_within_the_deadline_still_answers() {
    struct Slow(InMemoryCallStore);
    #[async_trait]
    impl CallStore for Slow {
        async fn create(&self, call: &Call) -> Result<(), StoreError> {
            self.0.create(call).await
        }
        async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.get(id).await
        }
        async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.commit(call, events).await
        }
        async fn append_events(
            &self,
            call_id: Option<CallId>,
            events: &[RawEvent],
        ) -> Result<(), StoreError> {
            self.0.append_events(call_id, events).await
        }
        async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.events(call_id).await
        }
        async fn list_unfinished(
            &self,
            updated_before: DateTime<Utc>,
            limit: u32,
        ) -> Result<Vec<Call>, StoreError> {
            self.0.list_unfinished(updated_before, limit).await
        }
    }
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(DeadlineStore::new(Arc::new(Slow(InMemoryCallStore::new())))),
            Arc::new(SimulatedTelephony::new(
                ScenarioPicker::ByActivistLastDigit,
                Duration::ZERO,
            )),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(NoopActionRecorder))
        .with_clock(Arc::new(SystemClock)),
        ServiceConfig::default(),
    );
    let state = AppState::new(Arc::new(service)).with_options(HttpOptions {
        request_timeout: DEADLINE,
        ..HttpOptions::default()
    });
    let router = bonde_pressure_http::router(state);
    let resp = send(&router, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = json_body(resp).await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = send(&router, common::get(&format!("/v1/phone/status/{id}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A full spool refuses the new payload (503 + `Retry-After`, so Twilio
/// sends it again) and keeps the ones it holds; a TwiML route still answers
/// its fallback TwiML.
#[tokio::test]
async fn a_full_spool_answers_503_and_keeps_what_it_holds() {
    let f = fixture_with(ServiceConfig::default().with_spool_capacity(1));
    let (id, sid) = start(&f).await;
    f.store.set(FAILING);
    let first = form(&[("CallSid", &sid), ("CallStatus", "ringing")]);
    let resp = send(&f.router, webhook("status-callback", &id, &first)).await;
    assert_unavailable(resp, "queued").await;
    let second = form(&[("CallSid", &sid), ("CallStatus", "in-progress")]);
    let resp = send(&f.router, webhook("status-callback", &id, &second)).await;
    assert_unavailable(resp, "refused").await;
    // An unknown call's payload cannot be kept either: 503, not 404.
    let resp = send(&f.router, webhook("status-callback", "not-a-uuid", &second)).await;
    assert_unavailable(resp, "unparsed, refused").await;
    let resp = send(
        &f.router,
        webhook("answer", &id, &form(&[("CallSid", &sid)])),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = String::from_utf8(body_bytes(resp).await).unwrap();
    assert_fallback_twiml(&xml, VOICE, LANGUAGE, APOLOGY);
    let stats = f.state.service.spool_stats();
    assert_eq!((stats.waiting, stats.refused), (1, 3));

    f.store.set(WORKING);
    let t = Instant::now();
    while f.state.service.spool_stats().waiting > 0 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(copies(&f.store, &first), 1);
    assert_eq!(copies(&f.store, &second), 0);
    let resp = send(&f.router, common::get("/metrics")).await;
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(
        text.contains("bonde_pressure_spooled_payloads_total{outcome=\"dropped\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn webhook_payloads_are_stamped_with_the_services_clock() {
    let at: DateTime<Utc> = "2030-01-02T03:04:05Z".parse().unwrap();
    let f = fixture_on(ServiceConfig::default(), Arc::new(ManualClock::new(at)));
    let body = form(&[("CallStatus", "ringing")]);
    let resp = send(
        &f.router,
        webhook("status-callback", "not-a-call-id", &body),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let stored = f.store.inner.all_events();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].raw.payload, body);
    assert_eq!(stored[0].raw.received_at, at);
}

/// Twilio hangs up on a slow webhook (its own timeout): the request's
/// future is dropped while core waits on the store. Core's work runs in its
/// own task, so the payload is still kept (spooled within the request's
/// store budget) and stored, once, when the store is back.
#[tokio::test]
async fn a_client_hanging_up_mid_webhook_does_not_lose_the_payload() {
    let f = fixture();
    let (id, sid) = start(&f).await;
    f.store.set(HANGING);
    let callback = form(&[("CallSid", &sid), ("CallStatus", "ringing")]);
    let router = f.router.clone();
    let request = webhook("status-callback", &id, &callback);
    let client = tokio::spawn(async move { send(&router, request).await });
    // The client gives up long before the store budget (300 ms) runs out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());

    // Core finishes on its own: the store times out, the payload waits in
    // the spool.
    let t = Instant::now();
    while f.state.service.spool_stats().waiting == 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.state.service.spool_stats().waiting,
        1,
        "the payload is kept"
    );
    assert_eq!(copies(&f.store, &callback), 0);

    f.store.set(WORKING);
    assert_eq!(f.state.service.flush_spool().await.unwrap(), 1);
    assert_eq!(copies(&f.store, &callback), 1, "stored once");
}
