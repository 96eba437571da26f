//! The console program's flow: one call to `completed`, then a
//! reconciliation pass.

use bonde_pressure_core::{CallEvent, DetailedState, UiStatus};
use bonde_pressure_embed_example::{lifecycle, run, wire};

#[tokio::test]
async fn the_console_call_completes_and_reconciliation_finds_nothing_left() {
    let embedded = wire();
    let outcome = run(&embedded).await.expect("the example runs");

    assert_eq!(outcome.call.state(), DetailedState::Completed);
    assert_eq!(outcome.call.ui_status(), UiStatus::Completed);
    assert!(outcome.call.is_settled(), "no leg left up");
    assert_eq!(embedded.telephony.pending(), 0, "every callback delivered");

    // Both legs carry the console's own ids; the conference too.
    let facts = &outcome.call.facts;
    assert_eq!(
        facts.activist.leg_id.as_ref().map(|l| l.as_str()),
        Some("console-leg-1")
    );
    assert!(
        facts
            .target
            .leg_id
            .as_ref()
            .is_some_and(|l| l.as_str().starts_with("console-leg-")),
        "{facts:?}"
    );

    // The same lifecycle as the mock test delivers: both halves, each once.
    let expected = lifecycle::activist_answers_and_confirms(
        facts.activist.leg_id.as_ref().unwrap(),
        &"console-conf-2".parse().unwrap(),
        true,
    )
    .len()
        + lifecycle::target_answers_then_both_hang_up(
            facts.activist.leg_id.as_ref().unwrap(),
            facts.target.leg_id.as_ref().unwrap(),
            &"console-conf-2".parse().unwrap(),
            true,
        )
        .len();
    assert_eq!(outcome.callbacks, expected);
    // Every callback's payload is stored with the call, in order.
    assert_eq!(outcome.events.len(), expected);
    assert!(outcome.events.iter().all(|e| e.raw.kind == "console"));
    let last: CallEvent =
        serde_json::from_str(&outcome.events.last().unwrap().raw.payload).unwrap();
    assert_eq!(last.kind(), "leg_status");

    // The provider was asked to call the activist, then to add the target.
    let commands: Vec<&str> = outcome
        .transcript
        .iter()
        .filter(|l| !l.starts_with("callback"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(commands, ["call_activist", "add_target"]);
    // Numbers are printed masked.
    assert!(
        outcome.transcript.iter().all(|l| !l.contains("98765")),
        "{:?}",
        outcome.transcript
    );

    // Nothing is stale or unfinished: the pass examines nothing.
    assert_eq!(outcome.report.examined, 0, "{:?}", outcome.report);
    assert_eq!(outcome.report.errors, 0);
}

#[tokio::test]
async fn the_binary_prints_the_completed_call() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bonde-pressure-embed-example"))
        .env_clear()
        .output()
        .expect("the example binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ended completed"), "{stdout}");
    assert!(
        stdout.contains("reconciliation: ReconcileReport"),
        "{stdout}"
    );
}
