//! The call-details timeline summarises payloads by the fields the
//! telephony declares safe, not by a list core keeps.

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    ActivistInput, CallEvent, Dependencies, Disclosure, InMemoryCallStore, Leg, LegStatus,
    PressureService, RawEvent, Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony,
    StartCallRequest, StaticCampaignDirectory, TargetInput, Telephony,
};

#[tokio::test]
async fn timeline_summaries_use_the_telephonys_safe_fields() {
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistNoAnswer),
        Duration::from_secs(3600),
    ));
    assert_eq!(
        telephony.safe_payload_fields(),
        ["type", "status", "leg", "answered_by"]
    );
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            telephony,
            Arc::new(StaticCampaignDirectory::demo()),
        ),
        ServiceConfig::default(),
    );
    let started = service
        .start(&StartCallRequest::new(
            1,
            ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
            TargetInput::new("Demo Target", "+55 61 99999-0000"),
        ))
        .await
        .unwrap();
    let ringing: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::Ringing)
        .with_leg_id(started.leg_id.clone())
        .into();
    let json = RawEvent::new(
        "simulated",
        r#"{"type":"leg_status","leg":"activist","status":"ringing","From":"+5511912345678"}"#,
        chrono::Utc::now(),
    );
    service
        .handle(started.call_id, ringing.clone(), Some(json))
        .await
        .unwrap();
    // A form with Twilio's field names: not this telephony's, so not shown.
    let form = RawEvent::new(
        "status-callback",
        "CallStatus=ringing&From=%2B5511912345678",
        chrono::Utc::now(),
    );
    service
        .handle(started.call_id, ringing, Some(form))
        .await
        .unwrap();

    let call = service.call(started.call_id).await.unwrap().unwrap();
    let details = service
        .call_details(&call, Disclosure::Masked)
        .await
        .unwrap();
    let summaries: Vec<_> = details.timeline.iter().map(|e| &e.summary).collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert_eq!(summaries[0]["type"], "leg_status");
    assert_eq!(summaries[0]["status"], "ringing");
    assert!(!summaries[0].contains_key("From"));
    assert!(summaries[1].is_empty(), "{:?}", summaries[1]);
}
