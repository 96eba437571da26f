//! `Reconciler`: one call runs reconciliation at its own cadence and batch,
//! on the service's clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bonde_pressure_core::{ManualClock, Reconciler, Scenario, ScenarioPicker};
use chrono::Utc;
use common::{demo_request, harness_with};

/// Three calls that never hear back (the simulated callbacks are an hour
/// away), gone stale on the manual clock.
async fn three_stale_calls() -> (common::Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let h = harness_with(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
        clock.clone(),
    );
    for i in 0..3 {
        let mut request = demo_request();
        request.activist.phone = format!("11 91234-567{i}");
        h.service.start(&request).await.unwrap();
    }
    clock.advance(Duration::from_secs(5 * 60));
    (h, clock)
}

#[tokio::test]
async fn a_pass_examines_at_most_the_batch() {
    let (h, _clock) = three_stale_calls().await;
    let reconciler = Reconciler::new(h.service.clone()).with_batch(2);
    assert_eq!(reconciler.batch(), 2);
    assert_eq!(reconciler.interval(), Reconciler::DEFAULT_INTERVAL);
    let report = reconciler.run_once().await.unwrap();
    assert_eq!(report.examined, 2, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
}

#[tokio::test]
async fn run_sleeps_its_interval_on_the_clock_between_passes_until_shutdown() {
    let (h, clock) = three_stale_calls().await;
    let before = clock.sleeps().len();
    let interval = Duration::from_secs(60);
    let reconciler = Reconciler::new(h.service.clone())
        .with_interval(interval)
        .with_batch(10);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let passes = AtomicUsize::new(0);
    let mut examined = Vec::new();
    reconciler
        .run_with(
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
            |outcome| {
                let report = outcome.as_ref().expect("pass succeeded");
                examined.push(report.examined);
                if passes.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                    stop_tx.send(true).unwrap();
                }
            },
        )
        .await;
    // Each pass came after one interval on the manual clock (no real time),
    // and none after the shutdown.
    assert_eq!(passes.load(Ordering::SeqCst), 3);
    assert_eq!(clock.sleeps()[before..], [interval; 3]);
    // The first pass found the three stale calls.
    assert_eq!(examined[0], 3, "{examined:?}");
}

#[tokio::test]
async fn run_returns_at_once_when_shutdown_has_resolved() {
    let (h, clock) = three_stale_calls().await;
    let before = clock.sleeps().len();
    Reconciler::new(h.service.clone())
        .run_with(std::future::ready(()), |_| panic!("no pass after shutdown"))
        .await;
    assert_eq!(clock.sleeps().len(), before);
}
