//! Commits per second of each `CallStore` backend: one client committing one
//! call over and over (each commit: the versioned `UPDATE`, two leg upserts,
//! one raw event), as `benches/commit.pgbench` does with plain SQL.
//!
//! ```text
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p bonde-pressure-store --all-features --bench commit
//! # only SQLite:
//! cargo bench -p bonde-pressure-store --all-features --bench commit -- sqlite
//! ```
//!
//! PostgreSQL is measured only when `BENCH_DATABASE_URL` (or
//! `TEST_DATABASE_URL`) is set; a scratch database is created and dropped.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bonde_pressure_core::{CallStore, InMemoryCallStore};
use bonde_pressure_store::conformance::{Outcome, at, build_call, raw_event};
use bonde_pressure_store::{PgCallStore, SqliteCallStore, SqliteDurability, StoreOptions};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_main};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use tokio::runtime::Runtime;

const PAYLOAD: &str = "AccountSid=AC00000000000000000000000000000000&ApiVersion=2010-04-01\
&CallSid=CA00000000000000000000000000000000&CallStatus=in-progress&Direction=outbound-api\
&SequenceNumber=2";

fn bench_store(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn CallStore>,
) {
    let call = build_call(1, at(0), Outcome::Connected);
    rt.block_on(store.create(&call))
        .expect("create the bench call");
    let current = Arc::new(Mutex::new(call));
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            let current = current.clone();
            async move {
                let mut call = current.lock().expect("not poisoned").clone();
                let sid = call.facts.activist.leg_id.clone();
                let start = Instant::now();
                for i in 0..iters {
                    let event = raw_event("status-callback", sid.as_ref(), PAYLOAD, Some(i as i64));
                    call.version = store.commit(&call, &[event]).await.expect("commit");
                }
                let elapsed = start.elapsed();
                *current.lock().expect("not poisoned") = call;
                elapsed
            }
        })
    });
}

fn commit(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("commit");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));

    bench_store(
        &mut group,
        &rt,
        "memory",
        Arc::new(InMemoryCallStore::new()),
    );

    let dir = tempfile::tempdir().expect("temp dir");
    for (name, durability) in [
        ("sqlite_file", SqliteDurability::Full),
        ("sqlite_file_synchronous_normal", SqliteDurability::Normal),
    ] {
        let options = StoreOptions::default().sqlite_durability(durability);
        let sqlite = rt
            .block_on(SqliteCallStore::open_with(
                dir.path().join(format!("{name}.db")),
                &options,
            ))
            .expect("open sqlite");
        bench_store(&mut group, &rt, name, Arc::new(sqlite.clone()));
        rt.block_on(sqlite.close());
    }

    let url = std::env::var("BENCH_DATABASE_URL").or_else(|_| std::env::var("TEST_DATABASE_URL"));
    match url {
        Ok(url) => {
            let admin_options = PgConnectOptions::from_str(&url).expect("database URL");
            let name = format!("bps_bench_{}", uuid::Uuid::new_v4().simple());
            let (mut admin, store, async_store) = rt.block_on(async {
                let mut admin = PgConnection::connect_with(&admin_options)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .expect("create scratch database");
                let scratch = admin_options.clone().database(&name);
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(scratch.clone())
                    .await
                    .expect("connect to scratch database");
                let store = PgCallStore::from_pool(pool);
                store.migrate().await.expect("migrate");
                // The same, without waiting for the WAL flush: what the store
                // costs on top of the database when fsync does not dominate.
                let async_pool = PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(scratch.options([("synchronous_commit", "off")]))
                    .await
                    .expect("connect to scratch database");
                (admin, store, PgCallStore::from_pool(async_pool))
            });
            bench_store(&mut group, &rt, "postgres", Arc::new(store.clone()));
            bench_store(
                &mut group,
                &rt,
                "postgres_synchronous_commit_off",
                Arc::new(async_store.clone()),
            );
            rt.block_on(async {
                store.close().await;
                async_store.close().await;
                sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .expect("drop scratch database");
            });
        }
        Err(_) => eprintln!("skipped postgres: set BENCH_DATABASE_URL or TEST_DATABASE_URL"),
    }
    group.finish();
}

mod group {
    // A private module: criterion_group! generates an undocumented `pub fn`.
    criterion::criterion_group!(benches, super::commit);
}
criterion_main!(group::benches);
