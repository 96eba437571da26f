//! Core's `PressureService` running on the Twilio client (against wiremock),
//! fed with Twilio-shaped webhooks: the requests Twilio receives, exactly once.

use std::sync::Arc;

use bonde_pressure_core::{
    ActivistInput, CallId, CallStore, Dependencies, DetailedState, InMemoryCallStore,
    PressureService, ServiceConfig, StartCallRequest, StaticCampaignDirectory, StubActionRecorder,
    SystemClock, TargetInput,
};
use bonde_pressure_twilio::webhook::{decode_form, parse, raw_event};
use bonde_pressure_twilio::{CallbackUrls, Credentials, Route, TwilioClient, TwilioConfig, twiml};
use chrono::Utc;
use wiremock::matchers::{body_string, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const A: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CF: &str = "CFcccccccccccccccccccccccccccccccc";
const BASE: &str = "https://pressure.example.org";

fn enc(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

struct World {
    service: Arc<PressureService>,
    store: Arc<InMemoryCallStore>,
    urls: CallbackUrls,
}

impl World {
    /// What the HTTP crate does for a callback route.
    async fn callback(&self, id: CallId, route: Route, body: &str) -> DetailedState {
        let form = decode_form(body.as_bytes());
        let event = parse(route, &form).unwrap();
        let raw = raw_event(route, body, &form, Utc::now());
        self.service
            .handle(id, event, Some(raw))
            .await
            .unwrap()
            .call
            .state()
    }

    /// What the HTTP crate does for a TwiML route.
    async fn twiml(&self, id: CallId, route: Route, body: &str) -> String {
        let form = decode_form(body.as_bytes());
        let event = parse(route, &form).unwrap();
        let raw = raw_event(route, body, &form, Utc::now());
        let script = self
            .service
            .script(id, route.moment().unwrap(), event, Some(raw))
            .await
            .unwrap();
        twiml::render(&script, &self.urls)
    }
}

fn world(server: &MockServer) -> World {
    let config = TwilioConfig::new(
        AC,
        Credentials::AuthToken("token".into()),
        bonde_pressure_core::PhoneNumber::parse_e164("+551140028922").unwrap(),
        BASE,
    )
    .unwrap()
    .with_api_base(&server.uri())
    .unwrap();
    let urls = config.callbacks().clone();
    let store = Arc::new(InMemoryCallStore::new());
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store.clone(),
            Arc::new(TwilioClient::new(config).unwrap()),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(Arc::new(SystemClock)),
        ServiceConfig::default(),
    ));
    World {
        service,
        store,
        urls,
    }
}

fn request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 98765-4321").with_first_name("Ana"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    )
}

#[tokio::test]
async fn target_busy_call_through_twilio() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": A, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let w = world(&server);
    let started = w.service.start(&request()).await.unwrap();
    let id = started.call_id;
    assert_eq!(started.leg_id.unwrap().as_str(), A);

    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{AC}/Conferences/{id}/Participants.json"
        )))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"call_sid": B, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{AC}/Conferences/{CF}.json"
        )))
        .and(body_string("Status=completed"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"sid": CF})))
        .expect(1)
        .mount(&server)
        .await;

    let mut delivered = 0;
    for status in ["initiated", "ringing", "in-progress"] {
        w.callback(
            id,
            Route::StatusCallback,
            &enc(&[("CallSid", A), ("CallStatus", status)]),
        )
        .await;
        delivered += 1;
    }
    let answer = w.twiml(id, Route::Answer, &enc(&[("CallSid", A)])).await;
    delivered += 1;
    assert!(answer.contains("<Gather"), "{answer}");
    assert!(answer.contains(&w.urls.dial(id)), "{answer}");

    w.callback(
        id,
        Route::AmdStatusCallback,
        &enc(&[("CallSid", A), ("AnsweredBy", "human")]),
    )
    .await;
    let confirmed = w
        .twiml(id, Route::Dial, &enc(&[("CallSid", A), ("Digits", "1")]))
        .await;
    delivered += 2;
    assert!(confirmed.contains("<Conference"), "{confirmed}");
    assert!(confirmed.contains(&w.urls.after_dial(id)), "{confirmed}");

    // The activist's join arrives twice, concurrently: the target is added once.
    let join = enc(&[
        ("StatusCallbackEvent", "participant-join"),
        ("ConferenceSid", CF),
        ("CallSid", A),
        ("ParticipantLabel", "activist"),
    ]);
    let (s1, s2) = tokio::join!(
        w.callback(id, Route::ConferenceStatusCallback, &join),
        w.callback(id, Route::ConferenceStatusCallback, &join),
    );
    delivered += 2;
    assert!(
        [s1, s2].contains(&DetailedState::Connecting),
        "{s1:?} {s2:?}"
    );

    w.callback(
        id,
        Route::DialStatusCallback,
        &enc(&[("CallSid", B), ("CallStatus", "ringing")]),
    )
    .await;
    // Busy: the conference is ended so the activist hears the closing message.
    let state = w
        .callback(
            id,
            Route::DialStatusCallback,
            &enc(&[("CallSid", B), ("CallStatus", "busy")]),
        )
        .await;
    delivered += 2;
    assert_eq!(state, DetailedState::TargetBusy);

    w.callback(
        id,
        Route::ConferenceStatusCallback,
        &enc(&[
            ("StatusCallbackEvent", "conference-end"),
            ("ConferenceSid", CF),
        ]),
    )
    .await;
    let closing = w
        .twiml(
            id,
            Route::AfterDial,
            &enc(&[("CallSid", A), ("DialCallStatus", "completed")]),
        )
        .await;
    delivered += 2;
    assert!(closing.contains("ocupada"), "{closing}");
    assert!(closing.ends_with("<Hangup/></Response>"), "{closing}");
    let state = w
        .callback(
            id,
            Route::StatusCallback,
            &enc(&[
                ("CallSid", A),
                ("CallStatus", "completed"),
                ("CallDuration", "40"),
            ]),
        )
        .await;
    delivered += 1;
    assert_eq!(state, DetailedState::TargetBusy);

    let events = w.store.events(id).await.unwrap();
    assert_eq!(events.len(), delivered);
    assert!(events.iter().any(|e| e.raw.kind == "after-dial"));
    assert!(
        events
            .iter()
            .filter(|e| e.raw.kind == "conference-status-callback")
            .all(|e| e.raw.leg_id.is_none() || e.raw.leg_id.as_deref() == Some(A))
    );
    // wiremock checks on drop: one call, one participant, one conference end.
}
