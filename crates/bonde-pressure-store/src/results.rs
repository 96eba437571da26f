//! [`CampaignResults`] on PostgreSQL and SQLite, and the backfill of the
//! `funnel_stage` projection.
//!
//! Both stores answer a report with grouped queries over the widget's calls
//! in the period (PostgreSQL runs its four concurrently on pooled
//! connections): counts by `(state, funnel_stage)`, per-target counts,
//! per-target talk times of completed calls, and counts by `(bucket, state)`
//! for the series. Page statuses
//! are mapped from states in Rust ([`DetailedState::ui_status`]), so the SQL
//! never repeats that table.
//!
//! Percentiles are nearest-rank ([`percentile_nearest_rank`]): PostgreSQL's
//! `percentile_disc`; SQLite, which has no ordered-set aggregates, returns
//! the completed calls' talk times in order and Rust picks the rank.
//!
//! Series buckets: PostgreSQL truncates `created_at AT TIME ZONE tz` (its
//! own time-zone database); SQLite groups by UTC quarter-hour and Rust maps
//! each quarter to its local bucket with `chrono-tz` (every time-zone
//! offset in use is a whole number of quarter-hours, so a quarter never
//! straddles two local hours).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bonde_pressure_core::call::{CallFacts, derive_state};
use bonde_pressure_core::ports::StoreError;
use bonde_pressure_core::results::{
    CallCursor, CampaignResults, FunnelStage, Interval, ResultsQuery, ResultsReport, TargetResults,
};
use bonde_pressure_core::{Call, DetailedState, WidgetId};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::codec::{ceil_micros, corrupt, db, ts_text};
use crate::{PgCallStore, SqliteCallStore};

/// Rows backfilled per transaction.
const BACKFILL_BATCH: i64 = 1000;

fn stage_of_facts(facts: &str) -> Result<i16, StoreError> {
    let facts: CallFacts =
        serde_json::from_str(facts).map_err(|e| corrupt("phone_calls.facts", e))?;
    Ok(FunnelStage::of(&facts, derive_state(&facts)).as_i16())
}

/// The stage of one row to backfill, or `None` for a row whose facts cannot
/// be read: that row is logged and left NULL (it counts as requested only),
/// so one damaged row never stops the migration (and the service's start).
fn stage_or_skip(id: &dyn std::fmt::Display, facts: &str) -> Option<i16> {
    match stage_of_facts(facts) {
        Ok(stage) => Some(stage),
        Err(error) => {
            tracing::error!(call_id = %id, %error, "phone_calls.funnel_stage not backfilled: the row's facts cannot be read");
            None
        }
    }
}

/// Fills `funnel_stage` from the facts JSON where it is NULL (rows written
/// before the column existed), in batches paged by id. A row whose facts
/// cannot be read is logged and skipped (see [`stage_or_skip`]).
pub(crate) async fn backfill_pg(pool: &PgPool) -> Result<u64, StoreError> {
    let mut done = 0;
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, facts::text FROM phone_calls WHERE funnel_stage IS NULL AND id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(BACKFILL_BATCH)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        let mut ids = Vec::with_capacity(rows.len());
        let mut stages = Vec::with_capacity(rows.len());
        for (id, facts) in &rows {
            if let Some(stage) = stage_or_skip(id, facts) {
                ids.push(*id);
                stages.push(stage);
            }
        }
        sqlx::query(
            "UPDATE phone_calls p SET funnel_stage = u.stage \
             FROM UNNEST($1::uuid[], $2::int2[]) AS u(id, stage) \
             WHERE p.id = u.id AND p.funnel_stage IS NULL",
        )
        .bind(&ids)
        .bind(&stages)
        .execute(pool)
        .await
        .map_err(db)?;
        done += ids.len() as u64;
    }
    if done > 0 {
        tracing::info!(rows = done, "backfilled phone_calls.funnel_stage");
    }
    Ok(done)
}

/// [`backfill_pg`] for SQLite (the caller holds the store's writer lock).
pub(crate) async fn backfill_sqlite(pool: &SqlitePool) -> Result<u64, StoreError> {
    let mut done = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, facts FROM phone_calls WHERE funnel_stage IS NULL AND id > ?1 \
             ORDER BY id LIMIT ?2",
        )
        .bind(&after)
        .bind(BACKFILL_BATCH)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = last.clone();
        let mut tx = pool.begin().await.map_err(db)?;
        for (id, facts) in &rows {
            let Some(stage) = stage_or_skip(id, facts) else {
                continue;
            };
            sqlx::query("UPDATE phone_calls SET funnel_stage = ?2 WHERE id = ?1")
                .bind(id)
                .bind(stage)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            done += 1;
        }
        tx.commit().await.map_err(db)?;
    }
    if done > 0 {
        tracing::info!(rows = done, "backfilled phone_calls.funnel_stage");
    }
    Ok(done)
}

fn count(column: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(column, format!("{n} is negative")))
}

fn state(s: &str) -> Result<DetailedState, StoreError> {
    DetailedState::parse(s)
        .ok_or_else(|| corrupt("phone_calls.state", format!("unknown state {s:?}")))
}

/// A missing stage (a row not backfilled yet) counts as requested only.
fn stage(n: Option<i16>) -> Result<FunnelStage, StoreError> {
    match n {
        None => Ok(FunnelStage::Requested),
        Some(n) => FunnelStage::from_i16(n)
            .ok_or_else(|| corrupt("phone_calls.funnel_stage", format!("{n} out of range"))),
    }
}

fn secs(column: &'static str, n: Option<i64>) -> Result<Option<u32>, StoreError> {
    n.map(|n| u32::try_from(n).map_err(|_| corrupt(column, format!("{n} out of range"))))
        .transpose()
}

/// One `(state, funnel_stage)` group.
#[derive(sqlx::FromRow)]
struct CountRow {
    state: String,
    funnel_stage: Option<i16>,
    calls: i64,
}

/// One target's counts.
#[derive(sqlx::FromRow)]
struct TargetRow {
    target_name: String,
    to_phone_number: String,
    calls: i64,
    connected: i64,
    completed: i64,
    talk_secs: i64,
}

fn add_counts(report: &mut ResultsReport, rows: Vec<CountRow>) -> Result<(), StoreError> {
    for r in rows {
        report.add_counts(
            state(&r.state)?,
            stage(r.funnel_stage)?,
            count("count", r.calls)?,
        );
    }
    Ok(())
}

fn target(r: TargetRow) -> Result<TargetResults, StoreError> {
    let mut t = TargetResults::new(r.target_name, r.to_phone_number);
    t.calls = count("count", r.calls)?;
    t.connected = count("count", r.connected)?;
    t.completed = count("count", r.completed)?;
    t.talk_secs = count("phone_calls.connected_secs", r.talk_secs)?;
    Ok(t)
}

// ------------------------------------------------------------- PostgreSQL

macro_rules! pg_where {
    () => {
        " WHERE widget_id = $1 AND created_at >= $2 AND created_at < $3 "
    };
}

#[async_trait]
impl CampaignResults for PgCallStore {
    async fn report(&self, query: &ResultsQuery) -> Result<ResultsReport, StoreError> {
        let pool = self.pool();
        let (w, from, to) = (
            query.widget_id.get(),
            ceil_micros(query.from),
            ceil_micros(query.to),
        );
        let counts = sqlx::query_as::<_, CountRow>(concat!(
            "SELECT state, funnel_stage, COUNT(*) AS calls FROM phone_calls ",
            pg_where!(),
            " \
             GROUP BY state, funnel_stage"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .fetch_all(pool);
        // Per-target counts (a hash aggregate over every call) and talk-time
        // percentiles (a sort of the completed calls only: `percentile_disc`
        // ignores NULLs, so filtering them first gives the same values
        // without sorting the other calls) are two queries, run concurrently.
        let targets = sqlx::query_as::<_, TargetRow>(concat!(
            "SELECT target_name, to_phone_number, COUNT(*) AS calls, \
                 COUNT(*) FILTER (WHERE funnel_stage >= 5) AS connected, \
                 COUNT(*) FILTER (WHERE state = 'completed') AS completed, \
                 COALESCE(SUM(connected_secs), 0)::bigint AS talk_secs \
                 FROM phone_calls ",
            pg_where!(),
            " GROUP BY target_name, to_phone_number"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .fetch_all(pool);
        let talk = sqlx::query_as::<_, (String, String, Option<i64>, Option<i64>)>(concat!(
            "SELECT target_name, to_phone_number, \
                 percentile_disc(0.5) WITHIN GROUP (ORDER BY connected_secs), \
                 percentile_disc(0.9) WITHIN GROUP (ORDER BY connected_secs) \
                 FROM phone_calls ",
            pg_where!(),
            " AND connected_secs IS NOT NULL GROUP BY target_name, to_phone_number"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .fetch_all(pool);
        let unit = match query.interval {
            Interval::Hour => "hour",
            _ => "day",
        };
        let series = sqlx::query_as::<_, (NaiveDateTime, String, i64)>(concat!(
            "SELECT date_trunc($4, created_at AT TIME ZONE $5) AS bucket, state, COUNT(*) \
             FROM phone_calls ",
            pg_where!(),
            " GROUP BY bucket, state"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .bind(unit)
        .bind(query.tz.name())
        .fetch_all(pool);
        let (counts, targets, talk, series) =
            futures::try_join!(counts, targets, talk, series).map_err(db)?;

        let mut report = ResultsReport::empty(query);
        add_counts(&mut report, counts)?;
        let talk: BTreeMap<(String, String), (Option<i64>, Option<i64>)> = talk
            .into_iter()
            .map(|(name, phone, median, p90)| ((name, phone), (median, p90)))
            .collect();
        let mut rows = Vec::with_capacity(targets.len());
        for r in targets {
            let key = (r.target_name.clone(), r.to_phone_number.clone());
            let mut t = target(r)?;
            if let Some((median, p90)) = talk.get(&key) {
                t.median_talk_secs = secs("phone_calls.connected_secs", *median)?;
                t.p90_talk_secs = secs("phone_calls.connected_secs", *p90)?;
            }
            rows.push(t);
        }
        report.set_targets(rows);
        for (bucket, s, n) in series {
            report.add_to_series(bucket, state(&s)?, count("count", n)?);
        }
        Ok(report)
    }

    async fn list_calls(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.list_widget_calls(widget_id, from, to, after, limit)
            .await
    }
}

// ----------------------------------------------------------------- SQLite

macro_rules! sqlite_where {
    () => {
        " WHERE widget_id = ?1 AND created_at >= ?2 AND created_at < ?3 "
    };
}

#[async_trait]
impl CampaignResults for SqliteCallStore {
    async fn report(&self, query: &ResultsQuery) -> Result<ResultsReport, StoreError> {
        let pool = self.pool();
        let (w, from, to) = (
            query.widget_id.get(),
            ts_text(ceil_micros(query.from)),
            ts_text(ceil_micros(query.to)),
        );
        let counts = sqlx::query_as::<_, CountRow>(concat!(
            "SELECT state, funnel_stage, COUNT(*) AS calls FROM phone_calls ",
            sqlite_where!(),
            " \
             GROUP BY state, funnel_stage"
        ))
        .bind(w)
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let targets = sqlx::query_as::<_, TargetRow>(concat!(
            "SELECT target_name, to_phone_number, COUNT(*) AS calls, \
             SUM(funnel_stage >= 5) AS connected, SUM(state = 'completed') AS completed, \
             COALESCE(SUM(connected_secs), 0) AS talk_secs \
             FROM phone_calls ",
            sqlite_where!(),
            " GROUP BY target_name, to_phone_number"
        ))
        .bind(w)
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let durations = sqlx::query_as::<_, (String, String, i64)>(concat!(
            "SELECT target_name, to_phone_number, connected_secs FROM phone_calls \
             ",
            sqlite_where!(),
            " AND connected_secs IS NOT NULL \
             ORDER BY target_name, to_phone_number, connected_secs"
        ))
        .bind(w)
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        // created_at is `YYYY-MM-DDTHH:MM:SS.ffffffZ`: the hour's text and
        // the quarter of the hour.
        let quarters = sqlx::query_as::<_, (String, i64, String, i64)>(concat!(
            "SELECT substr(created_at, 1, 13) AS hour, \
             CAST(substr(created_at, 15, 2) AS INTEGER) / 15 AS quarter, state, COUNT(*) \
             FROM phone_calls ",
            sqlite_where!(),
            " GROUP BY hour, quarter, state"
        ))
        .bind(w)
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await
        .map_err(db)?;

        let mut report = ResultsReport::empty(query);
        add_counts(&mut report, counts)?;
        let mut by_target: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
        for (name, phone, d) in durations {
            if let Some(d) = secs("phone_calls.connected_secs", Some(d))? {
                by_target.entry((name, phone)).or_default().push(d);
            }
        }
        let mut rows = Vec::with_capacity(targets.len());
        for r in targets {
            let key = (r.target_name.clone(), r.to_phone_number.clone());
            let mut t = target(r)?;
            if let Some(sorted) = by_target.get(&key) {
                t.set_talk_times(sorted);
            }
            rows.push(t);
        }
        report.set_targets(rows);
        for (hour, quarter, s, n) in quarters {
            let start = NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
                .map_err(|e| corrupt("phone_calls.created_at", e))?
                .and_utc()
                + TimeDelta::minutes(quarter * 15);
            report.add_to_series(
                query.interval.bucket(start, query.tz),
                state(&s)?,
                count("count", n)?,
            );
        }
        Ok(report)
    }

    async fn list_calls(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.list_widget_calls(widget_id, from, to, after, limit)
            .await
    }
}
