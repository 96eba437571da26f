//! The [`CallStore`] conformance suite (feature `test-util`).
//!
//! Every check is a `pub async fn` taking a fresh, empty store; each
//! implementation's tests call all of them (see this crate's
//! `tests/conformance.rs`, which runs them against
//! [`bonde_pressure_core::InMemoryCallStore`], [`crate::SqliteCallStore`]
//! and [`crate::PgCallStore`]). A failed check panics, like an assertion.
//!
//! The list of checks is written once, in
//! [`for_each_conformance_check!`](crate::for_each_conformance_check):
//! [`CHECKS`] and the test functions are generated from it, and a unit test
//! asserts that every `pub async fn` check of this module is in it.
//!
//! Calls are built by applying core [`CallEvent`]s to a new call
//! ([`build_call`]), so their facts are realistic. Timestamps are whole
//! microseconds (what the SQL stores keep).

use std::collections::BTreeSet;
use std::sync::Arc;

use bonde_pressure_core::call::Leg;
use bonde_pressure_core::domain::{Email, PersonName};
use bonde_pressure_core::ports::{CallStore, RawEvent, StoreError};
use bonde_pressure_core::{
    Activist, AnsweredBy, Call, CallEvent, CallId, ConferenceId, Confirmation, DetailedState,
    LegId, LegStatus, PhoneNumber, Target, WidgetId,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::EventLog;

/// Invokes the macro `$m` once with the name of every check of the suite,
/// comma-separated: `$m!(create_get_round_trip, unicode_names_round_trip, …)`.
///
/// The one list of checks: [`CHECKS`] is built from it, and so are this
/// crate's test functions (`tests/conformance.rs`). An implementation's
/// tests can do the same:
///
/// ```
/// use std::sync::Arc;
/// use bonde_pressure_core::InMemoryCallStore; // your store here
///
/// macro_rules! my_tests {
///     ($($check:ident),* $(,)?) => {$(
///         // #[tokio::test] in a real test file.
///         async fn $check() {
///             bonde_pressure_store::conformance::$check(Arc::new(InMemoryCallStore::new())).await;
///         }
///     )*};
/// }
/// bonde_pressure_store::for_each_conformance_check!(my_tests);
/// # let _ = create_get_round_trip();
/// ```
///
/// Checks take `Arc<dyn CallStore>`, except [`orphan_events_are_stored`] and
/// [`nul_bytes_are_stored`], which take `Arc<S>` for any `S: EventLog`.
#[macro_export]
macro_rules! for_each_conformance_check {
    ($m:ident) => {
        $m! {
            create_get_round_trip,
            unicode_names_round_trip,
            duplicate_create_is_already_exists,
            stale_commit_conflicts_and_writes_nothing,
            commit_on_unknown_call_is_not_found,
            concurrent_updates_lose_nothing,
            concurrent_commits_of_many_calls_round_trip,
            event_log_keeps_insertion_order,
            append_events_to_unknown_call_is_not_found,
            orphan_events_are_stored,
            list_unfinished_for_reconciliation,
            large_payloads_round_trip,
            nul_bytes_are_stored,
            commit_round_trips_every_outcome,
            phone_numbers_round_trip,
            recent_calls_to_a_number_are_counted,
        }
    };
}

macro_rules! check_names {
    ($($check:ident),* $(,)?) => {
        [$(stringify!($check)),*]
    };
}

/// The name of every check of the suite, in
/// [`for_each_conformance_check!`](crate::for_each_conformance_check)'s
/// order, for implementations that want to loop over them.
pub const CHECKS: &[&str] = &crate::for_each_conformance_check!(check_names);

// ------------------------------------------------------------ builders

/// A fixed instant with a microsecond part (2026-03-01T12:00:00.123456Z).
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid date")
        + TimeDelta::microseconds(123_456)
}

/// `t0() + secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A random, valid Call SID.
pub fn call_sid() -> LegId {
    format!("CA{}", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("valid call sid")
}

/// A random, valid Conference SID.
pub fn conference_sid() -> ConferenceId {
    format!("CF{}", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("valid conference sid")
}

fn widget(id: i64) -> WidgetId {
    WidgetId::new(id).expect("valid widget id")
}

fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::parse_e164(e164).expect("valid phone number")
}

/// A new call (no facts, version 0) for `widget_id`, created at `created_at`.
pub fn new_call(widget_id: i64, created_at: DateTime<Utc>) -> Call {
    new_call_named(widget_id, created_at, "Ana Souza", "Deputada Maria")
}

/// [`new_call`] with the activist's and the target's names.
pub fn new_call_named(
    widget_id: i64,
    created_at: DateTime<Utc>,
    activist: &str,
    target: &str,
) -> Call {
    let (first, last) = activist.split_once(' ').unwrap_or((activist, activist));
    Call::new(
        CallId::new(),
        widget(widget_id),
        Activist::new(
            PersonName::parse(activist).expect("valid name"),
            Email::parse("ativista@example.org").expect("valid email"),
            phone("+5511912345678"),
        )
        .with_first_name(PersonName::parse(first).expect("valid name"))
        .with_last_name(PersonName::parse(last).expect("valid name")),
        Target::new(
            PersonName::parse(target).expect("valid name"),
            phone("+5561998765432"),
        ),
        Some(phone("+5511987654321")),
        created_at,
    )
}

/// Where [`build_call`] takes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing happened yet.
    Created,
    /// The activist's phone rings.
    ActivistRinging,
    /// The activist's line was busy.
    ActivistBusy,
    /// The activist did not answer.
    ActivistNoAnswer,
    /// A voicemail answered the activist's phone.
    ActivistVoicemail,
    /// The activist confirmed; the target is being dialled.
    Connecting,
    /// The target's phone rings.
    TargetRinging,
    /// The target did not answer.
    TargetNoAnswer,
    /// The activist left before the target answered.
    Abandoned,
    /// Both talk.
    Connected,
    /// They talked; the target leg reported `talk_secs` (or no duration).
    Completed {
        /// The target leg's duration.
        talk_secs: Option<u32>,
    },
}

impl Outcome {
    /// The detailed state a call with this outcome is in.
    pub fn state(&self) -> DetailedState {
        match self {
            Outcome::Created => DetailedState::Created,
            Outcome::ActivistRinging => DetailedState::ActivistRinging,
            Outcome::ActivistBusy => DetailedState::ActivistBusy,
            Outcome::ActivistNoAnswer => DetailedState::ActivistNoAnswer,
            Outcome::ActivistVoicemail => DetailedState::ActivistVoicemail,
            Outcome::Connecting => DetailedState::Connecting,
            Outcome::TargetRinging => DetailedState::TargetRinging,
            Outcome::TargetNoAnswer => DetailedState::TargetNoAnswer,
            Outcome::Abandoned => DetailedState::Abandoned,
            Outcome::Connected => DetailedState::Connected,
            Outcome::Completed { .. } => DetailedState::Completed,
        }
    }

    /// Every outcome (completed with 42 s of talk).
    pub const ALL: [Outcome; 11] = [
        Outcome::Created,
        Outcome::ActivistRinging,
        Outcome::ActivistBusy,
        Outcome::ActivistNoAnswer,
        Outcome::ActivistVoicemail,
        Outcome::Connecting,
        Outcome::TargetRinging,
        Outcome::TargetNoAnswer,
        Outcome::Abandoned,
        Outcome::Connected,
        Outcome::Completed {
            talk_secs: Some(42),
        },
    ];
}

/// The core events taking a new call to `outcome`.
pub fn lifecycle(outcome: Outcome, t: DateTime<Utc>) -> Vec<CallEvent> {
    let a = call_sid();
    let b = call_sid();
    let cf = conference_sid();
    let s = |n: i64| Some(t + TimeDelta::seconds(n));
    let leg = |leg, leg_id: &LegId, status, duration_secs, at| {
        CallEvent::leg_status(leg, status)
            .with_leg_id(leg_id.clone())
            .with_duration_secs(duration_secs)
            .with_at(at)
            .build()
    };
    let mut ev = Vec::new();
    if outcome == Outcome::Created {
        return ev;
    }
    ev.push(CallEvent::leg_dialed(
        Leg::Activist,
        a.clone(),
        LegStatus::Queued,
    ));
    ev.push(leg(Leg::Activist, &a, LegStatus::Ringing, None, s(1)));
    match outcome {
        Outcome::ActivistRinging => return ev,
        Outcome::ActivistBusy => {
            ev.push(leg(Leg::Activist, &a, LegStatus::Busy, Some(0), s(2)));
            return ev;
        }
        Outcome::ActivistNoAnswer => {
            ev.push(leg(Leg::Activist, &a, LegStatus::NoAnswer, Some(0), s(30)));
            return ev;
        }
        _ => {}
    }
    ev.push(leg(Leg::Activist, &a, LegStatus::InProgress, None, s(5)));
    if outcome == Outcome::ActivistVoicemail {
        ev.push(CallEvent::answered_by(
            Leg::Activist,
            a.clone(),
            AnsweredBy::MachineEndBeep,
        ));
        return ev;
    }
    ev.push(CallEvent::Prompted);
    ev.push(CallEvent::Confirmed(Confirmation::Digits("1".into())));
    ev.push(CallEvent::ConferenceStarted {
        conference_id: cf.clone(),
    });
    ev.push(CallEvent::participant_joined(
        cf.clone(),
        a.clone(),
        Leg::Activist,
    ));
    ev.push(CallEvent::leg_dialed(
        Leg::Target,
        b.clone(),
        LegStatus::Queued,
    ));
    match outcome {
        Outcome::Connecting => return ev,
        Outcome::Abandoned => {
            ev.push(leg(
                Leg::Activist,
                &a,
                LegStatus::Completed,
                Some(20),
                s(20),
            ));
            return ev;
        }
        _ => {}
    }
    ev.push(leg(Leg::Target, &b, LegStatus::Ringing, None, s(12)));
    match outcome {
        Outcome::TargetRinging => return ev,
        Outcome::TargetNoAnswer => {
            ev.push(leg(Leg::Target, &b, LegStatus::NoAnswer, Some(0), s(40)));
            return ev;
        }
        _ => {}
    }
    ev.push(leg(Leg::Target, &b, LegStatus::InProgress, None, s(15)));
    ev.push(CallEvent::participant_joined(
        cf.clone(),
        b.clone(),
        Leg::Target,
    ));
    if let Outcome::Completed { talk_secs } = outcome {
        ev.push(CallEvent::participant_left(
            cf.clone(),
            b.clone(),
            Leg::Target,
        ));
        ev.push(leg(
            Leg::Target,
            &b,
            LegStatus::Completed,
            talk_secs,
            s(100),
        ));
        ev.push(CallEvent::ConferenceEnded {
            conference_id: cf.clone(),
        });
        ev.push(leg(
            Leg::Activist,
            &a,
            LegStatus::Completed,
            Some(110),
            s(110),
        ));
    }
    ev
}

/// A call of `widget_id` created at `created_at`, taken to `outcome` by
/// applying its [`lifecycle`] (one second apart, so `updated_at` moves on).
/// Version 0: ready for [`CallStore::create`].
pub fn build_call(widget_id: i64, created_at: DateTime<Utc>, outcome: Outcome) -> Call {
    let mut call = new_call(widget_id, created_at);
    for (i, e) in lifecycle(outcome, created_at).iter().enumerate() {
        let now = created_at + TimeDelta::seconds(i as i64 + 1);
        call = call.apply(e, now).0;
    }
    assert_eq!(call.state(), outcome.state(), "lifecycle of {outcome:?}");
    call
}

/// A raw webhook payload for the event log.
pub fn raw_event(kind: &str, sid: Option<&LegId>, payload: &str, seq: Option<i64>) -> RawEvent {
    let mut raw = RawEvent::new(kind, payload, at(seq.unwrap_or(0))).with_sequence_number(seq);
    raw.leg_id = sid.map(|s| s.as_str().to_owned());
    raw
}

async fn must_get(store: &dyn CallStore, id: CallId) -> Call {
    store
        .get(id)
        .await
        .expect("get succeeds")
        .expect("call exists")
}

// --------------------------------------------------------------- checks

/// A created call reads back equal; unknown ids read `None`; a commit bumps
/// the version and reads back (read-your-writes); the version given to
/// `create` is kept as is.
pub async fn create_get_round_trip(store: Arc<dyn CallStore>) {
    assert!(store.get(CallId::new()).await.unwrap().is_none());

    let call = build_call(7, at(0), Outcome::Connected);
    store.create(&call).await.unwrap();
    assert_eq!(must_get(&*store, call.id).await, call);

    let (next, _) = call.apply(
        &CallEvent::participant_left(
            call.facts.conference_id.clone().unwrap(),
            call.facts.target.leg_id.clone().unwrap(),
            Leg::Target,
        ),
        at(500),
    );
    assert_eq!(store.commit(&next, &[]).await.unwrap(), 1);
    let stored = must_get(&*store, call.id).await;
    assert_eq!(stored, next.with_version(1));
    assert_eq!(stored.state(), DetailedState::Completed);

    let mut later = new_call(7, at(1));
    later.version = 5;
    later.target_caller_id = None;
    later.activist.first_name = None;
    later.activist.last_name = None;
    store.create(&later).await.unwrap();
    assert_eq!(must_get(&*store, later.id).await, later);
    assert_eq!(store.commit(&later, &[]).await.unwrap(), 6);
}

/// Names with accents, `Ñ` and CJK survive the round trip.
pub async fn unicode_names_round_trip(store: Arc<dyn CallStore>) {
    let mut call = new_call_named(8, at(0), "João Ñandú 李", "Zoë Ærø 王小明");
    call.activist.email = Email::parse("joão.ñandú@exemplo.com.br").unwrap();
    store.create(&call).await.unwrap();
    let got = must_get(&*store, call.id).await;
    assert_eq!(got, call);
    assert_eq!(got.activist.name.as_str(), "João Ñandú 李");
    assert_eq!(got.activist.first_name.unwrap().as_str(), "João");
    assert_eq!(got.target.name.as_str(), "Zoë Ærø 王小明");
}

/// Creating an id twice fails with `AlreadyExists` and keeps the first.
pub async fn duplicate_create_is_already_exists(store: Arc<dyn CallStore>) {
    let call = build_call(10, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();
    let mut again = build_call(11, at(5), Outcome::Created);
    again.id = call.id;
    assert!(matches!(
        store.create(&again).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(must_get(&*store, call.id).await, call);
}

/// A commit with a stale (or future) version fails with `Conflict`, writes
/// nothing and appends none of its events.
pub async fn stale_commit_conflicts_and_writes_nothing(store: Arc<dyn CallStore>) {
    let call = build_call(12, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();

    let a = call.facts.activist.leg_id.clone().unwrap();
    let first_event = raw_event(
        "status-callback",
        Some(&a),
        "CallStatus=in-progress",
        Some(1),
    );
    let (answered, _) = call.apply(
        &CallEvent::leg_status(Leg::Activist, LegStatus::InProgress)
            .with_leg_id(a.clone())
            .with_at(at(20))
            .build(),
        at(20),
    );
    assert_eq!(
        store
            .commit(&answered, std::slice::from_ref(&first_event))
            .await
            .unwrap(),
        1
    );

    // A writer that read version 0 concurrently:
    let (busy, _) = call.apply(
        &CallEvent::leg_status(Leg::Activist, LegStatus::Busy)
            .with_leg_id(a.clone())
            .with_duration_secs(0)
            .with_sip_response_code(486)
            .with_at(at(21))
            .build(),
        at(21),
    );
    let stale_event = raw_event("status-callback", Some(&a), "CallStatus=busy", Some(2));
    assert!(matches!(
        store
            .commit(&busy, std::slice::from_ref(&stale_event))
            .await,
        Err(StoreError::Conflict)
    ));
    let mut future = busy.clone();
    future.version = 7;
    assert!(matches!(
        store
            .commit(&future, std::slice::from_ref(&stale_event))
            .await,
        Err(StoreError::Conflict)
    ));

    let stored = must_get(&*store, call.id).await;
    assert_eq!(stored, answered.with_version(1));
    assert_eq!(stored.state(), DetailedState::ActivistAnswered);
    let events = store.events(call.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].raw, first_event);
    assert_eq!(events[0].call_id, Some(call.id));
}

/// Committing a call that was never created fails with `NotFound` and
/// stores nothing.
pub async fn commit_on_unknown_call_is_not_found(store: Arc<dyn CallStore>) {
    let call = build_call(13, at(0), Outcome::Connecting);
    let event = raw_event("status-callback", None, "x=1", None);
    assert!(matches!(
        store.commit(&call, std::slice::from_ref(&event)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.get(call.id).await.unwrap().is_none());
    assert!(store.events(call.id).await.unwrap().is_empty());
}

/// 50 tasks each add a distinct fact and a distinct raw event to one call
/// (load, apply, commit, retry on `Conflict`): nothing is lost.
pub async fn concurrent_updates_lose_nothing(store: Arc<dyn CallStore>) {
    const WRITERS: usize = 50;
    let call = new_call(14, at(0));
    store.create(&call).await.unwrap();
    let cf = conference_sid();

    let mut tasks = Vec::with_capacity(WRITERS);
    for i in 0..WRITERS {
        let store = store.clone();
        let cf = cf.clone();
        tasks.push(tokio::spawn(async move {
            let sid = call_sid();
            let event = CallEvent::participant_joined(cf, sid.clone(), None);
            let raw = raw_event(
                "conference-status-callback",
                Some(&sid),
                &format!("StatusCallbackEvent=participant-join&worker={i}"),
                Some(i as i64),
            );
            let mut attempts = 0_u32;
            loop {
                attempts += 1;
                assert!(attempts <= 10_000, "writer {i} never committed");
                let current = store.get(call.id).await.expect("get").expect("exists");
                let (next, _) = current.apply(&event, at(i as i64 + 1));
                match store.commit(&next, std::slice::from_ref(&raw)).await {
                    Ok(version) => return (version, sid, raw),
                    Err(StoreError::Conflict) => tokio::task::yield_now().await,
                    Err(e) => panic!("writer {i}: unexpected store error: {e}"),
                }
            }
        }));
    }
    let mut versions = BTreeSet::new();
    let mut sids = BTreeSet::new();
    let mut raws = Vec::new();
    for t in tasks {
        let (version, sid, raw) = t.await.expect("writer task");
        versions.insert(version);
        sids.insert(sid);
        raws.push(raw);
    }
    assert_eq!(versions, (1..=WRITERS as u64).collect::<BTreeSet<_>>());

    let stored = must_get(&*store, call.id).await;
    assert_eq!(stored.version, WRITERS as u64);
    let seen: BTreeSet<LegId> = stored.facts.participants.keys().cloned().collect();
    assert_eq!(seen, sids, "every writer's fact is in the final call");

    let events = store.events(call.id).await.unwrap();
    assert_eq!(events.len(), WRITERS);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let mut stored_payloads: Vec<&str> = events.iter().map(|e| e.raw.payload.as_str()).collect();
    let mut sent_payloads: Vec<&str> = raws.iter().map(|r| r.payload.as_str()).collect();
    stored_payloads.sort_unstable();
    sent_payloads.sort_unstable();
    assert_eq!(stored_payloads, sent_payloads);
}

/// Many calls (every outcome, several times) walk their lifecycles at once,
/// each commit carrying its raw payload, with one stale commit per call
/// (the version it started from had moved: refused) in between: every call
/// reads back equal to its last commit, its log holds its own payloads in
/// order and none of the refused ones, and the unfinished listing agrees.
/// (PostgreSQL groups concurrent commits of different calls into one
/// statement: this is the check that grouped commits keep each call's own
/// outcome.)
pub async fn concurrent_commits_of_many_calls_round_trip(store: Arc<dyn CallStore>) {
    const PER_OUTCOME: usize = 6;
    let mut tasks = Vec::new();
    for (k, outcome) in Outcome::ALL
        .into_iter()
        .cycle()
        .take(Outcome::ALL.len() * PER_OUTCOME)
        .enumerate()
    {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let created = new_call(21, at(k as i64));
            store.create(&created).await.expect("create");
            let mut call = created.clone();
            let mut sent = Vec::new();
            for (i, e) in lifecycle(outcome, at(0)).iter().enumerate() {
                let (next, _) = call.apply(e, at(i as i64 + 1));
                let raw = raw_event(
                    "status-callback",
                    None,
                    &format!("call={k}&step={i}"),
                    Some(i as i64),
                );
                let version = store
                    .commit(&next, std::slice::from_ref(&raw))
                    .await
                    .unwrap_or_else(|e| panic!("call {k} step {i}: {e}"));
                assert_eq!(version, call.version + 1, "call {k} step {i}");
                sent.push(raw.payload);
                if i == 0 {
                    // The first commit's input again: its version moved.
                    let stale =
                        raw_event("status-callback", None, &format!("call={k}&stale"), None);
                    assert!(
                        matches!(
                            store.commit(&next, &[stale]).await,
                            Err(StoreError::Conflict)
                        ),
                        "call {k}: a stale commit is refused"
                    );
                }
                tokio::task::yield_now().await;
                call = next.with_version(version);
            }
            (call, sent, outcome)
        }));
    }
    let mut settled = Vec::new();
    for t in tasks {
        let (call, sent, outcome) = t.await.expect("call task");
        let got = must_get(&*store, call.id).await;
        assert_eq!(got, call, "{outcome:?}");
        assert_eq!(got.state(), outcome.state());
        settled.push((call.id, got.is_settled()));
        let logged: Vec<String> = store
            .events(call.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.raw.payload)
            .collect();
        assert_eq!(
            logged, sent,
            "{outcome:?}: the call's own payloads, in order, none refused"
        );
    }
    let unfinished: BTreeSet<CallId> = store
        .list_unfinished(at(100_000), 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    for (id, is_settled) in settled {
        assert_eq!(unfinished.contains(&id), !is_settled, "{id}");
    }
}

/// A call's log is its events in insertion order (ids increasing), across
/// commits and `append_events`, and never mixes in another call's events.
pub async fn event_log_keeps_insertion_order(store: Arc<dyn CallStore>) {
    let call = build_call(15, at(0), Outcome::ActivistRinging);
    let other = build_call(15, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();
    store.create(&other).await.unwrap();
    let a = call.facts.activist.leg_id.clone().unwrap();
    let o = other.facts.activist.leg_id.clone().unwrap();

    let mut sent = Vec::new();
    let batch1: Vec<RawEvent> = (0..3)
        .map(|i| raw_event("status-callback", Some(&a), &format!("n={i}"), Some(i)))
        .collect();
    let v1 = store.commit(&call, &batch1).await.unwrap();
    sent.extend(batch1);

    store
        .append_events(
            Some(other.id),
            &[raw_event("status-callback", Some(&o), "other", Some(0))],
        )
        .await
        .unwrap();

    // Out-of-order sequence numbers are kept as received.
    let batch2 = vec![
        raw_event("amd-status-callback", Some(&a), "n=3", Some(9)),
        raw_event("gather", None, "Digits=1", None),
    ];
    store.append_events(Some(call.id), &batch2).await.unwrap();
    sent.extend(batch2);

    let mut next = must_get(&*store, call.id).await;
    assert_eq!(next.version, v1);
    next.updated_at = at(60);
    let batch3 = vec![raw_event("status-callback", Some(&a), "n=5", Some(4))];
    store.commit(&next, &batch3).await.unwrap();
    sent.extend(batch3);
    store.append_events(Some(call.id), &[]).await.unwrap();

    let events = store.events(call.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.raw.clone()).collect::<Vec<_>>(),
        sent
    );
    assert!(events.iter().all(|e| e.call_id == Some(call.id)));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));

    let other_events = store.events(other.id).await.unwrap();
    assert_eq!(other_events.len(), 1);
    assert_eq!(other_events[0].raw.payload, "other");
    assert!(store.events(CallId::new()).await.unwrap().is_empty());
}

/// Appending to a call that does not exist fails with `NotFound`.
pub async fn append_events_to_unknown_call_is_not_found(store: Arc<dyn CallStore>) {
    let ghost = CallId::new();
    let e = raw_event("status-callback", None, "x", None);
    assert!(matches!(
        store
            .append_events(Some(ghost), std::slice::from_ref(&e))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append_events(Some(ghost), &[]).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.events(ghost).await.unwrap().is_empty());
}

/// Payloads naming no known call are stored (`call_id = None`), in order,
/// findable by SID, and in no call's log.
pub async fn orphan_events_are_stored<S: EventLog + ?Sized>(store: Arc<S>) {
    let sid = call_sid();
    let orphans = vec![
        raw_event("status-callback", Some(&sid), "CallStatus=ringing", Some(1)),
        raw_event(
            "status-callback",
            Some(&sid),
            "CallStatus=completed",
            Some(2),
        ),
    ];
    store.append_events(None, &orphans).await.unwrap();
    // A malformed SID is kept as text.
    store
        .append_events(
            None,
            &[raw_event("status-callback", None, "CallSid=bogus", None)],
        )
        .await
        .unwrap();

    let call = build_call(16, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();
    store
        .commit(
            &call,
            &[raw_event("status-callback", Some(&sid), "mine", Some(3))],
        )
        .await
        .unwrap();

    let by_sid = store.events_by_sid(sid.as_str()).await.unwrap();
    assert_eq!(by_sid.len(), 3);
    assert_eq!(by_sid[0].call_id, None);
    assert_eq!(by_sid[1].call_id, None);
    assert_eq!(by_sid[2].call_id, Some(call.id));
    assert_eq!(by_sid[0].raw, orphans[0]);
    assert_eq!(by_sid[1].raw, orphans[1]);
    assert!(by_sid.windows(2).all(|w| w[0].id < w[1].id));

    let log = store.events(call.id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].raw.payload, "mine");
}

/// `list_unfinished` lists only calls that are not settled
/// ([`Call::is_settled`]) updated strictly before the cutoff, oldest update
/// first (ties by id), at most `limit`: unfinished calls, and calls in a
/// terminal state one of whose legs may still be up.
pub async fn list_unfinished_for_reconciliation(store: Arc<dyn CallStore>) {
    let cutoff = at(1_000);
    let put = |outcome: Outcome, updated: DateTime<Utc>| {
        let mut c = build_call(17, at(0), outcome);
        c.updated_at = updated;
        c
    };
    let old = put(Outcome::ActivistRinging, at(100));
    let tie_a = put(Outcome::Connecting, at(200));
    let tie_b = put(Outcome::Created, at(200));
    let newer = put(Outcome::Connected, at(999));
    let terminal_old = put(Outcome::ActivistBusy, at(50));
    let completed_old = put(Outcome::Completed { talk_secs: Some(3) }, at(60));
    let at_cutoff = put(Outcome::TargetRinging, cutoff);
    let after_cutoff = put(Outcome::ActivistRinging, at(2_000));
    let going_terminal = put(Outcome::TargetRinging, at(10));
    // Terminal (target_no_answer), but the activist is still in the
    // conference: listed, so reconciliation hangs the activist up.
    let terminal_live = put(Outcome::TargetNoAnswer, at(300));
    assert!(terminal_live.is_terminal() && !terminal_live.is_settled());
    for c in [
        &old,
        &tie_a,
        &tie_b,
        &newer,
        &terminal_old,
        &completed_old,
        &at_cutoff,
        &after_cutoff,
        &going_terminal,
        &terminal_live,
    ] {
        store.create(c).await.unwrap();
    }
    // A commit settles a call (terminal state, both legs ended): it leaves the listing.
    let end = |call: &Call, leg: Leg, status: LegStatus, t: i64| {
        CallEvent::leg_status(leg, status)
            .with_leg_id(call.facts.leg(leg).leg_id.clone())
            .with_duration_secs(0)
            .with_at(at(t))
            .build()
    };
    let (busy, _) = going_terminal.apply(
        &end(&going_terminal, Leg::Target, LegStatus::Busy, 11),
        at(11),
    );
    assert!(busy.is_terminal() && !busy.is_settled());
    let (ended, _) = busy.apply(&end(&busy, Leg::Activist, LegStatus::Completed, 11), at(11));
    assert!(ended.is_settled());
    store.commit(&ended, &[]).await.unwrap();

    let (first_tie, second_tie) = if tie_a.id < tie_b.id {
        (tie_a, tie_b)
    } else {
        (tie_b, tie_a)
    };
    let expected = vec![
        old.clone(),
        first_tie.clone(),
        second_tie.clone(),
        terminal_live.clone(),
        newer.clone(),
    ];
    assert_eq!(store.list_unfinished(cutoff, 100).await.unwrap(), expected);
    assert_eq!(
        store.list_unfinished(cutoff, 2).await.unwrap(),
        expected[..2].to_vec()
    );
    assert_eq!(
        store
            .list_unfinished(cutoff + TimeDelta::nanoseconds(1), 100)
            .await
            .unwrap()
            .len(),
        6,
        "a cutoff just past a call's update includes it"
    );
    assert!(store.list_unfinished(cutoff, 0).await.unwrap().is_empty());
    assert!(store.list_unfinished(at(50), 10).await.unwrap().is_empty());

    // The live leg ends: same (terminal) state, but now settled, so it
    // leaves the listing.
    let (settled, _) = terminal_live.apply(
        &end(&terminal_live, Leg::Activist, LegStatus::Completed, 301),
        at(301),
    );
    assert_eq!(settled.state(), terminal_live.state());
    assert!(settled.is_settled());
    store.commit(&settled, &[]).await.unwrap();
    assert_eq!(
        store.list_unfinished(cutoff, 100).await.unwrap(),
        vec![old, first_tie, second_tie, newer]
    );
}

/// Payloads of 1 MiB and more are stored and read back intact.
pub async fn large_payloads_round_trip(store: Arc<dyn CallStore>) {
    let call = build_call(19, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();
    let unit = "Body=Olá+mundo+🌍&Digits=1234567890&";
    let big = unit.repeat((1 << 20) / unit.len() + 1);
    assert!(big.len() >= 1 << 20);
    let bigger = format!("{big}{big}");
    let events = vec![
        raw_event("status-callback", None, &big, Some(1)),
        raw_event("status-callback", None, &bigger, Some(2)),
    ];
    store.commit(&call, &events).await.unwrap();
    let stored = store.events(call.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].raw, events[0]);
    assert_eq!(stored[1].raw, events[1]);
}

/// How a backend may store a NUL character of free text (raw payloads, their
/// leg ids): as is, or replaced by U+FFFD (PostgreSQL, whose `text` cannot
/// hold U+0000). Nothing else of the text changes either way.
pub fn nul_stored_as(sent: &str, stored: &str) -> bool {
    stored == sent || stored == sent.replace('\0', "\u{FFFD}")
}

/// Payloads (and CallSids) containing NUL bytes — a hostile body — are
/// stored through `commit` and `append_events`, orphans included, and read
/// back with every other character intact: the NULs either kept or each
/// replaced by U+FFFD ([`nul_stored_as`]). The call's own commit goes
/// through, and a lookup by the raw leg id finds the orphans.
pub async fn nul_bytes_are_stored<S: EventLog + ?Sized>(store: Arc<S>) {
    let call = build_call(23, at(0), Outcome::ActivistRinging);
    store.create(&call).await.unwrap();
    let a = call.facts.activist.leg_id.clone().unwrap();

    let hostile = "CallSid=CA\0&Digits=1\0\0&Body=ol\u{e1}\0mundo\0";
    let committed = raw_event("status-callback", Some(&a), hostile, Some(1));
    assert_eq!(
        store
            .commit(&call, std::slice::from_ref(&committed))
            .await
            .unwrap(),
        1
    );
    let appended = raw_event("gather", Some(&a), "\0", Some(2));
    store
        .append_events(Some(call.id), std::slice::from_ref(&appended))
        .await
        .unwrap();
    let nul_sid = "CA\0bogus";
    let orphan =
        raw_event("status-callback", None, "LegId=CA%00bogus&\0", Some(3)).with_leg_id(nul_sid);
    store
        .append_events(None, std::slice::from_ref(&orphan))
        .await
        .unwrap();

    let log = store.events(call.id).await.unwrap();
    assert_eq!(log.len(), 2);
    for (stored, sent) in log.iter().zip([&committed, &appended]) {
        assert!(
            nul_stored_as(&sent.payload, &stored.raw.payload),
            "{:?} stored as {:?}",
            sent.payload,
            stored.raw.payload
        );
        let mut restored = stored.raw.clone();
        restored.payload = sent.payload.clone();
        assert_eq!(restored, *sent, "only the NULs may change");
    }

    let orphans = store.events_by_sid(nul_sid).await.unwrap();
    assert_eq!(orphans.len(), 1, "found by the leg id as received");
    let stored = &orphans[0];
    assert_eq!(stored.call_id, None);
    assert!(nul_stored_as(&orphan.payload, &stored.raw.payload));
    let stored_sid = stored.raw.leg_id.as_deref().unwrap();
    assert!(nul_stored_as(nul_sid, stored_sid), "{stored_sid:?}");
    // A backend replaces NULs in all of an event's text or in none of it.
    assert_eq!(
        stored.raw.payload == orphan.payload,
        stored_sid == nul_sid,
        "{stored:?}"
    );
    let stored_call = store.get(call.id).await.unwrap().expect("call exists");
    assert_eq!(stored_call.version, 1);
}

/// Every outcome's call, created at its first step and committed at its
/// last, reads back equal, with the derived state, and is listed as
/// unfinished exactly when it is not settled.
pub async fn commit_round_trips_every_outcome(store: Arc<dyn CallStore>) {
    for outcome in Outcome::ALL {
        let created = new_call(20, at(0));
        store.create(&created).await.unwrap();
        let mut call = created.clone();
        let mut version = 0;
        for (i, e) in lifecycle(outcome, at(0)).iter().enumerate() {
            let (next, _) = call.apply(e, at(i as i64 + 1));
            version = store.commit(&next, &[]).await.unwrap();
            call = next.with_version(version);
        }
        let got = must_get(&*store, created.id).await;
        assert_eq!(got, call, "{outcome:?}");
        assert_eq!(got.version, version);
        assert_eq!(got.state(), outcome.state());
        let listed = store.list_unfinished(at(10_000), 1_000).await.unwrap();
        assert_eq!(
            listed.iter().any(|c| c.id == created.id),
            !got.is_settled(),
            "{outcome:?}"
        );
    }
}

/// Numbers generated over several regions and types (a deterministic
/// proptest run: example numbers of each region's plan with random last
/// digits, typed in several ways) that pass validation read back as
/// themselves, from their E.164 text (validated and trusted) and from the
/// store, as the activist's, the target's and the caller id number.
pub async fn phone_numbers_round_trip(store: Arc<dyn CallStore>) {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (0..PLAN_SAMPLES.len(), 0u32..10_000, 0usize..4);
    let mut accepted = 0;
    let total = 120;
    for _ in 0..total {
        let (sample, last4, style) = strategy.new_tree(&mut runner).expect("a value").current();
        let (cc, national, kind) = PLAN_SAMPLES[sample];
        let national = format!("{}{last4:04}", &national[..national.len() - 4]);
        let input = match style {
            0 => format!("+{cc}{national}"),
            1 => format!("+{cc} {} {}", &national[..2], &national[2..]),
            2 => format!("+{cc}-{}-{}", &national[..3], &national[3..]),
            // Read in the default region (Brazil) when national.
            _ if cc == 55 => format!("({}) {}", &national[..2], &national[2..]),
            _ => format!("+{cc}.{national}"),
        };
        let Ok(number) = PhoneNumber::parse(&input, bonde_pressure_core::Region::BRAZIL) else {
            continue;
        };
        accepted += 1;
        assert!(number.as_e164().starts_with(&format!("+{cc}")), "{input}");
        assert_eq!(number.number_type().as_str(), kind, "{input}");
        assert_eq!(
            bonde_pressure_core::NumberPolicy::default().check(&number),
            Ok(()),
            "{input}"
        );
        assert_eq!(
            PhoneNumber::parse_e164(number.as_e164()).as_ref(),
            Ok(&number),
            "{input}"
        );
        assert_eq!(
            PhoneNumber::from_trusted_e164(number.as_e164()).as_ref(),
            Ok(&number),
            "{input}"
        );
        let mut call = new_call(1, at(accepted));
        call.activist.phone = number.clone();
        call.target.phone = number.clone();
        call.target_caller_id = Some(number.clone());
        store.create(&call).await.expect("create");
        let got = must_get(&*store, call.id).await;
        assert_eq!(got.activist.phone, number, "{input}");
        assert_eq!(got.target.phone, number, "{input}");
        assert_eq!(got.target_caller_id, Some(number), "{input}");
    }
    assert!(
        accepted * 2 >= total,
        "only {accepted} of {total} numbers were valid"
    );
}

/// Example national numbers of several plans: (country code, number, type).
pub const PLAN_SAMPLES: &[(u16, &str, &str)] = &[
    (55, "1123456789", "fixed_line"),
    (55, "11961234567", "mobile"),
    (1, "2015550123", "fixed_line_or_mobile"),
    (351, "212345678", "fixed_line"),
    (351, "912345678", "mobile"),
    (33, "123456789", "fixed_line"),
    (33, "612345678", "mobile"),
    (44, "1212345678", "fixed_line"),
    (44, "7400123456", "mobile"),
];

/// [`CallStore::count_recent_calls_to`]: the calls of one activist number
/// created strictly after `since`, counted when placed or still `created`,
/// not when the provider refused the activist leg; the oldest creation time.
pub async fn recent_calls_to_a_number_are_counted(store: Arc<dyn CallStore>) {
    let ana = phone("+5511912345678");
    let other = phone("+5511912345670");
    // Nothing yet.
    let none = store.count_recent_calls_to(&ana, at(-10)).await.unwrap();
    assert_eq!(none.map(|r| (r.count, r.oldest)), Some((0, None)));

    let placed = build_call(
        1,
        at(0),
        Outcome::Completed {
            talk_secs: Some(60),
        },
    );
    store.create(&placed).await.unwrap();
    let in_flight = new_call(2, at(60));
    store.create(&in_flight).await.unwrap();
    // Refused by the provider: not counted.
    let (refused, _) = new_call(1, at(120)).apply(
        &CallEvent::DialFailed {
            leg: Leg::Activist,
            error: bonde_pressure_core::call::LegError::new(None, "refused"),
        },
        at(120),
    );
    store.create(&refused).await.unwrap();
    let mut someone_else = new_call(1, at(30));
    someone_else.activist.phone = other.clone();
    store.create(&someone_else).await.unwrap();

    let recent = store
        .count_recent_calls_to(&ana, at(-1))
        .await
        .unwrap()
        .expect("this store counts");
    assert_eq!((recent.count, recent.oldest), (2, Some(at(0))));
    // Strictly after `since`.
    let recent = store
        .count_recent_calls_to(&ana, at(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((recent.count, recent.oldest), (1, Some(at(60))));
    let recent = store
        .count_recent_calls_to(&ana, at(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((recent.count, recent.oldest), (0, None));
    let recent = store
        .count_recent_calls_to(&other, at(-1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((recent.count, recent.oldest), (1, Some(at(30))));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The list the tests are generated from names every check: each
    /// `pub async fn` of this module (a check takes a store), and nothing else.
    #[test]
    fn checks_list_every_check_of_the_module() {
        let source = include_str!("conformance.rs");
        let defined: BTreeSet<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .map(|rest| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
            })
            .collect();
        let listed: BTreeSet<&str> = super::CHECKS.iter().copied().collect();
        assert_eq!(listed.len(), super::CHECKS.len(), "a check is listed twice");
        assert!(defined.len() >= 15, "{defined:?}");
        assert_eq!(
            defined, listed,
            "add new checks to for_each_conformance_check! (src/conformance.rs)"
        );
    }
}
