//! A small TwiML writer, and the rendering of core's provider-neutral
//! [`VoiceScript`]s as TwiML.
//!
//! Text and attribute values are escaped (`& < > " '`), and characters that
//! XML 1.0 cannot carry (most control characters) are dropped, so whatever a
//! campaign author or an activist typed, the document stays well-formed.

use bonde_pressure_core::script::{Speech, VoiceInstruction};
use bonde_pressure_core::{CallId, VoiceScript};
use tracing::warn;

use crate::urls::{CallbackUrls, Route};

/// A TwiML document: `<Response>` and its verbs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: Vec<Verb>,
}

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verb {
    /// `<Say>`.
    Say(Say),
    /// `<Gather>`.
    Gather(Gather),
    /// `<Dial>` into a `<Conference>`.
    Dial(Dial),
    /// `<Hangup/>`.
    Hangup,
    /// `<Pause length="…"/>`.
    Pause {
        /// Seconds.
        length: u32,
    },
    /// `<Play>url</Play>`.
    Play {
        /// The audio URL.
        url: String,
    },
    /// `<Redirect method="…">url</Redirect>`.
    Redirect {
        /// Where to fetch TwiML next.
        url: String,
        /// `GET` or `POST`.
        method: String,
    },
}

/// `<Say voice="…" language="…">text</Say>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Say {
    /// What to say.
    pub text: String,
    /// Voice (`Polly.Camila`).
    pub voice: Option<String>,
    /// Language (`pt-BR`).
    pub language: Option<String>,
}

impl Say {
    /// Text only, default voice and language.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            voice: None,
            language: None,
        }
    }
}

impl From<&Speech> for Say {
    fn from(s: &Speech) -> Self {
        Self {
            text: s.text.clone(),
            voice: non_empty(&s.voice),
            language: non_empty(&s.language),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.to_owned())
}

/// `<Gather>`: collects keys (and speech) while its nested verbs play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    /// `input`: `dtmf`, `speech` or `dtmf speech`.
    pub input: String,
    /// `numDigits`.
    pub num_digits: Option<u32>,
    /// `action`: the URL requested with the input.
    pub action: Option<String>,
    /// `method` of the action.
    pub method: Option<String>,
    /// `timeout` in seconds.
    pub timeout: Option<u32>,
    /// `language` of speech recognition.
    pub language: Option<String>,
    /// Nested verbs (`Say`, `Play`, `Pause` only; others are not written).
    pub children: Vec<Verb>,
}

/// `<Dial action method><Conference …>name</Conference></Dial>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// `action`: requested when the conference ends for this caller.
    pub action: Option<String>,
    /// `method` of the action.
    pub method: Option<String>,
    /// The conference to join.
    pub conference: Conference,
}

/// `<Conference>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conference {
    /// The friendly name (our call id).
    pub name: String,
    /// `startConferenceOnEnter`.
    pub start_conference_on_enter: bool,
    /// `endConferenceOnExit`.
    pub end_conference_on_exit: bool,
    /// `beep`.
    pub beep: bool,
    /// `waitUrl`: hold music; `Some("")` for silence, `None` for Twilio's default music.
    pub wait_url: Option<String>,
    /// `waitMethod` (`GET` suits static audio files).
    pub wait_method: Option<String>,
    /// `participantLabel`.
    pub participant_label: Option<String>,
    /// `statusCallback`.
    pub status_callback: Option<String>,
    /// `statusCallbackMethod`.
    pub status_callback_method: Option<String>,
    /// `statusCallbackEvent` (space-separated).
    pub status_callback_event: Option<String>,
}

impl Response {
    /// An empty response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a verb.
    pub fn push(&mut self, verb: Verb) -> &mut Self {
        self.verbs.push(verb);
        self
    }

    /// Appends a verb (builder style).
    pub fn with(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    /// The verbs.
    pub fn verbs(&self) -> &[Verb] {
        &self.verbs
    }

    /// The XML document.
    pub fn to_xml(&self) -> String {
        let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#);
        for v in &self.verbs {
            write_verb(&mut out, v, false);
        }
        out.push_str("</Response>");
        out
    }
}

/// Escapes text for XML content or attribute values; drops characters XML
/// 1.0 cannot represent.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Keep whitespace characters as references so attribute values keep them.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value);
    out.push('"');
}

fn opt_attr(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        attr(out, name, v);
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn write_verb(out: &mut String, verb: &Verb, nested: bool) {
    match verb {
        Verb::Say(s) => {
            out.push_str("<Say");
            opt_attr(out, "voice", s.voice.as_deref());
            opt_attr(out, "language", s.language.as_deref());
            out.push('>');
            push_escaped(out, &s.text);
            out.push_str("</Say>");
        }
        Verb::Pause { length } => {
            out.push_str("<Pause");
            attr(out, "length", &length.to_string());
            out.push_str("/>");
        }
        Verb::Play { url } => {
            out.push_str("<Play>");
            push_escaped(out, url);
            out.push_str("</Play>");
        }
        // Only Say, Play and Pause may nest in a Gather.
        _ if nested => {}
        Verb::Gather(g) => {
            out.push_str("<Gather");
            attr(out, "input", &g.input);
            opt_attr(
                out,
                "numDigits",
                g.num_digits.map(|n| n.to_string()).as_deref(),
            );
            opt_attr(out, "action", g.action.as_deref());
            opt_attr(out, "method", g.method.as_deref());
            opt_attr(out, "timeout", g.timeout.map(|n| n.to_string()).as_deref());
            opt_attr(out, "language", g.language.as_deref());
            out.push('>');
            for c in &g.children {
                write_verb(out, c, true);
            }
            out.push_str("</Gather>");
        }
        Verb::Dial(d) => {
            out.push_str("<Dial");
            opt_attr(out, "action", d.action.as_deref());
            opt_attr(out, "method", d.method.as_deref());
            out.push('>');
            let c = &d.conference;
            out.push_str("<Conference");
            attr(
                out,
                "startConferenceOnEnter",
                bool_str(c.start_conference_on_enter),
            );
            attr(
                out,
                "endConferenceOnExit",
                bool_str(c.end_conference_on_exit),
            );
            attr(out, "beep", bool_str(c.beep));
            opt_attr(out, "waitUrl", c.wait_url.as_deref());
            opt_attr(out, "waitMethod", c.wait_method.as_deref());
            opt_attr(out, "participantLabel", c.participant_label.as_deref());
            opt_attr(out, "statusCallback", c.status_callback.as_deref());
            opt_attr(
                out,
                "statusCallbackMethod",
                c.status_callback_method.as_deref(),
            );
            opt_attr(
                out,
                "statusCallbackEvent",
                c.status_callback_event.as_deref(),
            );
            out.push('>');
            push_escaped(out, &c.name);
            out.push_str("</Conference></Dial>");
        }
        Verb::Hangup => out.push_str("<Hangup/>"),
        Verb::Redirect { url, method } => {
            out.push_str("<Redirect");
            attr(out, "method", method);
            out.push('>');
            push_escaped(out, url);
            out.push_str("</Redirect>");
        }
    }
}

/// The conference every pressure call's activist joins: named after the
/// call id, started when the activist enters, ended when they leave, no
/// beep, labelled `activist`, reporting `start end join leave` to the
/// conference status callback.
pub fn pressure_conference(
    urls: &CallbackUrls,
    call_id: CallId,
    hold_music_url: Option<&str>,
) -> Conference {
    Conference {
        name: call_id.to_string(),
        start_conference_on_enter: true,
        end_conference_on_exit: true,
        beep: false,
        wait_url: Some(hold_music_url.unwrap_or_default().to_owned()),
        wait_method: hold_music_url.map(|_| "GET".to_owned()),
        participant_label: Some("activist".to_owned()),
        status_callback: Some(urls.conference_status_callback(call_id)),
        status_callback_method: Some("POST".to_owned()),
        status_callback_event: Some("start end join leave".to_owned()),
    }
}

/// Renders a core voice script as TwiML: a gather's action is the URL of its
/// moment (the confirmation's is `/dial/{id}`), a conference's `<Dial action>`
/// is its `after` moment's URL (`/after-dial/{id}`), and its status callback
/// the conference callback.
pub fn render(script: &VoiceScript, urls: &CallbackUrls) -> String {
    to_response(script, urls).to_xml()
}

/// [`render`], before serialisation.
pub fn to_response(script: &VoiceScript, urls: &CallbackUrls) -> Response {
    let id = script.call_id;
    let mut response = Response::new();
    for instruction in &script.instructions {
        let verb = match instruction {
            VoiceInstruction::Say(s) => Verb::Say(s.into()),
            VoiceInstruction::Pause { seconds } => Verb::Pause { length: *seconds },
            VoiceInstruction::Play { url } => Verb::Play { url: url.clone() },
            VoiceInstruction::Gather {
                prompt,
                num_digits,
                timeout_secs,
                speech,
                action,
            } => Verb::Gather(Gather {
                input: if *speech { "dtmf speech" } else { "dtmf" }.to_owned(),
                num_digits: Some(*num_digits),
                action: Some(urls.for_moment(*action, id)),
                method: Some("POST".to_owned()),
                timeout: Some(*timeout_secs),
                language: non_empty(&prompt.language),
                children: vec![Verb::Say(prompt.into())],
            }),
            VoiceInstruction::JoinConference {
                room,
                hold_music_url,
                after,
            } => Verb::Dial(Dial {
                action: Some(urls.url(Route::for_moment(*after), id)),
                method: Some("POST".to_owned()),
                conference: pressure_conference(urls, *room, hold_music_url.as_deref()),
            }),
            VoiceInstruction::Hangup => Verb::Hangup,
            other => {
                warn!(
                    ?other,
                    "voice instruction not supported by the TwiML renderer; skipped"
                );
                continue;
            }
        };
        response.push(verb);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use bonde_pressure_core::ScriptMoment;

    fn id() -> CallId {
        "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".parse().unwrap()
    }

    fn urls() -> CallbackUrls {
        CallbackUrls::new("https://p.example.org").unwrap()
    }

    fn speech(text: &str) -> Speech {
        Speech::new(text, "Polly.Camila", "pt-BR")
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("invalid XML {e}: {xml}"))
    }

    fn children<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
        n.children().filter(|c| c.is_element()).collect()
    }

    #[test]
    fn answered_script_renders_a_gather_then_goodbye() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Gather {
                    prompt: speech("Olá, Ana! Aperte uma tecla."),
                    num_digits: 1,
                    timeout_secs: 8,
                    speech: true,
                    action: ScriptMoment::Confirmed,
                },
                VoiceInstruction::Say(speech("Tchau")),
                VoiceInstruction::Hangup,
            ],
        );
        let xml = render(&script, &urls());
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#));
        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Response");
        let verbs = children(root);
        assert_eq!(
            verbs
                .iter()
                .map(|v| v.tag_name().name())
                .collect::<Vec<_>>(),
            ["Gather", "Say", "Hangup"]
        );
        let g = verbs[0];
        assert_eq!(g.attribute("input"), Some("dtmf speech"));
        assert_eq!(g.attribute("numDigits"), Some("1"));
        assert_eq!(g.attribute("timeout"), Some("8"));
        assert_eq!(g.attribute("method"), Some("POST"));
        assert_eq!(g.attribute("language"), Some("pt-BR"));
        assert_eq!(
            g.attribute("action"),
            Some("https://p.example.org/v1/phone/dial/0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b")
        );
        let say = children(g)[0];
        assert_eq!(say.tag_name().name(), "Say");
        assert_eq!(say.attribute("voice"), Some("Polly.Camila"));
        assert_eq!(say.attribute("language"), Some("pt-BR"));
        assert_eq!(say.text(), Some("Olá, Ana! Aperte uma tecla."));
        assert_eq!(verbs[1].text(), Some("Tchau"));
    }

    #[test]
    fn confirmed_script_joins_the_conference() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Say(speech("Ligando")),
                VoiceInstruction::JoinConference {
                    room: id(),
                    hold_music_url: None,
                    after: ScriptMoment::AfterConference,
                },
            ],
        );
        let xml = render(&script, &urls());
        let doc = parse(&xml);
        let verbs = children(doc.root_element());
        let dial = verbs[1];
        assert_eq!(dial.tag_name().name(), "Dial");
        assert_eq!(
            dial.attribute("action"),
            Some("https://p.example.org/v1/phone/after-dial/0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b")
        );
        assert_eq!(dial.attribute("method"), Some("POST"));
        let conf = children(dial)[0];
        assert_eq!(conf.tag_name().name(), "Conference");
        assert_eq!(conf.text(), Some("0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b"));
        for (k, v) in [
            ("startConferenceOnEnter", "true"),
            ("endConferenceOnExit", "true"),
            ("beep", "false"),
            ("waitUrl", ""),
            ("participantLabel", "activist"),
            ("statusCallbackMethod", "POST"),
            ("statusCallbackEvent", "start end join leave"),
            (
                "statusCallback",
                // Connection overrides: Twilio retries a failed callback.
                "https://p.example.org/v1/phone/conference-status-callback/0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b#rc=2&rp=ct,5xx",
            ),
        ] {
            assert_eq!(conf.attribute(k), Some(v), "{k}");
        }
        assert_eq!(conf.attribute("waitMethod"), None);
    }

    const ID: &str = "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b";

    /// The XML declaration every document starts with.
    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    /// Element names of `n`'s element children, in order.
    fn names(n: roxmltree::Node<'_, '_>) -> Vec<String> {
        children(n)
            .iter()
            .map(|c| c.tag_name().name().to_owned())
            .collect()
    }

    #[test]
    fn snapshot_answered_greeting_and_gather() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Gather {
                    prompt: speech(
                        "Olá, Ana! Você vai ligar para a Dep. \"Maria\" & cia. Aperte qualquer tecla ou diga seu nome.",
                    ),
                    num_digits: 1,
                    timeout_secs: 8,
                    speech: true,
                    action: ScriptMoment::Confirmed,
                },
                VoiceInstruction::Say(speech("Não ouvimos nada. Até logo!")),
                VoiceInstruction::Hangup,
            ],
        );
        let xml = render(&script, &urls());
        let expected = format!(
            "{DECL}<Response>\
             <Gather input=\"dtmf speech\" numDigits=\"1\" action=\"https://p.example.org/v1/phone/dial/{ID}\" method=\"POST\" timeout=\"8\" language=\"pt-BR\">\
             <Say voice=\"Polly.Camila\" language=\"pt-BR\">Olá, Ana! Você vai ligar para a Dep. &quot;Maria&quot; &amp; cia. Aperte qualquer tecla ou diga seu nome.</Say>\
             </Gather>\
             <Say voice=\"Polly.Camila\" language=\"pt-BR\">Não ouvimos nada. Até logo!</Say>\
             <Hangup/>\
             </Response>"
        );
        assert_eq!(xml, expected);

        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Response");
        assert_eq!(names(root), ["Gather", "Say", "Hangup"]);
        let gather = children(root)[0];
        assert_eq!(names(gather), ["Say"]);
        assert_eq!(
            children(gather)[0].text(),
            Some(
                "Olá, Ana! Você vai ligar para a Dep. \"Maria\" & cia. Aperte qualquer tecla ou diga seu nome."
            )
        );
        assert_eq!(
            gather.attribute("action"),
            Some(format!("https://p.example.org/v1/phone/dial/{ID}").as_str())
        );
    }

    #[test]
    fn snapshot_confirmed_joins_the_conference() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Say(speech("Conectando você agora.")),
                VoiceInstruction::JoinConference {
                    room: id(),
                    hold_music_url: Some("https://cdn.example.org/hold.mp3?a=1&b=2".into()),
                    after: ScriptMoment::AfterConference,
                },
            ],
        );
        let xml = render(&script, &urls());
        let expected = format!(
            "{DECL}<Response>\
             <Say voice=\"Polly.Camila\" language=\"pt-BR\">Conectando você agora.</Say>\
             <Dial action=\"https://p.example.org/v1/phone/after-dial/{ID}\" method=\"POST\">\
             <Conference startConferenceOnEnter=\"true\" endConferenceOnExit=\"true\" beep=\"false\" \
             waitUrl=\"https://cdn.example.org/hold.mp3?a=1&amp;b=2\" waitMethod=\"GET\" participantLabel=\"activist\" \
             statusCallback=\"https://p.example.org/v1/phone/conference-status-callback/{ID}#rc=2&amp;rp=ct,5xx\" statusCallbackMethod=\"POST\" \
             statusCallbackEvent=\"start end join leave\">{ID}</Conference>\
             </Dial>\
             </Response>"
        );
        assert_eq!(xml, expected);

        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(names(root), ["Say", "Dial"]);
        let dial = children(root)[1];
        assert_eq!(names(dial), ["Conference"]);
        let conference = children(dial)[0];
        assert_eq!(conference.text(), Some(ID));
        assert_eq!(
            conference.attribute("waitUrl"),
            Some("https://cdn.example.org/hold.mp3?a=1&b=2")
        );
        assert_eq!(
            conference.attribute("statusCallbackEvent"),
            Some("start end join leave")
        );
    }

    #[test]
    fn snapshot_after_conference_closing() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Say(speech("Obrigado por pressionar! <3 A ligação terminou.")),
                VoiceInstruction::Hangup,
            ],
        );
        let xml = render(&script, &urls());
        let expected = format!(
            "{DECL}<Response>\
             <Say voice=\"Polly.Camila\" language=\"pt-BR\">Obrigado por pressionar! &lt;3 A ligação terminou.</Say>\
             <Hangup/>\
             </Response>"
        );
        assert_eq!(xml, expected);

        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(names(root), ["Say", "Hangup"]);
        assert_eq!(
            children(root)[0].text(),
            Some("Obrigado por pressionar! <3 A ligação terminou.")
        );
        assert!(children(root)[1].children().next().is_none());
    }

    #[test]
    fn hold_music_is_fetched_with_get() {
        let c = pressure_conference(
            &urls(),
            id(),
            Some("https://cdn.example.org/hold.mp3?a=1&b=2"),
        );
        let xml = Response::new()
            .with(Verb::Dial(Dial {
                action: None,
                method: None,
                conference: c,
            }))
            .to_xml();
        assert!(xml.contains("waitUrl=\"https://cdn.example.org/hold.mp3?a=1&amp;b=2\""));
        let doc = parse(&xml);
        let conf = doc
            .descendants()
            .find(|n| n.has_tag_name("Conference"))
            .unwrap();
        assert_eq!(
            conf.attribute("waitUrl"),
            Some("https://cdn.example.org/hold.mp3?a=1&b=2")
        );
        assert_eq!(conf.attribute("waitMethod"), Some("GET"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let hostile = "</Say><Hangup/> Tom & \"Jerry\" 'ok' <script> ção 🎉\u{0}\u{1b}\nnext";
        let xml = Response::new()
            .with(Verb::Say(Say {
                text: hostile.into(),
                voice: Some("a\"b<c>&d".into()),
                language: Some("pt-BR".into()),
            }))
            .with(Verb::Redirect {
                url: "https://x/?a=1&b='2'".into(),
                method: "POST".into(),
            })
            .to_xml();
        let doc = parse(&xml);
        let verbs = children(doc.root_element());
        assert_eq!(verbs.len(), 2, "injection created elements: {xml}");
        let say = verbs[0];
        assert_eq!(
            say.text(),
            Some("</Say><Hangup/> Tom & \"Jerry\" 'ok' <script> ção 🎉\nnext")
        );
        assert_eq!(say.attribute("voice"), Some("a\"b<c>&d"));
        assert_eq!(verbs[1].text(), Some("https://x/?a=1&b='2'"));
        assert_eq!(verbs[1].attribute("method"), Some("POST"));
        assert_eq!(escape_xml("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }

    #[test]
    fn every_verb_serialises() {
        let xml = Response::new()
            .with(Verb::Pause { length: 2 })
            .with(Verb::Play {
                url: "https://x/a.mp3".into(),
            })
            .with(Verb::Gather(Gather {
                input: "dtmf".into(),
                num_digits: None,
                action: None,
                method: None,
                timeout: None,
                language: None,
                children: vec![
                    Verb::Pause { length: 1 },
                    Verb::Hangup,
                    Verb::Say(Say::new("x")),
                ],
            }))
            .with(Verb::Hangup)
            .to_xml();
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Pause length="2"/><Play>https://x/a.mp3</Play><Gather input="dtmf"><Pause length="1"/><Say>x</Say></Gather><Hangup/></Response>"#
        );
        parse(&xml);
    }

    #[test]
    fn dtmf_only_gather_and_empty_voice() {
        let script = VoiceScript::new(
            id(),
            vec![
                VoiceInstruction::Gather {
                    prompt: Speech::new("press", String::new(), String::new()),
                    num_digits: 2,
                    timeout_secs: 5,
                    speech: false,
                    action: ScriptMoment::Confirmed,
                },
                VoiceInstruction::Pause { seconds: 1 },
                VoiceInstruction::Play {
                    url: "https://x/b.mp3".into(),
                },
            ],
        );
        let xml = render(&script, &urls());
        let doc = parse(&xml);
        let g = children(doc.root_element())[0];
        assert_eq!(g.attribute("input"), Some("dtmf"));
        assert_eq!(g.attribute("numDigits"), Some("2"));
        assert_eq!(g.attribute("language"), None);
        assert_eq!(children(g)[0].attribute("voice"), None);
        assert_eq!(children(doc.root_element()).len(), 3);
    }
}
