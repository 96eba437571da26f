//! A simulated telephony: scripted call lifecycles played back into the
//! service, so the whole system runs (and is tested) without a Twilio account.
//!
//! [`SimulatedCall`] is the pure model of what a provider does with one call
//! (which callbacks each command causes); [`SimulatedTelephony`] is the
//! [`Telephony`] that runs one per call and delivers its callbacks to an
//! [`EventSink`] (the service) after configurable delays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::call::{AnsweredBy, CallEvent, Confirmation, DetailedState, HangUp, Leg, LegStatus};
use crate::domain::{CallId, ConferenceId, LegId, PhoneNumber};
use crate::ports::EventSink;
use crate::ports::{
    ActivistCallRequest, ConferenceSnapshot, DialedLeg, LegSnapshot, ParticipantSnapshot, RawEvent,
    TargetCallRequest, Telephony, TelephonyError,
};

/// A scripted lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Both answer and talk; the target hangs up.
    Success,
    /// The activist's line is busy.
    ActivistBusy,
    /// The activist does not answer.
    ActivistNoAnswer,
    /// A voicemail answers the activist's phone.
    ActivistVoicemail,
    /// The activist answers but never confirms.
    NotConfirmed,
    /// The target's line is busy.
    TargetBusy,
    /// The target does not answer.
    TargetNoAnswer,
    /// A voicemail answers the target's phone.
    TargetVoicemail,
    /// The activist hangs up while the target's phone rings.
    ActivistHangsUpWhileTargetRings,
    /// Like [`Scenario::Success`], but the activist's `participant-join`
    /// callback is lost: the conference's start is the evidence of the join
    /// (see [`crate::CallFacts::activist_in_conference`]).
    ActivistJoinLost,
}

impl Scenario {
    /// Every scenario; index `d` is picked by an activist number ending in digit `d`.
    pub const ALL: [Scenario; 10] = [
        Scenario::Success,
        Scenario::ActivistBusy,
        Scenario::ActivistNoAnswer,
        Scenario::ActivistVoicemail,
        Scenario::NotConfirmed,
        Scenario::TargetBusy,
        Scenario::TargetNoAnswer,
        Scenario::TargetVoicemail,
        Scenario::ActivistHangsUpWhileTargetRings,
        Scenario::ActivistJoinLost,
    ];

    /// The detailed state the call must end in.
    pub fn expected_state(&self) -> DetailedState {
        match self {
            Scenario::Success | Scenario::ActivistJoinLost => DetailedState::Completed,
            Scenario::ActivistBusy => DetailedState::ActivistBusy,
            Scenario::ActivistNoAnswer => DetailedState::ActivistNoAnswer,
            Scenario::ActivistVoicemail => DetailedState::ActivistVoicemail,
            Scenario::NotConfirmed => DetailedState::NotConfirmed,
            Scenario::TargetBusy => DetailedState::TargetBusy,
            Scenario::TargetNoAnswer => DetailedState::TargetNoAnswer,
            Scenario::TargetVoicemail => DetailedState::TargetVoicemail,
            Scenario::ActivistHangsUpWhileTargetRings => DetailedState::Abandoned,
        }
    }

    /// The scenario for an activist number: by its last digit (see [`Scenario::ALL`]).
    pub fn for_number(phone: &PhoneNumber) -> Scenario {
        let digit = phone
            .as_e164()
            .bytes()
            .last()
            .map_or(0, |b| (b - b'0') as usize);
        Scenario::ALL
            .get(digit)
            .copied()
            .unwrap_or(Scenario::Success)
    }
}

/// A callback the world will send, `after_ticks` ticks after the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripted {
    /// Delay before it, in ticks.
    pub after_ticks: u32,
    /// The callback.
    pub event: CallEvent,
}

/// A leg id derived from `call_id`. Simulated ids have the shape of
/// Twilio's (two letters and 32 hex digits) so the simulated server's
/// answers look like production ones; the core accepts any provider id.
fn leg_id(call_id: CallId, salt: u128) -> LegId {
    format!("CA{:032x}", call_id.as_uuid().as_u128() ^ salt)
        .parse()
        .expect("34 printable characters are a leg id")
}

/// The provider's side of one simulated call: which callbacks each command causes.
#[derive(Debug, Clone)]
pub struct SimulatedCall {
    scenario: Scenario,
    activist: LegId,
    target: LegId,
    conference: ConferenceId,
    a_alive: bool,
    a_in_conf: bool,
    b_dialled: bool,
    b_alive: bool,
    b_answered: bool,
    b_in_conf: bool,
    conf_live: bool,
    /// The terminal status each leg reported, for fetches.
    a_final: Option<LegStatus>,
    b_final: Option<LegStatus>,
}

impl SimulatedCall {
    /// A call playing `scenario`; ids are derived from `call_id`.
    pub fn new(scenario: Scenario, call_id: CallId) -> Self {
        Self {
            scenario,
            activist: leg_id(call_id, 0xA),
            target: leg_id(call_id, 0xB),
            conference: format!("CF{:032x}", call_id.as_uuid().as_u128())
                .parse()
                .expect("34 printable characters are a conference id"),
            a_alive: false,
            a_in_conf: false,
            b_dialled: false,
            b_alive: false,
            b_answered: false,
            b_in_conf: false,
            conf_live: false,
            a_final: None,
            b_final: None,
        }
    }

    /// The provider id of the activist's leg.
    pub fn activist_leg_id(&self) -> &LegId {
        &self.activist
    }

    /// The provider id of the target's leg.
    pub fn target_leg_id(&self) -> &LegId {
        &self.target
    }

    /// The conference's provider id.
    pub fn conference_id(&self) -> &ConferenceId {
        &self.conference
    }

    fn leg_of(&self, leg_id: &LegId) -> Option<Leg> {
        if *leg_id == self.activist {
            Some(Leg::Activist)
        } else if *leg_id == self.target && self.b_dialled {
            Some(Leg::Target)
        } else {
            None
        }
    }

    fn status(&mut self, leg: Leg, status: LegStatus, duration: Option<u32>) -> CallEvent {
        if status.is_terminal() {
            let last = match leg {
                Leg::Activist => &mut self.a_final,
                Leg::Target => &mut self.b_final,
            };
            last.get_or_insert(status);
        }
        let leg_id = match leg {
            Leg::Activist => &self.activist,
            Leg::Target => &self.target,
        };
        CallEvent::leg_status(leg, status)
            .with_leg_id(leg_id.clone())
            .with_duration_secs(duration)
            .build()
    }

    fn amd(&self, leg: Leg, answered_by: AnsweredBy) -> CallEvent {
        let leg_id = if leg == Leg::Activist {
            &self.activist
        } else {
            &self.target
        };
        CallEvent::answered_by(leg, leg_id.clone(), answered_by)
    }

    fn participant(&self, leg: Leg, joined: bool) -> CallEvent {
        let conference_id = self.conference.clone();
        // The activist joins through TwiML without a label; the target carries one.
        let (leg_id, label) = match leg {
            Leg::Activist => (self.activist.clone(), None),
            Leg::Target => (self.target.clone(), Some(Leg::Target)),
        };
        if joined {
            CallEvent::participant_joined(conference_id, leg_id, label)
        } else {
            CallEvent::participant_left(conference_id, leg_id, label)
        }
    }

    /// The activist is called: the callbacks up to the point where the
    /// service must act (join the conference, hang up a voicemail) or the end.
    pub fn start(&mut self) -> Vec<Scripted> {
        use LegStatus::*;
        let a = Leg::Activist;
        let mut ev = vec![
            self.status(a, Initiated, None),
            self.status(a, Ringing, None),
        ];
        match self.scenario {
            Scenario::ActivistBusy => ev.push(self.status(a, Busy, Some(0))),
            Scenario::ActivistNoAnswer => ev.push(self.status(a, NoAnswer, Some(0))),
            Scenario::ActivistVoicemail => {
                self.a_alive = true;
                ev.push(self.status(a, InProgress, None));
                ev.push(CallEvent::Prompted);
                ev.push(self.amd(a, AnsweredBy::MachineStart));
            }
            Scenario::NotConfirmed => {
                ev.push(self.status(a, InProgress, None));
                ev.push(CallEvent::Prompted);
                ev.push(self.amd(a, AnsweredBy::Human));
                ev.push(self.status(a, Completed, Some(12)));
            }
            _ => {
                self.a_alive = true;
                self.a_in_conf = true;
                self.conf_live = true;
                ev.push(self.status(a, InProgress, None));
                ev.push(CallEvent::Prompted);
                ev.push(self.amd(a, AnsweredBy::Human));
                ev.push(CallEvent::Confirmed(Confirmation::Digits("1".into())));
                ev.push(CallEvent::ConferenceStarted {
                    conference_id: self.conference.clone(),
                });
                // The activist is in the conference all the same.
                if self.scenario != Scenario::ActivistJoinLost {
                    ev.push(self.participant(a, true));
                }
            }
        }
        ev.into_iter()
            .map(|event| Scripted {
                after_ticks: 1,
                event,
            })
            .collect()
    }

    /// The target is added to the conference.
    pub fn dial_target(&mut self) -> Vec<Scripted> {
        use LegStatus::*;
        let b = Leg::Target;
        self.b_dialled = true;
        self.b_alive = true;
        let mut ev = vec![
            Scripted {
                after_ticks: 1,
                event: self.status(b, Initiated, None),
            },
            Scripted {
                after_ticks: 1,
                event: self.status(b, Ringing, None),
            },
        ];
        let mut push = |ticks, event| {
            ev.push(Scripted {
                after_ticks: ticks,
                event,
            })
        };
        match self.scenario {
            Scenario::TargetBusy => {
                self.b_alive = false;
                push(2, self.status(b, Busy, Some(0)));
            }
            Scenario::TargetNoAnswer => {
                self.b_alive = false;
                push(4, self.status(b, NoAnswer, Some(0)));
            }
            Scenario::TargetVoicemail => {
                self.b_answered = true;
                self.b_in_conf = true;
                push(2, self.status(b, InProgress, None));
                push(0, self.participant(b, true));
                push(1, self.amd(b, AnsweredBy::MachineStart));
            }
            Scenario::ActivistHangsUpWhileTargetRings => {
                // The activist hangs up: leaves, which ends the conference.
                self.a_alive = false;
                self.a_in_conf = false;
                self.conf_live = false;
                push(2, self.participant(Leg::Activist, false));
                push(
                    0,
                    CallEvent::ConferenceEnded {
                        conference_id: self.conference.clone(),
                    },
                );
                push(0, self.status(Leg::Activist, Completed, Some(40)));
            }
            _ => {
                // Success: they talk, then the target hangs up.
                push(2, self.status(b, InProgress, None));
                push(0, self.amd(b, AnsweredBy::Human));
                push(0, self.participant(b, true));
                self.b_answered = true;
                self.b_in_conf = true;
                self.b_alive = false;
                self.b_in_conf = false;
                push(10, self.participant(b, false));
                push(0, self.status(b, Completed, Some(42)));
                ev.extend(self.close_conference());
            }
        }
        ev
    }

    fn close_conference(&mut self) -> Vec<Scripted> {
        let mut ev: Vec<CallEvent> = Vec::new();
        if !self.conf_live {
            return Vec::new();
        }
        self.conf_live = false;
        ev.push(CallEvent::ConferenceEnded {
            conference_id: self.conference.clone(),
        });
        if self.b_in_conf {
            self.b_in_conf = false;
            self.b_alive = false;
            ev.push(self.participant(Leg::Target, false));
            ev.push(self.status(Leg::Target, LegStatus::Completed, Some(5)));
        }
        if self.a_in_conf {
            self.a_in_conf = false;
            ev.push(self.participant(Leg::Activist, false));
        }
        if self.a_alive {
            // The activist hears the closing message, then the call ends.
            self.a_alive = false;
            ev.push(self.status(Leg::Activist, LegStatus::Completed, Some(60)));
        }
        ev.into_iter()
            .map(|event| Scripted {
                after_ticks: 1,
                event,
            })
            .collect()
    }

    /// The conference is ended by command.
    pub fn end_conference(&mut self) -> Vec<Scripted> {
        self.close_conference()
    }

    /// A leg is hung up by command. Like Twilio, a [`HangUp::Cancel`] only
    /// ends a leg that was not answered yet: on an answered leg it does
    /// nothing (only [`HangUp::Complete`] hangs an answered call up).
    pub fn hang_up(&mut self, leg_id: &LegId, how: HangUp) -> Vec<Scripted> {
        match self.leg_of(leg_id) {
            // The activist's leg is up only once answered.
            Some(Leg::Activist) if self.a_alive && how == HangUp::Cancel => Vec::new(),
            Some(Leg::Target) if self.b_alive && self.b_answered && how == HangUp::Cancel => {
                Vec::new()
            }
            Some(Leg::Activist) if self.a_alive => {
                if self.a_in_conf {
                    // endConferenceOnExit: the conference ends with the activist.
                    return self.close_conference();
                }
                self.a_alive = false;
                vec![Scripted {
                    after_ticks: 1,
                    event: self.status(Leg::Activist, LegStatus::Completed, Some(20)),
                }]
            }
            Some(Leg::Target) if self.b_alive => {
                if self.b_in_conf {
                    return self.close_conference();
                }
                self.b_alive = false;
                let status = if self.b_answered {
                    LegStatus::Completed
                } else {
                    LegStatus::Canceled
                };
                vec![Scripted {
                    after_ticks: 1,
                    event: self.status(Leg::Target, status, Some(0)),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// What the provider would answer to a listing of the conference's
    /// participants: `None` once it ended or before it started (or for
    /// another conference's id).
    pub fn conference_snapshot(
        &self,
        conference: Option<&ConferenceId>,
    ) -> Option<ConferenceSnapshot> {
        if !self.conf_live || conference.is_some_and(|c| *c != self.conference) {
            return None;
        }
        let mut participants = Vec::new();
        if self.a_in_conf {
            participants.push(ParticipantSnapshot::new(self.activist.clone(), None, true));
        }
        if self.b_dialled && (self.b_alive || self.b_in_conf) {
            participants.push(ParticipantSnapshot::new(
                self.target.clone(),
                Some(Leg::Target),
                self.b_in_conf,
            ));
        }
        Some(ConferenceSnapshot::new(
            self.conference.clone(),
            participants,
        ))
    }

    /// What the provider would answer to a status fetch.
    pub fn snapshot(&self, leg_id: &LegId) -> Option<LegSnapshot> {
        let (alive, answered, last) = match self.leg_of(leg_id)? {
            Leg::Activist => (self.a_alive, self.a_alive || self.a_in_conf, self.a_final),
            Leg::Target => (self.b_alive, self.b_answered, self.b_final),
        };
        let status = match (alive, answered, last) {
            // Ended: as it reported itself (busy, no-answer, canceled...).
            (false, _, Some(last)) => last,
            (true, true, _) => LegStatus::InProgress,
            (true, false, _) => LegStatus::Ringing,
            (false, true, None) => LegStatus::Completed,
            (false, false, None) => LegStatus::NoAnswer,
        };
        Some(LegSnapshot {
            leg_id: leg_id.clone(),
            status,
            duration_secs: None,
            answered_by: None,
            ended_at: None,
        })
    }
}

/// How the simulated telephony picks a call's scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioPicker {
    /// Every call plays this scenario.
    Always(Scenario),
    /// By the activist number's last digit (see [`Scenario::for_number`]).
    ByActivistLastDigit,
}

/// A command the simulated telephony received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelephonyCommand {
    /// `call_activist`.
    CallActivist(ActivistCallRequest),
    /// `add_target`.
    AddTarget(TargetCallRequest),
    /// `hang_up`.
    HangUp {
        /// The call.
        call_id: CallId,
        /// The leg.
        leg_id: LegId,
        /// How.
        how: HangUp,
    },
    /// `end_conference`.
    EndConference {
        /// The call.
        call_id: CallId,
        /// The conference.
        conference_id: ConferenceId,
    },
    /// `fetch_leg`.
    FetchLeg(LegId),
    /// `conference_participants`.
    ConferenceParticipants {
        /// The call.
        call_id: CallId,
        /// The conference, when known.
        conference_id: Option<ConferenceId>,
    },
}

/// Which command a configured failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `call_activist`.
    CallActivist,
    /// `add_target`.
    AddTarget,
    /// `hang_up`.
    HangUp,
    /// `end_conference`.
    EndConference,
    /// `fetch_leg`.
    FetchLeg,
    /// `conference_participants`.
    ConferenceParticipants,
}

/// Which callbacks the simulated world loses: those the predicate accepts
/// are never delivered (see [`SimulatedTelephony::lose_callbacks`]).
pub type LostCallbacks = Arc<dyn Fn(&CallEvent) -> bool + Send + Sync>;

#[derive(Default)]
struct SimState {
    calls: HashMap<CallId, SimulatedCall>,
    by_leg_id: HashMap<LegId, CallId>,
    commands: Vec<TelephonyCommand>,
    failures: HashMap<CommandKind, TelephonyError>,
    lose: Option<LostCallbacks>,
    lost: Vec<(CallId, CallEvent)>,
}

/// A [`Telephony`] that plays [`Scenario`]s back into an [`EventSink`],
/// records every command, and can be told to fail any of them.
pub struct SimulatedTelephony {
    picker: ScenarioPicker,
    tick: Duration,
    sink: OnceLock<Weak<dyn EventSink>>,
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for SimulatedTelephony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedTelephony")
            .field("picker", &self.picker)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl SimulatedTelephony {
    /// A simulated telephony; each scripted callback waits `tick` times its ticks.
    pub fn new(picker: ScenarioPicker, tick: Duration) -> Self {
        Self {
            picker,
            tick,
            sink: OnceLock::new(),
            state: Arc::default(),
        }
    }

    /// Where callbacks go (the service). Set once; later calls are ignored.
    pub fn connect(&self, sink: Weak<dyn EventSink>) {
        let _ = self.sink.set(sink);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every command received, in order.
    pub fn commands(&self) -> Vec<TelephonyCommand> {
        self.lock().commands.clone()
    }

    /// Makes every following command of `kind` fail with `error` (`None`: succeed again).
    pub fn set_failure(&self, kind: CommandKind, error: Option<TelephonyError>) {
        let mut s = self.lock();
        match error {
            Some(e) => s.failures.insert(kind, e),
            None => s.failures.remove(&kind),
        };
    }

    /// Loses every following callback `lose` accepts, as a provider whose
    /// webhook request failed and was not retried (`None`: deliver all).
    /// The world goes on as if it had been delivered.
    pub fn lose_callbacks(&self, lose: Option<LostCallbacks>) {
        self.lock().lose = lose;
    }

    /// The callbacks lost so far, in the order they were due.
    pub fn lost_callbacks(&self) -> Vec<(CallId, CallEvent)> {
        self.lock().lost.clone()
    }

    fn record(&self, kind: CommandKind, command: TelephonyCommand) -> Result<(), TelephonyError> {
        let mut s = self.lock();
        s.commands.push(command);
        s.failures.get(&kind).cloned().map_or(Ok(()), Err)
    }

    fn play(&self, call_id: CallId, steps: Vec<Scripted>) {
        let Some(sink) = self.sink.get().cloned() else {
            return;
        };
        if steps.is_empty() {
            return;
        }
        let tick = self.tick;
        let state = self.state.clone();
        tokio::spawn(async move {
            for step in steps {
                if !tick.is_zero() {
                    tokio::time::sleep(tick * step.after_ticks).await;
                } else {
                    tokio::task::yield_now().await;
                }
                let Some(sink) = sink.upgrade() else { return };
                {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    if s.lose.as_ref().is_some_and(|lose| lose(&step.event)) {
                        s.lost.push((call_id, step.event));
                        continue;
                    }
                }
                let raw = RawEvent {
                    kind: "simulated".into(),
                    leg_id: None,
                    payload: serde_json::to_string(&step.event).unwrap_or_default(),
                    sequence_number: None,
                    received_at: Utc::now(),
                };
                sink.deliver(call_id, step.event, Some(raw)).await;
            }
        });
    }

    fn with_call<R>(&self, call_id: CallId, f: impl FnOnce(&mut SimulatedCall) -> R) -> Option<R> {
        self.lock().calls.get_mut(&call_id).map(f)
    }
}

#[async_trait]
impl Telephony for SimulatedTelephony {
    /// The JSON fields of the events it plays back that carry no personal
    /// data.
    fn safe_payload_fields(&self) -> &'static [&'static str] {
        &["type", "status", "leg", "answered_by"]
    }

    async fn call_activist(&self, req: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError> {
        self.record(
            CommandKind::CallActivist,
            TelephonyCommand::CallActivist(req.clone()),
        )?;
        let scenario = match self.picker {
            ScenarioPicker::Always(s) => s,
            ScenarioPicker::ByActivistLastDigit => Scenario::for_number(&req.to),
        };
        let mut call = SimulatedCall::new(scenario, req.call_id);
        let leg_id = call.activist_leg_id().clone();
        let steps = call.start();
        {
            let mut s = self.lock();
            s.by_leg_id.insert(leg_id.clone(), req.call_id);
            s.by_leg_id
                .insert(call.target_leg_id().clone(), req.call_id);
            s.calls.insert(req.call_id, call);
        }
        self.play(req.call_id, steps);
        Ok(DialedLeg {
            leg_id,
            status: Some(LegStatus::Queued),
        })
    }

    async fn add_target(&self, req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
        self.record(
            CommandKind::AddTarget,
            TelephonyCommand::AddTarget(req.clone()),
        )?;
        let (leg_id, steps) = self
            .with_call(req.call_id, |c| {
                (c.target_leg_id().clone(), c.dial_target())
            })
            .ok_or_else(|| TelephonyError::not_found("no such conference"))?;
        self.play(req.call_id, steps);
        Ok(DialedLeg {
            leg_id,
            status: Some(LegStatus::Queued),
        })
    }

    async fn hang_up(
        &self,
        call_id: CallId,
        leg_id: &LegId,
        how: HangUp,
    ) -> Result<(), TelephonyError> {
        self.record(
            CommandKind::HangUp,
            TelephonyCommand::HangUp {
                call_id,
                leg_id: leg_id.clone(),
                how,
            },
        )?;
        let steps = self
            .with_call(call_id, |c| c.hang_up(leg_id, how))
            .unwrap_or_default();
        self.play(call_id, steps);
        Ok(())
    }

    async fn end_conference(
        &self,
        call_id: CallId,
        conference: &ConferenceId,
    ) -> Result<(), TelephonyError> {
        self.record(
            CommandKind::EndConference,
            TelephonyCommand::EndConference {
                call_id,
                conference_id: conference.clone(),
            },
        )?;
        let steps = self
            .with_call(call_id, |c| c.end_conference())
            .unwrap_or_default();
        self.play(call_id, steps);
        Ok(())
    }

    async fn fetch_leg(&self, leg_id: &LegId) -> Result<LegSnapshot, TelephonyError> {
        self.record(
            CommandKind::FetchLeg,
            TelephonyCommand::FetchLeg(leg_id.clone()),
        )?;
        let s = self.lock();
        s.by_leg_id
            .get(leg_id)
            .and_then(|id| s.calls.get(id))
            .and_then(|c| c.snapshot(leg_id))
            .ok_or_else(|| TelephonyError::not_found(format!("no call {leg_id}")))
    }

    async fn conference_participants(
        &self,
        call_id: CallId,
        conference: Option<ConferenceId>,
    ) -> Result<Option<ConferenceSnapshot>, TelephonyError> {
        self.record(
            CommandKind::ConferenceParticipants,
            TelephonyCommand::ConferenceParticipants {
                call_id,
                conference_id: conference.clone(),
            },
        )?;
        Ok(self
            .with_call(call_id, |c| c.conference_snapshot(conference.as_ref()))
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch of an ended leg answers the status the leg reported, as
    /// Twilio's Call resource would (busy stays busy, not no-answer).
    #[test]
    fn fetches_of_ended_legs_report_their_own_terminal_status() {
        let last_status = |events: &[Scripted], leg: Leg| {
            events.iter().rev().find_map(|s| match &s.event {
                CallEvent::LegStatus { leg: l, status, .. } if *l == leg => Some(*status),
                _ => None,
            })
        };
        for (scenario, a, b) in [
            (Scenario::ActivistBusy, LegStatus::Busy, None),
            (Scenario::ActivistNoAnswer, LegStatus::NoAnswer, None),
            (
                Scenario::TargetBusy,
                LegStatus::InProgress,
                Some(LegStatus::Busy),
            ),
            (
                Scenario::TargetNoAnswer,
                LegStatus::InProgress,
                Some(LegStatus::NoAnswer),
            ),
        ] {
            let mut call = SimulatedCall::new(scenario, CallId::new());
            let mut events = call.start();
            if b.is_some() {
                events.extend(call.dial_target());
            }
            let snap = call.snapshot(&call.activist_leg_id().clone()).unwrap();
            assert_eq!(snap.status, a, "{scenario:?}");
            if let Some(b) = b {
                assert_eq!(last_status(&events, Leg::Target), Some(b));
                let snap = call.snapshot(&call.target_leg_id().clone()).unwrap();
                assert_eq!(snap.status, b, "{scenario:?}");
            }
        }
    }

    #[test]
    fn cancel_is_ignored_on_an_answered_leg() {
        // The activist answers (voicemail): canceling does nothing, completing hangs up.
        let mut call = SimulatedCall::new(Scenario::ActivistVoicemail, CallId::new());
        call.start();
        let a = call.activist_leg_id().clone();
        assert!(call.hang_up(&a, HangUp::Cancel).is_empty());
        let ended = call.hang_up(&a, HangUp::Complete);
        assert_eq!(ended.len(), 1);
        assert!(matches!(
            ended[0].event,
            CallEvent::LegStatus {
                status: LegStatus::Completed,
                ..
            }
        ));

        // The target rings: canceling ends it.
        let mut call = SimulatedCall::new(Scenario::ActivistHangsUpWhileTargetRings, CallId::new());
        call.start();
        call.dial_target();
        let b = call.target_leg_id().clone();
        let ended = call.hang_up(&b, HangUp::Cancel);
        assert!(matches!(
            ended.as_slice(),
            [Scripted {
                event: CallEvent::LegStatus {
                    status: LegStatus::Canceled,
                    ..
                },
                ..
            }]
        ));

        // The target answered (voicemail): canceling does nothing.
        let mut call = SimulatedCall::new(Scenario::TargetVoicemail, CallId::new());
        call.start();
        call.dial_target();
        let b = call.target_leg_id().clone();
        assert!(call.hang_up(&b, HangUp::Cancel).is_empty());
        assert!(!call.hang_up(&b, HangUp::Complete).is_empty());
    }
}
