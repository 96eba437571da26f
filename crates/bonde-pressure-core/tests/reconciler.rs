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

/// A telephony whose leg fetches take `step` on the manual clock (a slow
/// provider), delegating everything to the simulated one.
struct SlowFetch {
    inner: Arc<bonde_pressure_core::SimulatedTelephony>,
    clock: Arc<ManualClock>,
    step: Duration,
}

#[async_trait::async_trait]
impl bonde_pressure_core::Telephony for SlowFetch {
    async fn call_activist(
        &self,
        req: &bonde_pressure_core::ActivistCallRequest,
    ) -> Result<bonde_pressure_core::DialedLeg, bonde_pressure_core::TelephonyError> {
        self.inner.call_activist(req).await
    }
    async fn add_target(
        &self,
        req: &bonde_pressure_core::TargetCallRequest,
    ) -> Result<bonde_pressure_core::DialedLeg, bonde_pressure_core::TelephonyError> {
        self.inner.add_target(req).await
    }
    async fn hang_up(
        &self,
        call_id: bonde_pressure_core::CallId,
        leg_id: &bonde_pressure_core::LegId,
        how: bonde_pressure_core::HangUp,
    ) -> Result<(), bonde_pressure_core::TelephonyError> {
        self.inner.hang_up(call_id, leg_id, how).await
    }
    async fn end_conference(
        &self,
        call_id: bonde_pressure_core::CallId,
        conference: &bonde_pressure_core::ConferenceId,
    ) -> Result<(), bonde_pressure_core::TelephonyError> {
        self.inner.end_conference(call_id, conference).await
    }
    async fn fetch_leg(
        &self,
        leg_id: &bonde_pressure_core::LegId,
    ) -> Result<bonde_pressure_core::LegSnapshot, bonde_pressure_core::TelephonyError> {
        self.clock.advance(self.step);
        self.inner.fetch_leg(leg_id).await
    }
}

/// Who asked a lease for what, when (on the manual clock).
struct RecordingLease {
    inner: bonde_pressure_core::InMemoryLease,
    clock: Arc<ManualClock>,
    calls: std::sync::Mutex<Vec<(String, chrono::DateTime<Utc>)>>,
    trouble: Option<Trouble>,
}

/// The backend fails every acquire after the first `n`.
#[derive(Clone, Copy)]
struct Fail(usize);

/// Just before acquire `n + 1`, "replica-b" takes the lease if it expired.
#[derive(Clone, Copy)]
struct Steal(usize);

#[derive(Clone, Copy)]
enum Trouble {
    Fail(Fail),
    Steal(Steal),
}

impl From<Fail> for Trouble {
    fn from(f: Fail) -> Self {
        Trouble::Fail(f)
    }
}

impl From<Steal> for Trouble {
    fn from(s: Steal) -> Self {
        Trouble::Steal(s)
    }
}

#[async_trait::async_trait]
impl bonde_pressure_core::Lease for RecordingLease {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, bonde_pressure_core::LeaseError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((
                holder.to_owned(),
                bonde_pressure_core::Clock::now(&*self.clock),
            ));
            calls.len()
        };
        match self.trouble {
            Some(Trouble::Fail(Fail(after))) if n > after => {
                return Err(bonde_pressure_core::LeaseError::unavailable("backend down"));
            }
            Some(Trouble::Steal(Steal(after))) if n == after + 1 => {
                self.inner.try_acquire(name, "replica-b", ttl).await?;
            }
            _ => {}
        }
        self.inner.try_acquire(name, holder, ttl).await
    }
    async fn release(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<(), bonde_pressure_core::LeaseError> {
        self.inner.release(name, holder).await
    }
}

/// Three stale calls on a service whose leg fetches take `step` each, and
/// a recording lease; both on one manual clock.
async fn slow_pass(
    step: Duration,
    trouble: Option<impl Into<Trouble>>,
) -> (Reconciler, Arc<RecordingLease>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let simulated = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let telephony = Arc::new(SlowFetch {
        inner: simulated.clone(),
        clock: clock.clone(),
        step,
    });
    let service = Arc::new(common::service_over(
        Arc::new(bonde_pressure_core::InMemoryCallStore::new()),
        telephony,
        clock.clone(),
    ));
    let sink: Arc<dyn bonde_pressure_core::EventSink> = service.clone();
    simulated.connect(Arc::downgrade(&sink));
    for i in 0..3 {
        let mut request = demo_request();
        request.activist.phone = format!("11 91234-567{i}");
        service.start(&request).await.unwrap();
    }
    clock.advance(Duration::from_secs(5 * 60));
    let lease = Arc::new(RecordingLease {
        inner: bonde_pressure_core::InMemoryLease::new(clock.clone()),
        clock: clock.clone(),
        calls: Default::default(),
        trouble: trouble.map(Into::into),
    });
    let reconciler = Reconciler::new(service)
        .with_lease(lease.clone(), "replica-a")
        .with_lease_ttl(Duration::from_secs(120));
    (reconciler, lease, clock)
}

/// A pass longer than the ttl keeps its lease: it is renewed between
/// calls once a third of the ttl has passed, so no other replica can take
/// it mid-pass.
#[tokio::test]
async fn a_pass_longer_than_the_ttl_renews_its_lease_between_calls() {
    use bonde_pressure_core::Lease;
    // Each call's activist leg is fetched: 50 s each, 150 s for the pass.
    let (reconciler, lease, clock) = slow_pass(Duration::from_secs(50), None::<Fail>).await;
    let start = bonde_pressure_core::Clock::now(&*clock);
    let report = reconciler.run_once().await.unwrap();
    assert_eq!(report.examined, 3, "{report:?}");
    assert!(!report.lease_lost, "{report:?}");
    let at: Vec<i64> = lease
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(holder, at)| {
            assert_eq!(holder, "replica-a");
            (*at - start).num_seconds()
        })
        .collect();
    // Taken at the start; before the second call (50 s ≥ 40 s) and the
    // third (100 s) renewed; before the first, too soon.
    assert_eq!(at, [0, 50, 100]);
    // 150 s after the pass began (more than the ttl) the lease is still
    // this replica's: renewed at 100 s, it runs to 220 s.
    assert!(
        !lease
            .try_acquire(
                Reconciler::LEASE_NAME,
                "replica-b",
                Duration::from_secs(120)
            )
            .await
            .unwrap()
    );
}

/// A pass whose lease cannot be renewed stops before its next call.
#[tokio::test]
async fn a_pass_stops_when_its_lease_cannot_be_renewed() {
    // The lease backend answers the pass's first acquire, then fails.
    let (reconciler, lease, _clock) = slow_pass(Duration::from_secs(50), Some(Fail(1))).await;
    let report = reconciler.run_once().await.unwrap();
    assert!(report.lease_lost, "{report:?}");
    assert!(!report.skipped, "{report:?}");
    // The first call was reconciled (the lease was just taken: no renewal
    // needed); before the second (50 s later) the renewal failed.
    assert_eq!(report.examined, 1, "{report:?}");
    assert_eq!(lease.calls.lock().unwrap().len(), 2);
}

/// A pass whose lease was taken over (it expired during one slow call and
/// another replica took it) stops before its next call.
#[tokio::test]
async fn a_pass_stops_when_another_replica_took_its_lease() {
    use bonde_pressure_core::Lease;
    // One fetch takes longer than the ttl (120 s)...
    let (reconciler, lease, _clock) = slow_pass(Duration::from_secs(130), Some(Steal(1))).await;
    let report = reconciler.run_once().await.unwrap();
    // ...so before the renewal replica-b took the expired lease.
    assert!(report.lease_lost, "{report:?}");
    assert_eq!(report.examined, 1, "{report:?}");
    assert!(
        !lease
            .try_acquire(
                Reconciler::LEASE_NAME,
                "replica-a",
                Duration::from_secs(120)
            )
            .await
            .unwrap(),
        "replica-b holds it"
    );
}
