//! Callbacks arrive in any order, some twice: the final state must not care,
//! and every effect must be requested at most once (dialling the target
//! exactly once whenever the activist got into the conference).
//!
//! The "world" is the simulated provider: callbacks only exist once their
//! cause happened (the target's callbacks after we dial it), but are then
//! delivered in an order the test chooses, with duplicates.

use std::collections::HashMap;

use bonde_pressure_core::call::{
    CallEvent, CallFacts, Effect, Leg, LegStatus, apply, derive_state,
};
use bonde_pressure_core::simulated::SimulatedCall;
use bonde_pressure_core::{CallId, Scenario};
use proptest::prelude::*;

#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    facts: CallFacts,
    effects: HashMap<&'static str, usize>,
    delivered: usize,
}

fn effect_name(e: &Effect) -> &'static str {
    match e {
        Effect::DialTarget => "dial_target",
        Effect::HangUpActivist { .. } => "hang_up_activist",
        Effect::HangUpTarget { .. } => "hang_up_target",
        Effect::EndConference { .. } => "end_conference",
        _ => "other",
    }
}

/// Plays a scenario; `choices` pick which pending callback is delivered next
/// (index modulo the pool) and whether it stays pending (delivered again later).
fn run(scenario: Scenario, choices: &[(usize, bool)]) -> Run {
    let call_id = CallId::from(uuid::Uuid::from_u128(0x5eed));
    let mut world = SimulatedCall::new(scenario, call_id);
    let mut pool: Vec<CallEvent> = world.start().into_iter().map(|s| s.event).collect();
    pool.push(CallEvent::leg_dialed(
        Leg::Activist,
        world.activist_leg_id().clone(),
        LegStatus::Queued,
    ));
    let mut out = Run::default();
    let mut choices = choices.iter().copied();
    while !pool.is_empty() {
        assert!(out.delivered < 10_000, "runaway");
        let (i, keep) = choices
            .next()
            .map_or((0, false), |(i, k)| (i % pool.len(), k));
        let event = if keep {
            pool[i].clone()
        } else {
            pool.remove(i)
        };
        out.delivered += 1;
        let t = apply(&out.facts, &event);
        out.facts = t.facts;
        for effect in t.effects {
            *out.effects.entry(effect_name(&effect)).or_default() += 1;
            let caused = match &effect {
                Effect::DialTarget => {
                    pool.push(CallEvent::leg_dialed(
                        Leg::Target,
                        world.target_leg_id().clone(),
                        LegStatus::Queued,
                    ));
                    world.dial_target()
                }
                Effect::HangUpActivist { leg_id, how } | Effect::HangUpTarget { leg_id, how } => {
                    world.hang_up(leg_id, *how)
                }
                Effect::EndConference { .. } => world.end_conference(),
                _ => Vec::new(),
            };
            pool.extend(caused.into_iter().map(|s| s.event));
        }
    }
    out
}

fn observed(f: &CallFacts) -> CallFacts {
    let mut f = f.clone();
    f.requested = Default::default();
    f
}

fn dials_target(s: Scenario) -> bool {
    !matches!(
        s,
        Scenario::ActivistBusy
            | Scenario::ActivistNoAnswer
            | Scenario::ActivistVoicemail
            | Scenario::NotConfirmed
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    prop::sample::select(Scenario::ALL.to_vec())
}

fn choices() -> impl Strategy<Value = Vec<(usize, bool)>> {
    prop::collection::vec((any::<usize>(), prop::bool::weighted(0.3)), 0..80)
}

#[test]
fn in_order_delivery_reaches_each_scenarios_state() {
    for s in Scenario::ALL {
        let r = run(s, &[]);
        assert_eq!(derive_state(&r.facts), s.expected_state(), "{s:?}");
        assert_eq!(
            r.effects.get("dial_target").copied().unwrap_or(0),
            usize::from(dials_target(s)),
            "{s:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_order_with_duplicates_gives_the_same_outcome(s in scenario(), order in choices()) {
        let canonical = run(s, &[]);
        let shuffled = run(s, &order);
        prop_assert_eq!(derive_state(&shuffled.facts), s.expected_state());
        // Everything observed is order-independent. Of the commands we issued,
        // only the redundant ones may differ: when the end of the conference is
        // reported before the target's answer, the target gets a (harmless,
        // idempotent) hang-up too. Dialling is never affected.
        prop_assert_eq!(observed(&shuffled.facts), observed(&canonical.facts));
        prop_assert!(shuffled.facts.requested.dial_target == canonical.facts.requested.dial_target);
        prop_assert_eq!(shuffled.effects.get("dial_target").copied().unwrap_or(0), usize::from(dials_target(s)));
        for (name, n) in &shuffled.effects {
            prop_assert!(*n <= 1, "{} requested {} times", name, n);
        }
    }

    /// The join is a semilattice: commutative, associative, idempotent.
    /// The three operands are built from arbitrary subsets of the events of
    /// two scenarios' lifecycles mixed, so they are mostly incomparable
    /// (different terminal statuses, machine verdicts, presences).
    #[test]
    fn join_is_a_semilattice(
        s1 in scenario(),
        s2 in scenario(),
        masks in prop::collection::vec(any::<u64>(), 3),
    ) {
        let mut events: Vec<CallEvent> = Vec::new();
        for s in [s1, s2] {
            let mut world = SimulatedCall::new(s, CallId::from(uuid::Uuid::from_u128(7)));
            events.extend(world.start().into_iter().map(|x| x.event));
            events.extend(world.dial_target().into_iter().map(|x| x.event));
        }
        let build = |mask: u64| {
            events
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << (i % 64)) != 0)
                .fold(CallFacts::default(), |f, (_, e)| apply(&f, e).facts)
        };
        let (a, b, c) = (build(masks[0]), build(masks[1]), build(masks[2]));
        prop_assert_eq!(a.join(&b), b.join(&a));
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(a.join(&a), a.clone());
        // The join is an upper bound of both operands.
        prop_assert_eq!(a.join(&b).join(&a), a.join(&b));
    }
}
