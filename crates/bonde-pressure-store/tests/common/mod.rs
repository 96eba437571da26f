//! What the store's integration tests share: a fresh PostgreSQL database
//! per test, and the visible skip (a failure with `CI=true`) when
//! `TEST_DATABASE_URL` is unset or unreachable.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;

use bonde_pressure_store::PgCallStore;
use futures::FutureExt;
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

/// Whether this run is CI's (`CI=true`), where PostgreSQL tests must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skips (or, in CI, fails) a PostgreSQL test.
pub fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "CI=true but {reason}: PostgreSQL tests cannot run"
    );
    // Not `eprintln!`: libtest captures it (shown only for failing tests),
    // while a write to the stderr handle is not captured.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

/// Runs `check` against a PostgreSQL database created for it at
/// `TEST_DATABASE_URL` (not migrated: `check` migrates it when it wants),
/// with the store and its pool, and drops the database afterwards, even if
/// the check fails.
pub async fn with_fresh_postgres(check: impl AsyncFnOnce(Arc<PgCallStore>, PgPool)) {
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
    let store = Arc::new(PgCallStore::from_pool(pool.clone()));
    let outcome = std::panic::AssertUnwindSafe(check(store.clone(), pool))
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
