//! Rows written before core's ids were provider-neutral still load: their
//! facts name the ids `sid` and `conference_sid` (and still do when written
//! now), and the id columns (`from_call_sid`, `to_call_sid`,
//! `conference_sid`) are unchanged.
//!
//! SQLite on a temporary file; PostgreSQL on a fresh database at
//! `TEST_DATABASE_URL` (skipped visibly when unset or unreachable, never
//! with `CI=true`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::call::CallEvent;
use bonde_pressure_core::{
    ActivistInput, CallId, CallStore, ConferenceId, Dependencies, Leg, LegId, LegStatus,
    ManualClock, PressureService, Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony,
    StartCallRequest, StaticCampaignDirectory, StubActionRecorder, TargetInput,
};
use bonde_pressure_store::SqliteCallStore;

const A: &str = "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const B: &str = "CA1b2c3d4e5f60718293a4b5c6d7e8f90a";
const CF: &str = "CF2c3d4e5f60718293a4b5c6d7e8f90a1b";

/// Facts as the previous release wrote them: the activist in the
/// conference, the target dialled but not reported yet.
const OLD_FACTS: &str = r#"{"activist": {"sid": "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9", "status": "in-progress", "answered_by": null, "joined_conference": true, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": "2026-03-01T12:00:01.123456Z", "answered_at": "2026-03-01T12:00:05.123456Z", "ended_at": null}, "target": {"sid": null, "status": null, "answered_by": null, "joined_conference": false, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": null, "answered_at": null, "ended_at": null}, "prompted": true, "confirmed": true, "conference_sid": "CF2c3d4e5f60718293a4b5c6d7e8f90a1b", "conference_started": true, "conference_ended": false, "participants": {"CA0a1b2c3d4e5f60718293a4b5c6d7e8f9": {"joined": true, "left": false}}, "expired": false, "requested": {"dial_target": true, "hang_up_activist": false, "hang_up_target": false, "end_conference": false}, "opted_out": false, "target_limited": false, "opt_out_listed": false}"#;

fn request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    )
}

/// Starts a call, lets `write_old` overwrite its row with [`OLD_FACTS`]
/// (and the leg A / conference columns), then reads it back, commits an event, and checks with `read_facts` (the stored
/// facts as text) that the names are kept.
async fn check(
    store: Arc<dyn CallStore>,
    write_old: impl AsyncFnOnce(CallId),
    read_facts: impl AsyncFnOnce(CallId) -> String,
) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let service = PressureService::new(
        Dependencies::new(
            store.clone(),
            Arc::new(SimulatedTelephony::new(
                ScenarioPicker::Always(Scenario::ActivistNoAnswer),
                Duration::from_secs(3600),
            )),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(clock.clone()),
        ServiceConfig::default(),
    );
    let id = service.start(&request()).await.unwrap().call_id;
    write_old(id).await;

    let (a, b, cf) = (
        LegId::parse(A).unwrap(),
        LegId::parse(B).unwrap(),
        ConferenceId::parse(CF).unwrap(),
    );
    let call = store.get(id).await.unwrap().expect("the old row loads");
    assert_eq!(call.facts.activist.leg_id, Some(a.clone()));
    assert_eq!(call.facts.conference_id, Some(cf));
    assert!(call.facts.participants[&a].joined);
    assert!(call.facts.activist_in_conference());

    let (next, _) = call.apply(
        &CallEvent::leg_status(Leg::Target, LegStatus::Ringing)
            .with_leg_id(b.clone())
            .build(),
        chrono::Utc::now(),
    );
    store.commit(&next, &[]).await.unwrap();
    let reread = store.get(id).await.unwrap().expect("the call loads");
    assert_eq!(reread.facts.target.leg_id, Some(b.clone()));
    assert_eq!(reread.facts.activist.leg_id, Some(a.clone()));

    let stored: serde_json::Value = serde_json::from_str(&read_facts(id).await).unwrap();
    assert_eq!(stored["activist"]["sid"], A, "{stored}");
    assert_eq!(stored["target"]["sid"], B, "{stored}");
    assert_eq!(stored["conference_sid"], CF, "{stored}");
    assert!(stored["target"].get("leg_id").is_none(), "{stored}");
    assert!(stored.get("conference_id").is_none(), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_with_the_old_facts_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteCallStore::open(dir.path().join("calls.db"))
            .await
            .unwrap(),
    );
    let pool = store.pool().clone();
    check(
        store.clone(),
        async |id| {
            sqlx::query(
                "UPDATE phone_calls SET facts = ?1, from_call_sid = ?2, conference_sid = ?3 \
                 WHERE id = ?4",
            )
            .bind(OLD_FACTS)
            .bind(A)
            .bind(CF)
            .bind(id.to_string())
            .execute(&pool)
            .await
            .unwrap();
        },
        async |id| {
            sqlx::query_scalar("SELECT facts FROM phone_calls WHERE id = ?1")
                .bind(id.to_string())
                .fetch_one(&pool)
                .await
                .unwrap()
        },
    )
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_with_the_old_facts_load() {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.unwrap();
        check(
            store.clone(),
            async |id| {
                sqlx::query(
                    "UPDATE phone_calls SET facts = $1::jsonb, from_call_sid = $2, \
                     conference_sid = $3 WHERE id = $4",
                )
                .bind(OLD_FACTS)
                .bind(A)
                .bind(CF)
                .bind(id.as_uuid())
                .execute(&pool)
                .await
                .unwrap();
            },
            async |id| {
                sqlx::query_scalar("SELECT facts::text FROM phone_calls WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            },
        )
        .await;
    })
    .await;
}
