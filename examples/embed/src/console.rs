//! A [`Telephony`] that places no real call: it prints what a provider
//! would be asked to do, and queues the callbacks that provider would send
//! (see [`crate::lifecycle`]), which [`ConsoleTelephony::play_callbacks`]
//! then delivers to the service through the [`EventSink`] port.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock, Weak};

use async_trait::async_trait;
use bonde_pressure_core::{
    ActivistCallRequest, CallEvent, CallId, ConferenceId, DialedLeg, EventSink, HangUp, Leg, LegId,
    LegSnapshot, LegStatus, RawEvent, TargetCallRequest, Telephony, TelephonyError,
};

use crate::lifecycle;

/// What the console provider knows of one call.
#[derive(Debug)]
struct ConsoleCall {
    activist: LegId,
    target: Option<LegId>,
    conference: ConferenceId,
    detect_machine: bool,
    /// The legs the provider still has up (until their queued hang-up).
    activist_up: bool,
    target_up: bool,
}

#[derive(Debug, Default)]
struct World {
    /// Ids are numbered from 1 in the order they are issued.
    issued: u64,
    calls: HashMap<CallId, ConsoleCall>,
    legs: HashMap<LegId, CallId>,
    /// Callbacks not delivered yet, oldest first.
    pending: VecDeque<(CallId, CallEvent)>,
    /// Every line printed.
    transcript: Vec<String>,
}

impl World {
    fn id(&mut self, kind: &str) -> String {
        self.issued += 1;
        format!("console-{kind}-{}", self.issued)
    }

    fn say(&mut self, line: String) {
        println!("[console] {line}");
        self.transcript.push(line);
    }

    fn queue(&mut self, call_id: CallId, events: Vec<CallEvent>) {
        self.pending
            .extend(events.into_iter().map(|event| (call_id, event)));
    }
}

/// A console "provider": prints each command, and plays the callbacks it
/// causes back into the service.
///
/// Its ids are its own (`console-leg-1`, `console-conf-2`): core treats
/// [`LegId`] and [`ConferenceId`] as opaque text. Every callback is stored
/// with the call as a [`RawEvent`] of kind `console` (the event as JSON),
/// as a webhook adapter stores the payload it received.
#[derive(Debug, Default)]
pub struct ConsoleTelephony {
    sink: OnceLock<Weak<dyn EventSink>>,
    world: Mutex<World>,
}

impl ConsoleTelephony {
    /// A console provider with no call yet; [`ConsoleTelephony::connect`]
    /// it to the service before playing callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where callbacks go (the service). Set once; later calls are ignored.
    /// Held weakly: the service holds the telephony, not the other way round.
    pub fn connect(&self, sink: Weak<dyn EventSink>) {
        let _ = self.sink.set(sink);
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every line printed so far.
    pub fn transcript(&self) -> Vec<String> {
        self.world().transcript.clone()
    }

    /// Callbacks queued and not delivered yet.
    pub fn pending(&self) -> usize {
        self.world().pending.len()
    }

    /// Delivers the queued callbacks, oldest first, until none is left
    /// (delivering one may run a command that queues more: the target is
    /// dialled once the activist joined). Returns how many were delivered;
    /// none without a connected sink.
    pub async fn play_callbacks(&self) -> usize {
        let Some(sink) = self.sink.get().and_then(Weak::upgrade) else {
            return 0;
        };
        let mut delivered = 0;
        loop {
            // The lock is released before delivering: handling an event may
            // call back into this telephony.
            let Some((call_id, event)) = self.world().pending.pop_front() else {
                return delivered;
            };
            let payload = serde_json::to_string(&event).unwrap_or_default();
            let mut raw = RawEvent::new("console", payload, chrono::Utc::now());
            if let Some(leg_id) = leg_id_of(&event) {
                raw = raw.with_leg_id(leg_id.as_str());
            }
            self.world()
                .say(format!("callback for {call_id}: {}", describe(&event)));
            sink.deliver(call_id, event, Some(raw)).await;
            delivered += 1;
        }
    }
}

/// A callback in a few words: its kind, and the leg and status it names.
fn describe(event: &CallEvent) -> String {
    match event {
        CallEvent::LegStatus { leg, status, .. } => {
            format!("{} {} {}", event.kind(), leg.as_str(), status.as_str())
        }
        CallEvent::AnsweredBy {
            leg, answered_by, ..
        } => format!("{} {} {answered_by:?}", event.kind(), leg.as_str()),
        CallEvent::ParticipantJoined { leg_id, .. } | CallEvent::ParticipantLeft { leg_id, .. } => {
            format!("{} {leg_id}", event.kind())
        }
        _ => event.kind().to_owned(),
    }
}

fn leg_id_of(event: &CallEvent) -> Option<&LegId> {
    match event {
        CallEvent::LegStatus { leg_id, .. } | CallEvent::AnsweredBy { leg_id, .. } => {
            leg_id.as_ref()
        }
        CallEvent::ParticipantJoined { leg_id, .. } | CallEvent::ParticipantLeft { leg_id, .. } => {
            Some(leg_id)
        }
        _ => None,
    }
}

#[async_trait]
impl Telephony for ConsoleTelephony {
    async fn call_activist(&self, req: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError> {
        let mut w = self.world();
        let activist: LegId = w.id("leg").parse().map_err(|e| {
            TelephonyError::unavailable("the console issued a bad leg id").with_source(e)
        })?;
        let conference: ConferenceId = w.id("conf").parse().map_err(|e| {
            TelephonyError::unavailable("the console issued a bad conference id").with_source(e)
        })?;
        w.say(format!(
            "call_activist: dialling {} for call {} (rings {} s, machine detection {}) as leg {activist}",
            req.to,
            req.call_id,
            req.timeout_secs,
            if req.detect_machine { "on" } else { "off" },
        ));
        let events =
            lifecycle::activist_answers_and_confirms(&activist, &conference, req.detect_machine);
        w.queue(req.call_id, events);
        w.legs.insert(activist.clone(), req.call_id);
        w.calls.insert(
            req.call_id,
            ConsoleCall {
                activist: activist.clone(),
                target: None,
                conference,
                detect_machine: req.detect_machine,
                activist_up: true,
                target_up: false,
            },
        );
        Ok(DialedLeg::new(activist).with_status(LegStatus::Queued))
    }

    async fn add_target(&self, req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
        let mut w = self.world();
        let target: LegId = w.id("leg").parse().map_err(|e| {
            TelephonyError::unavailable("the console issued a bad leg id").with_source(e)
        })?;
        let Some(call) = w.calls.get_mut(&req.call_id) else {
            return Err(TelephonyError::not_found(format!(
                "no conference for call {}",
                req.call_id
            )));
        };
        call.target = Some(target.clone());
        call.target_up = true;
        let events = lifecycle::target_answers_then_both_hang_up(
            &call.activist,
            &target,
            &call.conference,
            call.detect_machine,
        );
        // The scripted lifecycle ends with both legs hung up.
        call.target_up = false;
        call.activist_up = false;
        let caller_id = req
            .caller_id
            .as_ref()
            .map_or_else(|| "our own number".to_owned(), |n| n.to_string());
        let line = format!(
            "add_target: dialling {} into the conference of call {} (shown {caller_id}) as leg {target}",
            req.to, req.call_id,
        );
        w.say(line);
        w.queue(req.call_id, events);
        w.legs.insert(target.clone(), req.call_id);
        Ok(DialedLeg::new(target).with_status(LegStatus::Queued))
    }

    async fn hang_up(
        &self,
        call_id: CallId,
        leg_id: &LegId,
        how: HangUp,
    ) -> Result<(), TelephonyError> {
        let mut w = self.world();
        w.say(format!("hang_up: {how:?} leg {leg_id} of call {call_id}"));
        // Hanging up a leg that already ended is not an error.
        let Some(call) = w.calls.get_mut(&call_id) else {
            return Ok(());
        };
        let leg = if *leg_id == call.activist && call.activist_up {
            call.activist_up = false;
            Leg::Activist
        } else if call.target.as_ref() == Some(leg_id) && call.target_up {
            call.target_up = false;
            Leg::Target
        } else {
            return Ok(());
        };
        let status = match how {
            HangUp::Cancel => LegStatus::Canceled,
            HangUp::Complete => LegStatus::Completed,
        };
        let ended: CallEvent = CallEvent::leg_status(leg, status)
            .with_leg_id(leg_id.clone())
            .with_duration_secs(0)
            .into();
        w.queue(call_id, vec![ended]);
        Ok(())
    }

    async fn end_conference(
        &self,
        call_id: CallId,
        conference: &ConferenceId,
    ) -> Result<(), TelephonyError> {
        // The scripted lifecycle already ends the conference: nothing more
        // to send (ending an ended conference is not an error).
        self.world()
            .say(format!("end_conference: {conference} of call {call_id}"));
        Ok(())
    }

    async fn fetch_leg(&self, leg_id: &LegId) -> Result<LegSnapshot, TelephonyError> {
        let mut w = self.world();
        w.say(format!("fetch_leg: {leg_id}"));
        let call = w
            .legs
            .get(leg_id)
            .and_then(|id| w.calls.get(id))
            .ok_or_else(|| TelephonyError::not_found(format!("no leg {leg_id}")))?;
        let up = if *leg_id == call.activist {
            call.activist_up
        } else {
            call.target_up
        };
        let status = if up {
            LegStatus::InProgress
        } else {
            LegStatus::Completed
        };
        Ok(LegSnapshot::new(leg_id.clone(), status))
    }

    // `conference_participants` keeps its default (`Ok(None)`: this
    // provider cannot list participants), so reconciliation learns nothing
    // from it.
}
