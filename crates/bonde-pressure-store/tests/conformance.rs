//! Runs the conformance suite against every `CallStore`: the core's
//! in-memory reference, SQLite (a fresh temporary file per test) and
//! PostgreSQL (a fresh database per test on the server at
//! `TEST_DATABASE_URL`).
//!
//! PostgreSQL tests print `skipped: TEST_DATABASE_URL not set` and pass when
//! the variable is absent or the server unreachable — unless `CI=true`, where
//! they fail.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use bonde_pressure_core::InMemoryCallStore;
use bonde_pressure_store::{PgCallStore, SqliteCallStore, conformance};
use futures::FutureExt;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skips (or, in CI, fails) a PostgreSQL test.
fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "CI=true but {reason}: PostgreSQL tests cannot run"
    );
    eprintln!("skipped: {reason}");
}

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

/// Runs `check` against a PostgreSQL database created for it (and dropped
/// afterwards, even if the check fails).
async fn with_postgres<F, Fut>(check: F)
where
    F: FnOnce(Arc<PgCallStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        skip("TEST_DATABASE_URL not set");
        return;
    };
    let admin_options = PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL parses");
    let mut admin = match PgConnection::connect_with(&admin_options).await {
        Ok(c) => c,
        Err(e) => {
            skip(&format!(
                "PostgreSQL at TEST_DATABASE_URL unreachable ({e})"
            ));
            return;
        }
    };
    let name = format!("bps_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(admin_options.clone().database(&name))
        .await
        .expect("connect to test database");
    let store = Arc::new(PgCallStore::from_pool(pool));
    let outcome = std::panic::AssertUnwindSafe(async {
        let report = store.migrate().await.expect("migrate the test database");
        assert!(!report.applied.is_empty(), "a fresh database gets migrated");
        check(store.clone()).await;
    })
    .catch_unwind()
    .await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
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

conformance_tests!(
    create_get_round_trip,
    unicode_names_round_trip,
    find_by_sid_on_both_legs,
    duplicate_create_is_already_exists,
    stale_commit_conflicts_and_writes_nothing,
    commit_on_unknown_call_is_not_found,
    concurrent_updates_lose_nothing,
    event_log_keeps_insertion_order,
    append_events_to_unknown_call_is_not_found,
    orphan_events_are_stored,
    list_unfinished_for_reconciliation,
    stats_match_reference,
    large_payloads_round_trip,
    commit_round_trips_every_outcome,
);
