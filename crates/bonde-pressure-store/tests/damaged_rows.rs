//! One damaged row is that call's problem only: a row corrupted with SQL is
//! reported for its call (`StoreError::Unreadable` on reading it; reported
//! in its place, or skipped, when listing), and reconciliation goes on with
//! every other call, reporting the damaged one once.
//!
//! SQLite on a temporary file; PostgreSQL on a fresh database at
//! `TEST_DATABASE_URL` (skipped visibly when unset or unreachable, never
//! with `CI=true`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    ActivistInput, CallId, CallStore, Dependencies, DetailedState, ManualClock, PressureService,
    Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony, StartCallRequest,
    StaticCampaignDirectory, StoreError, StubActionRecorder, TargetInput,
};
use bonde_pressure_store::SqliteCallStore;

fn request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    )
}

/// Five calls whose activist does not answer, and whose callbacks never
/// arrive (an hour per step): only reconciliation's fetch can end them.
/// `corrupt` damages two of them with SQL. Then reconciliation must end the
/// three others, report the two damaged ones (logged once), and reading a
/// damaged one must answer `Unreadable` for it.
async fn check(store: Arc<dyn CallStore>, corrupt: impl AsyncFnOnce(CallId, CallId)) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistNoAnswer),
        Duration::from_secs(3600),
    ));
    let service = PressureService::new(
        Dependencies::new(
            store.clone(),
            telephony,
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(clock.clone()),
        ServiceConfig::default(),
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(service.start(&request()).await.unwrap().call_id);
    }
    let (bad1, bad2) = (ids[1], ids[3]);
    corrupt(bad1, bad2).await;

    // Reading a damaged call names it; the others read as usual.
    for bad in [bad1, bad2] {
        match store.get(bad).await {
            Err(StoreError::Unreadable(u)) => assert_eq!(u.call_id, Some(bad)),
            other => panic!("{bad}: expected Unreadable, got {other:?}"),
        }
    }
    assert!(store.get(ids[0]).await.unwrap().is_some());
    // Through the service: each damaged call is noted (and logged) once,
    // however often it is read or sent events.
    assert_eq!(service.unreadable_calls_met(), 0);
    for _ in 0..3 {
        assert!(matches!(
            service.call(bad1).await,
            Err(StoreError::Unreadable(_))
        ));
        assert!(
            service
                .handle(bad1, bonde_pressure_core::call::CallEvent::Prompted, None)
                .await
                .is_err()
        );
    }
    assert_eq!(service.unreadable_calls_met(), 1);

    clock.advance(service.config().stale_after + Duration::from_secs(1));
    let later = clock_now(&clock);
    // Listing never fails because of them: skipped, or reported in place.
    let listed = store.list_unfinished(later, 100).await.unwrap();
    assert_eq!(listed.len(), 3);
    let rows = store.list_unfinished_rows(later, 100).await.unwrap();
    assert_eq!(rows.len(), 5);
    let mut damaged: Vec<_> = rows
        .iter()
        .filter_map(|r| r.as_ref().err().map(|u| u.call_id))
        .collect();
    damaged.sort();
    let mut expected = vec![Some(bad1), Some(bad2)];
    expected.sort();
    assert_eq!(damaged, expected);

    let report = service.reconcile(100).await.unwrap();
    assert_eq!(report.examined, 3, "{report:?}");
    assert_eq!(report.legs_fetched, 3, "{report:?}");
    assert_eq!(report.unreadable, 2);
    let mut first = report.unreadable_new.clone();
    first.sort();
    assert_eq!(first, expected, "reported the first time they are met");
    for id in [ids[0], ids[2], ids[4]] {
        let call = store.get(id).await.unwrap().unwrap();
        assert_eq!(call.state(), DetailedState::ActivistNoAnswer, "{id}");
        assert!(call.is_settled());
    }

    // Next pass: still there, counted, not reported again.
    clock.advance(service.config().stale_after + Duration::from_secs(1));
    let report = service.reconcile(100).await.unwrap();
    assert_eq!(report.examined, 0, "{report:?}");
    assert_eq!(report.unreadable, 2);
    assert!(report.unreadable_new.is_empty(), "{report:?}");
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use bonde_pressure_core::Clock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_damaged_rows_hurt_only_their_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteCallStore::open(dir.path().join("calls.db"))
            .await
            .unwrap(),
    );
    let pool = store.pool().clone();
    check(store.clone(), async |bad1, bad2| {
        // Facts that are JSON, but not a call's facts.
        sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}' WHERE id = ?1")
            .bind(bad1.to_string())
            .execute(&pool)
            .await
            .unwrap();
        // Identity columns that do not parse (the table is STRICT, so the
        // types themselves cannot be wrong).
        sqlx::query(
            "UPDATE phone_calls SET activist_email = 'not an e-mail', \
             from_phone_number = '12' WHERE id = ?1",
        )
        .bind(bad2.to_string())
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_damaged_rows_hurt_only_their_call() {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.unwrap();
        check(store.clone(), async |bad1, bad2| {
            sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}'::jsonb WHERE id = $1")
                .bind(bad1.as_uuid())
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE phone_calls SET activist_email = 'not an e-mail', \
                 from_phone_number = '12' WHERE id = $1",
            )
            .bind(bad2.as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        })
        .await;
    })
    .await;
}

/// Three calls, as written before the `funnel_stage` column existed (NULL),
/// one of them with damaged facts: `migrate` backfills the two others, logs
/// and skips the damaged one (left NULL), and does not fail, so the service
/// still starts.
async fn calls_to_backfill(store: Arc<dyn CallStore>) -> Vec<CallId> {
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistNoAnswer),
        Duration::from_secs(3600),
    ));
    let service = PressureService::new(
        Dependencies::new(store, telephony, Arc::new(StaticCampaignDirectory::demo()))
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(Arc::new(ManualClock::new(chrono::Utc::now()))),
        ServiceConfig::default(),
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(service.start(&request()).await.unwrap().call_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backfill_skips_a_damaged_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteCallStore::open(dir.path().join("calls.db"))
            .await
            .unwrap(),
    );
    let pool = store.pool().clone();
    let ids = calls_to_backfill(store.clone()).await;
    sqlx::query("UPDATE phone_calls SET funnel_stage = NULL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}' WHERE id = ?1")
        .bind(ids[1].to_string())
        .execute(&pool)
        .await
        .unwrap();
    store
        .migrate()
        .await
        .expect("one damaged row does not stop migrate");
    for (i, id) in ids.iter().enumerate() {
        let (stage,): (Option<i64>,) =
            sqlx::query_as("SELECT funnel_stage FROM phone_calls WHERE id = ?1")
                .bind(id.to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stage.is_some(), i != 1, "{i}: {stage:?}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backfill_skips_a_damaged_row() {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.unwrap();
        let ids = calls_to_backfill(store.clone()).await;
        sqlx::query("UPDATE phone_calls SET funnel_stage = NULL")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}'::jsonb WHERE id = $1")
            .bind(ids[1].as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        store
            .migrate()
            .await
            .expect("one damaged row does not stop migrate");
        for (i, id) in ids.iter().enumerate() {
            let (stage,): (Option<i16>,) =
                sqlx::query_as("SELECT funnel_stage FROM phone_calls WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(stage.is_some(), i != 1, "{i}: {stage:?}");
        }
    })
    .await;
}

/// More damaged rows than a pass's `limit`, all sorting first (oldest): the
/// pass still reaches `limit` readable calls (the listing pages past the
/// damaged rows, reported in addition), so they never starve the others.
async fn check_starvation(store: Arc<dyn CallStore>, corrupt: impl AsyncFn(CallId)) {
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
    let mut bad = Vec::new();
    for _ in 0..4 {
        let id = service.start(&request()).await.unwrap().call_id;
        corrupt(id).await;
        bad.push(id);
    }
    clock.advance(Duration::from_secs(1));
    let mut good = Vec::new();
    for _ in 0..3 {
        good.push(service.start(&request()).await.unwrap().call_id);
    }
    clock.advance(service.config().stale_after + Duration::from_secs(1));
    let later = clock_now(&clock);

    let rows = store.list_unfinished_rows(later, 2).await.unwrap();
    let readable: Vec<_> = rows.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(readable.len(), 2, "{rows:?}");
    assert_eq!(rows.len(), 6, "the four damaged rows are reported too");
    assert_eq!(store.list_unfinished(later, 2).await.unwrap().len(), 2);
    assert!(
        store
            .list_unfinished_rows(later, 0)
            .await
            .unwrap()
            .is_empty()
    );

    let report = service.reconcile(2).await.unwrap();
    assert_eq!(report.examined, 2, "{report:?}");
    assert_eq!(report.unreadable, 4, "{report:?}");
    let report = service.reconcile(2).await.unwrap();
    assert_eq!(report.examined, 1, "the third readable call: {report:?}");
    for id in good {
        let call = store.get(id).await.unwrap().unwrap();
        assert_eq!(call.state(), DetailedState::ActivistNoAnswer, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_damaged_rows_do_not_starve_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteCallStore::open(dir.path().join("calls.db"))
            .await
            .unwrap(),
    );
    let pool = store.pool().clone();
    check_starvation(store.clone(), async |id| {
        sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}' WHERE id = ?1")
            .bind(id.to_string())
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_damaged_rows_do_not_starve_reconciliation() {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.unwrap();
        check_starvation(store.clone(), async |id| {
            sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}'::jsonb WHERE id = $1")
                .bind(id.as_uuid())
                .execute(&pool)
                .await
                .unwrap();
        })
        .await;
    })
    .await;
}

/// `CampaignResults::list_call_rows` pages past damaged rows: nine calls of
/// a widget, the 2nd, 5th, 6th and 9th damaged (`corrupt` gets their ids),
/// paged two readable calls at a time, visits every call once in order,
/// each damaged one in its place named by its id.
async fn listing_goes_past_damaged_rows<S>(store: Arc<S>, corrupt: impl AsyncFnOnce(Vec<CallId>))
where
    S: CallStore + bonde_pressure_core::CampaignResults,
{
    use bonde_pressure_core::CallCursor;
    use bonde_pressure_store::conformance::{Outcome, build_call};
    let t: chrono::DateTime<chrono::Utc> = "2026-10-01T10:00:00Z".parse().unwrap();
    let mut calls = Vec::new();
    for i in 0..9 {
        let c = build_call(70, t + chrono::TimeDelta::seconds(i), Outcome::ActivistBusy);
        store.create(&c).await.unwrap();
        calls.push(c);
    }
    let bad: Vec<CallId> = [1, 4, 5, 8].iter().map(|&i| calls[i].id).collect();
    corrupt(bad.clone()).await;
    let w = bonde_pressure_core::WidgetId::new(70).unwrap();
    let to = t + chrono::TimeDelta::hours(1);
    // The plain listing fails on the damaged rows...
    let plain = store.list_calls(w, t, to, None, 100).await;
    assert!(plain.is_err(), "{:?}", plain.map(|v| v.len()));
    // ...the row by row one reports them and goes on.
    let mut seen: Vec<(CallId, bool)> = Vec::new();
    let mut after: Option<CallCursor> = None;
    loop {
        let page = store.list_call_rows(w, t, to, after, 2).await.unwrap();
        let readable: Vec<_> = page.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(readable.len() <= 2);
        for row in &page {
            match row {
                Ok(c) => seen.push((c.id, true)),
                Err(u) => seen.push((u.call_id.expect("the id is readable"), false)),
            }
        }
        if readable.len() < 2 {
            break;
        }
        after = readable.last().map(|c| CallCursor::after(c));
    }
    let expected: Vec<(CallId, bool)> =
        calls.iter().map(|c| (c.id, !bad.contains(&c.id))).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_listing_goes_past_damaged_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteCallStore::open(dir.path().join("calls.db"))
            .await
            .unwrap(),
    );
    let pool = store.pool().clone();
    listing_goes_past_damaged_rows(store.clone(), async |bad| {
        for id in bad {
            sqlx::query("UPDATE phone_calls SET facts = '{\"activist\": 5}' WHERE id = ?1")
                .bind(id.to_string())
                .execute(&pool)
                .await
                .unwrap();
        }
    })
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listing_goes_past_damaged_rows() {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.unwrap();
        listing_goes_past_damaged_rows(store.clone(), async |bad| {
            for id in bad {
                sqlx::query(
                    "UPDATE phone_calls SET facts = '{\"activist\": 5}'::jsonb WHERE id = $1",
                )
                .bind(id.as_uuid())
                .execute(&pool)
                .await
                .unwrap();
            }
        })
        .await;
    })
    .await;
}
