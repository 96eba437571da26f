//! Properties: hostile input never breaks TwiML, webhook parsing or signatures.

use bonde_pressure_twilio::Route;
use bonde_pressure_twilio::signature::{sign, validate};
use bonde_pressure_twilio::twiml::{Response, Say, Verb};
use bonde_pressure_twilio::webhook::parse;
use proptest::prelude::*;

/// What XML 1.0 can carry of a string (the writer drops the rest).
fn xml_representable(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CallSid".to_owned()),
        Just("CallStatus".to_owned()),
        Just("AnsweredBy".to_owned()),
        Just("StatusCallbackEvent".to_owned()),
        Just("ConferenceSid".to_owned()),
        Just("ParticipantLabel".to_owned()),
        Just("Digits".to_owned()),
        Just("SpeechResult".to_owned()),
        Just("CallDuration".to_owned()),
        Just("Timestamp".to_owned()),
        ".{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
        Just("CFaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
        Just("participant-join".to_owned()),
        Just("conference-end".to_owned()),
        Just("completed".to_owned()),
        Just("human".to_owned()),
        Just("activist".to_owned()),
        ".{0,40}",
    ]
}

proptest! {
    #[test]
    fn say_text_round_trips_through_xml(text in any::<String>(), voice in ".{0,20}") {
        let xml = Response::new()
            .with(Verb::Say(Say { text: text.clone(), voice: Some(voice.clone()), language: None }))
            .with(Verb::Hangup)
            .to_xml();
        let doc = roxmltree::Document::parse(&xml).map_err(|e| TestCaseError::fail(format!("{e}: {xml}")))?;
        let verbs: Vec<_> = doc.root_element().children().filter(|n| n.is_element()).collect();
        prop_assert_eq!(verbs.len(), 2);
        prop_assert_eq!(verbs[0].text().unwrap_or(""), xml_representable(&text));
        prop_assert_eq!(verbs[0].attribute("voice").unwrap_or(""), xml_representable(&voice));
    }

    #[test]
    fn webhook_parsing_never_panics(
        form in proptest::collection::vec((field_name(), field_value()), 0..8),
    ) {
        for route in Route::ALL {
            // Either an event or a typed error naming a field.
            if let Err(e) = parse(route, &form) {
                prop_assert!(!e.field().is_empty());
            }
        }
    }

    #[test]
    fn a_signature_validates_only_its_own_payload(
        form in proptest::collection::vec((".{0,10}", ".{0,10}"), 0..6),
        extra in ".{1,10}",
    ) {
        let url = "https://pressure.example.org/v1/phone/status-callback/x";
        let sig = sign("token", url, &form);
        prop_assert!(validate("token", url, &form, Some(&sig)).is_ok());
        let mut shuffled = form.clone();
        shuffled.reverse();
        prop_assert!(validate("token", url, &shuffled, Some(&sig)).is_ok());
        let mut more = form.clone();
        more.push(("Extra".to_owned(), extra));
        prop_assert!(validate("token", url, &more, Some(&sig)).is_err());
        prop_assert!(validate("other", url, &form, Some(&sig)).is_err());
    }
}
