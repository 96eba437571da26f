//! Opening stores from URLs, migrations, the `migrate` command, and rows that
//! do not parse back.

use std::process::Command;

use bonde_pressure_core::domain::{Email, PersonName};
use bonde_pressure_core::ports::StoreError;
use bonde_pressure_core::{Activist, Call, CallId, PhoneNumber, Target, WidgetId};
use bonde_pressure_store::{
    Backend, ConnectError, SqliteCallStore, StoreOptions, connect_any, connect_any_with,
    migrate_url,
};
use chrono::{TimeZone, Utc};

fn call() -> Call {
    Call::new(
        CallId::new(),
        WidgetId::new(3).unwrap(),
        Activist {
            name: PersonName::parse("Ana Souza").unwrap(),
            first_name: None,
            last_name: None,
            email: Email::parse("ana@example.org").unwrap(),
            phone: PhoneNumber::parse_e164("+5511912345678").unwrap(),
        },
        Target {
            name: PersonName::parse("Deputada Maria").unwrap(),
            phone: PhoneNumber::parse_e164("+5561998765432").unwrap(),
        },
        None,
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    )
}

#[tokio::test]
async fn connect_any_creates_a_sqlite_file_in_wal_mode_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let url = format!("sqlite://{}", path.display());
    let c = call();
    {
        let store = connect_any(&url).await.unwrap();
        store.create(&c).await.unwrap();
    }
    assert!(path.exists(), "the file is created");

    let store = SqliteCallStore::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(timeout, 10_000);
    use bonde_pressure_core::CallStore;
    assert_eq!(store.get(c.id).await.unwrap(), Some(c));
}

#[tokio::test]
async fn unsupported_and_invalid_urls_are_typed_errors() {
    assert!(matches!(
        connect_any("mysql://localhost/db").await.err(),
        Some(ConnectError::UnsupportedScheme { scheme }) if scheme == "mysql"
    ));
    assert!(matches!(
        connect_any("calls.db").await.err(),
        Some(ConnectError::UnsupportedScheme { .. })
    ));
    let unreachable = connect_any_with(
        "postgres://nobody@127.0.0.1:1/none",
        &StoreOptions::default().acquire_timeout(std::time::Duration::from_secs(2)),
    )
    .await
    .err();
    assert!(
        matches!(unreachable, Some(ConnectError::Database(_))),
        "{unreachable:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let not_a_db = dir.path().join("x.db");
    std::fs::write(&not_a_db, b"this is not a sqlite database, just text....").unwrap();
    let err = connect_any(&format!("sqlite://{}", not_a_db.display()))
        .await
        .err();
    assert!(
        matches!(
            err,
            Some(ConnectError::Database(_) | ConnectError::Migration(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn migrate_url_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let (backend, first) = migrate_url(&url).await.unwrap();
    assert_eq!(backend, Backend::Sqlite);
    assert_eq!(first.applied.len(), 1);
    assert_eq!(first.current, first.applied);
    let (_, second) = migrate_url(&url).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.current, first.current);
}

#[test]
fn migrate_command_picks_the_backend_from_the_url() {
    let bin = env!("CARGO_BIN_EXE_bonde-pressure-store");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());

    let out = Command::new(bin)
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("applied 20261125000000 initial schema"),
        "{stdout}"
    );

    let out = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sqlite schema up to date"));

    let out = Command::new(bin)
        .args(["migrate", "--database-url", "mysql://u:secret@h/db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported database URL scheme"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is masked: {stderr}"
    );
}

#[tokio::test]
async fn corrupt_rows_are_backend_errors_not_panics() {
    use bonde_pressure_core::CallStore;
    let store = SqliteCallStore::in_memory().await.unwrap();
    let good = call();
    store.create(&good).await.unwrap();
    let cases = [
        "UPDATE phone_calls SET from_phone_number = 'not a phone'",
        "UPDATE phone_calls SET facts = '{\"activist\": 1}'",
        "UPDATE phone_calls SET created_at = 'yesterday'",
        "UPDATE phone_calls SET widget_id = -5",
    ];
    for sql in cases {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
        let got = store.get(good.id).await;
        assert!(matches!(got, Err(StoreError::Backend(_))), "{sql}: {got:?}");
        let list = store
            .list_unfinished(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(), 10)
            .await;
        assert!(matches!(list, Err(StoreError::Backend(_))), "{sql}");
        // Restore the row.
        sqlx::query("DELETE FROM phone_calls")
            .execute(store.pool())
            .await
            .unwrap();
        store.create(&good).await.unwrap();
    }
    sqlx::query("UPDATE phone_calls SET state = 'dancing'")
        .execute(store.pool())
        .await
        .unwrap();
    let from = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    assert!(matches!(
        store.stats(good.widget_id, from, to).await,
        Err(StoreError::Backend(_))
    ));
}

#[cfg(feature = "test-util")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_sqlite_from_url_passes_the_concurrency_check() {
    let store = connect_any("sqlite::memory:").await.unwrap();
    bonde_pressure_store::conformance::concurrent_updates_lose_nothing(store.clone()).await;
    bonde_pressure_store::conformance::event_log_keeps_insertion_order(store).await;
}

/// The SQLite plans of the store's queries use the indexes the migration
/// creates for them (docs/storage.md, "Indexes").
#[tokio::test]
async fn sqlite_queries_use_their_indexes() {
    let store = SqliteCallStore::in_memory().await.unwrap();
    let plans = [
        (
            "SELECT id FROM phone_calls WHERE from_call_sid = ?1 OR to_call_sid = ?1 \
             ORDER BY updated_at DESC LIMIT 1",
            vec![
                "phone_calls_from_call_sid_idx",
                "phone_calls_to_call_sid_idx",
            ],
        ),
        (
            "SELECT id FROM phone_calls WHERE terminal = 0 AND updated_at < ?1 \
             ORDER BY updated_at, id LIMIT ?2",
            vec!["phone_calls_unfinished_idx"],
        ),
        (
            "SELECT state, COUNT(*) FROM phone_calls \
             WHERE widget_id = ?1 AND created_at >= ?2 AND created_at < ?3 GROUP BY state",
            vec!["phone_calls_widget_created_idx"],
        ),
        (
            "SELECT id FROM twilio_call_events WHERE phone_call_id = ?1 ORDER BY id",
            vec!["twilio_call_events_phone_call_id_idx"],
        ),
        (
            "SELECT id FROM twilio_call_events WHERE call_sid = ?1 ORDER BY id",
            vec!["twilio_call_events_call_sid_idx"],
        ),
    ];
    for (sql, indexes) in plans {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
        for index in indexes {
            assert!(
                plan.iter().any(|d| d.contains(index)),
                "{sql}\nshould use {index}, plan: {plan:#?}"
            );
        }
        assert!(
            !plan
                .iter()
                .any(|d| d.starts_with("SCAN phone_calls")
                    || d.starts_with("SCAN twilio_call_events")),
            "{sql}: full scan in {plan:#?}"
        );
    }
}
