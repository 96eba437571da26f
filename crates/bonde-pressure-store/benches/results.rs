//! Times `CampaignResults::report` on PostgreSQL over 1 000 000 calls of one
//! widget (docs/performance.md, "Campaign results").
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres bps_results_bench
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bps_results_bench \
//!   cargo bench -p bonde-pressure-store --bench results
//! ```
//!
//! The database is migrated and seeded with `benches/results_seed.sql`
//! (SQL `generate_series`, not through the API) unless it already holds the
//! calls. Without `BENCH_DATABASE_URL` the bench prints that it was skipped.

use std::time::{Duration, Instant};

use bonde_pressure_core::{CampaignResults, Interval, ResultsQuery, Tz, WidgetId};
use bonde_pressure_store::PgCallStore;
use chrono::{DateTime, Utc};

const SEED: &str = include_str!("results_seed.sql");

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

async fn time(store: &PgCallStore, label: &str, q: &ResultsQuery, runs: usize) {
    // One warm-up run (caches, plans).
    let r = store.report(q).await.expect("report");
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let again = store.report(q).await.expect("report");
        times.push(t.elapsed());
        assert_eq!(again, r);
    }
    times.sort();
    println!(
        "{label}: {} calls, {} buckets; min {:.1} ms, median {:.1} ms, max {:.1} ms ({runs} runs)",
        r.total,
        r.series.len(),
        times[0].as_secs_f64() * 1e3,
        times[runs / 2].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("BENCH_DATABASE_URL") else {
        println!("skipped: BENCH_DATABASE_URL not set");
        return;
    };
    let store = PgCallStore::connect(&url)
        .await
        .expect("connect and migrate");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM phone_calls WHERE widget_id = 777")
        .fetch_one(store.pool())
        .await
        .expect("count");
    if n != 1_000_000 {
        println!("seeding 1 000 000 calls…");
        let t = Instant::now();
        sqlx::raw_sql(SEED)
            .execute(store.pool())
            .await
            .expect("seed");
        println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    }
    let w = WidgetId::new(777).expect("widget");
    let sp = Tz::America__Sao_Paulo;
    let month = (utc("2026-10-01T00:00:00Z"), utc("2026-11-01T00:00:00Z"));
    let week = (utc("2026-10-10T03:00:00Z"), utc("2026-10-17T03:00:00Z"));
    let day = (utc("2026-10-10T03:00:00Z"), utc("2026-10-11T03:00:00Z"));
    time(
        &store,
        "30 days (1M calls), daily",
        &ResultsQuery::new(w, month.0, month.1, sp, Interval::Day),
        10,
    )
    .await;
    time(
        &store,
        "30 days (1M calls), hourly",
        &ResultsQuery::new(w, month.0, month.1, sp, Interval::Hour),
        10,
    )
    .await;
    time(
        &store,
        "30 days, daily, edges off the hour",
        &ResultsQuery::new(
            w,
            utc("2026-10-01T03:17:29Z"),
            utc("2026-10-31T02:41:07Z"),
            sp,
            Interval::Day,
        ),
        10,
    )
    .await;
    time(
        &store,
        "30 days, daily, Asia/Kolkata (no rollup: rows only)",
        &ResultsQuery::new(w, month.0, month.1, Tz::Asia__Kolkata, Interval::Day),
        5,
    )
    .await;
    time(
        &store,
        "7 days, hourly",
        &ResultsQuery::new(w, week.0, week.1, sp, Interval::Hour),
        10,
    )
    .await;
    time(
        &store,
        "1 day, hourly",
        &ResultsQuery::new(w, day.0, day.1, sp, Interval::Hour),
        10,
    )
    .await;
}
