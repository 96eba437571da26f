//! The [`CampaignResults`] conformance suite (feature `test-util`): every
//! check takes a fresh, empty store implementing both [`CallStore`] and
//! [`CampaignResults`]; this crate's `tests/conformance.rs` runs them
//! against the in-memory store, SQLite and PostgreSQL. The list of checks
//! is [`for_each_results_check!`](crate::for_each_results_check).
//!
//! Reports are compared with [`ResultsReport::from_calls`], the reference,
//! on calls built by [`crate::conformance::build_call`].

use std::sync::Arc;

use bonde_pressure_core::chrono_tz;
use bonde_pressure_core::ports::CallStore;
use bonde_pressure_core::results::{
    CallCursor, CampaignResults, FunnelStage, Interval, ResultsQuery, ResultsReport,
};
use bonde_pressure_core::{Call, CallEvent, DetailedState, PhoneNumber, Target, Tz, UiStatus};
use bonde_pressure_core::{LegStatus, WidgetId, call::Leg, domain::PersonName};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::conformance::{Outcome, at, build_call};

/// Invokes `$m` with the name of every results check (see
/// [`for_each_conformance_check!`](crate::for_each_conformance_check)).
#[macro_export]
macro_rules! for_each_results_check {
    ($m:ident) => {
        $m! {
            report_matches_reference,
            report_counts_exactly_the_period,
            report_follows_commits,
            report_percentiles_match_reference_on_random_calls,
            report_matches_reference_on_random_calls,
            report_matches_reference_through_changes,
            list_calls_pages_in_order,
        }
    };
}

fn widget(id: i64) -> WidgetId {
    WidgetId::new(id).expect("valid widget id")
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid instant")
}

/// `call` with its target replaced (name and number).
pub fn with_target(mut call: Call, name: &str, phone: &str) -> Call {
    call.target = Target::new(
        PersonName::parse(name).expect("valid name"),
        PhoneNumber::parse_e164(phone).expect("valid phone"),
    );
    call
}

async fn create_all<S: CallStore + ?Sized>(store: &S, calls: &[Call]) {
    for c in calls {
        store.create(c).await.expect("create");
    }
}

async fn check<S: CampaignResults + ?Sized>(store: &S, calls: &[Call], query: &ResultsQuery) {
    let expected = ResultsReport::from_calls(query, calls);
    let got = store.report(query).await.expect("report");
    assert_eq!(got, expected, "{query:?}");
}

/// The report equals the reference for every outcome, two targets, two
/// widgets, and series in São Paulo (hours, days), Berlin across a DST
/// change and Kolkata (a half-hour offset).
pub async fn report_matches_reference<S: CallStore + CampaignResults + ?Sized>(store: Arc<S>) {
    let base = utc("2026-03-28T20:00:00.250000Z");
    let mut calls = Vec::new();
    for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
        for k in 0..3i64 {
            // Spread over ~33 hours, across Berlin's change to summer time
            // (2026-03-29 01:00 UTC).
            let t = base + TimeDelta::minutes(i as i64 * 180 + k * 37);
            let c = build_call(41, t, outcome);
            let c = if k == 1 {
                with_target(c, "Senador João", "+5561912340000")
            } else {
                c
            };
            calls.push(c);
        }
    }
    calls.push(build_call(
        42,
        base + TimeDelta::minutes(5),
        Outcome::Completed { talk_secs: Some(7) },
    ));
    create_all(&*store, &calls).await;
    let all = (utc("2026-03-27T00:00:00Z"), utc("2026-04-01T00:00:00Z"));
    let queries = [
        (all, chrono_tz::America::Sao_Paulo, Interval::Hour),
        (all, chrono_tz::America::Sao_Paulo, Interval::Day),
        (all, chrono_tz::Europe::Berlin, Interval::Hour),
        (all, chrono_tz::Asia::Kolkata, Interval::Hour),
        (
            (utc("2026-03-28T23:00:00Z"), utc("2026-03-29T10:00:00Z")),
            chrono_tz::Europe::Berlin,
            Interval::Hour,
        ),
        (
            (utc("2026-03-30T00:00:00Z"), utc("2026-03-31T00:00:00Z")),
            chrono_tz::UTC,
            Interval::Day,
        ),
    ];
    for ((from, to), tz, interval) in queries {
        for w in [41, 42, 43] {
            check(
                &*store,
                &calls,
                &ResultsQuery::new(widget(w), from, to, tz, interval),
            )
            .await;
        }
    }
    // Sanity of the reference itself on this data.
    let q = ResultsQuery::new(
        widget(41),
        all.0,
        all.1,
        chrono_tz::America::Sao_Paulo,
        Interval::Day,
    );
    let r = store.report(&q).await.unwrap();
    assert_eq!(r.total, 33);
    assert_eq!(r.by_state[&DetailedState::Completed], 3);
    assert_eq!(r.by_status[&UiStatus::Canceled], 12, "{:?}", r.by_status);
    assert_eq!(r.funnel[0].calls, 33);
    assert_eq!(
        r.funnel
            .iter()
            .find(|s| s.stage == FunnelStage::Completed)
            .unwrap()
            .calls,
        3
    );
    assert_eq!(r.targets.len(), 2);
    assert_eq!(r.series.iter().map(|b| b.total).sum::<u64>(), 33);
}

/// The report over `[from, to)` counts exactly the widget's calls created
/// in it (a call created at `to`, before `from`, later, or for another
/// widget is not counted), a call completed through a commit with its
/// committed state, and talk times over an odd and an even count of timed
/// calls (lower median). Moved from the `CallStore::stats` checks.
pub async fn report_counts_exactly_the_period<S: CallStore + CampaignResults + ?Sized>(
    store: Arc<S>,
) {
    let w = 18;
    let (from, to) = (at(0), at(3_600));
    let in_range = [
        (
            Outcome::Completed {
                talk_secs: Some(30),
            },
            0,
        ),
        (
            Outcome::Completed {
                talk_secs: Some(10),
            },
            10,
        ),
        (
            Outcome::Completed {
                talk_secs: Some(50),
            },
            20,
        ),
        (
            Outcome::Completed {
                talk_secs: Some(21),
            },
            30,
        ),
        (Outcome::Completed { talk_secs: None }, 40),
        (Outcome::ActivistBusy, 50),
        (Outcome::ActivistBusy, 60),
        (Outcome::TargetNoAnswer, 70),
        (Outcome::ActivistVoicemail, 80),
        (Outcome::Abandoned, 90),
        (Outcome::Connected, 100),
        (Outcome::ActivistRinging, 3_599),
    ];
    let mut calls = Vec::new();
    for (outcome, secs) in in_range {
        calls.push(build_call(w, at(secs), outcome));
    }
    // Out of range, or another widget's.
    for (widget_id, created) in [(w, at(-1)), (w, to), (w, at(7_200)), (w + 1, at(5))] {
        calls.push(build_call(
            widget_id,
            created,
            Outcome::Completed {
                talk_secs: Some(1_000),
            },
        ));
    }
    create_all(&*store, &calls).await;
    // A call completed through a commit counts with its committed state.
    let connected = calls
        .iter()
        .position(|c| c.state() == DetailedState::Connected)
        .unwrap();
    let c = calls[connected].clone();
    let (done, _) = c.apply(
        &CallEvent::leg_status(Leg::Target, LegStatus::Completed)
            .with_leg_id(c.facts.target.leg_id.clone())
            .with_duration_secs(7)
            .with_at(at(300))
            .build(),
        at(300),
    );
    store.commit(&done, &[]).await.unwrap();
    calls[connected] = done;

    let query = |w: i64, from, to| ResultsQuery::new(widget(w), from, to, Tz::UTC, Interval::Hour);
    let expected = ResultsReport::from_calls(&query(w, from, to), &calls);
    assert_eq!(expected.total, 12);
    assert_eq!(expected.by_state[&DetailedState::Completed], 6);
    assert_eq!(expected.targets.len(), 1);
    assert_eq!(expected.targets[0].completed, 6);
    assert_eq!(expected.targets[0].talk_secs, 30 + 10 + 50 + 21 + 7);
    assert_eq!(expected.targets[0].median_talk_secs, Some(21));
    check(&*store, &calls, &query(w, from, to)).await;

    // Narrower ranges: an odd and an even count of timed calls.
    let odd = ResultsReport::from_calls(&query(w, from, at(25)), &calls);
    assert_eq!(odd.targets[0].median_talk_secs, Some(30));
    check(&*store, &calls, &query(w, from, at(25))).await;
    let even = ResultsReport::from_calls(&query(w, from, at(35)), &calls);
    assert_eq!(
        even.targets[0].median_talk_secs,
        Some(21),
        "lower median of 10 21 30 50"
    );
    check(&*store, &calls, &query(w, from, at(35))).await;

    // Nothing in the period, or no such widget.
    for q in [query(w, at(10_000), at(20_000)), query(999, from, to)] {
        assert_eq!(store.report(&q).await.unwrap(), ResultsReport::empty(&q));
    }
}

/// A call's funnel stage and state move with its commits.
pub async fn report_follows_commits<S: CallStore + CampaignResults + ?Sized>(store: Arc<S>) {
    let t = utc("2026-05-01T12:00:00Z");
    let call = build_call(44, t, Outcome::Connected);
    store.create(&call).await.unwrap();
    let q = ResultsQuery::new(
        widget(44),
        t - TimeDelta::hours(1),
        t + TimeDelta::hours(1),
        chrono_tz::America::Sao_Paulo,
        Interval::Hour,
    );
    let r = store.report(&q).await.unwrap();
    let stage =
        |r: &ResultsReport, s: FunnelStage| r.funnel.iter().find(|f| f.stage == s).unwrap().calls;
    assert_eq!(stage(&r, FunnelStage::Connected), 1);
    assert_eq!(stage(&r, FunnelStage::Completed), 0);
    assert_eq!(r.by_status[&UiStatus::InProgress], 1);
    let (done, _) = call.apply(
        &CallEvent::leg_status(Leg::Target, LegStatus::Completed)
            .with_leg_id(call.facts.target.leg_id.clone())
            .with_duration_secs(61)
            .with_at(t + TimeDelta::seconds(90))
            .build(),
        t + TimeDelta::seconds(90),
    );
    store.commit(&done, &[]).await.unwrap();
    let r = store.report(&q).await.unwrap();
    assert_eq!(stage(&r, FunnelStage::Completed), 1);
    assert_eq!(r.by_status[&UiStatus::Completed], 1);
    assert_eq!(r.targets[0].median_talk_secs, Some(61));
    assert_eq!(r, ResultsReport::from_calls(&q, [&done]));
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Median and p90 talk times agree with the reference (nearest rank) on
/// random calls: many ties, counts from 1 to ~40 per target, unknown
/// durations.
pub async fn report_percentiles_match_reference_on_random_calls<
    S: CallStore + CampaignResults + ?Sized,
>(
    store: Arc<S>,
) {
    let mut rng = Lcg(0x0dd_ba11);
    let t = utc("2026-06-01T00:00:00Z");
    let targets = [
        ("Alvo Um", "+5561911110001"),
        ("Alvo Dois", "+5561911110002"),
        ("Alvo Tres", "+5561911110003"),
        ("Alvo Quatro", "+5561911110004"),
    ];
    let mut calls = Vec::new();
    for i in 0..150 {
        let outcome = if rng.below(5) == 0 {
            Outcome::ALL[rng.below(Outcome::ALL.len() as u64) as usize]
        } else {
            Outcome::Completed {
                talk_secs: (rng.below(10) != 0).then(|| rng.below(40) as u32 * 3),
            }
        };
        // Target i gets about twice as many calls as target i + 1.
        let which = match rng.below(15) {
            0..=7 => 0,
            8..=11 => 1,
            12..=13 => 2,
            _ => 3,
        };
        let (name, phone) = targets[which];
        let c = with_target(
            build_call(45, t + TimeDelta::minutes(i), outcome),
            name,
            phone,
        );
        calls.push(c);
    }
    create_all(&*store, &calls).await;
    for _ in 0..8 {
        let a = rng.below(150) as i64;
        let b = a + 1 + rng.below(150) as i64;
        let q = ResultsQuery::new(
            widget(45),
            t + TimeDelta::minutes(a),
            t + TimeDelta::minutes(b),
            chrono_tz::America::Sao_Paulo,
            Interval::Hour,
        );
        check(&*store, &calls, &q).await;
    }
    let q = ResultsQuery::new(
        widget(45),
        t,
        t + TimeDelta::days(1),
        Tz::UTC,
        Interval::Day,
    );
    let r = store.report(&q).await.unwrap();
    assert!(r.targets.iter().all(|t| t.median_talk_secs.is_some()));
    assert!(
        r.targets
            .iter()
            .any(|t| t.p90_talk_secs != t.median_talk_secs)
    );
}

/// The report equals the reference on 80 calls with random outcomes, talk
/// times (many ties) and creation times (microseconds apart), over random
/// periods of two widgets. Moved from the `CallStore::stats` checks.
pub async fn report_matches_reference_on_random_calls<S: CallStore + CampaignResults + ?Sized>(
    store: Arc<S>,
) {
    let mut rng = Lcg(0x5eed_b0de);
    let widgets = [21, 22];
    let mut calls = Vec::new();
    for _ in 0..80 {
        let outcome = match rng.below(4) {
            0 | 1 => Outcome::Completed {
                talk_secs: (rng.below(8) != 0).then(|| rng.below(12) as u32 * 5),
            },
            _ => Outcome::ALL[rng.below(Outcome::ALL.len() as u64) as usize],
        };
        let widget_id = widgets[rng.below(2) as usize];
        let created = at(rng.below(10_000) as i64) + TimeDelta::microseconds(rng.below(7) as i64);
        calls.push(build_call(widget_id, created, outcome));
    }
    create_all(&*store, &calls).await;
    let mut medians = 0;
    for _ in 0..12 {
        let a = rng.below(11_000) as i64 - 500;
        let b = a + rng.below(11_000) as i64;
        for w in widgets {
            let q = ResultsQuery::new(
                widget(w),
                at(a),
                at(b),
                chrono_tz::America::Sao_Paulo,
                Interval::Hour,
            );
            let expected = ResultsReport::from_calls(&q, &calls);
            medians += usize::from(
                expected
                    .targets
                    .iter()
                    .any(|t| t.completed > 3 && t.median_talk_secs.is_some()),
            );
            check(&*store, &calls, &q).await;
        }
    }
    assert!(
        medians >= 6,
        "the periods cover enough completed calls ({medians})"
    );
}

/// The event completing `call`'s target leg with `talk_secs` of talk.
fn target_completed(call: &Call, talk_secs: u32, at: DateTime<Utc>) -> CallEvent {
    CallEvent::leg_status(Leg::Target, LegStatus::Completed)
        .with_leg_id(call.facts.target.leg_id.clone())
        .with_duration_secs(talk_secs)
        .with_at(at)
        .build()
}

/// The report equals the reference on random calls over four days (across
/// Berlin's change to summer time), before and after commits that settle
/// live calls and change settled ones (a talk time reported late), over
/// random periods whose edges are on or off the hour, in zones with whole
/// hour, half-hour and 45-minute offsets, hourly and daily. SQL stores
/// answer the whole hours of a period from a rollup of settled calls and
/// the rest from the rows: this compares both paths with the reference.
pub async fn report_matches_reference_through_changes<S: CallStore + CampaignResults + ?Sized>(
    store: Arc<S>,
) {
    let mut rng = Lcg(0x00c0_ffee_2026);
    let base = utc("2026-03-27T18:17:23.500000Z");
    let targets = [
        ("Alvo Um", "+5561911110001"),
        ("Alvo Dois", "+5561911110002"),
        ("Alvo Tres", "+5561911110003"),
    ];
    let mut calls = Vec::new();
    for _ in 0..240 {
        let outcome = match rng.below(6) {
            0 => Outcome::Completed { talk_secs: None },
            1 | 2 => Outcome::Completed {
                talk_secs: Some(rng.below(30) as u32 * 7),
            },
            _ => Outcome::ALL[rng.below(Outcome::ALL.len() as u64) as usize],
        };
        let created = base
            + TimeDelta::seconds(rng.below(4 * 86_400) as i64)
            + TimeDelta::microseconds(rng.below(1_000_000) as i64);
        let (name, phone) = targets[rng.below(3) as usize];
        calls.push(with_target(build_call(48, created, outcome), name, phone));
    }
    // Another widget's calls in the same hours.
    for i in 0..20 {
        calls.push(build_call(
            49,
            base + TimeDelta::minutes(i * 250),
            Outcome::Completed {
                talk_secs: Some(11),
            },
        ));
    }
    create_all(&*store, &calls).await;
    let settled = calls.iter().filter(|c| c.is_settled()).count();
    assert!(
        settled > 100 && settled < calls.len() - 30,
        "settled and live calls ({settled})"
    );

    let zones = [
        chrono_tz::America::Sao_Paulo,
        chrono_tz::Europe::Berlin,
        chrono_tz::Asia::Kolkata,
        chrono_tz::America::St_Johns,
        chrono_tz::Asia::Kathmandu,
        Tz::UTC,
    ];
    let mut queries = Vec::new();
    for i in 0..30 {
        let hour = |h: u64| utc("2026-03-27T15:00:00Z") + TimeDelta::hours(h as i64);
        let (from, to) = if i % 3 == 0 {
            // On the hour.
            let a = rng.below(100);
            (hour(a), hour(a + 1 + rng.below(100)))
        } else {
            let a = hour(rng.below(100))
                + TimeDelta::seconds(rng.below(3_600) as i64)
                + TimeDelta::microseconds(rng.below(1_000_000) as i64);
            let b = a
                + TimeDelta::seconds(rng.below(100 * 3_600) as i64)
                + TimeDelta::nanoseconds(rng.below(1_000_000_000) as i64);
            (a, b)
        };
        let tz = zones[i % zones.len()];
        let interval = if rng.below(2) == 0 {
            Interval::Hour
        } else {
            Interval::Day
        };
        queries.push(ResultsQuery::new(widget(48), from, to, tz, interval));
    }
    let everything = ResultsQuery::new(
        widget(48),
        utc("2026-03-27T00:00:00Z"),
        utc("2026-04-02T00:00:00Z"),
        chrono_tz::Europe::Berlin,
        Interval::Hour,
    );
    queries.push(everything.clone());
    for q in &queries {
        check(&*store, &calls, q).await;
    }

    // Commits: live calls settle, settled calls learn their talk time late.
    let mut late = 0;
    let mut newly_settled = 0;
    for c in calls.iter_mut().filter(|c| c.widget_id == widget(48)) {
        let t = c.created_at + TimeDelta::minutes(5);
        let event = match c.state() {
            DetailedState::Completed if c.connected_secs().is_none() => {
                target_completed(c, 1 + rng.below(200) as u32, t)
            }
            DetailedState::Connected => target_completed(c, rng.below(200) as u32, t),
            DetailedState::ActivistRinging => {
                CallEvent::leg_status(Leg::Activist, LegStatus::NoAnswer)
                    .with_leg_id(c.facts.activist.leg_id.clone())
                    .with_duration_secs(0)
                    .with_at(t)
                    .build()
            }
            _ => continue,
        };
        let was_settled = c.is_settled();
        let (next, _) = c.apply(&event, t);
        if next == *c {
            continue;
        }
        store.commit(&next, &[]).await.expect("commit");
        if was_settled && next.connected_secs() != c.connected_secs() {
            late += 1;
        }
        if !was_settled && next.is_settled() {
            newly_settled += 1;
        }
        *c = next;
    }
    assert!(late >= 5, "settled calls changed ({late})");
    assert!(newly_settled >= 5, "live calls settled ({newly_settled})");
    for q in &queries {
        check(&*store, &calls, q).await;
    }
    let r = store.report(&everything).await.unwrap();
    assert_eq!(r.total, 240);
}

/// Paging visits each call of the widget and period once, by creation time
/// then id (ties included), and nothing else.
pub async fn list_calls_pages_in_order<S: CallStore + CampaignResults + ?Sized>(store: Arc<S>) {
    let t = Utc.with_ymd_and_hms(2026, 7, 1, 9, 0, 0).single().unwrap();
    let mut calls = Vec::new();
    for i in 0..23i64 {
        // Pairs of calls share a creation time.
        let c = build_call(46, t + TimeDelta::seconds(i / 2), Outcome::Created);
        calls.push(c);
    }
    calls.push(build_call(47, t, Outcome::Created));
    calls.push(build_call(46, t + TimeDelta::hours(2), Outcome::Created));
    create_all(&*store, &calls).await;
    let (from, to) = (t, t + TimeDelta::hours(1));
    let mut expected: Vec<&Call> = calls
        .iter()
        .filter(|c| c.widget_id == widget(46) && c.created_at < to)
        .collect();
    expected.sort_by_key(|c| (c.created_at, c.id));
    let mut listed = Vec::new();
    let mut after: Option<CallCursor> = None;
    loop {
        let page = store
            .list_calls(widget(46), from, to, after, 5)
            .await
            .unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some(CallCursor::after(last));
        let short = page.len() < 5;
        listed.extend(page);
        if short {
            break;
        }
    }
    let ids: Vec<_> = listed.iter().map(|c| c.id).collect();
    let want: Vec<_> = expected.iter().map(|c| c.id).collect();
    assert_eq!(ids, want);
    assert_eq!(listed[0], *expected[0], "calls round-trip");
}
