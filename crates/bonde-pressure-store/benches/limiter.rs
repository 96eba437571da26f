//! What a rate-limit check costs per request: core's in-process limiter,
//! `PgRateLimiter` (one statement per charge) and the layered limiter the
//! HTTP server wires with PostgreSQL, one client at a time and 16 at once.
//!
//! ```text
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p bonde-pressure-store --all-features --bench limiter
//! ```
//!
//! PostgreSQL is measured only when `BENCH_DATABASE_URL` (or
//! `TEST_DATABASE_URL`) is set; a scratch database is created and dropped.
//! Keys rotate over 100,000 numbers (a sliding window of 60 per hour, as
//! `RATE_LIMIT_PER_TARGET`) or 100,000 IP addresses (a bucket of 20 per
//! minute, as `RATE_LIMIT_PER_IP`); `*_refused` charges one spent key.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bonde_pressure_core::{
    Clock, InMemoryRateLimiter, LayeredRateLimiter, LimitKey, LimitKind, Quota, RateLimiter,
    SystemClock,
};
use bonde_pressure_store::PgRateLimiter;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_main};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use tokio::runtime::Runtime;

/// Which keys a bench charges.
#[derive(Clone, Copy)]
enum Keys {
    /// Rotating numbers, 60/h window.
    Numbers,
    /// Rotating IPs, 20/min bucket.
    Ips,
    /// One IP, spent: every charge refused.
    SpentIp,
}

fn key_and_quota(keys: Keys, i: u64) -> (LimitKey, Quota) {
    match keys {
        Keys::Numbers => (
            LimitKey::new(LimitKind::TargetDials, format!("+55619{:08}", i % 100_000)),
            Quota::per_hour(60),
        ),
        Keys::Ips => (
            LimitKey::new(
                LimitKind::ClientIp,
                format!("10.{}.{}.{}", (i / 65536) % 2, (i / 256) % 256, i % 256),
            ),
            Quota::gradual(20, Duration::from_secs(60)),
        ),
        Keys::SpentIp => (
            LimitKey::new(LimitKind::ClientIp, "203.0.113.1"),
            Quota::gradual(1, Duration::from_secs(3600)),
        ),
    }
}

fn bench_limiter(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    limiter: Arc<dyn RateLimiter>,
    keys: Keys,
    tasks: u64,
) {
    let counter = Arc::new(AtomicU64::new(0));
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let limiter = limiter.clone();
            let counter = counter.clone();
            async move {
                let start = Instant::now();
                let per_task = iters.div_ceil(tasks);
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let limiter = limiter.clone();
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                let i = counter.fetch_add(1, Ordering::Relaxed);
                                let (key, quota) = key_and_quota(keys, i);
                                limiter.charge(&key, quota).await.expect("charge");
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.expect("task");
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * tasks) as f64)
            }
        })
    });
}

fn limiter(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("limiter");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let memory: Arc<dyn RateLimiter> = Arc::new(InMemoryRateLimiter::new(clock.clone()));
    bench_limiter(
        &mut group,
        &rt,
        "memory_window",
        memory.clone(),
        Keys::Numbers,
        1,
    );
    bench_limiter(
        &mut group,
        &rt,
        "memory_bucket",
        memory.clone(),
        Keys::Ips,
        1,
    );

    let url = std::env::var("BENCH_DATABASE_URL").or_else(|_| std::env::var("TEST_DATABASE_URL"));
    let Ok(url) = url else {
        eprintln!("skipped postgres: set BENCH_DATABASE_URL or TEST_DATABASE_URL");
        group.finish();
        return;
    };
    let admin_options = PgConnectOptions::from_str(&url).expect("database URL");
    let name = format!("bps_bench_{}", uuid::Uuid::new_v4().simple());
    let (mut admin, pool) = rt.block_on(async {
        let mut admin = PgConnection::connect_with(&admin_options)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create scratch database");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(admin_options.clone().database(&name))
            .await
            .expect("connect to scratch database");
        bonde_pressure_store::PgCallStore::from_pool(pool.clone())
            .migrate()
            .await
            .expect("migrate");
        (admin, pool)
    });
    let pg: Arc<dyn RateLimiter> = Arc::new(PgRateLimiter::new(pool.clone(), clock.clone()));
    bench_limiter(
        &mut group,
        &rt,
        "postgres_window",
        pg.clone(),
        Keys::Numbers,
        1,
    );
    bench_limiter(&mut group, &rt, "postgres_bucket", pg.clone(), Keys::Ips, 1);
    bench_limiter(
        &mut group,
        &rt,
        "postgres_window_16_tasks",
        pg.clone(),
        Keys::Numbers,
        16,
    );
    bench_limiter(
        &mut group,
        &rt,
        "postgres_bucket_refused",
        pg.clone(),
        Keys::SpentIp,
        1,
    );
    let layered: Arc<dyn RateLimiter> = Arc::new(LayeredRateLimiter::new(
        Arc::new(InMemoryRateLimiter::new(clock.clone())),
        pg.clone(),
    ));
    bench_limiter(
        &mut group,
        &rt,
        "layered_ip_refused_locally",
        layered,
        Keys::SpentIp,
        1,
    );
    group.finish();
    rt.block_on(async {
        pool.close().await;
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop scratch database");
    });
}

mod group {
    // A private module: criterion_group! generates an undocumented `pub fn`.
    criterion::criterion_group!(benches, super::limiter);
}
criterion_main!(group::benches);
