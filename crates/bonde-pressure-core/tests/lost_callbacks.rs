//! A lost callback (Twilio does not retry one that failed, unless asked to)
//! must not strand a call: for each asynchronous callback of a successful
//! lifecycle, lose that one alone, let reconciliation run, and check the
//! final state against the table in docs/core.md ("Lost callbacks"). The
//! target is never dialled twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::call::{CallEvent, DetailedState, Leg, LegStatus};
use bonde_pressure_core::ports::{
    ActivistCallRequest, DialedLeg, LegSnapshot, TargetCallRequest, Telephony,
};
use bonde_pressure_core::simulated::{SimulatedCall, TelephonyCommand};
use bonde_pressure_core::{
    Call, CallId, ConferenceId, HangUp, LegId, ManualClock, PressureService, Scenario,
    ScenarioPicker, TelephonyError,
};
use common::{demo_request, harness_with};

const CORE_MD: &str = include_str!("../../../docs/core.md");

/// The name a callback has in the table: `activist status \`ringing\``,
/// `target answering-machine verdict`, `activist \`participant-join\``,
/// `\`conference-start\``... In the simulated world the only participant
/// without a label is the activist (it joins through TwiML).
fn callback_name(event: &CallEvent) -> Option<String> {
    let leg_name = |leg: Option<Leg>| leg.unwrap_or(Leg::Activist).as_str();
    Some(match event {
        CallEvent::LegStatus { leg, status, .. } => {
            format!("{} status `{}`", leg.as_str(), status.as_str())
        }
        CallEvent::AnsweredBy { leg, .. } => format!("{} answering-machine verdict", leg.as_str()),
        CallEvent::ConferenceStarted { .. } => "`conference-start`".into(),
        CallEvent::ConferenceEnded { .. } => "`conference-end`".into(),
        CallEvent::ParticipantJoined { leg, .. } => {
            format!("{} `participant-join`", leg_name(*leg))
        }
        CallEvent::ParticipantLeft { leg, .. } => format!("{} `participant-leave`", leg_name(*leg)),
        // Synchronous requests (TwiML): not callbacks that can be lost silently.
        _ => return None,
    })
}

/// The asynchronous callbacks of a successful lifecycle, in order.
fn success_callbacks() -> Vec<String> {
    let mut world = SimulatedCall::new(Scenario::Success, CallId::new());
    let mut events: Vec<CallEvent> = world.start().into_iter().map(|s| s.event).collect();
    events.extend(world.dial_target().into_iter().map(|s| s.event));
    let names: Vec<String> = events.iter().filter_map(callback_name).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "each callback is named once: {names:?}"
    );
    names
}

/// The "Lost callbacks" table of docs/core.md: callback → final state.
fn documented_table() -> Vec<(String, String)> {
    let section = CORE_MD
        .split("## Lost callbacks")
        .nth(1)
        .expect("docs/core.md has a \"Lost callbacks\" section");
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[1].trim_matches('`').to_owned())
        })
        .collect()
}

/// Waits until nothing changes the call for a while (it may stay unfinished).
async fn quiesce(service: &PressureService, id: CallId) -> Call {
    let mut last = u64::MAX;
    let mut quiet = 0;
    loop {
        let call = service.call(id).await.unwrap().unwrap();
        if call.version == last {
            quiet += 1;
            if quiet >= 20 {
                return call;
            }
        } else {
            quiet = 0;
        }
        last = call.version;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn dials(commands: &[TelephonyCommand]) -> usize {
    commands
        .iter()
        .filter(|c| matches!(c, TelephonyCommand::AddTarget(_)))
        .count()
}

/// Plays the success scenario losing the callbacks `lose` accepts, then
/// reconciles as the background task would: passes while the call is not
/// settled, then, if it is still unfinished, one after `expire_after`.
async fn play_losing(
    lose: impl Fn(&CallEvent) -> bool + Send + Sync + 'static,
) -> (Call, Vec<TelephonyCommand>, usize) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = harness_with(
        ScenarioPicker::Always(Scenario::Success),
        Duration::ZERO,
        clock.clone(),
    );
    h.telephony.lose_callbacks(Some(Arc::new(lose)));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let mut call = quiesce(&h.service, id).await;
    let config = h.service.config().clone();
    for _ in 0..3 {
        if call.is_settled() {
            break;
        }
        clock.advance(config.stale_after + Duration::from_secs(1));
        h.service.reconcile(10).await.unwrap();
        call = quiesce(&h.service, id).await;
    }
    if !call.is_settled() {
        clock.advance(config.expire_after);
        h.service.reconcile(10).await.unwrap();
        call = quiesce(&h.service, id).await;
    }
    let lost = h.telephony.lost_callbacks().len();
    (call, h.telephony.commands(), lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lost_callback_ends_as_its_row_says() {
    let table = documented_table();
    let callbacks = success_callbacks();
    // The table lists exactly the success lifecycle's callbacks.
    let mut documented: Vec<&str> = table.iter().map(|(c, _)| c.as_str()).collect();
    let mut expected: Vec<&str> = callbacks.iter().map(String::as_str).collect();
    documented.sort();
    expected.sort();
    assert_eq!(
        documented, expected,
        "docs/core.md's table and the lifecycle differ"
    );

    for (name, row_state) in &table {
        let target = name.clone();
        let (call, commands, lost) =
            play_losing(move |e| callback_name(e).as_deref() == Some(target.as_str())).await;
        assert_eq!(lost, 1, "{name}: exactly that callback was lost");
        assert_eq!(call.state().as_str(), row_state, "{name}: {:?}", call.facts);
        assert!(
            call.is_settled(),
            "{name}: live legs {:?}",
            call.live_legs()
        );
        assert_eq!(
            dials(&commands),
            1,
            "{name}: the target is dialled exactly once"
        );
        // Where the lost evidence can be recovered, the table says completed.
        assert_eq!(row_state, DetailedState::Completed.as_str(), "{name}");
    }
}

/// The activist's join and the conference's start are both lost: nothing in
/// the callbacks says the activist is in the conference. Reconciliation lists
/// the conference's participants, finds the activist, and dials the target
/// once; the call completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_recovers_a_join_whose_evidence_was_all_lost() {
    let (call, commands, lost) = play_losing(|e| {
        matches!(
            e,
            CallEvent::ConferenceStarted { .. } | CallEvent::ParticipantJoined { leg: None, .. }
        )
    })
    .await;
    assert_eq!(lost, 2);
    assert_eq!(call.state(), DetailedState::Completed, "{:?}", call.facts);
    assert_eq!(dials(&commands), 1);
    let listings: Vec<_> = commands
        .iter()
        .filter_map(|c| match c {
            TelephonyCommand::ConferenceParticipants {
                call_id,
                conference_id,
            } => Some((*call_id, conference_id.clone())),
            _ => None,
        })
        .collect();
    // Asked once, by friendly name (no callback named the conference).
    assert_eq!(listings, [(call.id, None)]);
}

/// Without the recovery the call would stay `connecting` until expiry:
/// the simulated scenario that loses the activist's join ends `completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lost_join_scenario_completes() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = harness_with(
        ScenarioPicker::Always(Scenario::ActivistJoinLost),
        Duration::ZERO,
        clock,
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let call = common::until_settled(&h.service, id).await;
    assert_eq!(call.state(), DetailedState::Completed);
    assert!(
        !call.facts.joined(Leg::Activist),
        "the join was never reported"
    );
    assert_eq!(dials(&h.telephony.commands()), 1);
}

/// A `Telephony` written before `conference_participants` existed: every
/// leg it is asked about is in progress; it counts the target dials asked.
#[derive(Default)]
struct Legacy {
    dials: std::sync::atomic::AtomicUsize,
}

fn unused() -> TelephonyError {
    TelephonyError::unavailable("not used by this test")
}

#[async_trait::async_trait]
impl Telephony for Legacy {
    async fn call_activist(&self, _: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError> {
        Err(unused())
    }
    async fn add_target(&self, _: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
        self.dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(unused())
    }
    async fn hang_up(&self, _: CallId, _: &LegId, _: HangUp) -> Result<(), TelephonyError> {
        Err(unused())
    }
    async fn end_conference(&self, _: CallId, _: &ConferenceId) -> Result<(), TelephonyError> {
        Err(unused())
    }
    async fn fetch_leg(&self, sid: &LegId) -> Result<LegSnapshot, TelephonyError> {
        Ok(LegSnapshot::new(sid.clone(), LegStatus::InProgress))
    }
}

#[tokio::test]
async fn the_default_conference_listing_knows_nothing() {
    let t: Arc<dyn Telephony> = Arc::new(Legacy::default());
    assert!(matches!(
        t.conference_participants(CallId::new(), None).await,
        Ok(None)
    ));
}

/// Reconciliation over a telephony without the listing: a call waiting for
/// the activist's join stays `connecting` (nothing is learnt, so nothing is
/// dialled), no conference counts as fetched, and that is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_listing_a_waiting_call_stays_connecting() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = harness_with(
        ScenarioPicker::Always(Scenario::Success),
        Duration::ZERO,
        clock.clone(),
    );
    h.telephony.lose_callbacks(Some(Arc::new(|e: &CallEvent| {
        matches!(
            e,
            CallEvent::ConferenceStarted { .. } | CallEvent::ParticipantJoined { leg: None, .. }
        )
    })));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let before = quiesce(&h.service, id).await;
    assert_eq!(
        before.state(),
        DetailedState::Connecting,
        "{:?}",
        before.facts
    );

    let legacy = Arc::new(Legacy::default());
    let service = common::service_over(h.store.clone(), legacy.clone(), clock.clone());
    clock.advance(service.config().stale_after + Duration::from_secs(1));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.examined, 1, "{report:?}");
    assert!(report.legs_fetched >= 1, "{report:?}");
    assert_eq!(report.conferences_fetched, 0, "{report:?}");
    assert_eq!(report.joins_recovered, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(legacy.dials.load(std::sync::atomic::Ordering::SeqCst), 0);
    let after = service.call(id).await.unwrap().unwrap();
    assert_eq!(
        after.state(),
        DetailedState::Connecting,
        "{:?}",
        after.facts
    );
}
