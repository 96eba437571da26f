//! Erased calls through the whole service: a late callback, the status,
//! statistics and reconciliation keep working on them.

mod common;

use std::sync::Arc;

use bonde_pressure_core::call::Leg;
use bonde_pressure_core::ports::CallStore;
use bonde_pressure_core::{
    ActorId, CallEvent, CampaignResults, Interval, LegStatus, PersonKey, PhoneNumber, Privacy,
    RawEvent, ResultsQuery, RetentionConfig, RetentionPass, Scenario, ScenarioPicker, SystemClock,
    Tz, UiStatus,
};
use chrono::{TimeDelta, Utc};
use common::*;

#[tokio::test]
async fn an_erased_call_still_takes_callbacks_reads_and_counts() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    let started = h.service.start(&demo_request()).await.unwrap();
    let id = started.call_id;
    let before = until_settled(&h.service, id).await;
    let status = before.ui_status();
    let widget = before.widget_id;
    let window = (
        Utc::now() - TimeDelta::hours(1),
        Utc::now() + TimeDelta::hours(1),
    );
    let results = ResultsQuery::new(widget, window.0, window.1, Tz::UTC, Interval::Day);
    let report_before = h.store.report(&results).await.unwrap();
    assert_eq!(report_before.total, 1);

    let privacy = Privacy::new(
        h.store.clone(),
        Arc::new(SystemClock),
        RetentionConfig::default(),
    );
    let who = PersonKey::Phone(PhoneNumber::parse_e164("+5511912345678").unwrap());
    let report = privacy
        .erase(&who, &ActorId::new("tok_test"))
        .await
        .unwrap();
    assert_eq!(report.calls_erased, 1);
    assert!(h.store.events(id).await.unwrap().is_empty());

    // A late, duplicate callback: applied, stored, the call stays erased.
    let late = CallEvent::leg_status(Leg::Activist, LegStatus::Completed)
        .with_leg_id(before.facts.activist.leg_id.clone())
        .with_duration_secs(1)
        .with_at(Utc::now())
        .build();
    let raw = RawEvent::new("status-callback", "CallStatus=completed", Utc::now());
    h.service.handle(id, late, Some(raw)).await.unwrap();
    let after = h.service.call(id).await.unwrap().unwrap();
    assert!(after.is_erased() && after.activist.is_erased());
    assert_eq!(after.ui_status(), status);
    assert_ne!(after.ui_status(), UiStatus::Initiated);
    assert_eq!(h.store.report(&results).await.unwrap(), report_before);
    // Settled: reconciliation has nothing to do with it.
    assert_eq!(h.service.reconcile(10).await.unwrap().examined, 0);

    // The payload stored after the erasure goes with the next pass.
    assert_eq!(h.store.events(id).await.unwrap().len(), 1);
    let RetentionPass::Ran(r) = privacy.retention_pass().await.unwrap() else {
        panic!("the in-memory store never skips");
    };
    assert_eq!((r.calls_erased, r.events_deleted), (0, 1));
    assert!(h.store.events(id).await.unwrap().is_empty());
}
