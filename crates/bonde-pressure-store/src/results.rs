//! [`CampaignResults`] on PostgreSQL and SQLite, and the backfill of the
//! `funnel_stage` projection.
//!
//! Both stores answer a report from an hourly rollup of settled calls
//! (tables `results_hourly`, `results_target_hourly`, `results_talk_hourly`,
//! kept by triggers: migration `20261201000006_results_rollup.sql`) for the
//! whole UTC hours of the period, plus grouped queries over the rows for the
//! rest: the partial hours at the edges, the unsettled calls, and every call
//! when the time zone's offset is not a whole number of hours
//! ([`rollup_hours`]). PostgreSQL runs its queries concurrently on pooled
//! connections. Page statuses are mapped from states in Rust
//! ([`DetailedState::ui_status`]), so the SQL never repeats that table.
//!
//! Percentiles are nearest-rank over a histogram of talk times (rollup and
//! rows merged in Rust: [`TargetResults::set_talk_time_counts`]).
//!
//! Series buckets of the rows: PostgreSQL truncates `created_at AT TIME ZONE
//! tz` (its own time-zone database); SQLite groups by UTC quarter-hour and
//! Rust maps each quarter to its local bucket with `chrono-tz` (every
//! time-zone offset in use is a whole number of quarter-hours, so a quarter
//! never straddles two local hours). Rollup hours are mapped in Rust.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bonde_pressure_core::call::{CallFacts, derive_state};
use bonde_pressure_core::ports::{StoreError, UnreadableCall};
use bonde_pressure_core::results::{
    CallCursor, CampaignResults, FunnelStage, Interval, ResultsQuery, ResultsReport, TargetResults,
};
use bonde_pressure_core::{Call, DetailedState, WidgetId};
use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
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

/// A report being summed from rollup groups and raw rows.
struct Acc {
    query: ResultsQuery,
    report: ResultsReport,
    targets: BTreeMap<(String, String), TargetResults>,
    talk: BTreeMap<(String, String), BTreeMap<u32, u64>>,
}

impl Acc {
    fn new(query: &ResultsQuery) -> Self {
        Self {
            query: query.clone(),
            report: ResultsReport::empty(query),
            targets: BTreeMap::new(),
            talk: BTreeMap::new(),
        }
    }

    fn counts(&mut self, rows: Vec<CountRow>) -> Result<(), StoreError> {
        add_counts(&mut self.report, rows)
    }

    /// Rollup groups `(UTC hour, state, stage, calls)`: totals, funnel and
    /// series (each hour lies in one bucket: [`rollup_hours`]).
    fn hours(&mut self, rows: Vec<(DateTime<Utc>, String, i16, i64)>) -> Result<(), StoreError> {
        for (hour, s, stage_n, n) in rows {
            let (s, n) = (state(&s)?, count("count", n)?);
            self.report.add_counts(s, stage(Some(stage_n))?, n);
            self.report
                .add_to_series(self.query.interval.bucket(hour, self.query.tz), s, n);
        }
        Ok(())
    }

    fn series(&mut self, start: NaiveDateTime, s: &str, n: i64) -> Result<(), StoreError> {
        self.report
            .add_to_series(start, state(s)?, count("count", n)?);
        Ok(())
    }

    fn targets(&mut self, rows: Vec<TargetRow>) -> Result<(), StoreError> {
        for r in rows {
            let t = self
                .targets
                .entry((r.target_name.clone(), r.to_phone_number.clone()))
                .or_insert_with(|| TargetResults::new(r.target_name, r.to_phone_number));
            t.calls += count("count", r.calls)?;
            t.connected += count("count", r.connected)?;
            t.completed += count("count", r.completed)?;
            t.talk_secs += count("phone_calls.connected_secs", r.talk_secs)?;
        }
        Ok(())
    }

    /// Talk-time histogram rows `(target name, number, seconds, calls)`.
    fn talk(&mut self, rows: Vec<(String, String, i64, i64)>) -> Result<(), StoreError> {
        for (name, phone, secs_n, n) in rows {
            let Some(d) = secs("phone_calls.connected_secs", Some(secs_n))? else {
                continue;
            };
            *self
                .talk
                .entry((name, phone))
                .or_default()
                .entry(d)
                .or_default() += count("count", n)?;
        }
        Ok(())
    }

    fn finish(mut self) -> ResultsReport {
        let mut rows = Vec::with_capacity(self.targets.len());
        for (key, mut t) in self.targets {
            if let Some(h) = self.talk.get(&key) {
                let counts: Vec<(u32, u64)> = h.iter().map(|(d, n)| (*d, *n)).collect();
                t.set_talk_time_counts(&counts);
            }
            rows.push(t);
        }
        self.report.set_targets(rows);
        self.report
    }
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(t)
}

/// The whole UTC hours `[start, end)` inside the query's period that the
/// rollup answers for, or `None` when there are none or when some UTC
/// hour of them does not fall in a single bucket of the query's time zone
/// (an offset that is not a whole number of hours, as Asia/Kolkata's, or an
/// offset change inside the hour): then the report reads the rows only.
/// Offsets that are whole hours, DST changes included, keep every UTC hour
/// inside one local hour and one local day.
pub(crate) fn rollup_hours(query: &ResultsQuery) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (from, to) = (ceil_micros(query.from), ceil_micros(query.to));
    let start = if floor_hour(from) == from {
        from
    } else {
        floor_hour(from) + TimeDelta::hours(1)
    };
    let end = floor_hour(to);
    if start >= end {
        return None;
    }
    let offset = |t: DateTime<Utc>| {
        query
            .tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    };
    let mut h = start;
    while h < end {
        let (a, b) = (
            offset(h),
            offset(h + TimeDelta::hours(1) - TimeDelta::microseconds(1)),
        );
        if a != b || a % 3600 != 0 {
            return None;
        }
        h += TimeDelta::hours(1);
    }
    Some((start, end))
}

// ------------------------------------------------------------- PostgreSQL

/// The rows a report reads from `phone_calls` ($1 widget, period [$2, $3),
/// rollup hours [$4, $5)): every call outside the rollup's hours, and the
/// unsettled calls inside them. Three index range scans (the last one on
/// the partial index of unsettled calls).
macro_rules! pg_raw {
    () => {
        " FROM (SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = $1 AND created_at >= $2 AND created_at < $4 \
           UNION ALL SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = $1 AND created_at >= $5 AND created_at < $3 \
           UNION ALL SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = $1 AND created_at >= $4 AND created_at < $5 AND NOT settled \
           ) AS p "
    };
}

macro_rules! pg_rollup_where {
    () => {
        " WHERE widget_id = $1 AND hour >= $2 AND hour < $3 "
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
        let rollup = rollup_hours(query);
        let (a, b) = rollup.unwrap_or((to, to));
        let counts = sqlx::query_as::<_, CountRow>(concat!(
            "SELECT state, funnel_stage, COUNT(*) AS calls ",
            pg_raw!(),
            " GROUP BY state, funnel_stage"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .bind(a)
        .bind(b)
        .fetch_all(pool);
        let targets = sqlx::query_as::<_, TargetRow>(concat!(
            "SELECT target_name, to_phone_number, COUNT(*) AS calls, \
                 COUNT(*) FILTER (WHERE funnel_stage >= 5) AS connected, \
                 COUNT(*) FILTER (WHERE state = 'completed') AS completed, \
                 COALESCE(SUM(connected_secs), 0)::bigint AS talk_secs ",
            pg_raw!(),
            " GROUP BY target_name, to_phone_number"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .bind(a)
        .bind(b)
        .fetch_all(pool);
        let talk = sqlx::query_as::<_, (String, String, i64, i64)>(concat!(
            "SELECT target_name, to_phone_number, connected_secs, COUNT(*) ",
            pg_raw!(),
            " WHERE connected_secs IS NOT NULL GROUP BY 1, 2, 3"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .bind(a)
        .bind(b)
        .fetch_all(pool);
        let unit = match query.interval {
            Interval::Hour => "hour",
            _ => "day",
        };
        let series = sqlx::query_as::<_, (NaiveDateTime, String, i64)>(concat!(
            "SELECT date_trunc($6, created_at AT TIME ZONE $7) AS bucket, state, COUNT(*) ",
            pg_raw!(),
            " GROUP BY bucket, state"
        ))
        .bind(w)
        .bind(from)
        .bind(to)
        .bind(a)
        .bind(b)
        .bind(unit)
        .bind(query.tz.name())
        .fetch_all(pool);
        let raw = async { futures::try_join!(counts, targets, talk, series) };
        let rolled = async {
            if rollup.is_none() {
                return Ok((Vec::new(), Vec::new(), Vec::new()));
            }
            let hours = sqlx::query_as::<_, (DateTime<Utc>, String, i16, i64)>(concat!(
                "SELECT hour, state, funnel_stage, calls FROM results_hourly",
                pg_rollup_where!()
            ))
            .bind(w)
            .bind(a)
            .bind(b)
            .fetch_all(pool);
            let targets = sqlx::query_as::<_, TargetRow>(concat!(
                "SELECT target_name, to_phone_number, SUM(calls)::bigint AS calls, \
                     SUM(connected)::bigint AS connected, SUM(completed)::bigint AS completed, \
                     SUM(talk_secs)::bigint AS talk_secs FROM results_target_hourly",
                pg_rollup_where!(),
                " GROUP BY target_name, to_phone_number"
            ))
            .bind(w)
            .bind(a)
            .bind(b)
            .fetch_all(pool);
            let talk = sqlx::query_as::<_, (String, String, i64, i64)>(concat!(
                "SELECT target_name, to_phone_number, talk_secs, SUM(calls)::bigint \
                 FROM results_talk_hourly",
                pg_rollup_where!(),
                " GROUP BY 1, 2, 3"
            ))
            .bind(w)
            .bind(a)
            .bind(b)
            .fetch_all(pool);
            futures::try_join!(hours, targets, talk)
        };
        let ((counts, targets, talk, series), (r_hours, r_targets, r_talk)) =
            futures::try_join!(raw, rolled).map_err(db)?;

        let mut acc = Acc::new(query);
        acc.counts(counts)?;
        acc.targets(targets)?;
        acc.talk(talk)?;
        for (bucket, s, n) in series {
            acc.series(bucket, &s, n)?;
        }
        acc.hours(r_hours)?;
        acc.targets(r_targets)?;
        acc.talk(r_talk)?;
        Ok(acc.finish())
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

    async fn list_call_rows(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        self.list_widget_call_rows(widget_id, from, to, after, limit)
            .await
    }
}

// ----------------------------------------------------------------- SQLite

/// [`pg_raw!`] for SQLite ($1 widget, period [$2, $3), rollup hours [$4,
/// $5), as timestamp text).
macro_rules! sqlite_raw {
    () => {
        " FROM (SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = ?1 AND created_at >= ?2 AND created_at < ?4 \
           UNION ALL SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = ?1 AND created_at >= ?5 AND created_at < ?3 \
           UNION ALL SELECT state, funnel_stage, target_name, to_phone_number, connected_secs, \
             created_at FROM phone_calls \
             WHERE widget_id = ?1 AND created_at >= ?4 AND created_at < ?5 AND settled = 0 \
           ) AS p "
    };
}

/// The rollup's `hour` text of a whole UTC hour.
fn hour_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H").to_string()
}

fn parse_hour(column: &'static str, hour: &str) -> Result<DateTime<Utc>, StoreError> {
    Ok(
        NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
            .map_err(|e| corrupt(column, e))?
            .and_utc(),
    )
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
        let rollup = rollup_hours(query);
        let (a, b) = match rollup {
            Some((a, b)) => (ts_text(a), ts_text(b)),
            None => (to.clone(), to.clone()),
        };
        macro_rules! bind5 {
            ($q:expr) => {
                sqlx::query_as($q)
                    .bind(w)
                    .bind(&from)
                    .bind(&to)
                    .bind(&a)
                    .bind(&b)
            };
        }
        let mut acc = Acc::new(query);
        let counts: Vec<CountRow> = bind5!(concat!(
            "SELECT state, funnel_stage, COUNT(*) AS calls ",
            sqlite_raw!(),
            " GROUP BY state, funnel_stage"
        ))
        .fetch_all(pool)
        .await
        .map_err(db)?;
        acc.counts(counts)?;
        let targets: Vec<TargetRow> = bind5!(concat!(
            "SELECT target_name, to_phone_number, COUNT(*) AS calls, \
             COALESCE(SUM(funnel_stage >= 5), 0) AS connected, \
             SUM(state = 'completed') AS completed, \
             COALESCE(SUM(connected_secs), 0) AS talk_secs ",
            sqlite_raw!(),
            " GROUP BY target_name, to_phone_number"
        ))
        .fetch_all(pool)
        .await
        .map_err(db)?;
        acc.targets(targets)?;
        let talk: Vec<(String, String, i64, i64)> = bind5!(concat!(
            "SELECT target_name, to_phone_number, connected_secs, COUNT(*) ",
            sqlite_raw!(),
            " WHERE connected_secs IS NOT NULL GROUP BY 1, 2, 3"
        ))
        .fetch_all(pool)
        .await
        .map_err(db)?;
        acc.talk(talk)?;
        // created_at is `YYYY-MM-DDTHH:MM:SS.ffffffZ`: the hour's text and
        // the quarter of the hour.
        let quarters: Vec<(String, i64, String, i64)> = bind5!(concat!(
            "SELECT substr(created_at, 1, 13) AS hour, \
             CAST(substr(created_at, 15, 2) AS INTEGER) / 15 AS quarter, state, COUNT(*) ",
            sqlite_raw!(),
            " GROUP BY hour, quarter, state"
        ))
        .fetch_all(pool)
        .await
        .map_err(db)?;
        for (hour, quarter, s, n) in quarters {
            let start =
                parse_hour("phone_calls.created_at", &hour)? + TimeDelta::minutes(quarter * 15);
            acc.series(query.interval.bucket(start, query.tz), &s, n)?;
        }

        if let Some((a, b)) = rollup {
            let (a, b) = (hour_text(a), hour_text(b));
            let hours: Vec<(String, String, i16, i64)> = sqlx::query_as(
                "SELECT hour, state, funnel_stage, calls FROM results_hourly \
                 WHERE widget_id = ?1 AND hour >= ?2 AND hour < ?3",
            )
            .bind(w)
            .bind(&a)
            .bind(&b)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            let hours = hours
                .into_iter()
                .map(|(h, s, st, n)| Ok((parse_hour("results_hourly.hour", &h)?, s, st, n)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            acc.hours(hours)?;
            let targets: Vec<TargetRow> = sqlx::query_as(
                "SELECT target_name, to_phone_number, SUM(calls) AS calls, \
                 SUM(connected) AS connected, SUM(completed) AS completed, \
                 SUM(talk_secs) AS talk_secs FROM results_target_hourly \
                 WHERE widget_id = ?1 AND hour >= ?2 AND hour < ?3 \
                 GROUP BY target_name, to_phone_number",
            )
            .bind(w)
            .bind(&a)
            .bind(&b)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            acc.targets(targets)?;
            let talk: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT target_name, to_phone_number, talk_secs, SUM(calls) \
                 FROM results_talk_hourly WHERE widget_id = ?1 AND hour >= ?2 AND hour < ?3 \
                 GROUP BY 1, 2, 3",
            )
            .bind(w)
            .bind(&a)
            .bind(&b)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            acc.talk(talk)?;
        }
        Ok(acc.finish())
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

    async fn list_call_rows(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        self.list_widget_call_rows(widget_id, from, to, after, limit)
            .await
    }
}
