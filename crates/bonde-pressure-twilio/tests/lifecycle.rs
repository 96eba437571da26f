//! Twilio-shaped webhook payloads, signed and parsed, driving core's call
//! model; and core's scripts for those moments rendered as TwiML.

use bonde_pressure_core::domain::{Email, PersonName};
use bonde_pressure_core::script::script_for;
use bonde_pressure_core::{
    Activist, Call, CallEvent, CallId, CampaignSettings, DetailedState, Effect, PhoneNumber,
    ScriptMoment, Target, WidgetId,
};
use bonde_pressure_twilio::signature::{sign, validate};
use bonde_pressure_twilio::webhook::{decode_form, parse, raw_event};
use bonde_pressure_twilio::{CallbackUrls, Route, twiml};
use chrono::Utc;

const A: &str = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CF: &str = "CFcccccccccccccccccccccccccccccccc";
const TOKEN: &str = "auth-token";

fn call(activist_first_name: &str, target_name: &str) -> Call {
    let activist = Activist::new(
        PersonName::parse(activist_first_name).unwrap(),
        Email::parse("ana@example.org").unwrap(),
        PhoneNumber::parse_e164("+5511987654321").unwrap(),
    )
    .with_first_name(PersonName::parse(activist_first_name).unwrap());
    let target = Target::new(
        PersonName::parse(target_name).unwrap(),
        PhoneNumber::parse_e164("+5561999990000").unwrap(),
    );
    Call::new(
        CallId::new(),
        WidgetId::new(1).unwrap(),
        activist,
        target,
        None,
        Utc::now(),
    )
}

fn enc(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Receives one webhook the way the HTTP crate does: check the signature
/// against the public URL, decode, parse, build the raw event.
fn receive(urls: &CallbackUrls, route: Route, id: CallId, body: &str) -> CallEvent {
    let url = urls.url(route, id);
    let form = decode_form(body.as_bytes());
    let signature = sign(TOKEN, &url, &form);
    validate(TOKEN, &url, &form, Some(&signature)).unwrap();
    // A payload signed for another call's URL is refused.
    let other = urls.url(route, CallId::new());
    assert!(validate(TOKEN, &other, &form, Some(&signature)).is_err());
    let raw = raw_event(route, body, &form, Utc::now());
    assert_eq!(raw.kind, route.as_str());
    parse(route, &form).unwrap()
}

#[test]
fn a_connected_call_from_twilio_payloads() {
    let urls = CallbackUrls::new("https://pressure.example.org").unwrap();
    let mut c = call("Ana", "Deputada X");
    let id = c.id;
    let cid = id.to_string();
    let deliveries: Vec<(Route, String)> = vec![
        (
            Route::StatusCallback,
            enc(&[
                ("CallSid", A),
                ("CallStatus", "ringing"),
                ("SequenceNumber", "1"),
            ]),
        ),
        (
            Route::StatusCallback,
            enc(&[
                ("CallSid", A),
                ("CallStatus", "in-progress"),
                ("SequenceNumber", "2"),
            ]),
        ),
        (
            Route::Answer,
            enc(&[("CallSid", A), ("CallStatus", "in-progress")]),
        ),
        (
            Route::AmdStatusCallback,
            enc(&[("CallSid", A), ("AnsweredBy", "human")]),
        ),
        (Route::Dial, enc(&[("CallSid", A), ("Digits", "1")])),
        (
            Route::ConferenceStatusCallback,
            enc(&[
                ("StatusCallbackEvent", "conference-start"),
                ("ConferenceSid", CF),
                ("FriendlyName", &cid),
            ]),
        ),
        (
            Route::ConferenceStatusCallback,
            enc(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CF),
                ("CallSid", A),
                ("ParticipantLabel", "activist"),
            ]),
        ),
    ];
    let mut effects = Vec::new();
    for (route, body) in &deliveries {
        let event = receive(&urls, *route, id, body);
        let (next, fx) = c.apply(&event, Utc::now());
        c = next;
        effects.extend(fx);
    }
    assert_eq!(effects, vec![Effect::DialTarget]);
    assert_eq!(c.state(), DetailedState::Connecting);

    // The client reported the target leg; then Twilio's callbacks for it.
    let (next, _) = c.apply(
        &CallEvent::leg_dialed(bonde_pressure_core::Leg::Target, B.parse().unwrap(), None),
        Utc::now(),
    );
    c = next;
    for (route, body) in [
        (
            Route::DialStatusCallback,
            enc(&[("CallSid", B), ("CallStatus", "ringing")]),
        ),
        (
            Route::DialAmdStatusCallback,
            enc(&[("CallSid", B), ("AnsweredBy", "human")]),
        ),
        (
            Route::DialStatusCallback,
            enc(&[("CallSid", B), ("CallStatus", "in-progress")]),
        ),
        (
            Route::ConferenceStatusCallback,
            enc(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CF),
                ("CallSid", B),
                ("ParticipantLabel", "target"),
            ]),
        ),
    ] {
        let event = receive(&urls, route, id, &body);
        let (next, fx) = c.apply(&event, Utc::now());
        assert!(fx.is_empty(), "{fx:?}");
        c = next;
    }
    assert_eq!(c.state(), DetailedState::Connected);

    for (route, body) in [
        (
            Route::ConferenceStatusCallback,
            enc(&[
                ("StatusCallbackEvent", "participant-leave"),
                ("ConferenceSid", CF),
                ("CallSid", B),
                ("ParticipantLabel", "target"),
            ]),
        ),
        (
            Route::ConferenceStatusCallback,
            enc(&[
                ("StatusCallbackEvent", "conference-end"),
                ("ConferenceSid", CF),
            ]),
        ),
        (
            Route::DialStatusCallback,
            enc(&[
                ("CallSid", B),
                ("CallStatus", "completed"),
                ("CallDuration", "95"),
            ]),
        ),
        (
            Route::AfterDial,
            enc(&[("CallSid", A), ("DialCallStatus", "completed")]),
        ),
        (
            Route::StatusCallback,
            enc(&[
                ("CallSid", A),
                ("CallStatus", "completed"),
                ("CallDuration", "130"),
            ]),
        ),
    ] {
        let event = receive(&urls, route, id, &body);
        c = c.apply(&event, Utc::now()).0;
    }
    assert_eq!(c.state(), DetailedState::Completed);
    assert_eq!(c.connected_secs(), Some(95));

    // The closing script renders as TwiML ending in a hang-up.
    let xml = twiml::render(
        &script_for(
            &CampaignSettings::default(),
            &c,
            ScriptMoment::AfterConference,
        ),
        &urls,
    );
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let names: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_owned())
        .collect();
    assert_eq!(names, ["Say", "Hangup"]);
}

#[test]
fn core_scripts_render_as_well_formed_twiml_with_hostile_names() {
    let urls = CallbackUrls::new("https://pressure.example.org/base").unwrap();
    let hostile_target = "Dep. <b>&amp;</b> \"Zé\" O'Neil ✊";
    let c = call("Ana</Say><Dial>", hostile_target);
    let settings = CampaignSettings::default();

    let answered = twiml::render(&script_for(&settings, &c, ScriptMoment::Answered), &urls);
    let doc = roxmltree::Document::parse(&answered).unwrap();
    let gather = doc
        .descendants()
        .find(|n| n.has_tag_name("Gather"))
        .unwrap();
    assert_eq!(gather.attribute("action"), Some(urls.dial(c.id).as_str()));
    let prompt = gather
        .children()
        .find(|n| n.has_tag_name("Say"))
        .unwrap()
        .text()
        .unwrap();
    assert!(prompt.contains("Ana</Say><Dial>"), "{prompt}");
    assert!(prompt.contains(hostile_target), "{prompt}");
    assert!(doc.descendants().all(|n| !n.has_tag_name("Dial")));

    // Confirmed (facts say so) → the conference.
    let confirmed = c
        .apply(
            &CallEvent::Confirmed(bonde_pressure_core::Confirmation::Digits("1".into())),
            Utc::now(),
        )
        .0;
    let xml = twiml::render(
        &script_for(&settings, &confirmed, ScriptMoment::Confirmed),
        &urls,
    );
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(
        dial.attribute("action"),
        Some(urls.after_dial(c.id).as_str())
    );
    let conf = dial
        .children()
        .find(|n| n.has_tag_name("Conference"))
        .unwrap();
    assert_eq!(conf.text(), Some(c.id.to_string().as_str()));
    assert_eq!(
        conf.attribute("statusCallback"),
        Some(urls.conference_status_callback(c.id).as_str())
    );
}
