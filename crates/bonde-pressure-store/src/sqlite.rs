//! [`SqliteCallStore`]: the embedded default [`CallStore`] on SQLite.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use bonde_pressure_core::ports::{CallStore, RawEvent, StoreError, StoredEvent, UnreadableCall};
use bonde_pressure_core::{Call, CallId, WidgetId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, Row, Sqlite, Transaction};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::codec::{
    CallParts, CallRecord, EventParts, ceil_micros, corrupt, db, decode_call_row,
    is_foreign_key_violation, is_unique_violation, leg_records, parse_ts, ts_text, version_to_db,
};
use crate::{
    ConnectError, EventLog, MigrationReport, SqliteDurability, StoreOptions, migration_report,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Write transactions take the write lock up front, so two writers never
/// deadlock upgrading a read snapshot; waiting is bounded by the busy timeout.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// `commit`'s versioned update: ?1 id, ?2 expected version, ?3–?21 the columns.
const UPDATE_CALL_SQL: &str = "UPDATE phone_calls SET widget_id = ?3, activist_name = ?4, \
    activist_first_name = ?5, activist_last_name = ?6, activist_email = ?7, \
    from_phone_number = ?8, from_call_sid = ?9, to_phone_number = ?10, to_call_sid = ?11, \
    target_name = ?12, target_caller_id = ?13, conference_sid = ?14, state = ?15, \
    settled = ?16, connected_secs = ?17, facts = ?18, version = ?19, created_at = ?20, \
    updated_at = ?21, funnel_stage = ?22 WHERE id = ?1 AND version = ?2";

/// `SQLITE_BUSY` and `SQLITE_LOCKED` (primary result codes).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// `true` for an extended result code whose primary code is `SQLITE_BUSY`
/// or `SQLITE_LOCKED`: the write lock was not obtained (within the busy
/// timeout) and nothing was written.
fn is_busy_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// `true` when `e` is SQLite's "database is locked" / "database table is
/// locked".
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| is_busy_code(&c))
}

/// A driver error in `commit`. Lock contention with another process
/// surfaces only after the busy timeout was waited out, so it is a backend
/// error ("database is locked"), not a [`StoreError::Conflict`]: a conflict
/// is retried by core's load-apply-commit loop up to 100 times, and each
/// retry would wait the whole busy timeout again while the in-process
/// writer queue stands behind it.
fn commit_error(e: sqlx::Error) -> StoreError {
    if is_busy(&e) {
        tracing::warn!(error = %e, "commit could not take the SQLite write lock within the busy timeout");
    }
    db(e)
}

/// Ends a write transaction while the caller still holds the store's writer
/// lock: commits it if `result` is a success, else rolls it back — awaited,
/// so SQLite's write lock is free before the next writer begins (a dropped
/// transaction would only queue its rollback). `commit_error` maps a failed
/// `COMMIT`.
pub(crate) async fn finish<T>(
    tx: Transaction<'_, Sqlite>,
    result: Result<T, StoreError>,
    commit_error: fn(sqlx::Error) -> StoreError,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(commit_error)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback of a failed SQLite write failed");
            }
            Err(e)
        }
    }
}

macro_rules! call_columns {
    () => {
        "id, widget_id, activist_name, activist_first_name, activist_last_name, activist_email, \
         from_phone_number, to_phone_number, target_name, target_caller_id, facts, version, \
         created_at, updated_at"
    };
}

macro_rules! event_columns {
    () => {
        "id, phone_call_id, call_sid, kind, payload, sequence_number, received_at"
    };
}

fn parse_uuid(column: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| corrupt(column, e))
}

fn id_text(id: CallId) -> String {
    id.as_uuid().hyphenated().to_string()
}

#[derive(FromRow)]
struct CallRow {
    id: String,
    widget_id: i64,
    activist_name: String,
    activist_first_name: Option<String>,
    activist_last_name: Option<String>,
    activist_email: String,
    from_phone_number: String,
    to_phone_number: String,
    target_name: String,
    target_caller_id: Option<String>,
    facts: String,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl CallRow {
    /// Decodes one row; a failure is reported for that call only.
    fn decode(row: &SqliteRow) -> Result<Call, UnreadableCall> {
        decode_call_row(
            row,
            |row| {
                row.try_get::<String, _>("id")
                    .ok()
                    .and_then(|s| Uuid::parse_str(&s).ok())
                    .map(CallId::from)
            },
            |row| CallRow::from_row(row).map_err(db)?.into_call(),
        )
    }

    fn into_call(self) -> Result<Call, StoreError> {
        CallParts {
            id: parse_uuid("phone_calls.id", &self.id)?,
            widget_id: self.widget_id,
            activist_name: self.activist_name,
            activist_first_name: self.activist_first_name,
            activist_last_name: self.activist_last_name,
            activist_email: self.activist_email,
            from_phone_number: self.from_phone_number,
            to_phone_number: self.to_phone_number,
            target_name: self.target_name,
            target_caller_id: self.target_caller_id,
            facts: self.facts,
            version: self.version,
            created_at: parse_ts("phone_calls.created_at", &self.created_at)?,
            updated_at: parse_ts("phone_calls.updated_at", &self.updated_at)?,
        }
        .into_call()
    }
}

#[derive(FromRow)]
struct EventRow {
    id: i64,
    phone_call_id: Option<String>,
    call_sid: Option<String>,
    kind: String,
    payload: String,
    sequence_number: Option<i64>,
    received_at: String,
}

impl EventRow {
    fn into_event(self) -> Result<StoredEvent, StoreError> {
        Ok(EventParts {
            id: self.id,
            phone_call_id: self
                .phone_call_id
                .as_deref()
                .map(|s| parse_uuid("twilio_call_events.phone_call_id", s))
                .transpose()?,
            call_sid: self.call_sid,
            kind: self.kind,
            payload: self.payload,
            sequence_number: self.sequence_number,
            received_at: parse_ts("twilio_call_events.received_at", &self.received_at)?,
        }
        .into_event())
    }
}

/// A [`CallStore`] in a SQLite database: the embedded default (one process).
///
/// The file is opened in WAL mode (readers never block the writer) with
/// `synchronous = FULL` (or `NORMAL`, see [`SqliteDurability`]), foreign
/// keys on and a busy timeout; write transactions are `BEGIN IMMEDIATE`.
/// Writes through one store (and its clones) are serialised in-process
/// first, so concurrent writers of one process queue on a tokio mutex and
/// never wait out the busy timeout; the timeout only applies to other
/// processes holding the lock. If it expires, every write returns a
/// backend error ("database is locked") after one wait: not a conflict,
/// which core would retry, waiting the timeout again each time. Timestamps are stored as fixed-width
/// UTC text with microsecond precision (sub-microsecond parts are dropped).
#[derive(Debug, Clone)]
pub struct SqliteCallStore {
    pool: SqlitePool,
    /// Held for the whole of every write transaction.
    writer: Arc<Mutex<()>>,
}

impl SqliteCallStore {
    /// Connects to `url` (`sqlite:path`, `sqlite://path`, `sqlite::memory:`),
    /// creating the file if missing, with default [`StoreOptions`], and runs
    /// the pending migrations.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects to `url` with `options`; runs the pending migrations unless
    /// [`StoreOptions::run_migrations`] is off, in which case a database
    /// lacking some of them is refused ([`ConnectError::SchemaBehind`]).
    ///
    /// An in-memory database (`sqlite::memory:` or `mode=memory`) gets a
    /// single connection that is never closed, so the data lives as long as
    /// the store.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Self, ConnectError> {
        Self::connect_unmigrated(url, options)
            .await?
            .migrated(options)
            .await
    }

    /// Connects to `url` with `options`: no migration, no schema check.
    pub(crate) async fn connect_unmigrated(
        url: &str,
        options: &StoreOptions,
    ) -> Result<Self, ConnectError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect = SqliteConnectOptions::from_str(url).map_err(ConnectError::invalid_url)?;
        Self::open_with_options(connect, in_memory, options).await
    }

    /// Runs the pending migrations, or with migrations off checks that
    /// none is pending.
    async fn migrated(self, options: &StoreOptions) -> Result<Self, ConnectError> {
        if options.run_migrations {
            self.migrate().await?;
        } else {
            crate::check_schema(&MIGRATOR, &self.pool).await?;
        }
        Ok(self)
    }

    /// Opens (creating if missing) the database file at `path`, with default
    /// [`StoreOptions`], and runs the pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ConnectError> {
        Self::open_with(path, &StoreOptions::default()).await
    }

    /// [`Self::open`] with `options`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: &StoreOptions,
    ) -> Result<Self, ConnectError> {
        let connect = SqliteConnectOptions::new().filename(path);
        Self::open_with_options(connect, false, options)
            .await?
            .migrated(options)
            .await
    }

    /// A fresh, private in-memory database.
    pub async fn in_memory() -> Result<Self, ConnectError> {
        Self::connect("sqlite::memory:").await
    }

    async fn open_with_options(
        connect: SqliteConnectOptions,
        in_memory: bool,
        options: &StoreOptions,
    ) -> Result<Self, ConnectError> {
        let mut connect = connect
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        if !in_memory {
            let synchronous = match options.sqlite_durability {
                SqliteDurability::Full => SqliteSynchronous::Full,
                SqliteDurability::Normal => SqliteSynchronous::Normal,
            };
            connect = connect
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous);
        }
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections)
        };
        let pool = pool_options
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(ConnectError::database)?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool (migrations are not run: call [`Self::migrate`]).
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            writer: Arc::new(Mutex::new(())),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The in-process writer lock, held for the whole of every write
    /// transaction.
    pub(crate) fn writer(&self) -> &Arc<Mutex<()>> {
        &self.writer
    }

    /// Holds the in-process write lock (every write transaction takes it).
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// Applies the pending migrations.
    pub async fn migrate(&self) -> Result<MigrationReport, ConnectError> {
        let report = migration_report(&MIGRATOR, &self.pool).await?;
        let _writer = self.writer.lock().await;
        crate::results::backfill_sqlite(&self.pool)
            .await
            .map_err(|e| ConnectError::Migration(Box::new(e)))?;
        Ok(report)
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A page of one widget's calls created in `[from, to)`, by creation
    /// time then id, after `after`.
    pub(crate) async fn list_widget_calls(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<bonde_pressure_core::CallCursor>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        sqlx::query_as::<_, CallRow>(concat!(
            "SELECT ",
            call_columns!(),
            " FROM phone_calls WHERE widget_id = ?1 AND created_at >= ?2 AND created_at < ?3 \
             AND (?4 IS NULL OR created_at > ?4 OR (created_at = ?4 AND id > ?5)) \
             ORDER BY created_at, id LIMIT ?6"
        ))
        .bind(widget_id.get())
        .bind(ts_text(ceil_micros(from)))
        .bind(ts_text(ceil_micros(to)))
        .bind(after.map(|a| ts_text(a.created_at)))
        .bind(after.map(|a| id_text(a.id)).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(CallRow::into_call)
        .collect()
    }

    /// [`Self::list_widget_calls`] decoding row by row: a damaged row is
    /// reported in its place, `limit` counts readable calls, and the
    /// listing pages past damaged rows by their raw `(created_at, id)`
    /// text.
    pub(crate) async fn list_widget_call_rows(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<bonde_pressure_core::CallCursor>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        let mut out = Vec::new();
        let mut readable = 0usize;
        let mut after: Option<(String, String)> =
            after.map(|a| (ts_text(a.created_at), id_text(a.id)));
        loop {
            let want = limit as usize - readable;
            if want == 0 {
                break;
            }
            let (after_at, after_id) = after.clone().unzip();
            let rows = sqlx::query(concat!(
                "SELECT ",
                call_columns!(),
                " FROM phone_calls WHERE widget_id = ?1 AND created_at >= ?2 AND created_at < ?3 \
                 AND (?4 IS NULL OR created_at > ?4 OR (created_at = ?4 AND id > ?5)) \
                 ORDER BY created_at, id LIMIT ?6"
            ))
            .bind(widget_id.get())
            .bind(ts_text(ceil_micros(from)))
            .bind(ts_text(ceil_micros(to)))
            .bind(after_at)
            .bind(after_id)
            .bind(want as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let full = rows.len() == want;
            after = rows.last().and_then(|r| {
                Some((
                    r.try_get::<String, _>("created_at").ok()?,
                    r.try_get::<String, _>("id").ok()?,
                ))
            });
            for row in &rows {
                let decoded = CallRow::decode(row);
                readable += usize::from(decoded.is_ok());
                out.push(decoded);
            }
            if !full || after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn upsert_legs(
        tx: &mut Transaction<'_, Sqlite>,
        call: &Call,
        now: &str,
    ) -> Result<(), StoreError> {
        let call_id = id_text(call.id);
        for leg in leg_records(call) {
            sqlx::query(
                "INSERT INTO twilio_calls (sid, phone_call_id, leg, status, answered_by, \
                 from_phone_number, to_phone_number, duration_secs, sip_response_code, error_code, \
                 error_message, ringing_at, answered_at, ended_at, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15) \
                 ON CONFLICT (sid) DO UPDATE SET phone_call_id = excluded.phone_call_id, \
                 leg = excluded.leg, status = excluded.status, answered_by = excluded.answered_by, \
                 from_phone_number = excluded.from_phone_number, \
                 to_phone_number = excluded.to_phone_number, duration_secs = excluded.duration_secs, \
                 sip_response_code = excluded.sip_response_code, error_code = excluded.error_code, \
                 error_message = excluded.error_message, ringing_at = excluded.ringing_at, \
                 answered_at = excluded.answered_at, ended_at = excluded.ended_at, \
                 updated_at = excluded.updated_at",
            )
            .bind(leg.sid)
            .bind(&call_id)
            .bind(leg.leg)
            .bind(leg.status)
            .bind(leg.answered_by)
            .bind(leg.from_phone_number)
            .bind(leg.to_phone_number)
            .bind(leg.duration_secs)
            .bind(leg.sip_response_code)
            .bind(leg.error_code)
            .bind(leg.error_message)
            .bind(leg.ringing_at.map(ts_text))
            .bind(leg.answered_at.map(ts_text))
            .bind(leg.ended_at.map(ts_text))
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn insert_events(
        tx: &mut Transaction<'_, Sqlite>,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), sqlx::Error> {
        let call_id = call_id.map(id_text);
        for e in events {
            sqlx::query(
                "INSERT INTO twilio_call_events (phone_call_id, call_sid, kind, payload, \
                 sequence_number, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(call_id.as_deref())
            .bind(e.leg_id.as_deref())
            .bind(&e.kind)
            .bind(&e.payload)
            .bind(e.sequence_number)
            .bind(ts_text(e.received_at))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl CallStore for SqliteCallStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        let r = CallRecord::new(call, call.version)?;
        let updated_at = ts_text(r.updated_at);
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO phone_calls (id, widget_id, activist_name, activist_first_name, \
             activist_last_name, activist_email, from_phone_number, from_call_sid, to_phone_number, \
             to_call_sid, target_name, target_caller_id, conference_sid, state, settled, \
             connected_secs, facts, version, created_at, updated_at, funnel_stage) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20, ?21)",
        )
        .bind(r.id.hyphenated().to_string())
        .bind(r.widget_id)
        .bind(r.activist_name)
        .bind(r.activist_first_name)
        .bind(r.activist_last_name)
        .bind(r.activist_email)
        .bind(r.from_phone_number)
        .bind(r.from_call_sid)
        .bind(r.to_phone_number)
        .bind(r.to_call_sid)
        .bind(r.target_name)
        .bind(r.target_caller_id)
        .bind(r.conference_sid)
        .bind(r.state)
        .bind(r.settled)
        .bind(r.connected_secs)
        .bind(&r.facts)
        .bind(r.version)
        .bind(ts_text(r.created_at))
        .bind(&updated_at)
        .bind(r.funnel_stage)
        .execute(&mut *tx)
        .await;
        let result = match inserted {
            Ok(_) => Self::upsert_legs(&mut tx, call, &updated_at).await,
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists),
            Err(e) => Err(db(e)),
        };
        finish(tx, result, db).await
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM phone_calls WHERE id = ?1"
        ))
        .bind(id_text(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|row| CallRow::decode(&row).map_err(StoreError::Unreadable))
        .transpose()
    }

    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let next = call
            .version
            .checked_add(1)
            .ok_or_else(|| corrupt("version", "overflow"))?;
        let r = CallRecord::new(call, next)?;
        let expected = version_to_db(call.version)?;
        let id = r.id.hyphenated().to_string();
        let updated_at = ts_text(r.updated_at);
        let _writer = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(commit_error)?;
        let result: Result<(), StoreError> = async {
            let updated = sqlx::query(UPDATE_CALL_SQL)
                .bind(&id)
                .bind(expected)
                .bind(r.widget_id)
                .bind(r.activist_name)
                .bind(r.activist_first_name)
                .bind(r.activist_last_name)
                .bind(r.activist_email)
                .bind(r.from_phone_number)
                .bind(r.from_call_sid)
                .bind(r.to_phone_number)
                .bind(r.to_call_sid)
                .bind(r.target_name)
                .bind(r.target_caller_id)
                .bind(r.conference_sid)
                .bind(r.state)
                .bind(r.settled)
                .bind(r.connected_secs)
                .bind(&r.facts)
                .bind(r.version)
                .bind(ts_text(r.created_at))
                .bind(&updated_at)
                .bind(r.funnel_stage)
                .execute(&mut *tx)
                .await
                .map_err(commit_error)?;
            if updated.rows_affected() == 0 {
                let exists =
                    sqlx::query_scalar::<_, i64>("SELECT version FROM phone_calls WHERE id = ?1")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                return Err(match exists {
                    Some(_) => {
                        tracing::debug!(call_id = %call.id, "commit lost a version race");
                        StoreError::Conflict
                    }
                    None => StoreError::NotFound,
                });
            }
            Self::upsert_legs(&mut tx, call, &updated_at).await?;
            Self::insert_events(&mut tx, Some(call.id), events)
                .await
                .map_err(db)
        }
        .await;
        finish(tx, result, commit_error).await.map(|()| next)
    }

    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            if let Some(id) = call_id {
                if self.get(id).await?.is_none() {
                    return Err(StoreError::NotFound);
                }
            }
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(db)?;
        let result = match Self::insert_events(&mut tx, call_id, events).await {
            Ok(()) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(db(e)),
        };
        finish(tx, result, db).await
    }

    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query_as::<_, EventRow>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM twilio_call_events WHERE phone_call_id = ?1 ORDER BY id"
        ))
        .bind(id_text(call_id))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(EventRow::into_event)
        .collect()
    }

    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        Ok(self
            .list_unfinished_rows(updated_before, limit)
            .await?
            .into_iter()
            .filter_map(Result::ok)
            .collect())
    }

    async fn list_unfinished_rows(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        // Row by row: one damaged row is its call's problem only. `limit`
        // counts readable calls: damaged rows met on the way are reported
        // in addition, and the listing pages past them by (updated_at, id),
        // so they never starve the others.
        let mut out = Vec::new();
        let mut readable = 0usize;
        let mut after: Option<(String, String)> = None;
        let cutoff = ts_text(ceil_micros(updated_before));
        loop {
            let want = limit as usize - readable;
            if want == 0 {
                break;
            }
            let (after_at, after_id) = after.clone().unzip();
            let rows = sqlx::query(concat!(
                "SELECT ",
                call_columns!(),
                " FROM phone_calls WHERE settled = 0 AND updated_at < ?1 \
                 AND (?3 IS NULL OR (updated_at, id) > (?3, ?4)) \
                 ORDER BY updated_at, id LIMIT ?2"
            ))
            .bind(&cutoff)
            .bind(want as i64)
            .bind(after_at)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let full = rows.len() == want;
            after = rows.last().and_then(|r| {
                Some((
                    r.try_get::<String, _>("updated_at").ok()?,
                    r.try_get::<String, _>("id").ok()?,
                ))
            });
            for row in &rows {
                let decoded = CallRow::decode(row);
                readable += usize::from(decoded.is_ok());
                out.push(decoded);
            }
            if !full || after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn count_recent_calls_to(
        &self,
        phone: &bonde_pressure_core::PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Option<bonde_pressure_core::RecentCalls>, StoreError> {
        // Index phone_calls_activist_created_idx (from_phone_number, created_at).
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM phone_calls \
             WHERE from_phone_number = ?1 AND created_at > ?2 \
               AND erased_at IS NULL \
               AND (from_call_sid IS NOT NULL OR state = 'created')",
        )
        .bind(phone.as_e164())
        .bind(ts_text(since))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        let oldest: Option<String> = row.try_get("oldest").map_err(db)?;
        let oldest = oldest.map(|t| parse_ts("created_at", &t)).transpose()?;
        Ok(Some(bonde_pressure_core::RecentCalls::new(
            u64::try_from(n).unwrap_or(0),
            oldest,
        )))
    }
}

#[async_trait]
impl EventLog for SqliteCallStore {
    async fn events_by_sid(&self, call_sid: &str) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query_as::<_, EventRow>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM twilio_call_events WHERE call_sid = ?1 ORDER BY id"
        ))
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(EventRow::into_event)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_codes_are_recognised() {
        // SQLITE_BUSY, SQLITE_LOCKED and their extended codes
        // (BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773,
        // LOCKED_SHAREDCACHE 262, LOCKED_VTAB 518).
        for code in ["5", "6", "261", "517", "773", "262", "518"] {
            assert!(is_busy_code(code), "{code}");
        }
        // ERROR, CONSTRAINT_UNIQUE, CONSTRAINT_FOREIGNKEY, IOERR, not a number.
        for code in ["1", "2067", "787", "10", "40001", ""] {
            assert!(!is_busy_code(code), "{code}");
        }
    }
}
