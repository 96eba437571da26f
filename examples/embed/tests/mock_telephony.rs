//! The same lifecycle with core's mockall `MockTelephony` in place of the
//! console provider: the service sends exactly `call_activist`, then
//! `add_target`, with the right numbers, and nothing else.

use std::sync::{Arc, Mutex};

use bonde_pressure_core::{
    CallId, ConferenceId, DetailedState, DialedLeg, InMemoryCallStore, LegId, LegStatus,
    MockTelephony, PhoneNumber, Region,
};
use bonde_pressure_embed_example::{
    ACTIVIST_PHONE, TARGET_PHONE, lifecycle, service, start_request,
};

fn number(typed: &str) -> PhoneNumber {
    PhoneNumber::parse(typed, Region::BRAZIL).expect("a valid Brazilian number")
}

#[tokio::test]
async fn the_service_calls_the_activist_then_adds_the_target() {
    let activist: LegId = "mock-a".parse().unwrap();
    let target: LegId = "mock-b".parse().unwrap();
    let conference: ConferenceId = "mock-conf".parse().unwrap();
    let placed: Arc<Mutex<Option<CallId>>> = Arc::default();

    let mut telephony = MockTelephony::new();
    let mut order = mockall::Sequence::new();
    let (slot, leg) = (placed.clone(), activist.clone());
    let to = number(ACTIVIST_PHONE);
    telephony
        .expect_call_activist()
        .times(1)
        .in_sequence(&mut order)
        .withf(move |r| r.to == to && r.to.as_e164() == "+5511987654321" && r.detect_machine)
        .returning(move |r| {
            *slot.lock().unwrap() = Some(r.call_id);
            Ok(DialedLeg::new(leg.clone()).with_status(LegStatus::Queued))
        });
    let (slot, leg) = (placed.clone(), target.clone());
    let to = number(TARGET_PHONE);
    telephony
        .expect_add_target()
        .times(1)
        .in_sequence(&mut order)
        .withf(move |r| {
            Some(r.call_id) == *slot.lock().unwrap()
                && r.to == to
                && r.to.as_e164() == "+5561998887766"
                && r.caller_id.is_none()
        })
        .returning(move |_| Ok(DialedLeg::new(leg.clone()).with_status(LegStatus::Queued)));
    // The provider ends the conference and the legs itself: the service
    // has nothing to hang up, end or fetch.
    telephony.expect_hang_up().never();
    telephony.expect_end_conference().never();
    telephony.expect_fetch_leg().never();
    telephony.expect_conference_participants().never();

    let store = Arc::new(InMemoryCallStore::new());
    let service = Arc::new(service(store, Arc::new(telephony)));
    let id = service.start(&start_request()).await.unwrap().call_id;
    assert_eq!(*placed.lock().unwrap(), Some(id));

    // The provider's callbacks, delivered as an adapter would.
    for event in lifecycle::activist_answers_and_confirms(&activist, &conference, true) {
        service.handle(id, event, None).await.unwrap();
    }
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.target.leg_id.as_ref(), Some(&target), "dialled");
    for event in lifecycle::target_answers_then_both_hang_up(&activist, &target, &conference, true)
    {
        service.handle(id, event, None).await.unwrap();
    }

    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::Completed);
    assert!(call.is_settled());
    // A reconciliation pass asks the telephony nothing more.
    let report = bonde_pressure_core::Reconciler::new(service.clone())
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.examined, 0);
    // Dropping the service checks every expectation (`times(1)`).
}
