//! Core runs on any executor when the embedder's `Clock` brings the timer:
//! no tokio runtime here (a tokio timer or spawn would panic), only
//! `futures`' executor, a `ManualClock` and a telephony that spawns nothing.

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    ActivistInput, CallEvent, Dependencies, DetailedState, DialedLeg, InMemoryCallStore, LegId,
    LegStatus, ManualClock, MockTelephony, PressureService, Reconciler, ServiceConfig,
    StartCallRequest, StaticCampaignDirectory, TargetInput,
};
use chrono::Utc;

#[test]
fn start_handle_fallback_and_reconciliation_need_no_tokio_runtime() {
    let leg: LegId = "leg-a".parse().unwrap();
    let mut telephony = MockTelephony::new();
    let dialed = leg.clone();
    telephony
        .expect_call_activist()
        .times(1)
        .returning(move |_| Ok(DialedLeg::new(dialed.clone()).with_status(LegStatus::Queued)));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            Arc::new(telephony),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_clock(clock.clone()),
        ServiceConfig::default(),
    ));

    futures::executor::block_on(async {
        let request = StartCallRequest::new(
            1,
            ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
            TargetInput::new("Demo Target", "+55 61 99999-0000"),
        );
        let started = service.start(&request).await.unwrap();
        let ringing: CallEvent =
            CallEvent::leg_status(bonde_pressure_core::Leg::Activist, LegStatus::Ringing)
                .with_leg_id(leg.clone())
                .into();
        let outcome = service
            .handle(started.call_id, ringing, None)
            .await
            .unwrap();
        assert_eq!(outcome.call.state(), DetailedState::ActivistRinging);
        // The campaign lookup's bound is the clock's, not tokio's.
        service.fallback_script(started.call_id).await;

        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let mut stop = Some(stop);
        let mut passes = 0;
        Reconciler::new(service.clone())
            .with_interval(Duration::from_secs(10))
            .run_with(
                async {
                    let _ = stopped.await;
                },
                |outcome| {
                    assert_eq!(outcome.as_ref().unwrap().errors, 0);
                    passes += 1;
                    if passes == 2 {
                        let _ = stop.take().unwrap().send(());
                    }
                },
            )
            .await;
        assert_eq!(passes, 2);
    });
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(10), Duration::from_secs(10)]
    );
}
