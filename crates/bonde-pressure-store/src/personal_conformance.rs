//! The [`PersonalDataStore`] conformance suite (feature `test-util`):
//! retention, erasure and the audit log, the same on every store.
//!
//! Like [`crate::conformance`], each check is a `pub async fn` taking a
//! fresh, empty store (any `S: CallStore + PersonalDataStore`, plus
//! [`CampaignResults`] for the retention check, which compares the results
//! before and after), and the one
//! list of checks is
//! [`for_each_personal_data_check!`](crate::for_each_personal_data_check).
//! A store's erased call must equal what core's [`Call::erase`] makes of
//! it, so the SQL stores are checked against core's reference.

use std::sync::Arc;

use bonde_pressure_core::call::LegError;
use bonde_pressure_core::domain::Email;
use bonde_pressure_core::ports::{CallStore, StoreError};
use bonde_pressure_core::{
    ActorId, AuditEntry, Call, CallEvent, CallId, CampaignResults, ErasureReport, Interval, Leg,
    LegStatus, PersonKey, PersonalDataStore, PhoneNumber, ResultsQuery, RetentionPass,
    RetentionReport, Tz,
};
use chrono::{DateTime, TimeDelta, Utc};

use crate::conformance::{Outcome, at, build_call, raw_event};

/// Invokes `$m` with the name of every check of this suite.
#[macro_export]
macro_rules! for_each_personal_data_check {
    ($m:ident) => {
        $m! {
            retention_erases_exactly_what_is_older_than_the_cutoff,
            retention_respects_the_batch_limit,
            erasure_by_phone_spares_live_calls_until_they_settle,
            erasure_by_email_is_case_insensitive,
            audit_log_round_trips_newest_first,
        }
    };
}

macro_rules! check_names {
    ($($check:ident),* $(,)?) => {
        [$(stringify!($check)),*]
    };
}

/// The name of every check of the suite.
pub const CHECKS: &[&str] = &crate::for_each_personal_data_check!(check_names);

fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::parse_e164(e164).expect("valid phone number")
}

/// A settled call created at `created_at` whose legs carry provider error
/// messages quoting the numbers, and whose caller id is the activist's
/// number (the `activist number` caller-id policy).
fn settled_with_errors(widget_id: i64, created_at: DateTime<Utc>) -> Call {
    let mut call = build_call(widget_id, created_at, Outcome::TargetNoAnswer);
    call.target_caller_id = Some(call.activist.phone.clone());
    for (leg, msg) in [
        (Leg::Activist, "Call to +5511912345678 failed"),
        (Leg::Target, "From +5511912345678 not allowed"),
    ] {
        let failed = CallEvent::DialFailed {
            leg,
            error: LegError::new(13_224, msg),
        };
        call = call.apply(&failed, created_at + TimeDelta::seconds(60)).0;
    }
    // The activist hangs up: nothing is left live.
    let done = CallEvent::leg_status(Leg::Activist, LegStatus::Completed)
        .with_leg_id(call.facts.activist.leg_id.clone())
        .with_duration_secs(50)
        .with_at(created_at + TimeDelta::seconds(61))
        .build();
    call = call.apply(&done, created_at + TimeDelta::seconds(61)).0;
    assert!(call.is_settled(), "{:?}", call.state());
    call
}

fn ran(pass: RetentionPass) -> RetentionReport {
    match pass {
        RetentionPass::Ran(r) => r,
        other => panic!("the pass did not run: {other:?}"),
    }
}

async fn get<S: CallStore + ?Sized>(store: &S, id: CallId) -> Call {
    store.get(id).await.expect("get").expect("call exists")
}

/// What core's [`Call::erase`] makes of `stored` at `now`, with the
/// version bump of the store's erasure.
fn erased(stored: &Call, now: DateTime<Utc>) -> Call {
    let mut c = stored.clone();
    c.erase(now);
    c.version += 1;
    c
}

/// The pass erases settled calls created strictly before the cutoff and
/// deletes payloads received strictly before it; it touches nothing newer,
/// no unsettled call, and is idempotent. An erased call loads (equal to
/// core's erasure), keeps its state, SIDs and results
/// ([`CampaignResults::report`]), can still be committed, and a writer
/// holding the old version conflicts.
pub async fn retention_erases_exactly_what_is_older_than_the_cutoff<S>(store: Arc<S>)
where
    S: CallStore + PersonalDataStore + CampaignResults + ?Sized,
{
    let cutoff = at(1_000);
    let now = at(5_000);
    let old = settled_with_errors(40, at(0));
    let edge = build_call(40, cutoff, Outcome::Completed { talk_secs: Some(9) });
    let new = build_call(40, at(1_001), Outcome::Completed { talk_secs: Some(7) });
    let live = build_call(40, at(0), Outcome::Connected);
    for c in [&old, &edge, &new, &live] {
        store.create(c).await.expect("create");
    }
    let sid = old.facts.activist.leg_id.clone().expect("leg A sid");
    let mut old_event = raw_event("status-callback", Some(&sid), "From=%2B5511912345678", None);
    old_event.received_at = at(999);
    let mut new_event = old_event.clone();
    new_event.received_at = cutoff;
    store
        .append_events(Some(old.id), &[old_event.clone(), new_event.clone()])
        .await
        .expect("append");
    store
        .append_events(Some(new.id), &[new_event.clone()])
        .await
        .expect("append");
    store
        .append_events(None, &[old_event.clone(), new_event.clone()])
        .await
        .expect("append");
    store
        .append_events(Some(live.id), &[old_event.clone()])
        .await
        .expect("append");
    let results = ResultsQuery::new(old.widget_id, at(-10), at(10_000), Tz::UTC, Interval::Day);
    let results_before = store.report(&results).await.unwrap();
    assert_eq!(results_before.total, 4);
    let stored_old = get(&*store, old.id).await;

    let report = ran(store.retention_pass(cutoff, now, 100).await.expect("pass"));
    // Erased: `old`. Deleted: old's two payloads (its own, whatever their
    // age), the old orphan, the live call's old payload.
    assert_eq!(report, RetentionReport::new(1, 4, false));

    let got = get(&*store, old.id).await;
    assert_eq!(got, erased(&stored_old, now));
    assert!(got.activist.is_erased() && got.is_erased());
    assert!(
        got.target_caller_id
            .as_ref()
            .is_some_and(PhoneNumber::is_erased)
    );
    assert_eq!(got.state(), old.state());
    assert_eq!(got.target, old.target);
    assert_eq!(
        got.facts.activist.error.as_ref().unwrap().message,
        "[erased]"
    );
    assert_eq!(got.facts.target.error.as_ref().unwrap().code, Some(13_224));
    assert!(store.events(old.id).await.unwrap().is_empty());
    assert_eq!(
        got.facts.activist.leg_id.as_ref(),
        Some(&sid),
        "SIDs are kept"
    );

    for c in [&edge, &new] {
        let kept = get(&*store, c.id).await;
        assert!(!kept.is_erased(), "created at or after the cutoff");
        assert_eq!(kept.activist, c.activist);
    }
    let kept_live = get(&*store, live.id).await;
    assert!(!kept_live.is_erased(), "unsettled calls are never erased");
    assert_eq!(kept_live.activist, live.activist);
    assert!(store.events(live.id).await.unwrap().is_empty());
    assert_eq!(store.events(new.id).await.unwrap().len(), 1);

    let results_after = store.report(&results).await.unwrap();
    assert_eq!(results_before, results_after, "results are unchanged");

    // Idempotent.
    let again = ran(store.retention_pass(cutoff, now, 100).await.expect("pass"));
    assert_eq!(again, RetentionReport::new(0, 0, false));

    // The old version conflicts; the erased one commits and stays erased.
    let ignored = CallEvent::Ignored {
        what: "late".into(),
    };
    let (stale, _) = stored_old.apply(&ignored, at(6_000));
    assert!(matches!(
        store.commit(&stale, &[]).await,
        Err(StoreError::Conflict)
    ));
    let (next, _) = got.apply(&ignored, at(6_000));
    store
        .commit(&next, &[])
        .await
        .expect("commit an erased call");
    let reread = get(&*store, old.id).await;
    assert!(reread.is_erased() && reread.activist.is_erased());
    assert_eq!(reread.facts.erased_at, got.facts.erased_at);
}

/// At most `limit` calls and `limit` old payloads per pass, oldest first;
/// `more` says a batch was full.
pub async fn retention_respects_the_batch_limit<S>(store: Arc<S>)
where
    S: CallStore + PersonalDataStore + ?Sized,
{
    let calls: Vec<Call> = (0..3)
        .map(|i| build_call(41, at(i), Outcome::ActivistBusy))
        .collect();
    for c in &calls {
        store.create(c).await.unwrap();
    }
    let now = at(9_000);
    let first = ran(store.retention_pass(at(100), now, 2).await.unwrap());
    assert_eq!((first.calls_erased, first.more), (2, true));
    assert!(get(&*store, calls[0].id).await.is_erased());
    assert!(get(&*store, calls[1].id).await.is_erased());
    assert!(!get(&*store, calls[2].id).await.is_erased());
    let second = ran(store.retention_pass(at(100), now, 2).await.unwrap());
    assert_eq!((second.calls_erased, second.more), (1, false));
}

/// Erasure by phone erases the settled calls of that number now, marks its
/// live call (left whole) for the first pass after it settles, deletes the
/// payloads of the erased calls and every other payload quoting the number
/// (orphans included); other people's calls and payloads stay. A second
/// request finds nothing.
pub async fn erasure_by_phone_spares_live_calls_until_they_settle<S>(store: Arc<S>)
where
    S: CallStore + PersonalDataStore + ?Sized,
{
    let now = at(500);
    let mine = build_call(42, at(0), Outcome::Completed { talk_secs: Some(3) });
    let mut live = build_call(42, at(10), Outcome::Connected);
    let mut other = build_call(42, at(20), Outcome::ActivistBusy);
    other.activist.phone = phone("+5521998877665");
    live.activist.email = Email::parse("outro@example.org").unwrap();
    for c in [&mine, &live, &other] {
        store.create(c).await.unwrap();
    }
    let quoting = raw_event("status-callback", None, "To=%2B5511912345678", None);
    let unrelated = raw_event("status-callback", None, "To=%2B5521998877665", None);
    store
        .append_events(Some(mine.id), std::slice::from_ref(&unrelated))
        .await
        .unwrap();
    store
        .append_events(Some(live.id), std::slice::from_ref(&quoting))
        .await
        .unwrap();
    store
        .append_events(None, &[quoting.clone(), unrelated.clone()])
        .await
        .unwrap();
    store
        .append_events(Some(other.id), std::slice::from_ref(&unrelated))
        .await
        .unwrap();
    let stored_mine = get(&*store, mine.id).await;

    let who = PersonKey::Phone(phone("+5511912345678"));
    let report = store.erase_person(&who, now).await.unwrap();
    // mine's payload, the quoting orphan; the live call's payload stays.
    assert_eq!(report, ErasureReport::new(1, 1, 2));
    assert_eq!(get(&*store, mine.id).await, erased(&stored_mine, now));
    let still_live = get(&*store, live.id).await;
    assert!(!still_live.is_erased(), "a live call is not broken");
    assert_eq!(still_live.activist, live.activist);
    assert_eq!(store.events(live.id).await.unwrap().len(), 1);
    assert_eq!(get(&*store, other.id).await.activist, other.activist);
    assert_eq!(store.events(other.id).await.unwrap().len(), 1);

    // Nothing left to erase now; the pending call is counted again.
    assert_eq!(
        store.erase_person(&who, now).await.unwrap(),
        ErasureReport::new(0, 1, 0)
    );

    // A pass before it settles leaves it; after, erases it (any age).
    let long_ago = at(-1_000_000);
    let r = ran(store.retention_pass(long_ago, at(600), 100).await.unwrap());
    assert_eq!(r.calls_erased, 0);
    let hang_up = |c: &Call, leg: Leg, t: i64| {
        let leg_id = c.facts.leg(leg).leg_id.clone();
        c.apply(
            &CallEvent::leg_status(leg, LegStatus::Completed)
                .with_leg_id(leg_id)
                .with_duration_secs(5)
                .with_at(at(t))
                .build(),
            at(t),
        )
        .0
    };
    let mut c = still_live;
    for (leg, t) in [(Leg::Target, 700), (Leg::Activist, 701)] {
        let next = hang_up(&c, leg, t);
        let v = store.commit(&next, &[]).await.unwrap();
        c = next;
        c.version = v;
    }
    let c = get(&*store, live.id).await;
    assert!(c.is_settled(), "{:?}", c.state());
    let r = ran(store.retention_pass(long_ago, at(800), 100).await.unwrap());
    assert_eq!((r.calls_erased, r.events_deleted), (1, 1));
    assert_eq!(get(&*store, live.id).await, erased(&c, at(800)));
    assert_eq!(
        store.erase_person(&who, now).await.unwrap(),
        ErasureReport::new(0, 0, 0)
    );
}

/// Erasure by e-mail matches the address case-insensitively, and only it.
pub async fn erasure_by_email_is_case_insensitive<S>(store: Arc<S>)
where
    S: CallStore + PersonalDataStore + ?Sized,
{
    let mine = build_call(43, at(0), Outcome::ActivistNoAnswer);
    let mut other = build_call(43, at(1), Outcome::ActivistNoAnswer);
    other.activist.email = Email::parse("outra@example.org").unwrap();
    store.create(&mine).await.unwrap();
    store.create(&other).await.unwrap();
    let stored = get(&*store, mine.id).await;
    let who = PersonKey::Email(Email::parse("ATIVISTA@Example.org").unwrap());
    let report = store.erase_person(&who, at(50)).await.unwrap();
    assert_eq!(report, ErasureReport::new(1, 0, 0));
    assert_eq!(get(&*store, mine.id).await, erased(&stored, at(50)));
    assert!(!get(&*store, other.id).await.is_erased());
}

/// Audit entries are kept as written and read newest first.
pub async fn audit_log_round_trips_newest_first<S>(store: Arc<S>)
where
    S: CallStore + PersonalDataStore + ?Sized,
{
    let id = CallId::new();
    let entries: Vec<AuditEntry> = (0..3)
        .map(|i| {
            AuditEntry::new(
                at(i),
                ActorId::new(format!("tok_{i}")),
                AuditEntry::READ_CALL,
                (i != 1).then_some(id),
                Some("GET /v1/phone/calls/{call_id}".into()),
            )
        })
        .collect();
    for e in &entries {
        store.append_audit(e).await.unwrap();
    }
    let got = store.audit_entries(2).await.unwrap();
    assert_eq!(got, vec![entries[2].clone(), entries[1].clone()]);
    assert_eq!(store.audit_entries(10).await.unwrap().len(), 3);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn checks_list_every_check_of_the_module() {
        let source = include_str!("personal_conformance.rs");
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
        assert_eq!(
            defined, listed,
            "add new checks to for_each_personal_data_check!"
        );
    }
}
