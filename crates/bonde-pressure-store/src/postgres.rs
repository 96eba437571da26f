//! [`PgCallStore`]: the production [`CallStore`] on PostgreSQL.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use bonde_pressure_core::ports::{CallStore, RawEvent, StoreError, StoredEvent, UnreadableCall};
use bonde_pressure_core::{Call, CallId, WidgetId};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{FromRow, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::codec::{
    CallParts, CallRecord, EventParts, ceil_micros, corrupt, db, decode_call_row,
    is_foreign_key_violation, is_unique_violation, leg_records, truncate_micros, version_to_db,
};
use crate::group_commit::GroupCommit;
use crate::{ConnectError, EventLog, MigrationReport, StoreOptions, migration_report};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A pooled connection idle for this long is pinged before it is lent.
const PING_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// SQLSTATEs of a statement that lost a race with another transaction and
/// wrote nothing: `serialization_failure` and `deadlock_detected`.
const RETRYABLE_SQLSTATES: [&str; 2] = ["40001", "40P01"];

/// A driver error in `commit`: a serialization failure or a deadlock is
/// [`StoreError::Conflict`] (the statement was rolled back; the caller's
/// load, apply, commit loop reloads and retries), anything else a backend
/// error.
pub(crate) fn commit_error(e: sqlx::Error) -> StoreError {
    let retryable = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| RETRYABLE_SQLSTATES.contains(&c.as_ref()));
    if retryable {
        tracing::debug!(error = %e, "commit lost a race in PostgreSQL");
        StoreError::Conflict
    } else {
        db(e)
    }
}

/// What a NUL character is stored as: PostgreSQL `text` cannot hold U+0000
/// (nor `jsonb` the `\u0000` escape), so free text that came from outside
/// (raw payloads, their leg id, error messages) has it replaced with U+FFFD,
/// the replacement character, the way invalid UTF-8 in a body already is.
const NUL_REPLACEMENT: &str = "\u{FFFD}";

/// `s` with every NUL replaced by [`NUL_REPLACEMENT`] (borrowed when it has
/// none, the normal case).
pub(crate) fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', NUL_REPLACEMENT))
    } else {
        Cow::Borrowed(s)
    }
}

/// The facts JSON with NULs replaced in its strings: `jsonb` rejects
/// `\u0000`. Only parsed and rewritten when that escape appears.
pub(crate) fn facts_without_nul(json: &str) -> Result<Cow<'_, str>, StoreError> {
    fn clean(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => {
                *s = s.replace('\0', NUL_REPLACEMENT);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(clean),
            serde_json::Value::Object(map) => {
                // Keys can hold a NUL too (a map keyed by free text).
                let entries = std::mem::take(map);
                for (k, mut item) in entries {
                    clean(&mut item);
                    map.insert(without_nul(&k).into_owned(), item);
                }
            }
            _ => {}
        }
    }
    if !json.contains("\\u0000") {
        return Ok(Cow::Borrowed(json));
    }
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(StoreError::backend)?;
    clean(&mut value);
    serde_json::to_string(&value)
        .map(Cow::Owned)
        .map_err(StoreError::backend)
}

/// The legs' upsert's conflict clause (a leg's row takes the commit's
/// values), shared by `COMMIT_SQL` and the grouped statement
/// (`group_commit::COMMIT_MANY_SQL`).
macro_rules! leg_on_conflict {
    () => {
        "ON CONFLICT (sid) DO UPDATE SET phone_call_id = EXCLUDED.phone_call_id, \
         leg = EXCLUDED.leg, status = EXCLUDED.status, answered_by = EXCLUDED.answered_by, \
         from_phone_number = EXCLUDED.from_phone_number, \
         to_phone_number = EXCLUDED.to_phone_number, duration_secs = EXCLUDED.duration_secs, \
         sip_response_code = EXCLUDED.sip_response_code, error_code = EXCLUDED.error_code, \
         error_message = EXCLUDED.error_message, ringing_at = EXCLUDED.ringing_at, \
         answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at, \
         updated_at = EXCLUDED.updated_at "
    };
}
pub(crate) use leg_on_conflict;

/// `commit` in one statement: the versioned `UPDATE` ($1 id, $2 expected
/// version, $3–$21 the columns), the legs' upserts from arrays ($22–$34) and
/// the events' inserts from arrays ($35–$39), both fed by the `UPDATE`'s
/// output. Returns 1 if the version matched, else 0 (nothing written).
const COMMIT_SQL: &str = concat!(
    "\
WITH upd AS ( \
    UPDATE phone_calls SET widget_id = $3, activist_name = $4, activist_first_name = $5, \
        activist_last_name = $6, activist_email = $7, from_phone_number = $8, \
        from_call_sid = $9, to_phone_number = $10, to_call_sid = $11, target_name = $12, \
        target_caller_id = $13, conference_sid = $14, state = $15, settled = $16, \
        connected_secs = $17, facts = $18::jsonb, version = $19, created_at = $20, \
        updated_at = $21, funnel_stage = $40 \
    WHERE id = $1 AND version = $2 \
    RETURNING id \
), legs AS ( \
    INSERT INTO twilio_calls (sid, phone_call_id, leg, status, answered_by, from_phone_number, \
        to_phone_number, duration_secs, sip_response_code, error_code, error_message, \
        ringing_at, answered_at, ended_at, created_at, updated_at) \
    SELECT l.sid, upd.id, l.leg, l.status, l.answered_by, l.from_phone_number, \
        l.to_phone_number, l.duration_secs, l.sip_response_code, l.error_code, \
        l.error_message, l.ringing_at, l.answered_at, l.ended_at, $21, $21 \
    FROM upd, UNNEST($22::text[], $23::text[], $24::text[], $25::text[], $26::text[], \
        $27::text[], $28::int8[], $29::int4[], $30::int8[], $31::text[], \
        $32::timestamptz[], $33::timestamptz[], $34::timestamptz[]) \
        AS l(sid, leg, status, answered_by, from_phone_number, to_phone_number, \
        duration_secs, sip_response_code, error_code, error_message, ringing_at, \
        answered_at, ended_at) \
",
    crate::postgres::leg_on_conflict!(),
    "\
), ev AS ( \
    INSERT INTO twilio_call_events (phone_call_id, call_sid, kind, payload, sequence_number, \
        received_at) \
    SELECT upd.id, e.call_sid, e.kind, e.payload, e.sequence_number, e.received_at \
    FROM upd, UNNEST($35::text[], $36::text[], $37::text[], $38::int8[], \
        $39::timestamptz[]) WITH ORDINALITY \
        AS e(call_sid, kind, payload, sequence_number, received_at, ord) \
    ORDER BY e.ord \
) \
SELECT COUNT(*) FROM upd"
);

macro_rules! call_columns {
    () => {
        "id, widget_id, activist_name, activist_first_name, activist_last_name, activist_email, \
         from_phone_number, to_phone_number, target_name, target_caller_id, facts::text AS facts, \
         version, created_at, updated_at"
    };
}

macro_rules! event_columns {
    () => {
        "id, phone_call_id, call_sid, kind, payload, sequence_number, received_at"
    };
}

#[derive(FromRow)]
struct CallRow {
    id: Uuid,
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
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl CallRow {
    /// Decodes one row; a failure is reported for that call only.
    fn decode(row: &PgRow) -> Result<Call, UnreadableCall> {
        decode_call_row(
            row,
            |row| row.try_get::<Uuid, _>("id").ok().map(CallId::from),
            |row| CallRow::from_row(row).map_err(db)?.into_call(),
        )
    }

    fn into_call(self) -> Result<Call, StoreError> {
        CallParts {
            id: self.id,
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
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .into_call()
    }
}

#[derive(FromRow)]
struct EventRow {
    id: i64,
    phone_call_id: Option<Uuid>,
    call_sid: Option<String>,
    kind: String,
    payload: String,
    sequence_number: Option<i64>,
    received_at: DateTime<Utc>,
}

impl EventRow {
    fn into_event(self) -> StoredEvent {
        EventParts {
            id: self.id,
            phone_call_id: self.phone_call_id,
            call_sid: self.call_sid,
            kind: self.kind,
            payload: self.payload,
            sequence_number: self.sequence_number,
            received_at: self.received_at,
        }
        .into_event()
    }
}

/// A [`CallStore`] on PostgreSQL: stateless replicas share it.
///
/// Every commit is one transaction: `UPDATE phone_calls … WHERE id = $1 AND
/// version = $2`, upserts of the legs into `twilio_calls`, inserts into
/// `twilio_call_events`. Commits of different calls that queue while the
/// store's batch slots are busy share one statement (group commit, see
/// [`StoreOptions::group_commits`]): each keeps its own version check and
/// outcome. A commit that fails with a serialization failure
/// (`40001`) or a deadlock (`40P01`) wrote nothing and returns
/// [`StoreError::Conflict`], so core's loop retries it. Timestamps are stored
/// with microsecond precision (sub-microsecond parts are dropped). NUL
/// characters, which `text` cannot hold, are stored as U+FFFD in raw
/// payloads, their leg id and kind, and in error messages.
#[derive(Debug, Clone)]
pub struct PgCallStore {
    pool: PgPool,
    /// This store's id in its notifications (its own listener skips them).
    origin: Uuid,
    /// Whether commits send a `NOTIFY` ([`StoreOptions::notify_commits`]).
    notify: bool,
    /// Sends the notifications after commit, batched (started on first use).
    notifier: Arc<crate::live::Notifier>,
    /// Groups concurrent commits of different calls
    /// ([`StoreOptions::group_commits`]); `None`: one statement per commit.
    group: Option<Arc<GroupCommit>>,
}

impl PgCallStore {
    /// Connects to `url` (`postgres://…`) with default [`StoreOptions`] and
    /// runs the pending migrations.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects to `url` with `options`; runs the pending migrations unless
    /// [`StoreOptions::run_migrations`] is off, in which case a database
    /// lacking some of them is refused ([`ConnectError::SchemaBehind`]).
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Self, ConnectError> {
        let store = Self::connect_unmigrated(url, options).await?;
        if options.run_migrations {
            store.migrate().await?;
        } else {
            crate::check_schema(&MIGRATOR, &store.pool).await?;
        }
        Ok(store)
    }

    /// Connects to `url` with `options`: no migration, no schema check.
    pub(crate) async fn connect_unmigrated(
        url: &str,
        options: &StoreOptions,
    ) -> Result<Self, ConnectError> {
        let connect = PgConnectOptions::from_str(url).map_err(ConnectError::invalid_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every idle connection it lends (a round trip per
            // checkout: two per callback). Only a connection idle for a
            // while is checked: under load connections are reused within
            // milliseconds and a dead one fails its query instead; a quiet
            // pool still finds a database that stopped answering within
            // the acquire timeout.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(ConnectError::database)?;
        Ok(Self::from_pool(pool)
            .notify_commits(options.notify_commits)
            .group_commits(options.group_commits))
    }

    /// Wraps an existing pool (migrations are not run: call
    /// [`Self::migrate`]). Commits are notified
    /// ([`StoreOptions::notify_commits`]); each store made this way has its
    /// own origin id, so two of them on one pool behave as two replicas.
    /// Concurrent commits are grouped ([`StoreOptions::group_commits`], on
    /// by default; [`Self::group_commits`] turns it off).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            notifier: Arc::new(crate::live::Notifier::new(pool.clone())),
            origin: Uuid::new_v4(),
            notify: true,
            group: Some(Arc::new(GroupCommit::new(pool.clone()))),
            pool,
        }
    }

    /// With concurrent commits grouped or not
    /// ([`StoreOptions::group_commits`]).
    pub fn group_commits(mut self, on: bool) -> Self {
        self.group = on.then(|| Arc::new(GroupCommit::new(self.pool.clone())));
        self
    }

    /// With commits notified or not ([`StoreOptions::notify_commits`]).
    pub fn notify_commits(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// Commits so far written by a grouped statement of two or more calls
    /// ([`StoreOptions::group_commits`]).
    pub fn grouped_commits(&self) -> u64 {
        self.group.as_ref().map_or(0, |g| g.grouped())
    }

    /// Commits waiting now for a batch slot (0 with grouping off): the
    /// group commit's queue depth.
    pub fn queued_commits(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.queued())
    }

    /// The id this store puts in its notifications.
    pub(crate) fn origin(&self) -> Uuid {
        self.origin
    }

    /// Notifications of this store's commits that could not be sent (the
    /// queue was full, or PostgreSQL refused them three times): other
    /// replicas saw those commits only through their fallbacks.
    pub fn notifications_lost(&self) -> u64 {
        self.notifier.lost()
    }

    /// Queues the notification of `call` at `version` (after its commit).
    fn notify_committed(&self, call: &Call, version: u64) {
        if self.notify {
            self.notifier.send(crate::live::payload(
                self.origin,
                call.id,
                call.widget_id,
                version,
                call.state(),
            ));
        }
    }

    /// The pool (e.g. for `LISTEN`/`NOTIFY`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the pending migrations (PostgreSQL advisory-locked, so
    /// replicas starting together are safe).
    pub async fn migrate(&self) -> Result<MigrationReport, ConnectError> {
        let report = migration_report(&MIGRATOR, &self.pool).await?;
        crate::results::backfill_pg(&self.pool)
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
            " FROM phone_calls WHERE widget_id = $1 AND created_at >= $2 AND created_at < $3 \
             AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5)) \
             ORDER BY created_at, id LIMIT $6"
        ))
        .bind(widget_id.get())
        .bind(ceil_micros(from))
        .bind(ceil_micros(to))
        .bind(after.map(|a| truncate_micros(a.created_at)))
        .bind(after.map(|a| a.id.as_uuid()).unwrap_or_default())
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
    /// listing pages past damaged rows by their raw `(created_at, id)`.
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
        let mut after: Option<(DateTime<Utc>, Uuid)> =
            after.map(|a| (truncate_micros(a.created_at), a.id.as_uuid()));
        loop {
            let want = limit as usize - readable;
            if want == 0 {
                break;
            }
            let (after_at, after_id) = after.unzip();
            let rows = sqlx::query(concat!(
                "SELECT ",
                call_columns!(),
                " FROM phone_calls WHERE widget_id = $1 AND created_at >= $2 AND created_at < $3 \
                 AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid)) \
                 ORDER BY created_at, id LIMIT $6"
            ))
            .bind(widget_id.get())
            .bind(ceil_micros(from))
            .bind(ceil_micros(to))
            .bind(after_at)
            .bind(after_id)
            .bind(want as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let full = rows.len() == want;
            after = rows.last().and_then(|r| {
                Some((
                    r.try_get::<DateTime<Utc>, _>("created_at").ok()?,
                    r.try_get::<Uuid, _>("id").ok()?,
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
        tx: &mut Transaction<'_, Postgres>,
        call: &Call,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for leg in leg_records(call) {
            sqlx::query(
                "INSERT INTO twilio_calls (sid, phone_call_id, leg, status, answered_by, \
                 from_phone_number, to_phone_number, duration_secs, sip_response_code, error_code, \
                 error_message, ringing_at, answered_at, ended_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
                 ON CONFLICT (sid) DO UPDATE SET phone_call_id = EXCLUDED.phone_call_id, \
                 leg = EXCLUDED.leg, status = EXCLUDED.status, answered_by = EXCLUDED.answered_by, \
                 from_phone_number = EXCLUDED.from_phone_number, \
                 to_phone_number = EXCLUDED.to_phone_number, duration_secs = EXCLUDED.duration_secs, \
                 sip_response_code = EXCLUDED.sip_response_code, error_code = EXCLUDED.error_code, \
                 error_message = EXCLUDED.error_message, ringing_at = EXCLUDED.ringing_at, \
                 answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at, \
                 updated_at = EXCLUDED.updated_at",
            )
            .bind(leg.sid)
            .bind(call.id.as_uuid())
            .bind(leg.leg)
            .bind(leg.status)
            .bind(leg.answered_by)
            .bind(leg.from_phone_number)
            .bind(leg.to_phone_number)
            .bind(leg.duration_secs)
            .bind(leg.sip_response_code)
            .bind(leg.error_code)
            .bind(leg.error_message.map(without_nul))
            .bind(leg.ringing_at)
            .bind(leg.answered_at)
            .bind(leg.ended_at)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn insert_events(
        tx: &mut Transaction<'_, Postgres>,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), sqlx::Error> {
        for e in events {
            Self::insert_event(&mut **tx, call_id, e).await?;
        }
        Ok(())
    }

    /// One event row, on `executor` (a transaction, or the pool: then it
    /// commits on its own, in one round trip).
    async fn insert_event<'e>(
        executor: impl sqlx::PgExecutor<'e>,
        call_id: Option<CallId>,
        e: &RawEvent,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO twilio_call_events (phone_call_id, call_sid, kind, payload, \
             sequence_number, received_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(call_id.map(|c| c.as_uuid()))
        .bind(e.leg_id.as_deref().map(without_nul))
        .bind(without_nul(&e.kind))
        .bind(without_nul(&e.payload))
        .bind(e.sequence_number)
        .bind(truncate_micros(e.received_at))
        .execute(executor)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl CallStore for PgCallStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        let r = CallRecord::new(call, call.version)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO phone_calls (id, widget_id, activist_name, activist_first_name, \
             activist_last_name, activist_email, from_phone_number, from_call_sid, to_phone_number, \
             to_call_sid, target_name, target_caller_id, conference_sid, state, settled, \
             connected_secs, facts, version, created_at, updated_at, funnel_stage) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17::jsonb, $18, $19, $20, $21)",
        )
        .bind(r.id)
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
        .bind(facts_without_nul(&r.facts)?)
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.funnel_stage)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists),
            Err(e) => return Err(db(e)),
        }
        Self::upsert_legs(&mut tx, call, r.updated_at).await?;
        tx.commit().await.map_err(db)?;
        self.notify_committed(call, call.version);
        Ok(())
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            call_columns!(),
            " FROM phone_calls WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|row| CallRow::decode(&row).map_err(StoreError::Unreadable))
        .transpose()
    }

    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let next = match &self.group {
            Some(group) if GroupCommit::groups(call) => group.commit(call, events).await?,
            _ => commit_one(&self.pool, call, events).await?,
        };
        self.notify_committed(call, next);
        Ok(next)
    }

    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            // Still report unknown calls, as a non-empty append would.
            if let Some(id) = call_id {
                if self.get(id).await?.is_none() {
                    return Err(StoreError::NotFound);
                }
            }
            return Ok(());
        }
        let inserted = if let [event] = events {
            // The common case (a duplicate's payload): one autocommitted
            // statement, one round trip.
            Self::insert_event(&self.pool, call_id, event).await
        } else {
            let mut tx = self.pool.begin().await.map_err(db)?;
            match Self::insert_events(&mut tx, call_id, events).await {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            }
        };
        match inserted {
            Ok(()) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(db(e)),
        }
    }

    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM twilio_call_events WHERE phone_call_id = $1 ORDER BY id"
        ))
        .bind(call_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
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
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        let cutoff = ceil_micros(updated_before);
        loop {
            let want = limit as usize - readable;
            if want == 0 {
                break;
            }
            let (after_at, after_id) = after.unzip();
            let rows = sqlx::query(concat!(
                "SELECT ",
                call_columns!(),
                " FROM phone_calls WHERE NOT settled AND updated_at < $1 \
                 AND ($3::timestamptz IS NULL OR (updated_at, id) > ($3, $4::uuid)) \
                 ORDER BY updated_at, id LIMIT $2"
            ))
            .bind(cutoff)
            .bind(want as i64)
            .bind(after_at)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let full = rows.len() == want;
            after = rows.last().and_then(|r| {
                Some((
                    r.try_get::<DateTime<Utc>, _>("updated_at").ok()?,
                    r.try_get::<Uuid, _>("id").ok()?,
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
            "SELECT COUNT(*)::bigint AS n, MIN(created_at) AS oldest FROM phone_calls \
             WHERE from_phone_number = $1 AND created_at > $2 \
               AND erased_at IS NULL \
               AND (from_call_sid IS NOT NULL OR state = 'created')",
        )
        .bind(phone.as_e164())
        .bind(truncate_micros(since))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest").map_err(db)?;
        Ok(Some(bonde_pressure_core::RecentCalls::new(
            u64::try_from(n).unwrap_or(0),
            oldest,
        )))
    }
}

#[async_trait]
impl EventLog for PgCallStore {
    async fn events_by_sid(&self, call_sid: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM twilio_call_events WHERE call_sid = $1 ORDER BY id"
        ))
        .bind(without_nul(call_sid))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }
}

/// [`CallStore::commit`] of one call in one statement ([`COMMIT_SQL`]),
/// without its notification.
pub(crate) async fn commit_one(
    pool: &PgPool,
    call: &Call,
    events: &[RawEvent],
) -> Result<u64, StoreError> {
    let next = call
        .version
        .checked_add(1)
        .ok_or_else(|| corrupt("version", "overflow"))?;
    let r = CallRecord::new(call, next)?;
    let expected = version_to_db(call.version)?;
    let facts = facts_without_nul(&r.facts)?;
    let legs = leg_records(call);
    // One statement, so one round trip and atomic without BEGIN/COMMIT:
    // the versioned UPDATE takes the row lock; the leg upserts and the
    // event inserts read its output, so they happen only if it matched,
    // and events get their ids after the lock (in commit order).
    let updated = sqlx::query_scalar::<_, i64>(COMMIT_SQL)
        .bind(r.id)
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
        .bind(&facts)
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(legs.iter().map(|l| l.sid).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.leg).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.status).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.answered_by).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.from_phone_number).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.to_phone_number).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.duration_secs).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.sip_response_code).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.error_code).collect::<Vec<_>>())
        .bind(
            legs.iter()
                .map(|l| l.error_message.map(without_nul))
                .collect::<Vec<_>>(),
        )
        .bind(legs.iter().map(|l| l.ringing_at).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.answered_at).collect::<Vec<_>>())
        .bind(legs.iter().map(|l| l.ended_at).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.leg_id.as_deref().map(without_nul))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| without_nul(&e.kind))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| without_nul(&e.payload))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.sequence_number).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| truncate_micros(e.received_at))
                .collect::<Vec<_>>(),
        )
        .bind(r.funnel_stage)
        .fetch_one(pool)
        .await
        .map_err(commit_error)?;
    if updated == 0 {
        return Err(missed_commit(pool, call).await);
    }
    Ok(next)
}

/// Why `call`'s versioned update matched no row: [`StoreError::Conflict`]
/// if the call exists (its version moved), else [`StoreError::NotFound`].
async fn missed_commit(pool: &PgPool, call: &Call) -> StoreError {
    let exists = sqlx::query_scalar::<_, i64>("SELECT version FROM phone_calls WHERE id = $1")
        .bind(call.id.as_uuid())
        .fetch_optional(pool)
        .await;
    match exists {
        Ok(Some(_)) => {
            tracing::debug!(call_id = %call.id, "commit lost a version race");
            StoreError::Conflict
        }
        Ok(None) => StoreError::NotFound,
        Err(e) => db(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_only_where_present() {
        assert!(matches!(without_nul("CallSid=CA1&x=2"), Cow::Borrowed(_)));
        assert_eq!(without_nul("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        let plain = r#"{"a":"x\\u0000"}"#;
        // An escaped backslash followed by `u0000` is not a NUL: unchanged
        // (up to formatting) and still the same JSON value.
        let kept = facts_without_nul(plain).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&kept).unwrap(),
            serde_json::from_str::<serde_json::Value>(plain).unwrap()
        );
        let json = serde_json::json!({"m": "bad\0msg", "l": ["\0"], "k\0": 1}).to_string();
        assert!(json.contains("\\u0000"));
        let clean = facts_without_nul(&json).unwrap();
        assert!(!clean.contains("\\u0000"), "{clean}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&clean).unwrap(),
            serde_json::json!({"m": "bad\u{FFFD}msg", "l": ["\u{FFFD}"], "k\u{FFFD}": 1})
        );
        assert!(matches!(facts_without_nul("{}").unwrap(), Cow::Borrowed(_)));
    }
}
