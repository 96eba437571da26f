//! [`PersonalDataStore`] for both SQL stores: the retention pass, erasure
//! of one person, the audit log.
//!
//! Erasure is done in SQL, on the columns and the facts JSON, without
//! decoding the call (a row that would not decode is still erased). It
//! writes what core's [`bonde_pressure_core::Call::erase`] gives: the
//! placeholders of [`Activist::erased`], `facts.erased_at`, redacted leg
//! error messages (facts and `twilio_calls`), a caller id that was the
//! activist's number replaced, `version + 1`; the conformance suite checks
//! that a store's erased call equals core's.

use async_trait::async_trait;
use bonde_pressure_core::call::ERASED_MESSAGE;
use bonde_pressure_core::domain::ERASED_E164;
use bonde_pressure_core::ports::StoreError;
use bonde_pressure_core::privacy::LATE_PAYLOAD_WINDOW;
use bonde_pressure_core::{
    Activist, ActorId, AuditEntry, CallId, ErasureReport, PersonKey, PersonalDataStore,
    RetentionPass, RetentionReport,
};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::codec::{ceil_micros, corrupt, db, parse_ts, truncate_micros, ts_text};
use crate::sqlite::{BEGIN_WRITE, finish};
use crate::{PgCallStore, SqliteCallStore};

/// The PostgreSQL advisory lock key of the retention pass (taken with
/// `pg_try_advisory_xact_lock`, so it is released with the transaction).
pub const RETENTION_LOCK_KEY: i64 = 0x6270_7265_7465_6e74; // "bpretent"

/// The placeholders written over an erased activist, from core.
struct Placeholders {
    name: String,
    email: String,
    phone: &'static str,
    message: &'static str,
    erased_at_json: String,
}

impl Placeholders {
    fn new(now: DateTime<Utc>) -> Result<Self, StoreError> {
        let a = Activist::erased();
        Ok(Self {
            name: a.name.as_str().to_owned(),
            email: a.email.as_str().to_owned(),
            phone: ERASED_E164,
            message: ERASED_MESSAGE,
            erased_at_json: serde_json::to_string(&now).map_err(StoreError::backend)?,
        })
    }
}

// ------------------------------------------------------------- PostgreSQL

/// Erases the settled, not yet erased calls among `ids`; returns
/// `(calls erased, payloads deleted)`.
async fn pg_erase_ids(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let p = Placeholders::new(now)?;
    let erased: Vec<Uuid> = sqlx::query_scalar(
        "WITH f AS ( \
            SELECT id, jsonb_set(facts, '{erased_at}', $5::jsonb) AS facts \
            FROM phone_calls WHERE id = ANY($1) \
         ), g AS ( \
            SELECT id, CASE WHEN jsonb_typeof(facts #> '{activist,error}') = 'object' \
                THEN jsonb_set(facts, '{activist,error,message}', to_jsonb($7::text)) \
                ELSE facts END AS facts FROM f \
         ), h AS ( \
            SELECT id, CASE WHEN jsonb_typeof(facts #> '{target,error}') = 'object' \
                THEN jsonb_set(facts, '{target,error,message}', to_jsonb($7::text)) \
                ELSE facts END AS facts FROM g \
         ) \
         UPDATE phone_calls c SET activist_name = $2, activist_first_name = NULL, \
            activist_last_name = NULL, activist_email = $3, \
            target_caller_id = CASE WHEN c.target_caller_id = c.from_phone_number THEN $4 \
                ELSE c.target_caller_id END, \
            from_phone_number = $4, facts = h.facts, erased_at = $6, \
            erasure_requested_at = NULL, version = c.version + 1 \
         FROM h WHERE c.id = h.id AND c.erased_at IS NULL AND c.settled \
         RETURNING c.id",
    )
    .bind(ids)
    .bind(&p.name)
    .bind(&p.email)
    .bind(p.phone)
    .bind(&p.erased_at_json)
    .bind(now)
    .bind(p.message)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    if erased.is_empty() {
        return Ok((0, 0));
    }
    sqlx::query(
        "UPDATE twilio_calls t SET \
            to_phone_number = CASE WHEN t.leg = 'activist' THEN $2 ELSE t.to_phone_number END, \
            from_phone_number = CASE WHEN t.leg = 'target' THEN c.target_caller_id \
                ELSE t.from_phone_number END, \
            error_message = CASE WHEN t.error_message IS NULL THEN NULL ELSE $3 END \
         FROM phone_calls c WHERE c.id = t.phone_call_id AND c.id = ANY($1)",
    )
    .bind(&erased)
    .bind(p.phone)
    .bind(p.message)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    let deleted = sqlx::query("DELETE FROM twilio_call_events WHERE phone_call_id = ANY($1)")
        .bind(&erased)
        .execute(&mut **tx)
        .await
        .map_err(db)?
        .rows_affected();
    Ok((erased.len() as u64, deleted))
}

#[derive(FromRow)]
struct PgAuditRow {
    at: DateTime<Utc>,
    actor: String,
    action: String,
    call_id: Option<Uuid>,
    detail: Option<String>,
}

#[async_trait]
impl PersonalDataStore for PgCallStore {
    async fn retention_pass(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        let now = truncate_micros(now);
        let cutoff = ceil_micros(cutoff);
        let limit = i64::from(limit);
        let mut tx = self.pool().begin().await.map_err(db)?;
        // Transaction-level: released by COMMIT/ROLLBACK, never left on a
        // pooled connection.
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if !mine {
            tx.rollback().await.map_err(db)?;
            return Ok(RetentionPass::Skipped);
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM ( \
                (SELECT id, created_at FROM phone_calls \
                 WHERE erased_at IS NULL AND settled AND created_at < $1 \
                 ORDER BY created_at, id LIMIT $2) \
                UNION \
                (SELECT id, created_at FROM phone_calls \
                 WHERE erasure_requested_at IS NOT NULL AND erased_at IS NULL AND settled \
                 ORDER BY created_at, id LIMIT $2) \
             ) due ORDER BY created_at, id LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let (calls_erased, mut events_deleted) = pg_erase_ids(&mut tx, &ids, now).await?;
        events_deleted += sqlx::query(
            "DELETE FROM twilio_call_events e USING phone_calls c \
             WHERE e.phone_call_id = c.id AND c.erased_at IS NOT NULL AND c.erased_at >= $1",
        )
        .bind(now - LATE_PAYLOAD_WINDOW)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        let old = sqlx::query(
            "DELETE FROM twilio_call_events WHERE id IN ( \
                SELECT id FROM twilio_call_events WHERE received_at < $1 \
                ORDER BY received_at, id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        tx.commit().await.map_err(db)?;
        let more = ids.len() as i64 == limit || old as i64 == limit;
        Ok(RetentionPass::Ran(RetentionReport::new(
            calls_erased,
            events_deleted + old,
            more,
        )))
    }

    async fn erase_person(
        &self,
        who: &PersonKey,
        now: DateTime<Utc>,
    ) -> Result<ErasureReport, StoreError> {
        let now = truncate_micros(now);
        let mut tx = self.pool().begin().await.map_err(db)?;
        let select = match who {
            PersonKey::Phone(_) => {
                "SELECT id, settled FROM phone_calls \
                 WHERE from_phone_number = $1 AND erased_at IS NULL ORDER BY id FOR UPDATE"
            }
            _ => {
                "SELECT id, settled FROM phone_calls \
                 WHERE lower(activist_email) = lower($1) AND erased_at IS NULL \
                 ORDER BY id FOR UPDATE"
            }
        };
        let key = match who {
            PersonKey::Phone(p) => p.as_e164().to_owned(),
            PersonKey::Email(e) => e.as_str().to_owned(),
            _ => return Err(StoreError::backend(corrupt_key())),
        };
        let rows: Vec<(Uuid, bool)> = sqlx::query_as(select)
            .bind(&key)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let settled: Vec<Uuid> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
        let pending: Vec<Uuid> = rows.iter().filter(|r| !r.1).map(|r| r.0).collect();
        let (calls_erased, mut events_deleted) = pg_erase_ids(&mut tx, &settled, now).await?;
        sqlx::query(
            "UPDATE phone_calls SET erasure_requested_at = COALESCE(erasure_requested_at, $2) \
             WHERE id = ANY($1)",
        )
        .bind(&pending)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        events_deleted += sqlx::query(
            "DELETE FROM twilio_call_events e \
             WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) n WHERE strpos(lower(e.payload), n) > 0) \
             AND NOT EXISTS (SELECT 1 FROM phone_calls c \
                WHERE c.id = e.phone_call_id AND NOT c.settled)",
        )
        .bind(who.payload_needles())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(ErasureReport::new(
            calls_erased,
            pending.len() as u64,
            events_deleted,
        ))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, call_id, detail) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(truncate_micros(entry.at))
        .bind(entry.actor.as_str())
        .bind(&entry.action)
        .bind(entry.call_id.map(|c| c.as_uuid()))
        .bind(&entry.detail)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit_entries(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query_as::<_, PgAuditRow>(
            "SELECT at, actor, action, call_id, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                AuditEntry::new(
                    r.at,
                    ActorId::new(r.actor),
                    r.action,
                    r.call_id.map(CallId::from),
                    r.detail,
                )
            })
            .collect())
    }
}

/// A [`PersonKey`] variant this store does not know (the enum is
/// non-exhaustive).
#[derive(Debug, thiserror::Error)]
#[error("unsupported erasure key")]
struct UnsupportedKey;

fn corrupt_key() -> UnsupportedKey {
    UnsupportedKey
}

// ----------------------------------------------------------------- SQLite

fn ids_json(ids: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(ids).map_err(StoreError::backend)
}

/// SQLite's [`pg_erase_ids`].
async fn sqlite_erase_ids(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let p = Placeholders::new(now)?;
    let erased: Vec<String> = sqlx::query_scalar(
        "UPDATE phone_calls SET activist_name = ?2, activist_first_name = NULL, \
            activist_last_name = NULL, activist_email = ?3, \
            target_caller_id = CASE WHEN target_caller_id = from_phone_number THEN ?4 \
                ELSE target_caller_id END, \
            from_phone_number = ?4, \
            facts = json_replace(json_set(facts, '$.erased_at', json(?5)), \
                '$.activist.error.message', ?7, '$.target.error.message', ?7), \
            erased_at = ?6, erasure_requested_at = NULL, version = version + 1 \
         WHERE id IN (SELECT value FROM json_each(?1)) AND erased_at IS NULL AND settled = 1 \
         RETURNING id",
    )
    .bind(ids_json(ids)?)
    .bind(&p.name)
    .bind(&p.email)
    .bind(p.phone)
    .bind(&p.erased_at_json)
    .bind(ts_text(now))
    .bind(p.message)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    if erased.is_empty() {
        return Ok((0, 0));
    }
    let erased_json = ids_json(&erased)?;
    sqlx::query(
        "UPDATE twilio_calls SET \
            to_phone_number = CASE WHEN leg = 'activist' THEN ?2 ELSE to_phone_number END, \
            from_phone_number = CASE WHEN leg = 'target' THEN \
                (SELECT c.target_caller_id FROM phone_calls c WHERE c.id = phone_call_id) \
                ELSE from_phone_number END, \
            error_message = CASE WHEN error_message IS NULL THEN NULL ELSE ?3 END \
         WHERE phone_call_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&erased_json)
    .bind(p.phone)
    .bind(p.message)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    let deleted = sqlx::query(
        "DELETE FROM twilio_call_events WHERE phone_call_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&erased_json)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok((erased.len() as u64, deleted))
}

#[derive(FromRow)]
struct SqliteAuditRow {
    at: String,
    actor: String,
    action: String,
    call_id: Option<String>,
    detail: Option<String>,
}

/// The work of a SQLite retention pass, inside its transaction.
async fn sqlite_pass(
    tx: &mut Transaction<'_, Sqlite>,
    cutoff: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<RetentionReport, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM ( \
            SELECT * FROM (SELECT id, created_at FROM phone_calls \
                INDEXED BY phone_calls_retention_idx \
                WHERE erased_at IS NULL AND settled = 1 AND created_at < ?1 \
                ORDER BY created_at, id LIMIT ?2) \
            UNION \
            SELECT * FROM (SELECT id, created_at FROM phone_calls \
                INDEXED BY phone_calls_erasure_requested_idx \
                WHERE erasure_requested_at IS NOT NULL AND erased_at IS NULL AND settled = 1 \
                ORDER BY created_at, id LIMIT ?2) \
         ) ORDER BY created_at, id LIMIT ?2",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    let (calls_erased, mut events_deleted) = sqlite_erase_ids(tx, &ids, now).await?;
    events_deleted += sqlx::query(
        "DELETE FROM twilio_call_events WHERE phone_call_id IN ( \
            SELECT id FROM phone_calls WHERE erased_at IS NOT NULL AND erased_at >= ?1)",
    )
    .bind(ts_text(now - LATE_PAYLOAD_WINDOW))
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    let old = sqlx::query(
        "DELETE FROM twilio_call_events WHERE id IN ( \
            SELECT id FROM twilio_call_events WHERE received_at < ?1 \
            ORDER BY received_at, id LIMIT ?2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    let more = ids.len() as i64 == limit || old as i64 == limit;
    Ok(RetentionReport::new(
        calls_erased,
        events_deleted + old,
        more,
    ))
}

/// The work of a SQLite erasure, inside its transaction.
async fn sqlite_erase_person(
    tx: &mut Transaction<'_, Sqlite>,
    who: &PersonKey,
    now: DateTime<Utc>,
) -> Result<ErasureReport, StoreError> {
    let (select, key) = match who {
        PersonKey::Phone(p) => (
            "SELECT id, settled FROM phone_calls \
             WHERE from_phone_number = ?1 AND erased_at IS NULL ORDER BY id",
            p.as_e164().to_owned(),
        ),
        PersonKey::Email(e) => (
            "SELECT id, settled FROM phone_calls \
             WHERE lower(activist_email) = lower(?1) AND erased_at IS NULL ORDER BY id",
            e.as_str().to_owned(),
        ),
        _ => return Err(StoreError::backend(corrupt_key())),
    };
    let rows: Vec<(String, bool)> = sqlx::query_as(select)
        .bind(&key)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
    let settled: Vec<String> = rows.iter().filter(|r| r.1).map(|r| r.0.clone()).collect();
    let pending: Vec<String> = rows.iter().filter(|r| !r.1).map(|r| r.0.clone()).collect();
    let (calls_erased, mut events_deleted) = sqlite_erase_ids(tx, &settled, now).await?;
    sqlx::query(
        "UPDATE phone_calls SET erasure_requested_at = COALESCE(erasure_requested_at, ?2) \
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids_json(&pending)?)
    .bind(ts_text(now))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    events_deleted += sqlx::query(
        "DELETE FROM twilio_call_events \
         WHERE EXISTS (SELECT 1 FROM json_each(?1) n WHERE instr(lower(payload), n.value) > 0) \
         AND NOT EXISTS (SELECT 1 FROM phone_calls c \
            WHERE c.id = twilio_call_events.phone_call_id AND c.settled = 0)",
    )
    .bind(serde_json::to_string(&who.payload_needles()).map_err(StoreError::backend)?)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(ErasureReport::new(
        calls_erased,
        pending.len() as u64,
        events_deleted,
    ))
}

#[async_trait]
impl PersonalDataStore for SqliteCallStore {
    /// SQLite is one process: passes are serialised by the store's writer
    /// lock and never skipped.
    async fn retention_pass(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        let now = truncate_micros(now);
        let cutoff = ts_text(ceil_micros(cutoff));
        let _writer = self.writer().lock().await;
        let mut tx = self.pool().begin_with(BEGIN_WRITE).await.map_err(db)?;
        let result = sqlite_pass(&mut tx, &cutoff, now, i64::from(limit)).await;
        finish(tx, result, db).await.map(RetentionPass::Ran)
    }

    async fn erase_person(
        &self,
        who: &PersonKey,
        now: DateTime<Utc>,
    ) -> Result<ErasureReport, StoreError> {
        let now = truncate_micros(now);
        let _writer = self.writer().lock().await;
        let mut tx = self.pool().begin_with(BEGIN_WRITE).await.map_err(db)?;
        let result = sqlite_erase_person(&mut tx, who, now).await;
        finish(tx, result, db).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let _writer = self.writer().lock().await;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, call_id, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(ts_text(entry.at))
        .bind(entry.actor.as_str())
        .bind(&entry.action)
        .bind(entry.call_id.map(|c| c.as_uuid().hyphenated().to_string()))
        .bind(&entry.detail)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit_entries(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query_as::<_, SqliteAuditRow>(
            "SELECT at, actor, action, call_id, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                let call_id = r
                    .call_id
                    .as_deref()
                    .map(|s| {
                        Uuid::parse_str(s)
                            .map(CallId::from)
                            .map_err(|e| corrupt("audit_log.call_id", e))
                    })
                    .transpose()?;
                Ok(AuditEntry::new(
                    parse_ts("audit_log.at", &r.at)?,
                    ActorId::new(r.actor),
                    r.action,
                    call_id,
                    r.detail,
                ))
            })
            .collect()
    }
}
