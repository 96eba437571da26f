//! The REST client: core's [`Telephony`] port over Twilio's 2010-04-01 API.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bonde_pressure_core::ports::{
    ActivistCallRequest, ConferenceSnapshot, DialedLeg, LegSnapshot, ParticipantSnapshot,
    TargetCallRequest,
};
use bonde_pressure_core::{
    AnsweredBy, CallId, ConferenceId, HangUp, LegId, LegStatus, Telephony, TelephonyError,
};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::config::{ConfigError, TwilioConfig};
use crate::error::{
    is_retryable, is_retryable_creation, map_error, parse_retry_after, scrub_phone_numbers,
};
use crate::ids::{is_call_sid, is_conference_sid, parse_call_sid, parse_conference_sid};

/// The events both legs report to their status callbacks.
pub const STATUS_CALLBACK_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// Twilio's "invalid call state" code: the call is no longer in progress.
pub const INVALID_CALL_STATE: u32 = 21220;

/// The participant label of the target leg (the activist's is set in TwiML).
pub const TARGET_LABEL: &str = "target";

/// A form body: name/value pairs, names may repeat.
pub type Form = Vec<(String, String)>;

/// The longest inline TwiML Twilio accepts in a create-call request, in
/// characters (Twilio error 32018 "Twiml size exceeded maximum allowed value
/// of 4000 characters").
pub const MAX_TWIML_CHARS: usize = 4000;

/// What Twilio runs when the called person answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallInstructions {
    /// `Url` (with `Method=POST`): Twilio fetches the TwiML from this URL.
    /// The [`Telephony`] implementation always uses this, with the call's
    /// answer route.
    Url(String),
    /// `Twiml`: Twilio runs this document as is, with no request to us (at
    /// most [`MAX_TWIML_CHARS`] characters).
    Twiml(String),
}

impl From<&crate::twiml::Response> for CallInstructions {
    fn from(response: &crate::twiml::Response) -> Self {
        CallInstructions::Twiml(response.to_xml())
    }
}

/// Why [`TwilioClient::create_call`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CreateCallError {
    /// The inline TwiML is longer than Twilio accepts; nothing was sent.
    #[error("inline TwiML is {chars} characters long; Twilio accepts at most {max}")]
    TwimlTooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit, [`MAX_TWIML_CHARS`].
        max: usize,
    },
    /// Twilio refused or failed the request.
    #[error(transparent)]
    Telephony(#[from] TelephonyError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// Whether repeating a request whose answer was lost can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// Fetches and status updates: repeating is harmless.
    Idempotent,
    /// Places a call: repeating may ring someone twice.
    CreatesCall,
}

/// Twilio's REST API as a [`Telephony`]. Cheap to clone (shares its
/// connection pool).
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    config: TwilioConfig,
}

#[derive(Deserialize)]
struct CallResource {
    sid: String,
    status: Option<String>,
    duration: Option<serde_json::Value>,
    answered_by: Option<String>,
    /// RFC 2822, e.g. `Tue, 10 Aug 2010 08:02:31 +0000`.
    end_time: Option<String>,
}

#[derive(Deserialize)]
struct CallStatusOnly {
    status: Option<String>,
}

#[derive(Deserialize)]
struct ParticipantResource {
    call_sid: String,
    status: Option<String>,
}

/// A page of `GET …/Conferences.json`.
#[derive(Deserialize)]
struct ConferencePage {
    conferences: Vec<ConferenceListed>,
}

#[derive(Deserialize)]
struct ConferenceListed {
    sid: String,
}

/// A page of `GET …/Conferences/{CF}/Participants.json`.
#[derive(Deserialize)]
struct ParticipantPage {
    participants: Vec<ParticipantListed>,
}

#[derive(Deserialize)]
struct ParticipantListed {
    call_sid: String,
    label: Option<String>,
    status: Option<String>,
}

/// Twilio accepts ring timeouts of 5 to 600 seconds; others are brought within.
pub fn ring_timeout(secs: u32) -> u32 {
    secs.clamp(5, 600)
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

fn push_events(form: &mut Form) {
    for e in STATUS_CALLBACK_EVENTS {
        form.push(pair("StatusCallbackEvent", e));
    }
}

/// Encodes a form body (`application/x-www-form-urlencoded`), keeping order
/// and repeated names.
pub fn encode_form(form: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A participant's status (`queued connecting ringing connected complete
/// failed`) as a leg status.
pub fn participant_status(s: &str) -> Option<LegStatus> {
    match s {
        "queued" => Some(LegStatus::Queued),
        "connecting" => Some(LegStatus::Initiated),
        "ringing" => Some(LegStatus::Ringing),
        "connected" => Some(LegStatus::InProgress),
        "complete" => Some(LegStatus::Completed),
        "failed" => Some(LegStatus::Failed),
        _ => None,
    }
}

/// `id` if it is a Call SID. Any other id names no call at Twilio:
/// [`TelephonyError::NotFound`], as Twilio would answer, without a request
/// (the id never reaches a URL).
fn call_sid(id: &LegId) -> Result<&LegId, TelephonyError> {
    if is_call_sid(id) {
        Ok(id)
    } else {
        Err(TelephonyError::not_found(format!(
            "not a Twilio Call SID: {id}"
        )))
    }
}

/// `id` if it is a Conference SID; otherwise [`TelephonyError::NotFound`]
/// without a request, as for [`call_sid`].
fn conference_sid(id: &ConferenceId) -> Result<&ConferenceId, TelephonyError> {
    if is_conference_sid(id) {
        Ok(id)
    } else {
        Err(TelephonyError::not_found(format!(
            "not a Twilio Conference SID: {id}"
        )))
    }
}

fn unexpected(what: &str, body: &str) -> TelephonyError {
    let snippet: String = body.chars().take(200).collect();
    TelephonyError::unavailable(format!(
        "unexpected answer from Twilio ({what}): {}",
        scrub_phone_numbers(&snippet)
    ))
}

fn duration_of(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl TwilioClient {
    /// A client for this configuration.
    pub fn new(config: TwilioConfig) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout())
            .user_agent(concat!("bonde-pressure-twilio/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(std::sync::Arc::new(e)))?;
        Ok(Self { http, config })
    }

    /// The configuration.
    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    fn account_url(&self, tail: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/{}",
            self.config.api_base(),
            self.config.account_sid(),
            tail
        )
    }

    /// The form that creates the activist's call (`POST …/Calls.json`), with
    /// the call's answer route as `Url`.
    pub fn activist_call_form(&self, req: &ActivistCallRequest) -> Form {
        let answer = CallInstructions::Url(self.config.callbacks().answer(req.call_id));
        self.call_form(req, &answer)
    }

    /// The form that creates a call to `req.to` running `instructions`
    /// (`Url` + `Method=POST`, or `Twiml`), with the leg's status callback
    /// (`initiated ringing answered completed` as repeated
    /// `StatusCallbackEvent`), `Timeout` and, if asked, async AMD.
    pub fn call_form(&self, req: &ActivistCallRequest, instructions: &CallInstructions) -> Form {
        let urls = self.config.callbacks();
        let id = req.call_id;
        let mut form = vec![
            pair("To", req.to.as_e164()),
            pair("From", self.config.from_number().as_e164()),
        ];
        match instructions {
            CallInstructions::Url(url) => {
                form.extend([pair("Url", url.as_str()), pair("Method", "POST")]);
            }
            CallInstructions::Twiml(twiml) => form.push(pair("Twiml", twiml.as_str())),
        }
        form.extend([
            pair("StatusCallback", urls.status_callback(id)),
            pair("StatusCallbackMethod", "POST"),
        ]);
        push_events(&mut form);
        form.push(pair("Timeout", ring_timeout(req.timeout_secs).to_string()));
        if req.detect_machine {
            form.extend([
                pair("MachineDetection", "Enable"),
                pair("AsyncAmd", "true"),
                pair("AsyncAmdStatusCallback", urls.amd_status_callback(id)),
                pair("AsyncAmdStatusCallbackMethod", "POST"),
            ]);
        }
        form
    }

    /// Calls `req.to` (the activist's leg, reporting to its callbacks) running
    /// `instructions`: a URL, as [`Telephony::call_activist`] does, or inline
    /// TwiML. Inline TwiML longer than [`MAX_TWIML_CHARS`] is refused with
    /// [`CreateCallError::TwimlTooLong`] before any request.
    pub async fn create_call(
        &self,
        req: &ActivistCallRequest,
        instructions: &CallInstructions,
    ) -> Result<DialedLeg, CreateCallError> {
        if let CallInstructions::Twiml(twiml) = instructions {
            let chars = twiml.chars().count();
            if chars > MAX_TWIML_CHARS {
                return Err(CreateCallError::TwimlTooLong {
                    chars,
                    max: MAX_TWIML_CHARS,
                });
            }
        }
        let form = self.call_form(req, instructions);
        Ok(self.post_call(&form).await?)
    }

    async fn post_call(&self, form: &[(String, String)]) -> Result<DialedLeg, TelephonyError> {
        let url = self.account_url("Calls.json");
        let body = self
            .send(Method::Post, &url, Some(form), Safety::CreatesCall)
            .await?;
        let call: CallResource =
            serde_json::from_str(&body).map_err(|e| unexpected("call", &body).with_source(e))?;
        let leg_id = parse_call_sid(&call.sid).map_err(|_| unexpected("call sid", &body))?;
        Ok(DialedLeg::new(leg_id).with_status(call.status.as_deref().and_then(LegStatus::parse)))
    }

    /// The form that adds the target to the conference
    /// (`POST …/Conferences/{call id}/Participants.json`).
    pub fn target_participant_form(&self, req: &TargetCallRequest) -> Form {
        let urls = self.config.callbacks();
        let id = req.call_id;
        let from = req
            .caller_id
            .as_ref()
            .unwrap_or(self.config.from_number())
            .as_e164();
        let mut form = vec![
            pair("From", from),
            pair("To", req.to.as_e164()),
            pair("Label", TARGET_LABEL),
            pair("Beep", "false"),
            pair("EndConferenceOnExit", "true"),
            pair("Timeout", ring_timeout(req.timeout_secs).to_string()),
            pair("StatusCallback", urls.dial_status_callback(id)),
            pair("StatusCallbackMethod", "POST"),
        ];
        push_events(&mut form);
        if req.detect_machine {
            form.extend([
                pair("MachineDetection", "Enable"),
                pair("AmdStatusCallback", urls.dial_amd_status_callback(id)),
                pair("AmdStatusCallbackMethod", "POST"),
            ]);
        }
        form
    }

    /// Sends a request, retrying transient failures per the retry policy;
    /// returns the body of a 2xx answer.
    async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<&[(String, String)]>,
        safety: Safety,
    ) -> Result<String, TelephonyError> {
        let policy = *self.config.retry();
        let started = Instant::now();
        let body = form.map(encode_form);
        let (user, pass) = self.config.basic_auth();
        let path = url.strip_prefix(self.config.api_base()).unwrap_or(url);
        let mut attempt: u32 = 1;
        loop {
            let mut request = match method {
                Method::Get => self.http.get(url),
                Method::Post => self.http.post(url),
            }
            .basic_auth(user, Some(pass))
            .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = &body {
                request = request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(b.clone());
            }
            // Whether an error answer with this status (and body) may be retried.
            let retry_answer = |status: u16, text: &str| match safety {
                Safety::Idempotent => is_retryable(status, text),
                // Only answers meaning Twilio did not act (429, 503), unless
                // the policy accepts possible duplicates.
                Safety::CreatesCall => {
                    is_retryable_creation(status, text)
                        || (policy.retry_unsafe_timeouts && is_retryable(status, text))
                }
            };
            let (error, retryable, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let success = (200..300).contains(&status);
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    match response.text().await {
                        Ok(text) if success => {
                            debug!(path, status, attempt, "twilio request succeeded");
                            return Ok(text);
                        }
                        Ok(text) => (
                            map_error(status, &text, retry_after),
                            retry_answer(status, &text),
                            retry_after,
                        ),
                        // Twilio accepted the request: repeating one that
                        // creates a call would place a second call.
                        Err(e) if success => (
                            TelephonyError::unavailable(format!(
                                "Twilio answered HTTP {status} but the answer could not be read ({e}); the request may have taken effect"
                            ))
                            .with_source(e),
                            safety == Safety::Idempotent,
                            None,
                        ),
                        Err(e) => (
                            TelephonyError::unavailable(format!(
                                "HTTP {status}, body unreadable: {e}"
                            ))
                            .with_source(e),
                            retry_answer(status, ""),
                            retry_after,
                        ),
                    }
                }
                Err(e) if e.is_connect() => (
                    TelephonyError::unavailable("could not connect to Twilio").with_source(e),
                    true,
                    None,
                ),
                Err(e) if e.is_timeout() => (
                    TelephonyError::unavailable(
                        "Twilio did not answer in time; the request may have taken effect",
                    )
                    .with_source(e),
                    safety == Safety::Idempotent || policy.retry_unsafe_timeouts,
                    None,
                ),
                Err(e) => (
                    TelephonyError::unavailable(format!(
                        "request to Twilio failed ({e}); the request may have taken effect"
                    ))
                    .with_source(e),
                    safety == Safety::Idempotent || policy.retry_unsafe_timeouts,
                    None,
                ),
            };
            if !retryable || attempt >= policy.max_attempts {
                warn!(path, attempt, %error, "twilio request failed");
                return Err(error);
            }
            let mut delay = policy.backoff(attempt);
            if let Some(ra) = retry_after {
                delay = delay.max(ra);
            }
            if started.elapsed() + delay > policy.max_elapsed {
                warn!(path, attempt, %error, "twilio request failed; retry budget spent");
                return Err(error);
            }
            warn!(path, attempt, %error, delay_ms = delay.as_millis() as u64, "twilio request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The SID of the call's conference while it is in progress (`GET
    /// …/Conferences.json?FriendlyName={call id}&Status=in-progress`);
    /// `None` when there is none.
    pub async fn live_conference_sid(
        &self,
        call_id: CallId,
    ) -> Result<Option<ConferenceId>, TelephonyError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("FriendlyName", &call_id.to_string())
            .append_pair("Status", "in-progress")
            .finish();
        let url = self.account_url(&format!("Conferences.json?{query}"));
        let body = self
            .send(Method::Get, &url, None, Safety::Idempotent)
            .await?;
        let page: ConferencePage = serde_json::from_str(&body)
            .map_err(|e| unexpected("conference list", &body).with_source(e))?;
        page.conferences
            .first()
            .map(|c| parse_conference_sid(&c.sid).map_err(|_| unexpected("conference sid", &body)))
            .transpose()
    }

    /// Sets a call's status; returns the call's status in Twilio's answer
    /// (`None` when the call had already ended, error 21220, or the answer
    /// names none). `sid` was checked ([`call_sid`]).
    async fn update_call(
        &self,
        sid: &LegId,
        status: &str,
    ) -> Result<Option<String>, TelephonyError> {
        let url = self.account_url(&format!("Calls/{}.json", sid.as_str()));
        let form = vec![pair("Status", status)];
        match self
            .send(Method::Post, &url, Some(&form), Safety::Idempotent)
            .await
        {
            Ok(body) => Ok(serde_json::from_str::<CallStatusOnly>(&body)
                .ok()
                .and_then(|c| c.status)),
            // 21220 "invalid call state": the call is not up any more, which is what we wanted.
            Err(TelephonyError::Rejected {
                code: Some(INVALID_CALL_STATE),
                ..
            }) => {
                debug!(%sid, "leg already ended");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Telephony for TwilioClient {
    /// Twilio's callback fields that carry no personal data
    /// ([`crate::webhook::SAFE_PAYLOAD_FIELDS`]).
    fn safe_payload_fields(&self) -> &'static [&'static str] {
        crate::webhook::SAFE_PAYLOAD_FIELDS
    }

    async fn call_activist(&self, req: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError> {
        self.post_call(&self.activist_call_form(req)).await
    }

    async fn add_target(&self, req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
        let url = self.account_url(&format!("Conferences/{}/Participants.json", req.call_id));
        let form = self.target_participant_form(req);
        let body = self
            .send(Method::Post, &url, Some(&form), Safety::CreatesCall)
            .await?;
        let p: ParticipantResource = serde_json::from_str(&body)
            .map_err(|e| unexpected("participant", &body).with_source(e))?;
        let leg_id =
            parse_call_sid(&p.call_sid).map_err(|_| unexpected("participant call sid", &body))?;
        Ok(DialedLeg::new(leg_id).with_status(p.status.as_deref().and_then(participant_status)))
    }

    async fn hang_up(
        &self,
        call_id: CallId,
        leg_id: &LegId,
        how: HangUp,
    ) -> Result<(), TelephonyError> {
        let sid = call_sid(leg_id)?;
        match how {
            HangUp::Complete => {
                debug!(%call_id, %sid, "completing leg");
                self.update_call(sid, "completed").await?;
            }
            HangUp::Cancel => {
                debug!(%call_id, %sid, "canceling leg");
                // `canceled` only ends a queued or ringing call; Twilio still
                // answers 200 for an answered one, whose status stays
                // `in-progress`. Such a leg is ended with `completed`.
                let now = self.update_call(sid, "canceled").await?;
                if now.as_deref() == Some("in-progress") {
                    debug!(%call_id, %sid, "leg was answered before the cancel; completing it");
                    self.update_call(sid, "completed").await?;
                }
            }
        }
        Ok(())
    }

    async fn end_conference(
        &self,
        call_id: CallId,
        conference: &ConferenceId,
    ) -> Result<(), TelephonyError> {
        let conference = conference_sid(conference)?;
        debug!(%call_id, %conference, "ending conference");
        let url = self.account_url(&format!("Conferences/{}.json", conference.as_str()));
        let form = vec![pair("Status", "completed")];
        self.send(Method::Post, &url, Some(&form), Safety::Idempotent)
            .await
            .map(drop)
    }

    /// `GET …/Conferences/{CF}/Participants.json`, resolving the SID by
    /// friendly name ([`TwilioClient::live_conference_sid`]) when no
    /// callback named it. A conference Twilio does not know (404, or an id
    /// that is not a Conference SID) or none in progress is `None`; a
    /// participant is in the conference when its status is `connected` (or
    /// absent), and its label names its leg.
    async fn conference_participants(
        &self,
        call_id: CallId,
        conference: Option<ConferenceId>,
    ) -> Result<Option<ConferenceSnapshot>, TelephonyError> {
        let conference_sid = match conference {
            Some(id) if is_conference_sid(&id) => id,
            Some(_) => return Ok(None),
            None => match self.live_conference_sid(call_id).await? {
                Some(sid) => sid,
                None => return Ok(None),
            },
        };
        let url = self.account_url(&format!(
            "Conferences/{}/Participants.json",
            conference_sid.as_str()
        ));
        let body = match self.send(Method::Get, &url, None, Safety::Idempotent).await {
            Ok(body) => body,
            Err(TelephonyError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let page: ParticipantPage = serde_json::from_str(&body)
            .map_err(|e| unexpected("participant list", &body).with_source(e))?;
        let participants = page
            .participants
            .into_iter()
            .map(|p| {
                let leg_id = parse_call_sid(&p.call_sid)
                    .map_err(|_| unexpected("participant call sid", &body))?;
                let leg = p.label.as_deref().and_then(crate::webhook::leg_of_label);
                let in_conference = p.status.as_deref().is_none_or(|s| s == "connected");
                Ok(ParticipantSnapshot::new(leg_id, leg, in_conference))
            })
            .collect::<Result<Vec<_>, TelephonyError>>()?;
        debug!(%call_id, conference = %conference_sid, participants = participants.len(), "conference listed");
        Ok(Some(ConferenceSnapshot::new(conference_sid, participants)))
    }

    async fn fetch_leg(&self, leg_id: &LegId) -> Result<LegSnapshot, TelephonyError> {
        let sid = call_sid(leg_id)?;
        let url = self.account_url(&format!("Calls/{}.json", sid.as_str()));
        let body = self
            .send(Method::Get, &url, None, Safety::Idempotent)
            .await?;
        let call: CallResource =
            serde_json::from_str(&body).map_err(|e| unexpected("call", &body).with_source(e))?;
        let status = call
            .status
            .as_deref()
            .and_then(LegStatus::parse)
            .ok_or_else(|| unexpected("call status", &body))?;
        let fetched = parse_call_sid(&call.sid).map_err(|_| unexpected("call sid", &body))?;
        Ok(LegSnapshot::new(fetched, status)
            .with_duration_secs(call.duration.as_ref().and_then(duration_of))
            .with_answered_by(call.answered_by.as_deref().and_then(AnsweredBy::parse))
            .with_ended_at(
                call.end_time
                    .as_deref()
                    .and_then(crate::webhook::parse_timestamp),
            ))
    }
}

/// The longest one command can take, all attempts and backoffs included
/// (for callers sizing their own deadlines): a retry never starts after the
/// policy's `max_elapsed`, and each attempt lasts at most the request timeout.
pub fn worst_case_duration(config: &TwilioConfig) -> Duration {
    let r = config.retry();
    let t = config.request_timeout();
    let by_budget = r.max_elapsed + t;
    let by_attempts = t * r.max_attempts
        + (1..r.max_attempts)
            .map(|i| r.backoff_cap(i))
            .sum::<Duration>();
    by_budget.min(by_attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, RetryPolicy};
    use bonde_pressure_core::PhoneNumber;

    #[test]
    fn ring_timeouts_stay_in_twilio_range() {
        assert_eq!(ring_timeout(0), 5);
        assert_eq!(ring_timeout(30), 30);
        assert_eq!(ring_timeout(10_000), 600);
    }

    #[test]
    fn participant_statuses() {
        assert_eq!(participant_status("queued"), Some(LegStatus::Queued));
        assert_eq!(participant_status("connecting"), Some(LegStatus::Initiated));
        assert_eq!(participant_status("ringing"), Some(LegStatus::Ringing));
        assert_eq!(participant_status("connected"), Some(LegStatus::InProgress));
        assert_eq!(participant_status("complete"), Some(LegStatus::Completed));
        assert_eq!(participant_status("failed"), Some(LegStatus::Failed));
        assert_eq!(participant_status("completed"), None);
    }

    #[test]
    fn forms_encode_in_order_with_repeats() {
        let form = vec![
            pair("To", "+5511987654321"),
            pair("StatusCallbackEvent", "initiated"),
            pair("StatusCallbackEvent", "ringing"),
            pair("Url", "https://x/a?b=c&d"),
        ];
        assert_eq!(
            encode_form(&form),
            "To=%2B5511987654321&StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&Url=https%3A%2F%2Fx%2Fa%3Fb%3Dc%26d"
        );
    }

    #[test]
    fn worst_case_is_bounded_by_budget_and_attempts() {
        let config = TwilioConfig::new(
            "AC0123456789abcdef0123456789abcdef",
            Credentials::AuthToken("t".into()),
            PhoneNumber::parse_e164("+551140028922").unwrap(),
            "https://x",
        )
        .unwrap()
        .with_request_timeout(Duration::from_secs(2));
        let few = config.clone().with_retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
            retry_unsafe_timeouts: false,
        });
        assert_eq!(worst_case_duration(&few), Duration::from_millis(4100));
        let many = config.with_retry(RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(5),
            ..RetryPolicy::default()
        });
        assert_eq!(worst_case_duration(&many), Duration::from_secs(7));
    }

    #[test]
    fn default_worst_case_fits_in_a_webhook() {
        // Effects run inside webhook handlers, which Twilio cuts at 15 s.
        let config = TwilioConfig::new(
            "AC0123456789abcdef0123456789abcdef",
            Credentials::AuthToken("t".into()),
            PhoneNumber::parse_e164("+551140028922").unwrap(),
            "https://x",
        )
        .unwrap();
        assert_eq!(config.request_timeout(), Duration::from_secs(4));
        assert_eq!(config.retry().max_elapsed, Duration::from_secs(6));
        assert_eq!(worst_case_duration(&config), Duration::from_secs(10));
        assert!(worst_case_duration(&config) < Duration::from_secs(15));
        // Even the longest request timeout allowed leaves a webhook time.
        let longest = config.with_request_timeout(Duration::from_secs(3600));
        assert_eq!(
            longest.request_timeout(),
            crate::config::MAX_REQUEST_TIMEOUT
        );
        assert!(longest.request_timeout() < Duration::from_secs(15));
    }

    #[test]
    fn inline_twiml_replaces_url_and_method() {
        let config = TwilioConfig::new(
            "AC0123456789abcdef0123456789abcdef",
            Credentials::AuthToken("t".into()),
            PhoneNumber::parse_e164("+551140028922").unwrap(),
            "https://x",
        )
        .unwrap();
        let client = TwilioClient::new(config).unwrap();
        let req = ActivistCallRequest::new(
            "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".parse().unwrap(),
            PhoneNumber::parse_e164("+5511987654321").unwrap(),
            30,
        );
        let twiml = crate::twiml::Response::new().with(crate::twiml::Verb::Hangup);
        let form = client.call_form(&req, &CallInstructions::from(&twiml));
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..4], ["To", "From", "Twiml", "StatusCallback"]);
        assert!(!names.contains(&"Url") && !names.contains(&"Method"));
        assert_eq!(form[2].1, twiml.to_xml());
        assert_eq!(
            client.activist_call_form(&req),
            client.call_form(
                &req,
                &CallInstructions::Url(
                    "https://x/v1/phone/answer/0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".into()
                )
            )
        );
    }
}
