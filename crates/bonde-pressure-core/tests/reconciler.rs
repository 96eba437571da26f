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

/// Two replicas' reconcilers on one store and one lease: one pass at a
/// time, the holder keeps the lease while it lives, and another replica
/// takes over once a dead holder's lease expired.
#[tokio::test]
async fn under_a_lease_one_replica_reconciles_at_a_time() {
    use bonde_pressure_core::{InMemoryLease, Lease};
    let (h, clock) = three_stale_calls().await;
    let lease: Arc<dyn Lease> = Arc::new(InMemoryLease::new(clock.clone()));
    let ttl = Duration::from_secs(120);
    let a = Reconciler::new(h.service.clone())
        .with_lease(lease.clone(), "replica-a")
        .with_lease_ttl(ttl);
    let b = Reconciler::new(h.service.clone())
        .with_lease(lease.clone(), "replica-b")
        .with_lease_ttl(ttl);
    assert_eq!(a.lease_ttl(), Some(ttl));
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.skipped != rb.skipped,
        "exactly one pass ran: {ra:?} {rb:?}"
    );
    let (holder, other) = if ra.skipped { (&b, &a) } else { (&a, &b) };
    let ran = if ra.skipped { rb } else { ra };
    assert_eq!(ran.examined, 3, "{ran:?}");
    // The holder renews at each pass; the other keeps being skipped.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        assert!(!holder.run_once().await.unwrap().skipped);
        let skipped = other.run_once().await.unwrap();
        assert!(skipped.skipped);
        assert_eq!(skipped.examined, 0);
    }
    // The holder dies: within the ttl the other still waits, then takes over.
    clock.advance(Duration::from_secs(100));
    assert!(other.run_once().await.unwrap().skipped);
    clock.advance(Duration::from_secs(21));
    assert!(!other.run_once().await.unwrap().skipped);
    // Released on shutdown: the first replica can take it at once.
    other.release_lease().await;
    assert!(!holder.run_once().await.unwrap().skipped);
}

#[tokio::test]
async fn run_gives_the_lease_up_when_it_stops() {
    use bonde_pressure_core::{InMemoryLease, Lease};
    let (h, clock) = three_stale_calls().await;
    let lease: Arc<dyn Lease> = Arc::new(InMemoryLease::new(clock.clone()));
    let a = Reconciler::new(h.service.clone()).with_lease(lease.clone(), "a");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    a.run_with(
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
        |outcome| {
            assert!(!outcome.as_ref().unwrap().skipped);
            stop_tx.send(true).unwrap();
        },
    )
    .await;
    assert!(
        lease
            .try_acquire(Reconciler::LEASE_NAME, "b", Duration::from_secs(60))
            .await
            .unwrap()
    );
}
