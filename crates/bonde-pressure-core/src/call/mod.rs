//! The call aggregate: facts, derived state, and the pure `apply`.

mod event;
mod facts;
mod state;

pub use event::{CallEvent, Confirmation, Effect, HangUp, LegStatusEvent};
pub use facts::{
    AnsweredBy, CallFacts, ERASED_MESSAGE, Leg, LegError, LegFacts, LegStatus, Presence, Requested,
};
pub use state::{DetailedState, UiStatus, derive_state};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Activist, CallId, PhoneNumber, Target, WidgetId};

/// One pressure call: who calls whom, and everything known about it.
///
/// Build a new call with [`Call::new`]; a store restores a stored one with
/// [`Call::new`] (its creation time) and [`Call::with_facts`],
/// [`Call::with_version`], [`Call::with_updated_at`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Call {
    /// Our id. The telephony addresses the call's conference by it
    /// ([`crate::Telephony`]); how the conference is named is the
    /// telephony's business.
    pub id: CallId,
    /// The campaign widget the activist used.
    pub widget_id: WidgetId,
    /// Leg A.
    pub activist: Activist,
    /// Leg B.
    pub target: Target,
    /// The caller id shown to the target; `None` means our own number.
    pub target_caller_id: Option<PhoneNumber>,
    /// What is known.
    pub facts: CallFacts,
    /// Optimistic-concurrency version: bumped by every committed update.
    pub version: u64,
    /// When the call was created.
    pub created_at: DateTime<Utc>,
    /// When it was last updated.
    pub updated_at: DateTime<Utc>,
}

/// The result of applying an event: the new facts and what must be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The facts after the event.
    pub facts: CallFacts,
    /// The effects this transition requests (already marked requested in `facts`).
    pub effects: Vec<Effect>,
}

impl Call {
    /// A new call with no facts yet.
    pub fn new(
        id: CallId,
        widget_id: WidgetId,
        activist: Activist,
        target: Target,
        target_caller_id: Option<PhoneNumber>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            widget_id,
            activist,
            target,
            target_caller_id,
            facts: CallFacts::default(),
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// With these facts (a stored call's).
    pub fn with_facts(mut self, facts: CallFacts) -> Self {
        self.facts = facts;
        self
    }

    /// With this optimistic-concurrency version (a stored call's).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Last updated at `updated_at` (a stored call's).
    pub fn with_updated_at(mut self, updated_at: DateTime<Utc>) -> Self {
        self.updated_at = updated_at;
        self
    }

    /// The detailed state, derived from the facts.
    pub fn state(&self) -> DetailedState {
        derive_state(&self.facts)
    }

    /// The front-end's status of the state alone
    /// ([`DetailedState::ui_status`]); what the page shows is
    /// [`Call::page_status`].
    pub fn ui_status(&self) -> UiStatus {
        self.state().ui_status()
    }

    /// What the campaign page shows at `now`.
    ///
    /// [`Call::ui_status`], except while the target is in the call but its
    /// answering-machine verdict has not arrived
    /// ([`CallFacts::awaiting_target_verdict`]): a voicemail can pick up
    /// and join the conference seconds before detection says it is one, and
    /// "in a call with {target}" followed by "no answer" misleads the
    /// activist. So the page shows `ringing` until the first of:
    /// - the verdict is `human` or `unknown` (a machine verdict makes the
    ///   call `target_voicemail`, shown as `no-answer`);
    /// - `verdict_grace` has passed since the target was first seen
    ///   answered or in the conference ([`LegFacts::answered_at`]; the
    ///   call's last update when no time is known);
    /// - detection is off for this call ([`CallFacts::machine_detection`]).
    pub fn page_status(&self, now: DateTime<Utc>, verdict_grace: std::time::Duration) -> UiStatus {
        let state = self.state();
        if state == DetailedState::Connected && self.facts.awaiting_target_verdict() {
            let since = self.facts.target.answered_at.unwrap_or(self.updated_at);
            let grace =
                chrono::TimeDelta::from_std(verdict_grace).unwrap_or(chrono::TimeDelta::MAX);
            if since
                .checked_add_signed(grace)
                .is_none_or(|until| now < until)
            {
                return UiStatus::Ringing;
            }
        }
        state.ui_status()
    }

    /// The call is over (its [`DetailedState`] is terminal). Its legs may
    /// still be up: see [`Call::is_settled`].
    pub fn is_terminal(&self) -> bool {
        self.state().is_terminal()
    }

    /// Nothing is left to follow up: the state is terminal and no leg that
    /// we know of may still be up at the provider (see
    /// [`CallFacts::leg_possibly_live`]). An expired call is terminal
    /// (`error`) but not settled while a leg may still be up: its hang-up
    /// may have failed.
    ///
    /// A call can be terminal without being settled: the target was busy,
    /// but ending the conference failed and the activist is still in it.
    /// [`crate::ports::CallStore::list_unfinished`] lists the calls that are
    /// not settled, so reconciliation follows them up.
    pub fn is_settled(&self) -> bool {
        self.is_terminal() && self.live_legs().is_empty() && !self.opt_out_pending()
    }

    /// The activist opted out and their number is not known to be on the
    /// do-not-call list yet (adding it failed): the call stays unsettled so
    /// that reconciliation retries.
    pub fn opt_out_pending(&self) -> bool {
        self.facts.opted_out && !self.facts.opt_out_listed
    }

    /// The legs that may still be up at the provider
    /// ([`CallFacts::leg_possibly_live`]), activist first.
    pub fn live_legs(&self) -> Vec<Leg> {
        [Leg::Activist, Leg::Target]
            .into_iter()
            .filter(|&leg| self.facts.leg_possibly_live(leg))
            .collect()
    }

    /// How to end `leg` now: complete it if it was answered by any sign
    /// ([`CallFacts::leg_answered`]), cancel it otherwise.
    pub fn hang_up_mode(&self, leg: Leg) -> HangUp {
        hang_up_mode(&self.facts, leg)
    }

    /// Erases the call's personal data, in place, as of `at`: the activist
    /// becomes [`Activist::erased`], a caller id that was the activist's
    /// number becomes [`PhoneNumber::erased`], the legs' error messages are
    /// redacted and [`CallFacts::erased_at`] is set. The target, the state,
    /// the legs' statuses, times and durations are kept, so the status page
    /// and the statistics work as before. Erasing twice keeps the first time.
    pub fn erase(&mut self, at: DateTime<Utc>) {
        if self.target_caller_id.as_ref() == Some(&self.activist.phone) {
            self.target_caller_id = Some(PhoneNumber::erased());
        }
        self.activist = Activist::erased();
        self.facts.erased_at = Some(self.facts.erased_at.map_or(at, |t| t.min(at)));
        self.facts.redact();
    }

    /// The call's personal data was erased ([`Call::erase`]).
    pub fn is_erased(&self) -> bool {
        self.facts.erased_at.is_some()
    }

    /// How long the activist and the target talked (the target leg's
    /// duration), for completed calls.
    pub fn connected_secs(&self) -> Option<u32> {
        (self.state() == DetailedState::Completed)
            .then_some(self.facts.target.duration_secs)
            .flatten()
    }
}

/// The facts one event contributes, on its own.
fn facts_of(event: &CallEvent) -> CallFacts {
    let mut f = CallFacts::default();
    match event {
        CallEvent::LegStatus {
            leg,
            leg_id,
            status,
            duration_secs,
            sip_response_code,
            at,
        } => {
            let l = f.leg_mut(*leg);
            l.leg_id = leg_id.clone();
            l.status = Some(*status);
            l.duration_secs = *duration_secs;
            l.sip_response_code = *sip_response_code;
            match status {
                LegStatus::Ringing => l.ringing_at = *at,
                LegStatus::InProgress => l.answered_at = *at,
                s if s.is_terminal() => l.ended_at = *at,
                _ => {}
            }
        }
        CallEvent::AnsweredBy {
            leg,
            leg_id,
            answered_by,
        } => {
            let l = f.leg_mut(*leg);
            l.leg_id = leg_id.clone();
            l.answered_by = Some(*answered_by);
        }
        CallEvent::Prompted => f.prompted = true,
        CallEvent::Confirmed(c) => f.confirmed = c.has_input(),
        CallEvent::ConferenceStarted { conference_id } => {
            f.conference_id = Some(conference_id.clone());
            f.conference_started = true;
        }
        CallEvent::ConferenceEnded { conference_id } => {
            f.conference_id = Some(conference_id.clone());
            f.conference_ended = true;
        }
        CallEvent::ParticipantJoined {
            conference_id,
            leg_id,
            leg,
        }
        | CallEvent::ParticipantLeft {
            conference_id,
            leg_id,
            leg,
        } => {
            let joined = matches!(event, CallEvent::ParticipantJoined { .. });
            f.conference_id = Some(conference_id.clone());
            f.conference_started = true;
            let p = Presence {
                joined,
                left: !joined,
            };
            f.participants.insert(leg_id.clone(), p);
            if let Some(leg) = leg {
                let l = f.leg_mut(*leg);
                l.leg_id = Some(leg_id.clone());
                l.joined_conference = joined;
                l.left_conference = !joined;
            }
        }
        CallEvent::LegDialed {
            leg,
            leg_id,
            status,
        } => {
            let l = f.leg_mut(*leg);
            l.leg_id = Some(leg_id.clone());
            l.status = *status;
            if *leg == Leg::Target {
                f.requested.dial_target = true;
            }
        }
        CallEvent::DialFailed { leg, error } => {
            let l = f.leg_mut(*leg);
            l.status = Some(LegStatus::Failed);
            l.error = Some(error.clone());
            if *leg == Leg::Target {
                f.requested.dial_target = true;
            }
        }
        CallEvent::Expired => f.expired = true,
        CallEvent::OptedOut => f.opted_out = true,
        CallEvent::OptOutListed => f.opt_out_listed = true,
        CallEvent::TargetLimited => {
            f.target_limited = true;
            f.requested.dial_target = true;
        }
        CallEvent::Ignored { .. } => {}
    }
    f
}

fn hang_up_mode(f: &CallFacts, leg: Leg) -> HangUp {
    if f.leg_answered(leg) {
        HangUp::Complete
    } else {
        HangUp::Cancel
    }
}

/// Decides the effects the facts call for that were not requested yet, and
/// marks them requested.
fn decide(f: &mut CallFacts) -> Vec<Effect> {
    let mut effects = Vec::new();
    let a_gone = f.activist_gone();
    let b_answered = f.target_answered();
    // Any sign of the target leg means it was dialled (facts restored or reordered).
    if f.target.leg_id.is_some() || f.target.status.is_some() {
        f.requested.dial_target = true;
    }

    // Any evidence that the activist is in the conference counts as the
    // join (see `CallFacts::activist_in_conference`); the flag makes the
    // first one win, whatever the order.
    if f.activist_in_conference()
        && !f.requested.dial_target
        && !f.activist_left_before_dial()
        && !f.conference_ended
        && !f.expired
    {
        f.requested.dial_target = true;
        effects.push(Effect::DialTarget);
    }

    let a_voicemail = f.activist.is_machine() && !f.activist_confirmed();
    if (a_voicemail || f.expired) && !f.activist.is_terminal() && !f.requested.hang_up_activist {
        if let Some(leg_id) = f.activist.leg_id.clone() {
            f.requested.hang_up_activist = true;
            effects.push(Effect::HangUpActivist {
                leg_id,
                how: hang_up_mode(f, Leg::Activist),
            });
        }
    }

    let activist_left_first = (a_gone || f.conference_ended) && !b_answered;
    if (f.target.is_machine() || activist_left_first || f.expired)
        && !f.target.is_terminal()
        && !f.requested.hang_up_target
    {
        if let Some(leg_id) = f.target.leg_id.clone() {
            f.requested.hang_up_target = true;
            effects.push(Effect::HangUpTarget {
                leg_id,
                how: hang_up_mode(f, Leg::Target),
            });
        }
    }

    let target_missed = (f.target.is_terminal() || f.target_limited) && !b_answered;
    if (target_missed || f.target.is_machine() || f.expired)
        && !a_gone
        && !f.conference_ended
        && !f.requested.end_conference
    {
        if let Some(conference_id) = f.conference_id.clone() {
            f.requested.end_conference = true;
            effects.push(Effect::EndConference { conference_id });
        }
    }
    effects
}

/// Applies one event to the facts: joins what it says, then decides what
/// must now be done. Pure; the caller commits `facts` and, only if the commit
/// wins, performs `effects`.
pub fn apply(facts: &CallFacts, event: &CallEvent) -> Transition {
    let mut facts = facts.join(&facts_of(event));
    let effects = decide(&mut facts);
    Transition { facts, effects }
}

impl Call {
    /// Applies an event (see [`apply`]) and returns the updated call (same
    /// version: the store bumps it on commit) with the requested effects.
    ///
    /// A leg-status report that carries no time of its own (the simulated
    /// telephony's, a reconciliation fetch) is stamped with `now`, the time
    /// it was received; the facts keep the earliest time seen. Likewise a
    /// leg first seen in the conference without a known answer time gets
    /// `now` as its [`LegFacts::answered_at`].
    pub fn apply(&self, event: &CallEvent, now: DateTime<Utc>) -> (Call, Vec<Effect>) {
        let stamped;
        let event = match event {
            CallEvent::LegStatus { at: None, .. } => {
                let mut e = event.clone();
                if let CallEvent::LegStatus { at, .. } = &mut e {
                    *at = Some(now);
                }
                stamped = e;
                &stamped
            }
            _ => event,
        };
        let mut t = apply(&self.facts, event);
        // A leg seen in the conference was answered, even when its
        // `in-progress` report has not arrived (yet): it was answered by
        // `now` at the latest.
        for leg in [Leg::Activist, Leg::Target] {
            if t.facts.joined(leg) && t.facts.leg(leg).answered_at.is_none() {
                t.facts.leg_mut(leg).answered_at = Some(now);
            }
        }
        let mut next = self.clone();
        next.facts = t.facts;
        next.updated_at = now.max(self.updated_at);
        (next, t.effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConferenceId, LegId};

    fn leg_id(c: char) -> LegId {
        format!("CA{}", c.to_string().repeat(32)).parse().unwrap()
    }

    fn cf() -> ConferenceId {
        format!("CF{}", "c".repeat(32)).parse().unwrap()
    }

    fn status(leg: Leg, leg_id: &LegId, status: LegStatus) -> CallEvent {
        CallEvent::LegStatus {
            leg,
            leg_id: Some(leg_id.clone()),
            status,
            duration_secs: None,
            sip_response_code: None,
            at: None,
        }
    }

    fn play(events: &[CallEvent]) -> (CallFacts, Vec<Effect>) {
        let mut facts = CallFacts::default();
        let mut effects = Vec::new();
        for e in events {
            let t = apply(&facts, e);
            facts = t.facts;
            effects.extend(t.effects);
        }
        (facts, effects)
    }

    /// The machine verdict can arrive before the `in-progress` callback: the
    /// leg is answered all the same, and a cancel would be ignored.
    #[test]
    fn a_leg_with_a_machine_verdict_is_completed_not_canceled() {
        let a = leg_id('a');
        let (_, effects) = play(&[
            status(Leg::Activist, &a, LegStatus::Ringing),
            CallEvent::AnsweredBy {
                leg: Leg::Activist,
                leg_id: Some(a.clone()),
                answered_by: AnsweredBy::MachineStart,
            },
        ]);
        assert_eq!(
            effects,
            [Effect::HangUpActivist {
                leg_id: a,
                how: HangUp::Complete
            }]
        );

        // The target: ringing, in the conference, then a machine verdict.
        let (a, b) = (leg_id('a'), leg_id('b'));
        let (_, effects) = play(&[
            status(Leg::Activist, &a, LegStatus::InProgress),
            CallEvent::ParticipantJoined {
                conference_id: cf(),
                leg_id: a.clone(),
                leg: None,
            },
            CallEvent::LegDialed {
                leg: Leg::Target,
                leg_id: b.clone(),
                status: Some(LegStatus::Ringing),
            },
            CallEvent::AnsweredBy {
                leg: Leg::Target,
                leg_id: Some(b.clone()),
                answered_by: AnsweredBy::MachineEndBeep,
            },
        ]);
        assert!(
            effects.contains(&Effect::HangUpTarget {
                leg_id: b,
                how: HangUp::Complete
            }),
            "{effects:?}"
        );
    }

    fn dials(effects: &[Effect]) -> usize {
        effects.iter().filter(|e| **e == Effect::DialTarget).count()
    }

    fn joined(leg_id: &LegId, leg: Option<Leg>) -> CallEvent {
        CallEvent::ParticipantJoined {
            conference_id: cf(),
            leg_id: leg_id.clone(),
            leg,
        }
    }

    fn left(leg_id: &LegId, leg: Option<Leg>) -> CallEvent {
        CallEvent::ParticipantLeft {
            conference_id: cf(),
            leg_id: leg_id.clone(),
            leg,
        }
    }

    /// Before the dial the activist is the only possible participant: an
    /// unlabelled participant seen leaving (leg id not known as the activist's
    /// yet) is the activist leaving, so no later evidence dials the target,
    /// in either order.
    #[test]
    fn someone_leaving_before_the_dial_blocks_the_dial() {
        let x = leg_id('d');
        for events in [
            vec![
                left(&x, None),
                CallEvent::ConferenceStarted {
                    conference_id: cf(),
                },
                joined(&x, None),
            ],
            // The join reported after the leave (reordered callbacks).
            vec![left(&x, None), joined(&x, None)],
        ] {
            let (f, effects) = play(&events);
            assert!(f.activist_left_before_dial(), "{events:?}");
            assert!(
                !f.activist_gone(),
                "the leg id is not known as the activist's"
            );
            assert_eq!(dials(&effects), 0, "{events:?}: {effects:?}");
        }
        // The check: without the leaving, the start alone dials.
        let (_, effects) = play(&[CallEvent::ConferenceStarted {
            conference_id: cf(),
        }]);
        assert_eq!(dials(&effects), 1);
    }

    /// Once the target was dialled, a conference start and an unlabelled
    /// join are no longer evidence of the activist (the target may be that
    /// participant), and never dial again.
    #[test]
    fn conference_start_or_unlabelled_join_after_the_dial_does_not_dial_again() {
        let (a, b, x) = (leg_id('a'), leg_id('b'), leg_id('d'));
        // Dialled on the activist's labelled join, then the rest arrives.
        let (f, effects) = play(&[
            status(Leg::Activist, &a, LegStatus::InProgress),
            joined(&a, Some(Leg::Activist)),
            CallEvent::LegDialed {
                leg: Leg::Target,
                leg_id: b.clone(),
                status: Some(LegStatus::Ringing),
            },
            CallEvent::ConferenceStarted {
                conference_id: cf(),
            },
            joined(&x, None),
            joined(&b, None),
        ]);
        assert_eq!(dials(&effects), 1, "{effects:?}");
        assert!(f.joined(Leg::Target));

        // The target leg is known first (facts reordered), so the dial was
        // requested already: a later conference start or unlabelled join is
        // not the activist's join and requests nothing.
        let (f, effects) = play(&[
            CallEvent::LegDialed {
                leg: Leg::Target,
                leg_id: b.clone(),
                status: Some(LegStatus::Ringing),
            },
            CallEvent::ConferenceStarted {
                conference_id: cf(),
            },
            joined(&x, None),
        ]);
        assert!(f.requested.dial_target);
        assert!(!f.activist_in_conference(), "{f:?}");
        assert_eq!(dials(&effects), 0, "{effects:?}");
    }

    #[test]
    fn a_leg_seen_in_the_conference_is_answered() {
        let mut f = CallFacts::default();
        let b = leg_id('b');
        f.target.leg_id = Some(b.clone());
        f.target.status = Some(LegStatus::Ringing);
        assert!(!f.leg_answered(Leg::Target));
        f.participants.insert(
            b,
            Presence {
                joined: true,
                left: false,
            },
        );
        assert!(f.leg_answered(Leg::Target));
        assert_eq!(hang_up_mode(&f, Leg::Target), HangUp::Complete);
    }

    #[test]
    fn a_confirmation_without_input_does_not_confirm() {
        let a = leg_id('a');
        let answered = [
            status(Leg::Activist, &a, LegStatus::InProgress),
            CallEvent::Prompted,
        ];
        for empty in [
            Confirmation::Digits(String::new()),
            Confirmation::Speech(String::new()),
            Confirmation::Speech("  ".into()),
        ] {
            let mut events = answered.to_vec();
            events.push(CallEvent::Confirmed(empty.clone()));
            let (f, _) = play(&events);
            assert!(!f.confirmed, "{empty:?}");
            assert_eq!(derive_state(&f), DetailedState::AwaitingConfirmation);
        }
        let mut events = answered.to_vec();
        events.push(CallEvent::Confirmed(Confirmation::Digits("1".into())));
        let (f, _) = play(&events);
        assert!(f.confirmed);
        assert_eq!(derive_state(&f), DetailedState::Connecting);
    }

    fn call_with(facts: CallFacts) -> Call {
        use crate::domain::{Activist, Email, PersonName, PhoneNumber, Target};
        let phone = |s| PhoneNumber::parse_e164(s).unwrap();
        let mut call = Call::new(
            CallId::new(),
            WidgetId::new(1).unwrap(),
            Activist {
                name: PersonName::parse("Ana").unwrap(),
                first_name: None,
                last_name: None,
                email: Email::parse("ana@example.org").unwrap(),
                phone: phone("+5511912345678"),
            },
            Target {
                name: PersonName::parse("Target").unwrap(),
                phone: phone("+5561999990000"),
            },
            None,
            Utc::now(),
        );
        call.facts = facts;
        call
    }

    /// Target busy, but ending the conference failed: the state is terminal,
    /// the activist is still in the conference, so the call is not settled.
    #[test]
    fn a_terminal_call_with_a_live_leg_is_not_settled() {
        let (a, b) = (leg_id('a'), leg_id('b'));
        let mut events = vec![
            status(Leg::Activist, &a, LegStatus::InProgress),
            CallEvent::ParticipantJoined {
                conference_id: cf(),
                leg_id: a.clone(),
                leg: None,
            },
            CallEvent::LegDialed {
                leg: Leg::Target,
                leg_id: b.clone(),
                status: Some(LegStatus::Queued),
            },
            status(Leg::Target, &b, LegStatus::Busy),
        ];
        let call = call_with(play(&events).0);
        assert_eq!(call.state(), DetailedState::TargetBusy);
        assert!(call.is_terminal());
        assert_eq!(call.live_legs(), [Leg::Activist]);
        assert!(!call.is_settled());
        assert_eq!(call.hang_up_mode(Leg::Activist), HangUp::Complete);

        events.push(status(Leg::Activist, &a, LegStatus::Completed));
        let call = call_with(play(&events).0);
        assert!(call.live_legs().is_empty());
        assert!(call.is_settled());

        // A dial we asked for but whose leg id never came back may be ringing.
        let mut f = CallFacts::default();
        f.activist.status = Some(LegStatus::Completed);
        f.requested.dial_target = true;
        let call = call_with(f);
        assert!(call.is_terminal());
        assert_eq!(call.live_legs(), [Leg::Target]);
        assert!(!call.is_settled());

        // Expiry does not settle a call by itself: its hang-ups may fail.
        let mut f = call.facts.clone();
        f.expired = true;
        assert!(!call_with(f.clone()).is_settled());
        // It settles once the dial is known to have failed.
        f.target.status = Some(LegStatus::Failed);
        assert!(call_with(f).is_settled());

        // Unfinished calls are never settled.
        let call = call_with(play(&events[..2]).0);
        assert!(!call.is_terminal() && !call.is_settled());
    }

    /// Facts stored before the ids were provider-neutral name them `sid`
    /// and `conference_sid`: they still load, and facts written now keep
    /// those names (the stored format is unchanged).
    #[test]
    fn facts_stored_with_the_old_field_names_still_load() {
        let stored = r#"{"activist": {"sid": "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9", "status": "in-progress", "answered_by": null, "joined_conference": true, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": "2026-03-01T12:00:01.123456Z", "answered_at": "2026-03-01T12:00:05.123456Z", "ended_at": null}, "target": {"sid": "CA1b2c3d4e5f60718293a4b5c6d7e8f90a", "status": "ringing", "answered_by": null, "joined_conference": false, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": null, "answered_at": null, "ended_at": null}, "prompted": true, "confirmed": true, "conference_sid": "CF2c3d4e5f60718293a4b5c6d7e8f90a1b", "conference_started": true, "conference_ended": false, "participants": {"CA0a1b2c3d4e5f60718293a4b5c6d7e8f9": {"joined": true, "left": false}}, "expired": false, "requested": {"dial_target": true, "hang_up_activist": false, "hang_up_target": false, "end_conference": false}, "opted_out": false, "target_limited": false, "opt_out_listed": false}"#;
        let facts: CallFacts = serde_json::from_str(stored).unwrap();
        let a = LegId::parse("CA0a1b2c3d4e5f60718293a4b5c6d7e8f9").unwrap();
        let b = LegId::parse("CA1b2c3d4e5f60718293a4b5c6d7e8f90a").unwrap();
        assert_eq!(facts.activist.leg_id, Some(a.clone()));
        assert_eq!(facts.target.leg_id, Some(b));
        assert_eq!(
            facts.conference_id,
            Some(ConferenceId::parse("CF2c3d4e5f60718293a4b5c6d7e8f90a1b").unwrap())
        );
        assert!(facts.participants[&a].joined);
        assert!(facts.activist_in_conference());

        let written: serde_json::Value = serde_json::to_value(&facts).unwrap();
        let old: serde_json::Value = serde_json::from_str(stored).unwrap();
        assert_eq!(written, old, "facts are written as before");
        assert!(written["activist"].get("leg_id").is_none());
        assert!(written.get("conference_id").is_none());
    }
}
