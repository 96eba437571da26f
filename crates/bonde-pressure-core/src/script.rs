//! Provider-neutral voice scripts: what the activist hears at each moment.
//! The Twilio adapter renders them as TwiML.

use serde::{Deserialize, Serialize};

use crate::call::{Call, DetailedState};
use crate::domain::CallId;

/// Whose number the target sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallerIdPolicy {
    /// The service's own number.
    #[default]
    OurNumber,
    /// The activist's number (needs the provider to allow it, e.g. a verified caller id).
    ActivistNumber,
}

/// What the voice says, per moment. `{activist}` and `{target}` are replaced
/// by the activist's first name and the target's name. In the greeting,
/// `{do_not_call}` is replaced by [`Messages::do_not_call`] when a
/// do-not-call key is configured and by nothing when it is off, and
/// `{do_not_call_key}` (in either text) by the configured key.
///
/// Built from [`Messages::default`] and the `with_*` setters (or by
/// assigning its fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Messages {
    /// Played when the activist answers, inside the confirmation prompt.
    pub greeting: String,
    /// The sentence announcing the do-not-call key, put where the greeting
    /// says `{do_not_call}` (nothing when the key is off).
    pub do_not_call: String,
    /// Played when no confirmation came.
    pub no_input: String,
    /// Played once confirmed, before joining the conference.
    pub connecting: String,
    /// Closing when they talked.
    pub completed: String,
    /// Closing when the target was busy.
    pub target_busy: String,
    /// Closing when the target did not answer (or a voicemail did).
    pub target_no_answer: String,
    /// Closing for any other failure.
    pub failed: String,
    /// Said, before hanging up, when the service cannot go on with the call
    /// right now (its store is unavailable).
    pub unavailable: String,
    /// Said after the activist pressed the do-not-call key, before hanging up.
    pub opted_out: String,
    /// Closing when the target was not dialled: its calls per hour were used up.
    pub target_limited: String,
}

impl Default for Messages {
    fn default() -> Self {
        Self {
            greeting: "Olá, {activist}! Aqui é da campanha. Você vai falar agora com {target}. \
                       Para confirmar, aperte 1 ou diga o seu nome. {do_not_call}"
                .into(),
            do_not_call: "Se não quiser receber mais ligações nossas, aperte {do_not_call_key}."
                .into(),
            no_input: "Não recebemos a sua confirmação. Obrigado, até a próxima!".into(),
            connecting: "Obrigado! Estamos ligando para {target}. Aguarde na linha.".into(),
            completed: "Obrigado por fazer pressão! Sua ligação faz diferença.".into(),
            target_busy: "{target} está com a linha ocupada. Tente novamente mais tarde. Obrigado!"
                .into(),
            target_no_answer: "{target} não atendeu. Tente novamente mais tarde. Obrigado!".into(),
            failed: "Não foi possível completar a ligação. Tente novamente mais tarde.".into(),
            unavailable: "Desculpe, estamos com um problema técnico e não podemos completar a \
                          sua ligação agora. Tente novamente mais tarde."
                .into(),
            opted_out: "Tudo bem. Seu número não receberá mais ligações nossas. Até logo!".into(),
            target_limited: "{target} já recebeu muitas ligações na última hora. \
                             Tente novamente mais tarde. Obrigado!"
                .into(),
        }
    }
}

impl Messages {
    /// With this [`Self::greeting`].
    pub fn with_greeting(mut self, greeting: impl Into<String>) -> Self {
        self.greeting = greeting.into();
        self
    }

    /// With this [`Self::do_not_call`].
    pub fn with_do_not_call(mut self, do_not_call: impl Into<String>) -> Self {
        self.do_not_call = do_not_call.into();
        self
    }

    /// With this [`Self::no_input`].
    pub fn with_no_input(mut self, no_input: impl Into<String>) -> Self {
        self.no_input = no_input.into();
        self
    }

    /// With this [`Self::connecting`].
    pub fn with_connecting(mut self, connecting: impl Into<String>) -> Self {
        self.connecting = connecting.into();
        self
    }

    /// With this [`Self::completed`].
    pub fn with_completed(mut self, completed: impl Into<String>) -> Self {
        self.completed = completed.into();
        self
    }

    /// With this [`Self::target_busy`].
    pub fn with_target_busy(mut self, target_busy: impl Into<String>) -> Self {
        self.target_busy = target_busy.into();
        self
    }

    /// With this [`Self::target_no_answer`].
    pub fn with_target_no_answer(mut self, target_no_answer: impl Into<String>) -> Self {
        self.target_no_answer = target_no_answer.into();
        self
    }

    /// With this [`Self::failed`].
    pub fn with_failed(mut self, failed: impl Into<String>) -> Self {
        self.failed = failed.into();
        self
    }

    /// With this [`Self::unavailable`].
    pub fn with_unavailable(mut self, unavailable: impl Into<String>) -> Self {
        self.unavailable = unavailable.into();
        self
    }

    /// With this [`Self::opted_out`].
    pub fn with_opted_out(mut self, opted_out: impl Into<String>) -> Self {
        self.opted_out = opted_out.into();
        self
    }

    /// With this [`Self::target_limited`].
    pub fn with_target_limited(mut self, target_limited: impl Into<String>) -> Self {
        self.target_limited = target_limited.into();
        self
    }
}

/// How a campaign's calls sound and behave.
///
/// Built from [`CampaignSettings::default`] and the `with_*` setters (or by
/// assigning its fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CampaignSettings {
    /// Text-to-speech voice (Twilio: `Polly.Camila`).
    pub voice: String,
    /// Language of speech and recognition (`pt-BR`).
    pub language: String,
    /// What is said.
    pub messages: Messages,
    /// Whose number the target sees.
    pub caller_id: CallerIdPolicy,
    /// Seconds the activist's phone rings.
    pub activist_timeout_secs: u32,
    /// Seconds the target's phone rings.
    pub target_timeout_secs: u32,
    /// Seconds to wait for the activist's confirmation.
    pub confirm_timeout_secs: u32,
    /// Hold music while the target is dialled (`None`: silence).
    pub hold_music_url: Option<String>,
    /// Run answering-machine detection on both legs.
    pub detect_machines: bool,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            voice: "Polly.Camila".into(),
            language: "pt-BR".into(),
            messages: Messages::default(),
            caller_id: CallerIdPolicy::OurNumber,
            activist_timeout_secs: 30,
            target_timeout_secs: 30,
            confirm_timeout_secs: 8,
            hold_music_url: None,
            detect_machines: true,
        }
    }
}

impl CampaignSettings {
    /// With this [`Self::voice`].
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = voice.into();
        self
    }

    /// With this [`Self::language`].
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = language.into();
        self
    }

    /// With this [`Self::messages`].
    pub fn with_messages(mut self, messages: Messages) -> Self {
        self.messages = messages;
        self
    }

    /// With this [`Self::caller_id`].
    pub fn with_caller_id(mut self, caller_id: CallerIdPolicy) -> Self {
        self.caller_id = caller_id;
        self
    }

    /// With this [`Self::activist_timeout_secs`].
    pub fn with_activist_timeout_secs(mut self, activist_timeout_secs: u32) -> Self {
        self.activist_timeout_secs = activist_timeout_secs;
        self
    }

    /// With this [`Self::target_timeout_secs`].
    pub fn with_target_timeout_secs(mut self, target_timeout_secs: u32) -> Self {
        self.target_timeout_secs = target_timeout_secs;
        self
    }

    /// With this [`Self::confirm_timeout_secs`].
    pub fn with_confirm_timeout_secs(mut self, confirm_timeout_secs: u32) -> Self {
        self.confirm_timeout_secs = confirm_timeout_secs;
        self
    }

    /// With this [`Self::hold_music_url`] (`None`: silence).
    pub fn with_hold_music_url(mut self, url: impl Into<Option<String>>) -> Self {
        self.hold_music_url = url.into();
        self
    }

    /// With (or without) answering-machine detection on both legs.
    pub fn with_detect_machines(mut self, detect_machines: bool) -> Self {
        self.detect_machines = detect_machines;
        self
    }
}

/// The moments at which the telephony asks what to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptMoment {
    /// The activist answered.
    Answered,
    /// The activist confirmed (the gather's action).
    Confirmed,
    /// The activist's conference ended (the dial's action).
    AfterConference,
}

/// Something said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Speech {
    /// The text.
    pub text: String,
    /// The voice.
    pub voice: String,
    /// The language.
    pub language: String,
}

impl Speech {
    /// `text`, said in `voice` and `language`.
    pub fn new(
        text: impl Into<String>,
        voice: impl Into<String>,
        language: impl Into<String>,
    ) -> Self {
        Self {
            text: text.into(),
            voice: voice.into(),
            language: language.into(),
        }
    }
}

/// One instruction of a voice script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum VoiceInstruction {
    /// Speak.
    Say(Speech),
    /// Be silent.
    Pause {
        /// Seconds.
        seconds: u32,
    },
    /// Play audio from a URL.
    Play {
        /// The audio.
        url: String,
    },
    /// Ask for a key or speech; on input, the telephony asks for `action`'s script.
    Gather {
        /// Said while waiting.
        prompt: Speech,
        /// Keys to collect.
        num_digits: u32,
        /// Seconds to wait for input.
        timeout_secs: u32,
        /// Accept speech too.
        speech: bool,
        /// The moment requested with the input.
        action: ScriptMoment,
    },
    /// Put the caller in the call's conference; when it ends, the telephony
    /// asks for `after`'s script.
    JoinConference {
        /// The call whose conference to join: the telephony addresses a
        /// call's conference by its call id ([`crate::Telephony`]); how it
        /// names the conference is its own business.
        room: CallId,
        /// Hold music while alone (`None`: silence).
        hold_music_url: Option<String>,
        /// The moment requested after the conference.
        after: ScriptMoment,
    },
    /// Hang up.
    Hangup,
}

/// What to play to the activist at one moment of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VoiceScript {
    /// The call.
    pub call_id: CallId,
    /// In order.
    pub instructions: Vec<VoiceInstruction>,
}

impl VoiceScript {
    /// These instructions, for call `call_id`.
    pub fn new(call_id: CallId, instructions: Vec<VoiceInstruction>) -> Self {
        Self {
            call_id,
            instructions,
        }
    }
}

/// The do-not-call key [`script_for`] announces: the default of
/// `ServiceConfig::do_not_call_digit`.
pub const DEFAULT_DO_NOT_CALL_KEY: char = '9';

/// Puts the do-not-call sentence (or nothing, when `key` is `None`) in a greeting.
fn with_do_not_call(settings: &CampaignSettings, template: &str, key: Option<char>) -> String {
    match key {
        Some(key) => template
            .replace("{do_not_call}", &settings.messages.do_not_call)
            .replace("{do_not_call_key}", key.encode_utf8(&mut [0; 4])),
        None => template
            .replace("{do_not_call}", "")
            .replace("{do_not_call_key}", "")
            .trim_end()
            .to_owned(),
    }
}

fn fill(template: &str, call: &Call) -> String {
    let activist = call
        .activist
        .first_name
        .as_ref()
        .unwrap_or(&call.activist.name)
        .as_str();
    template
        .replace("{activist}", activist)
        .replace("{target}", call.target.name.as_str())
}

fn say(settings: &CampaignSettings, call: &Call, template: &str) -> Speech {
    Speech {
        text: fill(template, call),
        voice: settings.voice.clone(),
        language: settings.language.clone(),
    }
}

/// The closing message for a call's outcome.
pub fn closing_message(settings: &CampaignSettings, state: DetailedState) -> &str {
    let m = &settings.messages;
    match state {
        DetailedState::Completed | DetailedState::Connected => &m.completed,
        DetailedState::TargetBusy => &m.target_busy,
        DetailedState::TargetNoAnswer | DetailedState::TargetVoicemail => &m.target_no_answer,
        DetailedState::TargetRateLimited => &m.target_limited,
        _ => &m.failed,
    }
}

/// The script for `moment` of `call` (pure: the service records the moment
/// first), announcing [`DEFAULT_DO_NOT_CALL_KEY`]. See [`script_with_key`].
pub fn script_for(settings: &CampaignSettings, call: &Call, moment: ScriptMoment) -> VoiceScript {
    script_with_key(settings, call, moment, Some(DEFAULT_DO_NOT_CALL_KEY))
}

/// The script for `moment` of `call`, the greeting announcing the
/// do-not-call key `do_not_call_key` (nothing about it when `None`).
pub fn script_with_key(
    settings: &CampaignSettings,
    call: &Call,
    moment: ScriptMoment,
    do_not_call_key: Option<char>,
) -> VoiceScript {
    use VoiceInstruction as I;
    let instructions = match moment {
        ScriptMoment::Answered => vec![
            I::Gather {
                prompt: say(
                    settings,
                    call,
                    &with_do_not_call(settings, &settings.messages.greeting, do_not_call_key),
                ),
                num_digits: 1,
                timeout_secs: settings.confirm_timeout_secs,
                speech: true,
                action: ScriptMoment::Confirmed,
            },
            I::Say(say(settings, call, &settings.messages.no_input)),
            I::Hangup,
        ],
        // The do-not-call key: say goodbye and hang up (never a confirmation).
        ScriptMoment::Confirmed if call.facts.opted_out && !call.facts.activist_confirmed() => {
            vec![
                I::Say(say(settings, call, &settings.messages.opted_out)),
                I::Hangup,
            ]
        }
        ScriptMoment::Confirmed if call.is_terminal() => vec![
            I::Say(say(settings, call, closing_message(settings, call.state()))),
            I::Hangup,
        ],
        // The gather's action came without input (no key, no speech).
        ScriptMoment::Confirmed if !call.facts.activist_confirmed() => vec![
            I::Say(say(settings, call, &settings.messages.no_input)),
            I::Hangup,
        ],
        ScriptMoment::Confirmed => vec![
            I::Say(say(settings, call, &settings.messages.connecting)),
            I::JoinConference {
                room: call.id,
                hold_music_url: settings.hold_music_url.clone(),
                after: ScriptMoment::AfterConference,
            },
        ],
        ScriptMoment::AfterConference => vec![
            I::Say(say(settings, call, closing_message(settings, call.state()))),
            I::Hangup,
        ],
    };
    VoiceScript {
        call_id: call.id,
        instructions,
    }
}

/// What to play when the service cannot go on with a call because its store
/// is unavailable: a short apology in the campaign's voice and language
/// ([`Messages::unavailable`]), then hang up. It names nobody (the call's
/// people cannot be read) and asks for nothing, so it is valid at every
/// [`ScriptMoment`].
pub fn unavailable_script(settings: &CampaignSettings, call_id: CallId) -> VoiceScript {
    VoiceScript {
        call_id,
        instructions: vec![
            VoiceInstruction::Say(Speech {
                // No placeholder can be filled without the call.
                text: settings
                    .messages
                    .unavailable
                    .replace("{activist}", "")
                    .replace("{target}", ""),
                voice: settings.voice.clone(),
                language: settings.language.clone(),
            }),
            VoiceInstruction::Hangup,
        ],
    }
}
