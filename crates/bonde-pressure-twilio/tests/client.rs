//! The REST client against a wiremock Twilio: one server per test.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bonde_pressure_core::ports::{ActivistCallRequest, TargetCallRequest};
use bonde_pressure_core::{
    AnsweredBy, CallId, ConferenceId, HangUp, LegId, LegStatus, PhoneNumber, Telephony,
    TelephonyError,
};
use bonde_pressure_twilio::client::MAX_TWIML_CHARS;
use bonde_pressure_twilio::{
    CallInstructions, CreateCallError, Credentials, Refusal, RetryPolicy, TwilioClient,
    TwilioConfig,
};
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token";
const CA: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const CF: &str = "CFbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OUR: &str = "+551140028922";
const ACTIVIST: &str = "+5511987654321";
const TARGET: &str = "+5561999990000";
const BASE: &str = "https://pressure.example.org";
/// The connection overrides every callback URL carries: Twilio retries.
const RETRY: &str = "#rc=2&rp=ct,5xx";

fn call_id() -> CallId {
    "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".parse().unwrap()
}

fn phone(s: &str) -> PhoneNumber {
    PhoneNumber::parse_e164(s).unwrap()
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
        retry_unsafe_timeouts: false,
    }
}

fn config(server: &MockServer) -> TwilioConfig {
    TwilioConfig::new(AC, Credentials::AuthToken(TOKEN.into()), phone(OUR), BASE)
        .unwrap()
        .with_api_base(&server.uri())
        .unwrap()
        .with_request_timeout(Duration::from_secs(5))
        .with_retry(fast_retries(3))
}

fn client(server: &MockServer) -> TwilioClient {
    TwilioClient::new(config(server)).unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn calls_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Calls.json")
}

fn call_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Calls/{CA}.json")
}

fn participants_path() -> String {
    format!(
        "/2010-04-01/Accounts/{AC}/Conferences/{}/Participants.json",
        call_id()
    )
}

fn conference_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Conferences/{CF}.json")
}

/// A POST to `p` with our Basic auth, a form content type and exactly `body`.
fn post(p: String, body: impl Into<String>) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(p))
        .and(header("authorization", basic(AC, TOKEN).as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(body.into()))
}

/// A GET of `p` with our Basic auth and no body.
fn get(p: String) -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(p))
        .and(header("authorization", basic(AC, TOKEN).as_str()))
        .and(body_string(""))
}

/// The exact body that creates the activist's call: `instructions` is the
/// encoded `Url=…&Method=POST` or `Twiml=…` part.
fn call_body(instructions: &str, detect_machine: bool) -> String {
    let id = call_id();
    let mut body = format!(
        "To={to}&From={from}&{instructions}&StatusCallback={status}&StatusCallbackMethod=POST\
         &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed\
         &Timeout=30",
        to = enc(ACTIVIST),
        from = enc(OUR),
        status = enc(&format!("{BASE}/v1/phone/status-callback/{id}{RETRY}")),
    );
    if detect_machine {
        body.push_str(&format!(
            "&MachineDetection=Enable&AsyncAmd=true&AsyncAmdStatusCallback={amd}&AsyncAmdStatusCallbackMethod=POST",
            amd = enc(&format!("{BASE}/v1/phone/amd-status-callback/{id}{RETRY}")),
        ));
    }
    body
}

/// The exact body of [`Telephony::call_activist`].
fn activist_body(detect_machine: bool) -> String {
    let answer = enc(&format!("{BASE}/v1/phone/answer/{}", call_id()));
    call_body(&format!("Url={answer}&Method=POST"), detect_machine)
}

/// The exact body that adds the target, shown `from`.
fn target_body(from: &str) -> String {
    let id = call_id();
    format!(
        "From={from}&To={to}&Label=target&Beep=false&EndConferenceOnExit=true&Timeout=25\
         &StatusCallback={status}&StatusCallbackMethod=POST\
         &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed\
         &MachineDetection=Enable&AmdStatusCallback={amd}&AmdStatusCallbackMethod=POST",
        from = enc(from),
        to = enc(TARGET),
        status = enc(&format!("{BASE}/v1/phone/dial-status-callback/{id}{RETRY}")),
        amd = enc(&format!(
            "{BASE}/v1/phone/dial-amd-status-callback/{id}{RETRY}"
        )),
    )
}

fn activist_request(detect_machine: bool) -> ActivistCallRequest {
    ActivistCallRequest::new(call_id(), phone(ACTIVIST), 30).with_detect_machine(detect_machine)
}

fn target_request(caller_id: Option<&str>) -> TargetCallRequest {
    TargetCallRequest::new(call_id(), phone(TARGET), 25)
        .with_caller_id(caller_id.map(phone))
        .with_detect_machine(true)
}

fn error_body(code: u32, status: u16) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "message": format!("error {code}"),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

fn call_created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": CA,
        "status": "queued",
        "account_sid": AC,
        "to": ACTIVIST,
        "from": OUR,
        "duration": null,
        "answered_by": null,
    }))
}

/// The decoded pairs of the only request the server received, in order.
async fn received_pairs(server: &MockServer) -> Vec<(String, String)> {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn call_activist_posts_the_exact_form_and_reads_the_201() {
    let server = MockServer::start().await;
    let id = call_id();
    let expected_body = format!(
        "To={to}&From={from}&Url={answer}&Method=POST&StatusCallback={status}&StatusCallbackMethod=POST\
         &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed\
         &Timeout=30&MachineDetection=Enable&AsyncAmd=true&AsyncAmdStatusCallback={amd}&AsyncAmdStatusCallbackMethod=POST",
        to = enc(ACTIVIST),
        from = enc(OUR),
        answer = enc(&format!("{BASE}/v1/phone/answer/{id}")),
        status = enc(&format!("{BASE}/v1/phone/status-callback/{id}{RETRY}")),
        amd = enc(&format!("{BASE}/v1/phone/amd-status-callback/{id}{RETRY}")),
    );
    Mock::given(method("POST"))
        .and(path(calls_path()))
        .and(header("authorization", basic(AC, TOKEN).as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(expected_body))
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;

    let leg = client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap();
    assert_eq!(leg.leg_id, CA.parse::<LegId>().unwrap());
    assert_eq!(leg.status, Some(LegStatus::Queued));

    // The same body as a multiset of pairs, repeated keys included.
    let got = received_pairs(&server).await;
    let want = pairs(&[
        ("To", ACTIVIST),
        ("From", OUR),
        ("Url", &format!("{BASE}/v1/phone/answer/{id}")),
        ("Method", "POST"),
        (
            "StatusCallback",
            &format!("{BASE}/v1/phone/status-callback/{id}{RETRY}"),
        ),
        ("StatusCallbackMethod", "POST"),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("StatusCallbackEvent", "completed"),
        ("Timeout", "30"),
        ("MachineDetection", "Enable"),
        ("AsyncAmd", "true"),
        (
            "AsyncAmdStatusCallback",
            &format!("{BASE}/v1/phone/amd-status-callback/{id}{RETRY}"),
        ),
        ("AsyncAmdStatusCallbackMethod", "POST"),
    ]);
    assert_eq!(sorted(got), sorted(want));
}

#[tokio::test]
async fn call_activist_without_machine_detection_sends_no_amd_fields() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(false))
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .call_activist(&activist_request(false))
        .await
        .unwrap();
    let got = received_pairs(&server).await;
    assert!(
        got.iter()
            .all(|(k, _)| !k.contains("Amd") && k != "MachineDetection")
    );
    assert_eq!(
        got.iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .count(),
        4
    );
}

#[tokio::test]
async fn api_key_credentials_use_the_key_as_basic_user() {
    let server = MockServer::start().await;
    let sk = "SK0123456789abcdef0123456789abcdef";
    Mock::given(method("POST"))
        .and(path(calls_path()))
        .and(header("authorization", basic(sk, "key-secret").as_str()))
        .and(body_string(activist_body(true)))
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;
    let config = TwilioConfig::new(
        AC,
        Credentials::ApiKey {
            sid: sk.into(),
            secret: "key-secret".into(),
        },
        phone(OUR),
        BASE,
    )
    .unwrap()
    .with_api_base(&server.uri())
    .unwrap()
    .with_retry(fast_retries(1));
    TwilioClient::new(config)
        .unwrap()
        .call_activist(&activist_request(true))
        .await
        .unwrap();
}

// ------------------------------------------------------------ inline TwiML

fn greeting_twiml() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="pt-BR">Olá &amp; até já</Say><Hangup/></Response>"#
        .to_owned()
}

#[tokio::test]
async fn create_call_with_inline_twiml_posts_the_exact_form() {
    let server = MockServer::start().await;
    let twiml = greeting_twiml();
    let expected = call_body(&format!("Twiml={}", enc(&twiml)), true);
    // Spelled out once, so that a wrong helper cannot hide a wrong body.
    assert!(expected.starts_with(&format!(
        "To=%2B5511987654321&From=%2B551140028922&Twiml=%3C%3Fxml+version%3D%221.0%22+encoding%3D%22UTF-8%22%3F%3E%3CResponse%3E%3CSay+language%3D%22pt-BR%22%3EOl%C3%A1+%26amp%3B+at%C3%A9+j%C3%A1%3C%2FSay%3E%3CHangup%2F%3E%3C%2FResponse%3E&StatusCallback={}",
        enc(&format!("{BASE}/v1/phone/status-callback/{}{RETRY}", call_id()))
    )));
    assert!(expected.contains(
        "&StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed&"
    ));
    post(calls_path(), expected)
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;
    let leg = client(&server)
        .create_call(
            &activist_request(true),
            &CallInstructions::Twiml(twiml.clone()),
        )
        .await
        .unwrap();
    assert_eq!(leg.leg_id.as_str(), CA);
    let got = received_pairs(&server).await;
    assert!(got.iter().all(|(k, _)| k != "Url" && k != "Method"));
    assert_eq!(
        got.iter()
            .filter(|(k, _)| k == "Twiml")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>(),
        [twiml.as_str()]
    );
}

#[tokio::test]
async fn create_call_with_a_url_is_what_call_activist_sends() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(false))
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;
    let answer = format!("{BASE}/v1/phone/answer/{}", call_id());
    client(&server)
        .create_call(&activist_request(false), &CallInstructions::Url(answer))
        .await
        .unwrap();
}

#[tokio::test]
async fn twiml_of_exactly_the_limit_is_sent() {
    let server = MockServer::start().await;
    let open = "<Response><Say>";
    let close = "</Say></Response>";
    // Multi-byte characters: the limit counts characters, not bytes.
    let twiml = format!(
        "{open}{}{close}",
        "ç".repeat(MAX_TWIML_CHARS - open.len() - close.len())
    );
    assert_eq!(twiml.chars().count(), MAX_TWIML_CHARS);
    post(
        calls_path(),
        call_body(&format!("Twiml={}", enc(&twiml)), false),
    )
    .respond_with(call_created())
    .expect(1)
    .mount(&server)
    .await;
    client(&server)
        .create_call(&activist_request(false), &CallInstructions::Twiml(twiml))
        .await
        .unwrap();
}

#[tokio::test]
async fn twiml_over_the_limit_is_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(call_created())
        .expect(0)
        .mount(&server)
        .await;
    let twiml = format!(
        "<Response><Say>{}</Say></Response>",
        "a".repeat(MAX_TWIML_CHARS)
    );
    let chars = twiml.chars().count();
    let e = client(&server)
        .create_call(&activist_request(true), &CallInstructions::Twiml(twiml))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CreateCallError::TwimlTooLong { chars: c, max: MAX_TWIML_CHARS } if c == chars
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("4000"), "{e}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn create_call_reports_twilio_refusals() {
    let server = MockServer::start().await;
    let twiml = greeting_twiml();
    post(
        calls_path(),
        call_body(&format!("Twiml={}", enc(&twiml)), true),
    )
    .respond_with(ResponseTemplate::new(400).set_body_json(error_body(21211, 400)))
    .expect(1)
    .mount(&server)
    .await;
    let e = client(&server)
        .create_call(&activist_request(true), &CallInstructions::Twiml(twiml))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CreateCallError::Telephony(TelephonyError::InvalidNumber {
                code: Some(21211),
                ..
            })
        ),
        "{e:?}"
    );
}

// ------------------------------------------------------------ target

#[tokio::test]
async fn add_target_posts_a_participant_with_our_number() {
    let server = MockServer::start().await;
    let id = call_id();
    let expected_body = format!(
        "From={from}&To={to}&Label=target&Beep=false&EndConferenceOnExit=true&Timeout=25\
         &StatusCallback={status}&StatusCallbackMethod=POST\
         &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=answered&StatusCallbackEvent=completed\
         &MachineDetection=Enable&AmdStatusCallback={amd}&AmdStatusCallbackMethod=POST",
        from = enc(OUR),
        to = enc(TARGET),
        status = enc(&format!("{BASE}/v1/phone/dial-status-callback/{id}{RETRY}")),
        amd = enc(&format!(
            "{BASE}/v1/phone/dial-amd-status-callback/{id}{RETRY}"
        )),
    );
    assert_eq!(expected_body, target_body(OUR));
    post(participants_path(), expected_body)
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "account_sid": AC,
            "call_sid": CA,
            "conference_sid": CF,
            "label": "target",
            "status": "queued",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let leg = client(&server)
        .add_target(&target_request(None))
        .await
        .unwrap();
    assert_eq!(leg.leg_id.as_str(), CA);
    assert_eq!(leg.status, Some(LegStatus::Queued));
}

#[tokio::test]
async fn add_target_uses_the_requested_caller_id() {
    let server = MockServer::start().await;
    post(participants_path(), target_body(ACTIVIST))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "call_sid": CA, "status": "connecting"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let leg = client(&server)
        .add_target(&target_request(Some(ACTIVIST)))
        .await
        .unwrap();
    assert_eq!(leg.status, Some(LegStatus::Initiated));
    let got = received_pairs(&server).await;
    let from: Vec<_> = got.iter().filter(|(k, _)| k == "From").collect();
    assert_eq!(from, [&("From".to_owned(), ACTIVIST.to_owned())]);
}

#[tokio::test]
async fn a_refused_caller_id_is_not_blamed_on_the_number_called() {
    // The campaign shows the activist's number, which is not a verified
    // caller id of the account: Twilio answers 21210.
    let server = MockServer::start().await;
    post(participants_path(), target_body(ACTIVIST))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(21210, 400)))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .add_target(&target_request(Some(ACTIVIST)))
        .await
        .unwrap_err();
    assert_eq!(Refusal::of(&e), Some(Refusal::CallerId));
    assert!(
        matches!(e, TelephonyError::CallerIdRejected { code: Some(21210), ref message, .. }
            if message.starts_with("caller id refused")),
        "{e:?}"
    );
    assert!(!e.counts_against_limits());
}

// ------------------------------------------------------------ hang up

#[tokio::test]
async fn hang_up_completes() {
    let server = MockServer::start().await;
    post(call_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "completed"
        })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Complete)
        .await
        .unwrap();
}

#[tokio::test]
async fn hang_up_cancels_a_ringing_call_with_one_request() {
    let server = MockServer::start().await;
    post(call_path(), "Status=canceled")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "canceled"
        })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Cancel)
        .await
        .unwrap();
}

#[tokio::test]
async fn canceling_an_answered_call_completes_it() {
    // Twilio answers 200 to `canceled` for an answered call and leaves it up.
    let server = MockServer::start().await;
    post(call_path(), "Status=canceled")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "in-progress"
        })))
        .expect(1)
        .mount(&server)
        .await;
    post(call_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "completed"
        })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Cancel)
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let bodies: Vec<&[u8]> = requests.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(
        bodies,
        [
            b"Status=canceled".as_slice(),
            b"Status=completed".as_slice()
        ]
    );
}

#[tokio::test]
async fn hanging_up_an_ended_call_is_not_an_error() {
    let server = MockServer::start().await;
    post(call_path(), "Status=canceled")
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(21220, 400)))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Cancel)
        .await
        .unwrap();
}

#[tokio::test]
async fn end_conference_completes_it() {
    let server = MockServer::start().await;
    post(conference_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CF, "status": "completed"
        })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .end_conference(call_id(), &CF.parse::<ConferenceId>().unwrap())
        .await
        .unwrap();
}

/// Core's ids are opaque: another provider's (or a damaged) id may reach
/// the client. It is not a SID, so it names no call or conference at
/// Twilio: `NotFound` (or no live conference), without a request, and the
/// id never goes into a URL.
#[tokio::test]
async fn ids_that_are_not_sids_never_reach_twilio() {
    let server = MockServer::start().await;
    let client = client(&server);
    let leg: LegId = "../Calls.json?x=1".parse().unwrap();
    for how in [HangUp::Cancel, HangUp::Complete] {
        let e = client.hang_up(call_id(), &leg, how).await.unwrap_err();
        assert!(
            matches!(e, TelephonyError::NotFound { ref message, .. } if message.contains("Call SID")),
            "{e:?}"
        );
    }
    let e = client.fetch_leg(&leg).await.unwrap_err();
    assert!(matches!(e, TelephonyError::NotFound { .. }), "{e:?}");
    // A Call SID is not a conference's.
    let conference: ConferenceId = CA.parse().unwrap();
    let e = client
        .end_conference(call_id(), &conference)
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelephonyError::NotFound { ref message, .. } if message.contains("Conference SID")),
        "{e:?}"
    );
    assert_eq!(
        client
            .conference_participants(call_id(), Some(conference))
            .await
            .unwrap(),
        None
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ------------------------------------------------------------ fetch

#[tokio::test]
async fn fetch_leg_reads_status_duration_and_amd() {
    let server = MockServer::start().await;
    get(call_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA,
            "status": "completed",
            "duration": "42",
            "answered_by": "machine_end_beep",
            "end_time": "Tue, 10 Aug 2010 08:02:31 +0000",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let snap = client(&server)
        .fetch_leg(&CA.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(snap.leg_id.as_str(), CA);
    assert_eq!(snap.status, LegStatus::Completed);
    assert_eq!(snap.duration_secs, Some(42));
    assert_eq!(snap.answered_by, Some(AnsweredBy::MachineEndBeep));
    assert_eq!(
        snap.ended_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2010-08-10T08:02:31+00:00")
    );
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].body.is_empty());
}

#[tokio::test]
async fn fetch_leg_of_a_ringing_call() {
    let server = MockServer::start().await;
    get(call_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "ringing", "duration": null, "answered_by": null,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let snap = client(&server)
        .fetch_leg(&CA.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            snap.status,
            snap.duration_secs,
            snap.answered_by,
            snap.ended_at
        ),
        (LegStatus::Ringing, None, None, None)
    );
}

// ------------------------------------------------------------ error answers

/// Answers the activist's call creation with `status` and `body`, expecting
/// `calls` requests (all with the exact form); returns the error.
async fn error_case(status: u16, body: serde_json::Value, calls: u64) -> TelephonyError {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(calls)
        .mount(&server)
        .await;
    client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn invalid_numbers_are_not_retried() {
    let e = error_case(400, error_body(21211, 400), 1).await;
    assert!(
        matches!(
            e,
            TelephonyError::InvalidNumber {
                code: Some(21211),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.code(), Some(21211));
    assert_eq!(Refusal::of(&e), Some(Refusal::InvalidNumber));
}

#[tokio::test]
async fn geo_permission_refusals_say_so_and_are_not_retried() {
    let e = error_case(400, error_body(21215, 400), 1).await;
    assert_eq!(Refusal::of(&e), Some(Refusal::GeoPermission));
    assert!(
        matches!(e, TelephonyError::DestinationNotPermitted { code: Some(21215), ref message, .. }
            if message.starts_with("geo permission")),
        "{e:?}"
    );
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    let e = error_case(401, error_body(20003, 401), 1).await;
    assert!(matches!(e, TelephonyError::Auth { .. }), "{e:?}");
}

#[tokio::test]
async fn other_4xx_are_rejected_without_retry() {
    let e = error_case(400, error_body(21205, 400), 1).await;
    assert!(
        matches!(
            e,
            TelephonyError::Rejected {
                status: 400,
                code: Some(21205),
                ref message,
                ..
            } if message == "error 21205"
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn problem_shaped_4xx_are_rejected_without_retry() {
    let e = error_case(
        422,
        serde_json::json!({"type": "https://www.twilio.com/docs/errors/21201", "title": "Bad", "status": 422, "detail": "No called number"}),
        1,
    )
    .await;
    assert!(
        matches!(e, TelephonyError::Rejected { status: 422, code: Some(21201), ref message, .. } if message == "No called number"),
        "{e:?}"
    );
}

#[tokio::test]
async fn not_found_maps_to_not_found() {
    let server = MockServer::start().await;
    post(call_path(), "Status=canceled")
        .respond_with(ResponseTemplate::new(404).set_body_json(error_body(20404, 404)))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn server_errors_of_idempotent_requests_are_retried_then_unavailable() {
    let server = MockServer::start().await;
    post(call_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(500).set_body_json(error_body(20500, 500)))
        .expect(3)
        .mount(&server)
        .await;
    let e = client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Complete)
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelephonyError::Unavailable { ref message, .. } if message.contains("500")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_503_on_call_creation_is_retried() {
    // 503: Twilio did not take the request.
    let e = error_case(503, serde_json::json!("down"), 3).await;
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_502_on_call_creation_is_not_retried() {
    // 502 / 504 / 500: the call may have been placed; a retry could ring twice.
    let e = error_case(502, error_body(20500, 502), 1).await;
    assert!(
        matches!(e, TelephonyError::Unavailable { ref message, .. } if message.contains("502")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_500_on_adding_the_target_is_not_retried() {
    let server = MockServer::start().await;
    post(participants_path(), target_body(OUR))
        .respond_with(ResponseTemplate::new(500).set_body_json(error_body(20500, 500)))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .add_target(&target_request(None))
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_504_on_call_creation_is_retried_when_unsafe_retries_are_allowed() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(ResponseTemplate::new(504).set_body_json(error_body(20504, 504)))
        .expect(3)
        .mount(&server)
        .await;
    let retry = RetryPolicy {
        retry_unsafe_timeouts: true,
        ..fast_retries(3)
    };
    let e = TwilioClient::new(config(&server).with_retry(retry))
        .unwrap()
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn rate_limits_are_retried_then_reported() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(error_body(20429, 429)),
        )
        .expect(3)
        .mount(&server)
        .await;
    let e = client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TelephonyError::RateLimited {
                retry_after: Some(Duration::ZERO),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn code_20429_in_a_400_is_retried() {
    let e = error_case(400, error_body(20429, 400), 3).await;
    assert!(matches!(e, TelephonyError::RateLimited { .. }), "{e:?}");
}

#[tokio::test]
async fn a_transient_failure_then_success() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body(20429, 429)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    post(calls_path(), activist_body(true))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    post(calls_path(), activist_body(true))
        .respond_with(call_created())
        .expect(1)
        .mount(&server)
        .await;
    let leg = client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap();
    assert_eq!(leg.leg_id.as_str(), CA);
}

#[tokio::test]
async fn a_retried_request_is_resent_with_an_identical_body() {
    let server = MockServer::start().await;
    post(participants_path(), target_body(OUR))
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body(20429, 429)))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    post(participants_path(), target_body(OUR))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "call_sid": CA, "status": "queued"
        })))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .add_target(&target_request(None))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    let want = target_body(OUR);
    for r in &requests {
        assert_eq!(r.method.as_str(), "POST");
        assert_eq!(r.url.path(), participants_path());
        assert_eq!(String::from_utf8_lossy(&r.body), want);
        assert_eq!(
            r.headers.get("authorization").unwrap().to_str().unwrap(),
            basic(AC, TOKEN)
        );
        assert_eq!(
            r.headers.get("content-type").unwrap().to_str().unwrap(),
            "application/x-www-form-urlencoded"
        );
    }
}

#[tokio::test]
async fn retry_after_beyond_the_budget_stops_retrying() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_json(error_body(20429, 429)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let e = client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TelephonyError::RateLimited {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(30)
        ),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn retry_after_is_waited_for() {
    let server = MockServer::start().await;
    post(call_path(), "Status=completed")
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(error_body(20429, 429)),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    post(call_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"sid": CA})))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    client(&server)
        .hang_up(call_id(), &CA.parse().unwrap(), HangUp::Complete)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

fn slow_config(server: &MockServer, retry: RetryPolicy) -> TwilioConfig {
    config(server)
        .with_request_timeout(Duration::from_millis(200))
        .with_retry(retry)
}

#[tokio::test]
async fn timeouts_of_idempotent_requests_are_retried() {
    let server = MockServer::start().await;
    get(call_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sid": CA, "status": "ringing"}))
                .set_delay(Duration::from_secs(2)),
        )
        .expect(3)
        .mount(&server)
        .await;
    let client = TwilioClient::new(slow_config(&server, fast_retries(3))).unwrap();
    let e = client.fetch_leg(&CA.parse().unwrap()).await.unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_timed_out_call_creation_is_not_repeated() {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(call_created().set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    let client = TwilioClient::new(slow_config(&server, fast_retries(3))).unwrap();
    let e = client
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelephonyError::Unavailable { ref message, .. } if message.contains("may have taken effect")),
        "{e:?}"
    );
}

#[tokio::test]
async fn timed_out_creations_are_retried_when_allowed() {
    let server = MockServer::start().await;
    post(participants_path(), target_body(OUR))
        .respond_with(call_created().set_delay(Duration::from_secs(2)))
        .expect(2)
        .mount(&server)
        .await;
    let retry = RetryPolicy {
        retry_unsafe_timeouts: true,
        ..fast_retries(2)
    };
    let client = TwilioClient::new(slow_config(&server, retry)).unwrap();
    let e = client.add_target(&target_request(None)).await.unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn total_retry_time_is_bounded() {
    let server = MockServer::start().await;
    post(conference_path(), "Status=completed")
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let retry = RetryPolicy {
        max_attempts: 1000,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        max_elapsed: Duration::from_millis(400),
        retry_unsafe_timeouts: false,
    };
    let client = TwilioClient::new(config(&server).with_retry(retry)).unwrap();
    let started = Instant::now();
    let e = client
        .end_conference(call_id(), &CF.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let n = server.received_requests().await.unwrap().len();
    assert!((2..1000).contains(&n), "{n} attempts");
}

#[tokio::test]
async fn connection_failures_are_unavailable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = TwilioConfig::new(AC, Credentials::AuthToken(TOKEN.into()), phone(OUR), BASE)
        .unwrap()
        .with_api_base(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .with_retry(fast_retries(3));
    let e = TwilioClient::new(config)
        .unwrap()
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelephonyError::Unavailable { ref message, .. } if message.contains("connect")),
        "{e:?}"
    );
}

/// A fake Twilio that answers every request with a 201 whose body is cut
/// short (it announces more bytes than it sends, then closes), counting the
/// requests.
fn truncated_answer_server() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            // Read the head and the announced body, then answer.
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"sid\": \"CA",
            );
            let _ = stream.flush();
            // Dropping the stream closes it mid-body.
        }
    });
    (base, count)
}

#[tokio::test]
async fn an_unreadable_success_may_have_taken_effect_and_is_not_repeated() {
    let (base, count) = truncated_answer_server();
    let config = TwilioConfig::new(AC, Credentials::AuthToken(TOKEN.into()), phone(OUR), BASE)
        .unwrap()
        .with_api_base(&base)
        .unwrap()
        .with_retry(fast_retries(3));
    let e = TwilioClient::new(config)
        .unwrap()
        .call_activist(&activist_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelephonyError::Unavailable { ref message, .. }
            if message.contains("201") && message.contains("may have taken effect")),
        "{e:?}"
    );
    // Twilio accepted it: a second request would place a second call.
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

async fn malformed_success(body: serde_json::Value) -> TelephonyError {
    let server = MockServer::start().await;
    post(calls_path(), activist_body(true))
        .respond_with(ResponseTemplate::new(201).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .call_activist(&activist_request(true))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_success_without_sid_is_unavailable_not_a_panic() {
    let e = malformed_success(serde_json::json!({"status": "queued"})).await;
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_success_with_a_malformed_sid_is_unavailable_not_a_panic() {
    let e = malformed_success(serde_json::json!({"sid": "CA123", "status": "queued"})).await;
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn a_success_that_is_not_an_object_is_unavailable_not_a_panic() {
    let e = malformed_success(serde_json::json!([1, 2, 3])).await;
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

#[tokio::test]
async fn an_unknown_fetched_status_is_unavailable_not_a_panic() {
    let server = MockServer::start().await;
    get(call_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": CA, "status": "warping"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .fetch_leg(&CA.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
}

/// Issue 11: each Twilio code lands on core's variant for it, over the
/// wire, and core's rule then says whether the attempt counts (the client
/// overrides nothing). One server per case.
#[tokio::test]
async fn twilio_codes_map_onto_core_variants() {
    use bonde_pressure_twilio::error::{
        AUTH_CODES, CALLER_ID_CODES, GEO_PERMISSION_CODES, INVALID_NUMBER_CODES,
    };
    type Check = fn(&TelephonyError) -> bool;
    let mut cases: Vec<(u16, u32, u64, &str, Check, bool)> = Vec::new();
    for &code in GEO_PERMISSION_CODES {
        cases.push((400, code, 1, "destination not permitted", |e| {
            matches!(e, TelephonyError::DestinationNotPermitted { message, .. } if message.starts_with("geo permission"))
        }, false));
    }
    for &code in CALLER_ID_CODES {
        cases.push((400, code, 1, "caller id rejected", |e| {
            matches!(e, TelephonyError::CallerIdRejected { message, .. } if message.starts_with("caller id refused"))
        }, false));
    }
    for &code in INVALID_NUMBER_CODES {
        cases.push((
            400,
            code,
            1,
            "invalid number",
            |e| matches!(e, TelephonyError::InvalidNumber { .. }),
            true,
        ));
    }
    for &code in AUTH_CODES {
        for status in [401, 403] {
            cases.push((
                status,
                code,
                1,
                "auth",
                |e| matches!(e, TelephonyError::Auth { .. }),
                false,
            ));
        }
    }
    // Retried (3 attempts), then reported with Twilio's Retry-After.
    cases.push((
        429,
        20429,
        3,
        "rate limited",
        |e| matches!(e, TelephonyError::RateLimited { .. }),
        false,
    ));
    // A 500 on creation is not retried: the call may have been placed.
    cases.push((
        500,
        20500,
        1,
        "unavailable",
        |e| matches!(e, TelephonyError::Unavailable { .. }),
        true,
    ));
    cases.push((
        400,
        21205,
        1,
        "rejected",
        |e| matches!(e, TelephonyError::Rejected { status: 400, .. }),
        false,
    ));
    for (status, code, calls, what, check, counts) in cases {
        let e = error_case(status, error_body(code, status), calls).await;
        assert!(check(&e), "{status}/{code} should be {what}: {e:?}");
        if (400..429).contains(&status) {
            assert_eq!(e.code(), Some(code), "{e:?}");
        }
        assert_eq!(e.counts_against_limits(), counts, "{status}/{code}: {e:?}");
        // Twilio's body is kept as the source.
        let api = e
            .underlying()
            .and_then(|u| u.downcast_ref::<bonde_pressure_twilio::error::ApiError>())
            .unwrap_or_else(|| panic!("{status}/{code}: no ApiError source: {e:?}"));
        assert_eq!(api.code, Some(code));
    }
}

/// A transport failure keeps reqwest's error as the source (not as a
/// public type: reachable only by the source chain).
#[tokio::test]
async fn a_connection_failure_keeps_its_cause() {
    use std::error::Error as _;
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = TwilioConfig::new(AC, Credentials::AuthToken(TOKEN.into()), phone(OUR), BASE)
        .unwrap()
        .with_api_base(&format!("http://{addr}"))
        .unwrap()
        .with_retry(fast_retries(1));
    let e = TwilioClient::new(config)
        .unwrap()
        .fetch_leg(&CA.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, TelephonyError::Unavailable { .. }), "{e:?}");
    assert!(e.counts_against_limits());
    let source = e.source().expect("the transport error");
    assert!(!source.to_string().is_empty());
}
