//! Runs the conformance suite against every `CallStore`: the core's
//! in-memory reference, SQLite (a fresh temporary file per test) and
//! PostgreSQL (a fresh database per test on the server at
//! `TEST_DATABASE_URL`).
//!
//! PostgreSQL tests print `skipped: TEST_DATABASE_URL not set` and pass when
//! the variable is absent or the server unreachable — unless `CI=true`, where
//! they fail. The message is written to the process's stderr directly, not
//! through `eprintln!` (which libtest captures), so it shows in every run.
//!
//! The test functions are generated from the suite's one list of checks,
//! `bonde_pressure_store::for_each_conformance_check!`.

mod common;

use std::future::Future;
use std::sync::Arc;

use bonde_pressure_core::InMemoryCallStore;
use bonde_pressure_store::{PgCallStore, SqliteCallStore, conformance, do_not_call_conformance};
use sqlx::postgres::PgPoolOptions;

async fn with_sqlite<F, Fut>(check: F)
where
    F: FnOnce(Arc<SqliteCallStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteCallStore::open(dir.path().join("calls.db"))
        .await
        .expect("open sqlite");
    let store = Arc::new(store);
    check(store.clone()).await;
    store.close().await;
}

/// Runs `check` against a migrated PostgreSQL database created for it
/// (and dropped afterwards, even if the check fails).
async fn with_postgres<F, Fut>(check: F)
where
    F: FnOnce(Arc<PgCallStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    common::with_fresh_postgres(async |store, _pool| {
        let report = store.migrate().await.expect("migrate the test database");
        assert!(!report.applied.is_empty(), "a fresh database gets migrated");
        check(store).await;
    })
    .await;
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    conformance::$check(Arc::new(InMemoryCallStore::new())).await;
                }
            )*
        }

        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_sqlite(|store| conformance::$check(store)).await;
                }
            )*
        }

        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_postgres(|store| conformance::$check(store)).await;
                }
            )*
        }
    };
}

bonde_pressure_store::for_each_conformance_check!(conformance_tests);

macro_rules! results_tests {
    ($($check:ident),* $(,)?) => {
        mod results_memory {
            use super::*;
            use bonde_pressure_store::results_conformance;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    results_conformance::$check(Arc::new(InMemoryCallStore::new())).await;
                }
            )*
        }

        mod results_sqlite {
            use super::*;
            use bonde_pressure_store::results_conformance;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_sqlite(|store| results_conformance::$check(store)).await;
                }
            )*
        }

        mod results_postgres {
            use super::*;
            use bonde_pressure_store::results_conformance;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_postgres(|store| results_conformance::$check(store)).await;
                }
            )*
        }
    };
}

bonde_pressure_store::for_each_results_check!(results_tests);

macro_rules! do_not_call_tests {
    ($($check:ident),* $(,)?) => {
        mod do_not_call_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    do_not_call_conformance::$check(Arc::new(
                        bonde_pressure_core::InMemoryDoNotCallList::new(),
                    ))
                    .await;
                }
            )*
        }

        mod do_not_call_sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_sqlite(|store| do_not_call_conformance::$check(store)).await;
                }
            )*
        }

        mod do_not_call_postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_postgres(|store| do_not_call_conformance::$check(store)).await;
                }
            )*
        }
    };
}

bonde_pressure_store::for_each_do_not_call_check!(do_not_call_tests);

/// The read models a commit keeps up to date: the projection columns of
/// `phone_calls` and the legs in `twilio_calls`.
mod read_models {
    use super::*;
    use bonde_pressure_core::call::Leg;
    use bonde_pressure_core::{Call, CallEvent, CallStore, LegStatus};
    use conformance::{Outcome, at, build_call};

    /// A connected call, created, then committed as completed (42 s talk).
    async fn connected_then_completed(store: &dyn CallStore) -> Call {
        let call = build_call(30, at(0), Outcome::Connected);
        store.create(&call).await.unwrap();
        let (done, _) = call.apply(
            &CallEvent::leg_status(Leg::Target, LegStatus::Completed)
                .with_leg_id(call.facts.target.leg_id.clone())
                .with_duration_secs(42)
                .with_sip_response_code(200)
                .with_at(at(100))
                .build(),
            at(100),
        );
        store.commit(&done, &[]).await.unwrap();
        done
    }

    type LegRow = (String, String, String, Option<String>, Option<i64>, String);
    type CallRow = (String, bool, Option<i64>, Option<String>, Option<String>);

    fn check(call: &Call, legs: Vec<LegRow>, row: CallRow) {
        let a = call.facts.activist.leg_id.clone().unwrap();
        let b = call.facts.target.leg_id.clone().unwrap();
        assert_eq!(
            legs,
            vec![
                (
                    a.as_str().to_owned(),
                    call.id.to_string(),
                    "activist".to_owned(),
                    Some("in-progress".to_owned()),
                    None,
                    "+5511912345678".to_owned()
                ),
                (
                    b.as_str().to_owned(),
                    call.id.to_string(),
                    "target".to_owned(),
                    Some("completed".to_owned()),
                    Some(42),
                    "+5561998765432".to_owned()
                ),
            ]
        );
        assert_eq!(
            row,
            (
                "completed".to_owned(),
                // The `settled` column holds `Call::is_settled`: completed,
                // but the activist is still on the line (closing message).
                false,
                Some(42),
                Some(a.as_str().to_owned()),
                Some(b.as_str().to_owned())
            )
        );
    }

    #[tokio::test]
    async fn sqlite_commit_updates_projections_and_legs() {
        with_sqlite(|store| async move {
            let call = connected_then_completed(&*store).await;
            let legs: Vec<LegRow> = sqlx::query_as(
                "SELECT sid, phone_call_id, leg, status, duration_secs, to_phone_number \
                 FROM twilio_calls ORDER BY leg",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let row: CallRow = sqlx::query_as(
                "SELECT state, settled, connected_secs, from_call_sid, to_call_sid \
                 FROM phone_calls",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            check(&call, legs, row);
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_commit_updates_projections_and_legs() {
        with_postgres(|store| async move {
            let call = connected_then_completed(&*store).await;
            let legs: Vec<LegRow> = sqlx::query_as(
                "SELECT sid, phone_call_id::text, leg, status, duration_secs, to_phone_number \
                 FROM twilio_calls ORDER BY leg",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let row: CallRow = sqlx::query_as(
                "SELECT state, settled, connected_secs, from_call_sid, to_call_sid \
                 FROM phone_calls",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            check(&call, legs, row);
            let facts_state: String =
                sqlx::query_scalar("SELECT facts->'target'->>'status' FROM phone_calls")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(facts_state, "completed", "facts are queryable jsonb");
        })
        .await;
    }
}

/// The skip message is visible in a normal (captured) test run, and
/// `CI=true` turns the skip into a failure: this test binary re-runs one of
/// its PostgreSQL tests without `TEST_DATABASE_URL`.
#[test]
fn postgres_skip_is_printed_and_fails_in_ci() {
    let exe = std::env::current_exe().expect("test binary path");
    let run = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--exact", "postgres::create_get_round_trip"])
            .env_remove("TEST_DATABASE_URL")
            .env_remove("CI");
        if let Some(v) = ci {
            cmd.env("CI", v);
        }
        cmd.output().expect("run the test binary")
    };

    let out = run(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the test ran: {stdout}");
    assert!(
        stderr.contains("skipped: TEST_DATABASE_URL not set"),
        "the skip shows despite output capture: {stderr}"
    );

    for ci in ["true", "1"] {
        let out = run(Some(ci));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "CI={ci} must fail: {stdout}");
        assert!(
            stdout.contains("CI=true but TEST_DATABASE_URL not set"),
            "{stdout}"
        );
    }
}

/// PostgreSQL-only behaviour: what `text` cannot hold, contention errors,
/// and the plans of the store's queries.
mod postgres_specific {
    use super::*;
    use bonde_pressure_core::{CallStore, StoreError};
    use bonde_pressure_store::EventLog;
    use conformance::{Outcome, at, build_call, raw_event};

    /// A NUL in a payload, its leg id, or a leg's error message (which ends
    /// up in the `jsonb` facts and in `twilio_calls.error_message`) is
    /// stored as U+FFFD; the rest of the text is kept.
    #[tokio::test]
    async fn nul_characters_are_stored_as_replacement_characters() {
        with_postgres(|store| async move {
            let mut call = build_call(40, at(0), Outcome::ActivistRinging);
            store.create(&call).await.unwrap();
            let raw =
                raw_event("status-callback", None, "Body=a\0b&x=\0", Some(1)).with_leg_id("CA\0x");
            // A telephony error message with a NUL in it, in the facts.
            let (failed, _) = call.apply(
                &bonde_pressure_core::CallEvent::DialFailed {
                    leg: bonde_pressure_core::call::Leg::Target,
                    error: bonde_pressure_core::call::LegError::new(13224, "bad\0number"),
                },
                at(5),
            );
            call = failed;
            assert_eq!(
                store
                    .commit(&call, std::slice::from_ref(&raw))
                    .await
                    .unwrap(),
                1
            );
            let events = store.events_by_sid("CA\0x").await.unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].raw.payload, "Body=a\u{FFFD}b&x=\u{FFFD}");
            assert_eq!(events[0].raw.leg_id.as_deref(), Some("CA\u{FFFD}x"));
            let stored = store.get(call.id).await.unwrap().unwrap();
            assert_eq!(
                stored
                    .facts
                    .target
                    .error
                    .as_ref()
                    .map(|e| e.message.as_str()),
                Some("bad\u{FFFD}number")
            );
            assert_eq!(stored.version, 1);
        })
        .await;
    }

    /// A commit that PostgreSQL aborts with a serialization failure (40001;
    /// here under REPEATABLE READ, racing another transaction's update of
    /// the row) is a `Conflict`, writes nothing, and succeeds when retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serialization_failure_is_a_conflict() {
        with_postgres(|store| async move {
            let call = build_call(41, at(0), Outcome::ActivistRinging);
            store.create(&call).await.unwrap();
            let rr = PgCallStore::from_pool(
                PgPoolOptions::new()
                    .max_connections(1)
                    // (A space in a startup option is escaped with `\`.)
                    .connect_with(
                        (*store.pool().connect_options())
                            .clone()
                            .options([("default_transaction_isolation", "repeatable\\ read")]),
                    )
                    .await
                    .unwrap(),
            );

            let mut other = store.pool().begin().await.unwrap();
            sqlx::query("UPDATE phone_calls SET updated_at = updated_at WHERE id = $1")
                .bind(call.id.as_uuid())
                .execute(&mut *other)
                .await
                .unwrap();
            let raw = raw_event("status-callback", None, "CallStatus=ringing", Some(1));
            let commit = tokio::spawn({
                let rr = rr.clone();
                let (call, raw) = (call.clone(), raw.clone());
                async move { rr.commit(&call, &[raw]).await }
            });
            // Wait until the commit is blocked on the row lock.
            let mut waiting = false;
            for _ in 0..200 {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if n > 0 {
                    waiting = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(waiting, "the commit waits for the row lock");
            other.commit().await.unwrap();
            let got = commit.await.unwrap();
            assert!(matches!(got, Err(StoreError::Conflict)), "{got:?}");

            assert_eq!(store.get(call.id).await.unwrap().unwrap().version, 0);
            assert!(store.events(call.id).await.unwrap().is_empty());
            assert_eq!(rr.commit(&call, &[raw]).await.unwrap(), 1);
            rr.close().await;
        })
        .await;
    }

    /// The generic plans (what prepared statements get) of the store's
    /// lookups use the indexes the migration creates for them
    /// (docs/storage.md, "Indexes"). The tables are nearly empty, so
    /// sequential scans are disabled for the session: the planner must then
    /// find an index path, and the one it picks must be the intended one.
    #[tokio::test]
    async fn queries_use_their_indexes() {
        with_postgres(|store| async move {
            let call = build_call(42, at(0), Outcome::Connected);
            store.create(&call).await.unwrap();
            let mut conn = store.pool().acquire().await.unwrap();
            sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
                .execute(&mut *conn)
                .await
                .unwrap();
            let plans = [
                (
                    "list_unfinished(timestamptz, int8)",
                    "SELECT id FROM phone_calls WHERE NOT settled AND updated_at < $1 \
                     ORDER BY updated_at, id LIMIT $2",
                    "(now(), 100)",
                    vec!["phone_calls_unfinished_idx"],
                ),
                (
                    "report counts(int8, timestamptz, timestamptz)",
                    "SELECT state, funnel_stage, COUNT(*) FROM phone_calls \
                     WHERE widget_id = $1 AND created_at >= $2 AND created_at < $3 \
                     GROUP BY state, funnel_stage",
                    "(42, now() - interval '1 day', now())",
                    vec!["phone_calls_results_idx"],
                ),
                (
                    "list_calls(int8, timestamptz, timestamptz, timestamptz, uuid, int8)",
                    "SELECT id FROM phone_calls \
                     WHERE widget_id = $1 AND created_at >= $2 AND created_at < $3 \
                     AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5)) \
                     ORDER BY created_at, id LIMIT $6",
                    "(42, now() - interval '1 day', now(), NULL, gen_random_uuid(), 100)",
                    vec!["phone_calls_results_idx"],
                ),
                (
                    "events(uuid)",
                    "SELECT id FROM twilio_call_events WHERE phone_call_id = $1 ORDER BY id",
                    "(gen_random_uuid())",
                    vec!["twilio_call_events_phone_call_id_idx"],
                ),
                (
                    "events_by_sid(text)",
                    "SELECT id FROM twilio_call_events WHERE call_sid = $1 ORDER BY id",
                    "('CA00000000000000000000000000000000')",
                    vec!["twilio_call_events_call_sid_idx"],
                ),
            ];
            for (i, (signature, sql, args, indexes)) in plans.into_iter().enumerate() {
                let (_, types) = signature.split_once('(').unwrap();
                let name = format!("plan_{i}");
                sqlx::raw_sql(&format!("PREPARE {name}({types} AS {sql}"))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let plan: Vec<String> =
                    sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}{args}"))
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                let plan = plan.join("\n");
                for index in indexes {
                    assert!(
                        plan.contains(index),
                        "{signature} should use {index}:\n{plan}"
                    );
                }
                assert!(!plan.contains("Seq Scan"), "{signature}:\n{plan}");
                assert!(plan.contains("$1"), "{signature}: a generic plan:\n{plan}");
            }
        })
        .await;
    }
}

/// The personal-data suite (retention, erasure, audit) on every store.
macro_rules! personal_data_tests {
    ($($check:ident),* $(,)?) => {
        mod personal_data {
            use super::*;
            use bonde_pressure_store::personal_conformance;

            mod memory {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        personal_conformance::$check(Arc::new(InMemoryCallStore::new())).await;
                    }
                )*
            }

            mod sqlite {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        with_sqlite(|store| personal_conformance::$check(store)).await;
                    }
                )*
            }

            mod postgres {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        with_postgres(|store| personal_conformance::$check(store)).await;
                    }
                )*
            }
        }
    };
}

bonde_pressure_store::for_each_personal_data_check!(personal_data_tests);

/// Retention in the SQL stores' own terms: no trace of the activist left in
/// any column, and on PostgreSQL one pass at a time.
mod retention_sql {
    use super::*;
    use bonde_pressure_core::call::LegError;
    use bonde_pressure_core::{CallEvent, CallStore, Leg, PersonKey, PersonalDataStore};
    use bonde_pressure_core::{RetentionPass, RetentionReport};
    use conformance::{Outcome, at, build_call};

    const NUMBER: &str = "+5511912345678";
    const DIGITS: &str = "5511912345678";

    /// A completed call quoting the activist's number everywhere it can be:
    /// columns, the caller id, both legs, an error message.
    async fn seeded(store: &dyn CallStore) -> bonde_pressure_core::Call {
        let mut call = build_call(50, at(0), Outcome::Completed { talk_secs: Some(5) });
        call.target_caller_id = Some(call.activist.phone.clone());
        let failed = CallEvent::DialFailed {
            leg: Leg::Activist,
            error: LegError::new(1, format!("Call to {NUMBER} failed")),
        };
        let call = call.apply(&failed, at(200)).0;
        store.create(&call).await.unwrap();
        assert!(call.is_settled());
        call
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_erasure_leaves_no_trace_in_any_column() {
        with_sqlite(|store| async move {
            seeded(&*store).await;
            let who =
                PersonKey::Phone(bonde_pressure_core::PhoneNumber::parse_e164(NUMBER).unwrap());
            let r = store.erase_person(&who, at(300)).await.unwrap();
            assert_eq!(r.calls_erased, 1);
            let like = format!("%{DIGITS}%");
            let traces: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM phone_calls WHERE activist_name LIKE '%Ana%' \
                   OR activist_first_name IS NOT NULL OR activist_last_name IS NOT NULL \
                   OR activist_email LIKE '%ativista%' OR from_phone_number LIKE ?1 \
                   OR target_caller_id LIKE ?1 OR facts LIKE ?1) \
                 + (SELECT COUNT(*) FROM twilio_calls WHERE to_phone_number LIKE ?1 \
                   OR from_phone_number LIKE ?1 OR error_message LIKE ?1)",
            )
            .bind(&like)
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(traces, 0);
            let legs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM twilio_calls")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(legs, 2, "the legs' rows stay (statuses, durations)");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_erasure_leaves_no_trace_in_any_column() {
        with_postgres(|store| async move {
            seeded(&*store).await;
            let r = ran(store.retention_pass(at(100), at(300), 10).await.unwrap());
            assert_eq!(r.calls_erased, 1);
            let like = format!("%{DIGITS}%");
            let traces: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM phone_calls WHERE activist_name LIKE '%Ana%' \
                   OR activist_first_name IS NOT NULL OR activist_last_name IS NOT NULL \
                   OR activist_email LIKE '%ativista%' OR from_phone_number LIKE $1 \
                   OR target_caller_id LIKE $1 OR facts::text LIKE $1) \
                 + (SELECT COUNT(*) FROM twilio_calls WHERE to_phone_number LIKE $1 \
                   OR from_phone_number LIKE $1 OR error_message LIKE $1)",
            )
            .bind(&like)
            .fetch_one(store.pool())
            .await
            .unwrap();
            assert_eq!(traces, 0);
        })
        .await;
    }

    /// A row that no longer decodes (a number stored before the metadata
    /// changed, a hand edit) is still erased, and then loads: the pass
    /// never decodes a call, and an erased call's columns are never parsed.
    async fn repaired_by_erasure<S: CallStore + PersonalDataStore>(
        store: &S,
        call: &bonde_pressure_core::Call,
    ) {
        assert!(
            store.get(call.id).await.is_err(),
            "the poisoned row does not decode"
        );
        let r = ran(store.retention_pass(at(100), at(300), 10).await.unwrap());
        assert_eq!(r.calls_erased, 1);
        let got = store.get(call.id).await.unwrap().unwrap();
        assert!(got.is_erased() && got.activist.is_erased());
        assert_eq!(got.state(), call.state());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_a_row_that_no_longer_decodes_is_still_erased_and_then_loads() {
        with_sqlite(|store| async move {
            let call = seeded(&*store).await;
            sqlx::query(
                "UPDATE phone_calls SET from_phone_number = '+559001234567', activist_email = 'x'",
            )
            .execute(store.pool())
            .await
            .unwrap();
            repaired_by_erasure(&*store, &call).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_a_row_that_no_longer_decodes_is_still_erased_and_then_loads() {
        with_postgres(|store| async move {
            let call = seeded(&*store).await;
            sqlx::query(
                "UPDATE phone_calls SET from_phone_number = '+559001234567', activist_email = 'x'",
            )
            .execute(store.pool())
            .await
            .unwrap();
            repaired_by_erasure(&*store, &call).await;
        })
        .await;
    }

    /// The retention and erasure statements use their indexes (generic
    /// plans, sequential scans off, as `queries_use_their_indexes`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_retention_queries_use_their_indexes() {
        with_postgres(|store| async move {
            seeded(&*store).await;
            // Enough distinct people for the planner to tell the indexes apart.
            sqlx::query(
                "INSERT INTO phone_calls (id, widget_id, activist_name, activist_email, \
                    from_phone_number, to_phone_number, target_name, state, settled, facts, \
                    version, created_at, updated_at) \
                 SELECT gen_random_uuid(), widget_id, activist_name, 'p' || n || '@example.org', \
                    '+55119' || lpad(n::text, 8, '0'), to_phone_number, target_name, state, \
                    settled, facts, version, created_at + n * interval '1 second', updated_at \
                 FROM phone_calls, generate_series(1, 2000) n",
            )
            .execute(store.pool())
            .await
            .unwrap();
            sqlx::query("ANALYZE phone_calls")
                .execute(store.pool())
                .await
                .unwrap();
            let mut conn = store.pool().acquire().await.unwrap();
            sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
                .execute(&mut *conn)
                .await
                .unwrap();
            let plans = [
                (
                    "due_by_age(timestamptz, int8)",
                    "SELECT id FROM phone_calls WHERE erased_at IS NULL AND settled \
                     AND created_at < $1 ORDER BY created_at, id LIMIT $2",
                    "(now(), 10)",
                    "phone_calls_retention_idx",
                ),
                (
                    "due_by_request(int8)",
                    "SELECT id FROM phone_calls WHERE erasure_requested_at IS NOT NULL \
                     AND erased_at IS NULL AND settled ORDER BY created_at, id LIMIT $1",
                    "(10)",
                    "phone_calls_erasure_requested_idx",
                ),
                (
                    "old_events(timestamptz, int8)",
                    "SELECT id FROM twilio_call_events WHERE received_at < $1 \
                     ORDER BY received_at, id LIMIT $2",
                    "(now(), 10)",
                    "twilio_call_events_received_at_idx",
                ),
                (
                    "recently_erased(timestamptz)",
                    "SELECT id FROM phone_calls WHERE erased_at IS NOT NULL AND erased_at >= $1",
                    "(now())",
                    "phone_calls_erased_at_idx",
                ),
                (
                    "by_phone(text)",
                    "SELECT id, settled FROM phone_calls \
                     WHERE from_phone_number = $1 AND erased_at IS NULL ORDER BY id",
                    "('+5511912345678')",
                    "phone_calls_activist_created_idx",
                ),
                (
                    "by_email(text)",
                    "SELECT id, settled FROM phone_calls \
                     WHERE lower(activist_email) = lower($1) AND erased_at IS NULL ORDER BY id",
                    "('a@b.org')",
                    "phone_calls_activist_email_idx",
                ),
            ];
            for (i, (signature, sql, args, index)) in plans.into_iter().enumerate() {
                let (_, types) = signature.split_once('(').unwrap();
                let name = format!("retention_plan_{i}");
                sqlx::raw_sql(&format!("PREPARE {name}({types} AS {sql}"))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let plan: Vec<String> =
                    sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}{args}"))
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                let plan = plan.join("\n");
                assert!(
                    plan.contains(index),
                    "{signature} should use {index}:\n{plan}"
                );
                assert!(!plan.contains("Seq Scan"), "{signature}:\n{plan}");
            }
        })
        .await;
    }

    fn ran(p: RetentionPass) -> RetentionReport {
        match p {
            RetentionPass::Ran(r) => r,
            other => panic!("did not run: {other:?}"),
        }
    }

    async fn advisory_locks(store: &PgCallStore) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    /// Two passes at once: while the first holds the advisory lock (it is
    /// made to wait on a row another transaction holds), the second skips
    /// without waiting; the first then finishes; the lock goes with its
    /// transaction (none is left on a pooled connection), so a third runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_passes_do_not_both_run() {
        with_postgres(|store| async move {
            let call = seeded(&*store).await;
            let mut blocker = store.pool().begin().await.unwrap();
            sqlx::query("SELECT id FROM phone_calls WHERE id = $1 FOR UPDATE")
                .bind(call.id.as_uuid())
                .execute(&mut *blocker)
                .await
                .unwrap();
            let first = {
                let store = store.clone();
                tokio::spawn(async move { store.retention_pass(at(100), at(300), 10).await })
            };
            let mut waited = 0;
            while advisory_locks(&store).await == 0 {
                assert!(waited < 500, "the first pass never took the lock");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                waited += 1;
            }
            let second = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                store.retention_pass(at(100), at(300), 10),
            )
            .await
            .expect("the second pass does not wait for the first")
            .unwrap();
            assert_eq!(second, RetentionPass::Skipped);
            assert!(!first.is_finished(), "the first pass is still running");
            blocker.rollback().await.unwrap();
            let first = first.await.unwrap().unwrap();
            assert_eq!(ran(first).calls_erased, 1);
            assert_eq!(advisory_locks(&store).await, 0, "no lock outlives its pass");
            let third = ran(store.retention_pass(at(100), at(300), 10).await.unwrap());
            assert_eq!(third.calls_erased, 0);
            assert!(store.get(call.id).await.unwrap().unwrap().is_erased());
        })
        .await;
    }
}

/// Rows written before the `funnel_stage` column existed get it from their
/// facts JSON when the store migrates (the backfill).
mod funnel_backfill {
    use super::*;
    use bonde_pressure_core::results::{CampaignResults, Interval, ResultsQuery, ResultsReport};
    use bonde_pressure_core::{CallStore, WidgetId};
    use conformance::{Outcome, at, build_call};

    fn calls() -> Vec<bonde_pressure_core::Call> {
        Outcome::ALL
            .into_iter()
            .enumerate()
            .map(|(i, o)| build_call(48, at(i as i64 * 60), o))
            .collect()
    }

    fn query() -> ResultsQuery {
        ResultsQuery::new(
            WidgetId::new(48).unwrap(),
            at(-3600),
            at(3600),
            bonde_pressure_core::Tz::America__Sao_Paulo,
            Interval::Hour,
        )
    }

    #[tokio::test]
    async fn sqlite() {
        with_sqlite(|store| async move {
            let calls = calls();
            for c in &calls {
                store.create(c).await.unwrap();
            }
            sqlx::query("UPDATE phone_calls SET funnel_stage = NULL")
                .execute(store.pool())
                .await
                .unwrap();
            let before = store.report(&query()).await.unwrap();
            assert_eq!(before.funnel[1].calls, 0, "not backfilled yet");
            store.migrate().await.unwrap();
            let left: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM phone_calls WHERE funnel_stage IS NULL")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(left, 0);
            assert_eq!(
                store.report(&query()).await.unwrap(),
                ResultsReport::from_calls(&query(), &calls)
            );
        })
        .await;
    }

    #[tokio::test]
    async fn postgres() {
        with_postgres(|store| async move {
            let calls = calls();
            for c in &calls {
                store.create(c).await.unwrap();
            }
            sqlx::query("UPDATE phone_calls SET funnel_stage = NULL")
                .execute(store.pool())
                .await
                .unwrap();
            let before = store.report(&query()).await.unwrap();
            assert_eq!(before.funnel[1].calls, 0, "not backfilled yet");
            store.migrate().await.unwrap();
            let left: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM phone_calls WHERE funnel_stage IS NULL")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(left, 0);
            assert_eq!(
                store.report(&query()).await.unwrap(),
                ResultsReport::from_calls(&query(), &calls)
            );
        })
        .await;
    }
}
