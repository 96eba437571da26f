//! Twilio webhooks end to end: the real Twilio client against a wiremock
//! Twilio, and signed form callbacks delivered through the router.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bonde_pressure_twilio::signature::sign;
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const A: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CF: &str = "CFcccccccccccccccccccccccccccccccc";
const TOKEN: &str = "test-auth-token";
const BASE: &str = "https://pressure.example.org";

async fn twilio_app(server: &MockServer) -> bonde_pressure_http::wiring::App {
    twilio_app_with(server, &[]).await
}

/// [`twilio_app`] with more flags.
async fn twilio_app_with(server: &MockServer, extra: &[&str]) -> bonde_pressure_http::wiring::App {
    let uri = server.uri();
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    app_with(&args).await
}

/// A fake Twilio expecting one activist call and `dials` Participants requests.
async fn mock_twilio(dials: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": A, "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(format!(
            r"^/2010-04-01/Accounts/{AC}/Conferences/[0-9a-f-]{{36}}/Participants\.json$"
        )))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"call_sid": B, "status": "queued"})),
        )
        .expect(dials)
        .mount(&server)
        .await;
    // Hang-ups and conference ends (only in some orders): accepted.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sid": B, "status": "completed"})),
        )
        .mount(&server)
        .await;
    server
}

fn enc(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn signed(path: &str, body: &str, token: &str, signed_path: &str) -> Request<Body> {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let signature = sign(token, &format!("{BASE}{signed_path}"), &form);
    Request::post(path)
        // The Host header is the proxy's view; signatures use BASE_URL.
        .header("host", "10.0.0.7:8000")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn deliver(route: &str, id: &str, body: &str) -> Request<Body> {
    let p = format!("/v1/phone/{route}/{id}");
    signed(&p, body, TOKEN, &p)
}

/// Deterministic shuffle with duplicates (xorshift).
fn shuffle_with_duplicates(
    items: &[(&'static str, String)],
    seed: u64,
) -> Vec<(&'static str, String)> {
    let mut x = seed.max(1);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out: Vec<(&'static str, String)> = items.to_vec();
    for (i, item) in items.iter().enumerate() {
        if next() % 3 == 0 || i == 0 {
            out.push(item.clone());
        }
    }
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

/// Every callback of the activist's side up to the target being dialled:
/// answered by a human, confirmed, in the conference.
fn activist_side(id: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "status-callback",
            enc(&[
                ("CallSid", A),
                ("CallStatus", "initiated"),
                ("SequenceNumber", "0"),
            ]),
        ),
        (
            "status-callback",
            enc(&[
                ("CallSid", A),
                ("CallStatus", "ringing"),
                ("SequenceNumber", "1"),
            ]),
        ),
        (
            "status-callback",
            enc(&[
                ("CallSid", A),
                ("CallStatus", "in-progress"),
                ("SequenceNumber", "2"),
            ]),
        ),
        (
            "amd-status-callback",
            enc(&[("CallSid", A), ("AnsweredBy", "human")]),
        ),
        (
            "answer",
            enc(&[("CallSid", A), ("CallStatus", "in-progress")]),
        ),
        ("dial", enc(&[("CallSid", A), ("Digits", "1")])),
        (
            "conference-status-callback",
            enc(&[
                ("StatusCallbackEvent", "conference-start"),
                ("ConferenceSid", CF),
                ("FriendlyName", id),
            ]),
        ),
        (
            "conference-status-callback",
            enc(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CF),
                ("CallSid", A),
                ("ParticipantLabel", "activist"),
            ]),
        ),
    ]
}

/// Delivers signed callbacks in order; each must be accepted (2xx).
async fn deliver_all(r: &axum::Router, id: &str, callbacks: &[(&'static str, String)]) {
    for (route, body) in callbacks {
        let resp = send(r, deliver(route, id, body)).await;
        let status = resp.status();
        assert!(
            status == StatusCode::NO_CONTENT || status == StatusCode::OK,
            "{route} {body}: {status}"
        );
    }
}

async fn status_and_state(r: &axum::Router, id: &str) -> (String, String) {
    let v = json_body(send(r, get(&format!("/v1/phone/status/{id}"))).await).await;
    let d = json_body(send(r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    (
        v["status"].as_str().unwrap().to_owned(),
        d["state"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_activist_leg_failing_ends_canceled_on_the_page() {
    let server = mock_twilio(0).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    let failed = enc(&[
        ("CallSid", A),
        ("CallStatus", "failed"),
        ("SipResponseCode", "404"),
        ("SequenceNumber", "1"),
    ]);
    let initiated = enc(&[
        ("CallSid", A),
        ("CallStatus", "initiated"),
        ("SequenceNumber", "0"),
    ]);
    // Out of order and duplicated, as Twilio may deliver them.
    deliver_all(
        &r,
        &id,
        &[
            ("status-callback", failed.clone()),
            ("status-callback", initiated),
            ("status-callback", failed),
        ],
    )
    .await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("canceled".to_owned(), "activist_failed".to_owned())
    );
    let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(d["terminal"], true);
    assert_eq!(d["legs"]["activist"]["status"], "failed");
    assert_eq!(d["legs"]["activist"]["sip_response_code"], 404);
    assert_eq!(d["timeline"].as_array().unwrap().len(), 3);
    // the target was never dialled
    server.verify().await;
}

#[tokio::test]
async fn twilio_refusing_the_activist_number_is_a_field_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211,
            "message": "Invalid 'To' Phone Number: +55119123XXXXX",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .expect(1)
        .mount(&server)
        .await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let items = validation_items(send(&r, post_call(&front_end_body("11 91234-5678"))).await).await;
    assert_eq!(items[0]["loc"], json!(["body", "activist", "phone"]));
    assert_eq!(items[0]["type"], "value_error.phone.unreachable");
    server.verify().await;
}

/// Twilio refusing *us* (rate limit, credentials) is not the activist's
/// attempt: the per-number tokens are given back, so the activist can try
/// again once Twilio accepts calls. A refused number does count.
#[tokio::test]
async fn provider_side_refusals_do_not_use_up_the_number_limits() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })))
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let app = twilio_app_with(&server, &["--rate-limit-per-activist", "1/h"]).await;
    let r = router(&app);
    // Three refusals on our side: each time the activist's token comes back.
    for _ in 0..3 {
        let resp = send(&r, post_call(&front_end_body("11 91234-5678"))).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    }
    // The number refused by Twilio: an attempt, it uses the token up...
    let resp = send(&r, post_call(&front_end_body("11 91234-5678"))).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // ...so the next try is rate-limited before reaching Twilio.
    let resp = send(&r, post_call(&front_end_body("11 91234-5678"))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    server.verify().await;
}

/// Twilio's geo permissions (our account's setting) refusing the
/// destination: the field error says so, and the activist's token is
/// given back (the number is not at fault).
#[tokio::test]
async fn a_geo_permission_refusal_says_so_and_does_not_count() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21215,
            "message": "Account not authorized to call +55119123XXXXX",
            "status": 400
        })))
        .expect(2)
        .mount(&server)
        .await;
    let app = twilio_app_with(&server, &["--rate-limit-per-activist", "1/h"]).await;
    let r = router(&app);
    for _ in 0..2 {
        let items =
            validation_items(send(&r, post_call(&front_end_body("11 91234-5678"))).await).await;
        assert_eq!(items[0]["loc"], json!(["body", "activist", "phone"]));
        assert_eq!(items[0]["type"], "value_error.phone.geo_permission");
    }
    server.verify().await;
}

#[tokio::test]
async fn a_busy_target_ends_busy_and_ends_the_conference() {
    let server = mock_twilio(1).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    deliver_all(&r, &id, &activist_side(&id)).await;
    assert_eq!(
        status_and_state(&r, &id).await.0,
        "ringing",
        "the target is being dialled"
    );

    // The target's leg rings, then is busy (the Participants status callback).
    let busy = [
        (
            "dial-status-callback",
            enc(&[("CallSid", B), ("CallStatus", "initiated")]),
        ),
        (
            "dial-status-callback",
            enc(&[("CallSid", B), ("CallStatus", "ringing")]),
        ),
        (
            "dial-status-callback",
            enc(&[
                ("CallSid", B),
                ("CallStatus", "busy"),
                ("SipResponseCode", "486"),
            ]),
        ),
    ];
    deliver_all(&r, &id, &busy).await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("busy".to_owned(), "target_busy".to_owned())
    );
    // The activist is not left waiting: the conference is ended through the API.
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests.iter().any(|q| {
            q.url.path() == format!("/2010-04-01/Accounts/{AC}/Conferences/{CF}.json")
                && String::from_utf8_lossy(&q.body).contains("Status=completed")
        }),
        "conference ended: {:?}",
        requests.iter().map(|q| q.url.path()).collect::<Vec<_>>()
    );

    // Then Twilio reports the end, asks the <Dial action> for the closing
    // message and completes the activist's leg; duplicates included.
    let after_dial = enc(&[("CallSid", A), ("DialCallStatus", "completed")]);
    let end = [
        (
            "conference-status-callback",
            enc(&[
                ("StatusCallbackEvent", "participant-leave"),
                ("ConferenceSid", CF),
                ("CallSid", A),
                ("ParticipantLabel", "activist"),
            ]),
        ),
        (
            "conference-status-callback",
            enc(&[
                ("StatusCallbackEvent", "conference-end"),
                ("ConferenceSid", CF),
                ("ReasonConferenceEnded", "conference-ended-via-api"),
            ]),
        ),
        ("after-dial", after_dial.clone()),
        (
            "status-callback",
            enc(&[
                ("CallSid", A),
                ("CallStatus", "completed"),
                ("CallDuration", "40"),
            ]),
        ),
        busy[2].clone(),
    ];
    deliver_all(&r, &id, &end).await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("busy".to_owned(), "target_busy".to_owned())
    );
    let xml = String::from_utf8(
        body_bytes(send(&r, deliver("after-dial", &id, &after_dial)).await).await,
    )
    .unwrap();
    assert!(xml.contains("<Hangup"), "{xml}");
    let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(d["legs"]["target"]["status"], "busy");
    assert_eq!(d["legs"]["target"]["joined_conference"], false);
    assert_eq!(d["connected_secs"], serde_json::Value::Null);
    // every payload is in the event log
    assert_eq!(
        d["timeline"].as_array().unwrap().len(),
        activist_side(&id).len() + busy.len() + end.len() + 1
    );
    // the target was dialled exactly once
    server.verify().await;
}

#[tokio::test]
async fn a_full_lifecycle_from_signed_callbacks_in_any_order_dials_the_target_once() {
    for seed in [7u64, 1234, 99991] {
        let server = mock_twilio(1).await;
        let app = twilio_app(&server).await;
        let r = router(&app);
        let resp = send(&r, post_call(&front_end_body("11 91234-5678"))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v = json_body(resp).await;
        assert_eq!(v["twilio_call_sid"], A);
        assert_eq!(v["twilio_call_status"], "queued");
        let id = v["call_id"].as_str().unwrap().to_owned();

        // The voice moments answer TwiML.
        let resp = send(
            &r,
            deliver(
                "answer",
                &id,
                &enc(&[("CallSid", A), ("CallStatus", "in-progress")]),
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml")
        );
        let xml = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(
            xml.contains("<Gather") && xml.contains(&format!("/v1/phone/dial/{id}")),
            "{xml}"
        );

        // Before the target is dialled: the activist's side, shuffled,
        // duplicated (its answer TwiML was requested above).
        let phase1: Vec<(&'static str, String)> = activist_side(&id)
            .into_iter()
            .filter(|(route, _)| *route != "answer")
            .collect();
        for (route, body) in shuffle_with_duplicates(&phase1, seed) {
            let resp = send(&r, deliver(route, &id, &body)).await;
            let status = resp.status();
            assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::OK,
                "{route}: {status}"
            );
            if route == "dial" {
                let xml = String::from_utf8(body_bytes(resp).await).unwrap();
                assert!(xml.contains("<Conference"), "{xml}");
            }
        }
        let v = json_body(send(&r, get(&format!("/v1/phone/status/{id}"))).await).await;
        assert_eq!(v["status"], "ringing");

        // The target's side and the end, shuffled with duplicates of everything.
        let mut phase2: Vec<(&'static str, String)> = vec![
            (
                "dial-status-callback",
                enc(&[("CallSid", B), ("CallStatus", "ringing")]),
            ),
            (
                "dial-status-callback",
                enc(&[("CallSid", B), ("CallStatus", "in-progress")]),
            ),
            (
                "dial-amd-status-callback",
                enc(&[("CallSid", B), ("AnsweredBy", "human")]),
            ),
            (
                "conference-status-callback",
                enc(&[
                    ("StatusCallbackEvent", "participant-join"),
                    ("ConferenceSid", CF),
                    ("CallSid", B),
                    ("ParticipantLabel", "target"),
                ]),
            ),
            (
                "conference-status-callback",
                enc(&[
                    ("StatusCallbackEvent", "participant-leave"),
                    ("ConferenceSid", CF),
                    ("CallSid", B),
                    ("ParticipantLabel", "target"),
                ]),
            ),
            (
                "conference-status-callback",
                enc(&[
                    ("StatusCallbackEvent", "conference-end"),
                    ("ConferenceSid", CF),
                ]),
            ),
            (
                "dial-status-callback",
                enc(&[
                    ("CallSid", B),
                    ("CallStatus", "completed"),
                    ("CallDuration", "95"),
                ]),
            ),
            (
                "after-dial",
                enc(&[("CallSid", A), ("DialCallStatus", "completed")]),
            ),
            (
                "status-callback",
                enc(&[
                    ("CallSid", A),
                    ("CallStatus", "completed"),
                    ("CallDuration", "130"),
                ]),
            ),
        ];
        phase2.extend(phase1.iter().cloned());
        for (route, body) in shuffle_with_duplicates(&phase2, seed + 1) {
            let resp = send(&r, deliver(route, &id, &body)).await;
            let status = resp.status();
            assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::OK,
                "{route}: {status}"
            );
        }

        let v = json_body(send(&r, get(&format!("/v1/phone/status/{id}"))).await).await;
        assert_eq!(v["status"], "completed", "seed {seed}");
        let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
        assert_eq!(d["state"], "completed");
        assert_eq!(d["connected_secs"], 95);
        assert_eq!(d["legs"]["target"]["sid"], B);
        // every delivered payload is in the event log
        assert!(d["timeline"].as_array().unwrap().len() >= phase1.len() + 9);
        let after = send(
            &r,
            deliver(
                "after-dial",
                &id,
                &enc(&[("CallSid", A), ("DialCallStatus", "completed")]),
            ),
        )
        .await;
        let xml = String::from_utf8(body_bytes(after).await).unwrap();
        assert!(xml.contains("<Hangup"), "{xml}");

        let metrics = String::from_utf8(body_bytes(send(&r, get("/metrics")).await).await).unwrap();
        assert!(
            metrics.contains(
                "bonde_pressure_webhooks_total{route=\"status-callback\",outcome=\"ok\"}"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "bonde_pressure_webhook_processing_seconds_bucket{route=\"status-callback\",le=\"+Inf\"}"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("# TYPE bonde_pressure_webhook_processing_seconds histogram"),
            "{metrics}"
        );
        server.verify().await;
    }
}

/// The target leg answers and joins the conference (no verdict yet).
fn target_answers_and_joins() -> Vec<(&'static str, String)> {
    vec![
        (
            "dial-status-callback",
            enc(&[("CallSid", B), ("CallStatus", "in-progress")]),
        ),
        (
            "conference-status-callback",
            enc(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CF),
                ("CallSid", B),
                ("ParticipantLabel", "target"),
            ]),
        ),
    ]
}

#[tokio::test]
async fn a_target_voicemail_that_joins_before_its_verdict_never_shows_in_progress() {
    let server = mock_twilio(1).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    deliver_all(&r, &id, &activist_side(&id)).await;
    deliver_all(&r, &id, &target_answers_and_joins()).await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("ringing".to_owned(), "connected".to_owned()),
        "in the conference, verdict pending: still ringing for the page"
    );
    let machine = [(
        "dial-amd-status-callback",
        enc(&[("CallSid", B), ("AnsweredBy", "machine_start")]),
    )];
    deliver_all(&r, &id, &machine).await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("no-answer".to_owned(), "target_voicemail".to_owned())
    );
}

#[tokio::test]
async fn a_human_target_shows_in_progress_on_its_verdict_or_after_the_grace_time() {
    // Verdict: in progress at once.
    let server = mock_twilio(1).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    deliver_all(&r, &id, &activist_side(&id)).await;
    deliver_all(&r, &id, &target_answers_and_joins()).await;
    assert_eq!(status_and_state(&r, &id).await.0, "ringing");
    let human = [(
        "dial-amd-status-callback",
        enc(&[("CallSid", B), ("AnsweredBy", "human")]),
    )];
    deliver_all(&r, &id, &human).await;
    assert_eq!(
        status_and_state(&r, &id).await,
        ("in-progress".to_owned(), "connected".to_owned())
    );

    // No verdict: in progress once the (configured) grace time has passed,
    // and the event stream says so without a new commit.
    let server = mock_twilio(1).await;
    let app = twilio_app_with(
        &server,
        &[
            "--machine-verdict-grace",
            "300",
            "--sse-poll-interval",
            "50",
        ],
    )
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    deliver_all(&r, &id, &activist_side(&id)).await;
    deliver_all(&r, &id, &target_answers_and_joins()).await;
    let resp = send(&r, get(&format!("/v1/phone/calls/{id}/events"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut frames = resp.into_body().into_data_stream();
    let mut text = String::new();
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures::StreamExt;
        loop {
            let chunk = frames.next().await.expect("stream open").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            let events: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            if events.len() >= 2 {
                return events;
            }
        }
    })
    .await
    .expect("a second event within the grace time");
    assert_eq!(events[0]["status"], "ringing", "{text}");
    assert_eq!(events[1]["status"], "in-progress", "{text}");
    assert_eq!(
        events[0]["version"], events[1]["version"],
        "no commit between"
    );
    assert_eq!(
        status_and_state(&r, &id).await,
        ("in-progress".to_owned(), "connected".to_owned())
    );
}

#[tokio::test]
async fn forged_or_missing_signatures_are_refused_and_not_stored() {
    let server = mock_twilio(0).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    let body = enc(&[("CallSid", A), ("CallStatus", "busy")]);
    let p = format!("/v1/phone/status-callback/{id}");

    // wrong token
    let resp = send(&r, signed(&p, &body, "not-the-token", &p)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_body(resp).await,
        json!({"detail": "Invalid signature."})
    );
    // signed for another call's URL
    let other = format!("/v1/phone/status-callback/{}", uuid::Uuid::new_v4());
    assert_eq!(
        send(&r, signed(&p, &body, TOKEN, &other)).await.status(),
        StatusCode::FORBIDDEN
    );
    // body tampered with after signing
    let mut req = signed(&p, &body, TOKEN, &p);
    *req.body_mut() = Body::from(enc(&[("CallSid", A), ("CallStatus", "completed")]));
    assert_eq!(send(&r, req).await.status(), StatusCode::FORBIDDEN);
    // no signature at all
    let req = Request::post(&p)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(send(&r, req).await.status(), StatusCode::FORBIDDEN);

    let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert!(d["timeline"].as_array().unwrap().is_empty(), "{d}");
    assert_ne!(d["state"], "activist_busy");
    assert_ne!(d["status"], "canceled");

    // the genuine one is applied
    assert_eq!(
        send(&r, deliver("status-callback", &id, &body))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // The activist's line was busy: the page's `canceled` screen.
    assert_eq!(
        status_and_state(&r, &id).await,
        ("canceled".to_owned(), "activist_busy".to_owned())
    );
}

#[tokio::test]
async fn the_signed_url_keeps_the_query_string() {
    let server = mock_twilio(0).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5678").await;
    let body = enc(&[("CallSid", A), ("CallStatus", "ringing")]);
    let p = format!("/v1/phone/status-callback/{id}?attempt=2");
    assert_eq!(
        send(&r, signed(&p, &body, TOKEN, &p)).await.status(),
        StatusCode::NO_CONTENT
    );
    let without_query = format!("/v1/phone/status-callback/{id}");
    assert_eq!(
        send(&r, signed(&p, &body, TOKEN, &without_query))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn unknown_calls_are_404_and_malformed_forms_400() {
    let server = mock_twilio(0).await;
    let app = twilio_app(&server).await;
    let r = router(&app);
    let unknown = uuid::Uuid::new_v4().to_string();
    let resp = send(
        &r,
        deliver(
            "status-callback",
            &unknown,
            &enc(&[("CallSid", A), ("CallStatus", "ringing")]),
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await, json!({"detail": "Call not found."}));
    let resp = send(&r, deliver("answer", &unknown, &enc(&[("CallSid", A)]))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = send(
        &r,
        deliver("status-callback", "not-a-uuid", &enc(&[("CallSid", A)])),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let id = start(&r, "11 91234-5678").await;
    for (route, body) in [
        ("status-callback", enc(&[("CallSid", A)])),
        (
            "status-callback",
            enc(&[("CallSid", "nonsense"), ("CallStatus", "ringing")]),
        ),
        (
            "conference-status-callback",
            enc(&[("StatusCallbackEvent", "participant-join")]),
        ),
        ("amd-status-callback", String::from("%%%garbage&&=")),
    ] {
        let resp = send(&r, deliver(route, &id, &body)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{route} {body}");
        assert!(
            json_body(resp).await["detail"]
                .as_str()
                .unwrap()
                .starts_with("Malformed webhook")
        );
    }
    // the malformed payloads are in the call's event log
    let d = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
    assert_eq!(d["timeline"].as_array().unwrap().len(), 4, "{d}");
}

#[tokio::test]
async fn the_simulated_telephony_refuses_webhooks_unless_checks_are_off() {
    let app = app().await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let body = enc(&[("CallSid", A), ("CallStatus", "ringing")]);
    assert_eq!(
        send(&r, deliver("status-callback", &id, &body))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let app = app_with(&[
        "--webhook-signature-check",
        "false",
        "--simulated-tick",
        "1000",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let req = Request::post(format!("/v1/phone/status-callback/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(enc(&[("CallSid", A), ("CallStatus", "busy")])))
        .unwrap();
    assert_eq!(send(&r, req).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn garbage_webhooks_get_4xx_never_5xx() {
    let app = app_with(&[
        "--webhook-signature-check",
        "false",
        "--simulated-tick",
        "1000",
    ])
    .await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let routes = [
        "answer",
        "status-callback",
        "amd-status-callback",
        "dial",
        "dial-status-callback",
        "dial-amd-status-callback",
        "conference-status-callback",
        "after-dial",
    ];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"CallSid=&CallStatus=".to_vec(),
        b"CallSid=CA%zz&CallStatus=%%".to_vec(),
        b"StatusCallbackEvent=participant-join&ConferenceSid=CFx&CallSid=CAy".to_vec(),
        b"CallSid=CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&CallStatus=teleported&AnsweredBy=robot"
            .to_vec(),
        vec![0xff; 300],
    ];
    for n in 0..20 {
        let mut b = Vec::new();
        for _ in 0..(n * 13 % 200) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push((x % 256) as u8);
        }
        bodies.push(b);
    }
    for route in routes {
        for target in [id.as_str(), "x", "00000000-0000-0000-0000-000000000000"] {
            for body in &bodies {
                let req = Request::post(format!("/v1/phone/{route}/{target}"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(body.clone()))
                    .unwrap();
                let status = send(&r, req).await.status();
                assert!(
                    status.is_success() || status.is_client_error(),
                    "{route} {target}: {status} for {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
