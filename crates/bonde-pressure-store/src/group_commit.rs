//! Group commit: `PgCallStore::commit`s of different calls that arrive
//! together share one statement.
//!
//! Most of PostgreSQL's cost of a commit is per statement and per
//! transaction (protocol messages, planning and executor start-up, the
//! snapshot, the commit record and its WAL flush), not per row. So a store
//! that sees several commits waiting sends them as one `UPDATE … FROM
//! unnest(…)` with the legs' upserts and the events' inserts fed by its
//! output, exactly like the single-call statement, and each caller learns
//! its own outcome:
//!
//! - A few statements run at a time (batch slots: a quarter of the pool, 1
//!   to 4); a commit that finds a slot free is sent at once (a statement of
//!   one call). So nothing ever waits for a timer: batches form only while
//!   the slots are busy, from the commits that queued meanwhile (at most
//!   [`MAX_BATCH`]).
//! - Each call keeps its own version check: a call whose version moved is
//!   not written (nor its legs or events) and its caller gets
//!   [`StoreError::Conflict`] (or [`StoreError::NotFound`]), while the rest
//!   of the batch commits.
//! - The statement first locks the rows it will write in id order, skipping
//!   rows another transaction holds (`FOR NO KEY UPDATE SKIP LOCKED`) and
//!   rows of settled calls. A skipped call is committed alone after its
//!   batch, outside the batch slot: a call row locked elsewhere makes only
//!   its own call wait, never the batch or the commits queued behind it.
//!   (A leg row in `twilio_calls` held by another transaction still delays
//!   the statement that upserts it, slot and all; a deadlock there is
//!   `40P01`, a refused statement, retried call by call.) Commits that settle a call are not queued at
//!   all (one statement each, as without grouping); with the settled rows
//!   skipped, a grouped statement never touches the results rollup (whose
//!   triggers fire only when a call is or becomes settled), whose shared
//!   rows two transactions could lock in opposite orders.
//! - A statement PostgreSQL refuses (an `ERROR`: the transaction rolled
//!   back, nothing written — a value it rejects, two calls claiming one leg
//!   id) is followed by each of its calls committed alone, so one bad commit
//!   never fails the others and each caller gets its own error. When the
//!   outcome is unknown (the connection failed during the statement, a
//!   `FATAL` error), every caller gets [`StoreError::Backend`] and nothing is
//!   retried here: core then treats each commit as it treats a single
//!   commit whose answer was lost.
//! - Two commits of one call never share a statement (the later one goes
//!   alone after the batch, in arrival order); a commit whose caller gave up
//!   while it queued (its future was dropped, e.g. by a request deadline) is
//!   not sent.
//!
//! A commit's caller may give up after its statement was sent; as with a
//! single statement, the commit may then still have been made.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bonde_pressure_core::Call;
use bonde_pressure_core::ports::{RawEvent, StoreError};
use sqlx::postgres::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::codec::{CallRecord, leg_records, truncate_micros, version_to_db};
use crate::postgres::{commit_error, commit_one, facts_without_nul, without_nul};

/// Commits per batch, at most.
pub(crate) const MAX_BATCH: usize = 64;

/// The grouped form of `commit`'s statement: the calls' columns as arrays
/// ($1 id, $2 expected version, $3–$22 the columns), the legs' with the id
/// of their call ($23–$36), the events' likewise ($37–$42). `locked` takes
/// the rows in id order, skipping rows another transaction holds and
/// settled calls; returns the ids of the calls written (the others wrote
/// nothing: moved version, unknown, locked elsewhere or settled).
const COMMIT_MANY_SQL: &str = concat!(
    "\
WITH i AS ( \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::text[], \
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
        $12::text[], $13::text[], $14::text[], $15::text[], $16::bool[], $17::int8[], \
        $18::text[], $19::int8[], $20::timestamptz[], $21::timestamptz[], $22::int2[]) \
        AS i(id, expected, widget_id, activist_name, activist_first_name, \
        activist_last_name, activist_email, from_phone_number, from_call_sid, \
        to_phone_number, to_call_sid, target_name, target_caller_id, conference_sid, state, \
        settled, connected_secs, facts, version, created_at, updated_at, funnel_stage) \
), locked AS ( \
    SELECT p.id FROM phone_calls p JOIN i ON p.id = i.id \
    WHERE p.version = i.expected AND NOT p.settled \
    ORDER BY p.id FOR NO KEY UPDATE OF p SKIP LOCKED \
), upd AS ( \
    UPDATE phone_calls p SET widget_id = i.widget_id, activist_name = i.activist_name, \
        activist_first_name = i.activist_first_name, activist_last_name = i.activist_last_name, \
        activist_email = i.activist_email, from_phone_number = i.from_phone_number, \
        from_call_sid = i.from_call_sid, to_phone_number = i.to_phone_number, \
        to_call_sid = i.to_call_sid, target_name = i.target_name, \
        target_caller_id = i.target_caller_id, conference_sid = i.conference_sid, \
        state = i.state, settled = i.settled, connected_secs = i.connected_secs, \
        facts = i.facts::jsonb, version = i.version, created_at = i.created_at, \
        updated_at = i.updated_at, funnel_stage = i.funnel_stage \
    FROM i, locked WHERE p.id = i.id AND p.id = locked.id AND p.version = i.expected \
    RETURNING p.id, p.updated_at \
), legs AS ( \
    INSERT INTO twilio_calls (sid, phone_call_id, leg, status, answered_by, from_phone_number, \
        to_phone_number, duration_secs, sip_response_code, error_code, error_message, \
        ringing_at, answered_at, ended_at, created_at, updated_at) \
    SELECT l.sid, upd.id, l.leg, l.status, l.answered_by, l.from_phone_number, \
        l.to_phone_number, l.duration_secs, l.sip_response_code, l.error_code, \
        l.error_message, l.ringing_at, l.answered_at, l.ended_at, upd.updated_at, \
        upd.updated_at \
    FROM upd JOIN UNNEST($23::uuid[], $24::text[], $25::text[], $26::text[], $27::text[], \
        $28::text[], $29::text[], $30::int8[], $31::int4[], $32::int8[], $33::text[], \
        $34::timestamptz[], $35::timestamptz[], $36::timestamptz[]) \
        AS l(call_id, sid, leg, status, answered_by, from_phone_number, to_phone_number, \
        duration_secs, sip_response_code, error_code, error_message, ringing_at, \
        answered_at, ended_at) ON l.call_id = upd.id \
",
    crate::postgres::leg_on_conflict!(),
    "\
), ev AS ( \
    INSERT INTO twilio_call_events (phone_call_id, call_sid, kind, payload, sequence_number, \
        received_at) \
    SELECT upd.id, e.call_sid, e.kind, e.payload, e.sequence_number, e.received_at \
    FROM upd JOIN UNNEST($37::uuid[], $38::text[], $39::text[], $40::text[], $41::int8[], \
        $42::timestamptz[]) WITH ORDINALITY \
        AS e(call_id, call_sid, kind, payload, sequence_number, received_at, ord) \
        ON e.call_id = upd.id \
    ORDER BY e.ord \
) \
SELECT id FROM upd"
);

/// One commit waiting for its batch.
struct Pending {
    call: Call,
    events: Vec<RawEvent>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// A store's group commit: the queue and the task that sends batches.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    pool: PgPool,
    in_flight: usize,
    tx: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Commits written by a statement of two or more.
    grouped: Arc<AtomicU64>,
    /// Commits queued and not yet taken into a statement.
    queued: Arc<AtomicUsize>,
}

impl GroupCommit {
    /// Group commit on `pool`: batches in flight at once, a quarter of its
    /// connections (1 to 4), so reads and event appends keep the rest.
    pub(crate) fn new(pool: PgPool) -> Self {
        let in_flight = (pool.options().get_max_connections() as usize / 4).clamp(1, 4);
        Self {
            pool,
            in_flight,
            tx: OnceLock::new(),
            grouped: Arc::default(),
            queued: Arc::default(),
        }
    }

    /// Commits written by a statement of two or more so far.
    pub(crate) fn grouped(&self) -> u64 {
        self.grouped.load(Ordering::Relaxed)
    }

    /// Commits waiting for a batch slot now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether `call`'s commit may be queued: it does not settle the call
    /// (a commit that changes a settled call is queued too, and then
    /// skipped by the statement's `NOT p.settled` and sent alone).
    pub(crate) fn groups(call: &Call) -> bool {
        !call.is_settled()
    }

    /// Commits `call` with `events` in the next batch (sent at once if a
    /// batch slot is free); the new version, as [`commit_one`] returns it.
    pub(crate) async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(
                self.pool.clone(),
                rx,
                Arc::new(Semaphore::new(self.in_flight)),
                self.grouped.clone(),
                self.queued.clone(),
            ));
            tx
        });
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            call: call.clone(),
            events: events.to_vec(),
            reply,
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(pending)) = tx.send(pending) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            // The task is gone (its runtime shut down): commit here.
            return commit_one(&self.pool, &pending.call, &pending.events).await;
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::backend(BatchLost)))
    }
}

/// A batch's task ended without answering (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the group commit's batch ended without an outcome")]
struct BatchLost;

/// The connection failed while a grouped statement ran: it may or may not
/// have been committed (each of its callers gets this, as the source of a
/// [`StoreError::Backend`]).
#[derive(Debug, thiserror::Error)]
#[error("the grouped commit's outcome is unknown")]
struct OutcomeUnknown(#[source] Arc<sqlx::Error>);

/// Commits that go alone after a batch, concurrently at most (per batch).
const ALONE_AT_ONCE: usize = 4;

/// Takes a batch slot, then everything queued (up to [`MAX_BATCH`]), and
/// sends it; ends when the store is dropped.
async fn dispatch(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    slots: Arc<Semaphore>,
    grouped: Arc<AtomicU64>,
    queue_len: Arc<AtomicUsize>,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let taken = rx.recv_many(&mut queued, MAX_BATCH).await;
        if taken == 0 {
            return;
        }
        queue_len.fetch_sub(taken, Ordering::Relaxed);
        let batch: Vec<Pending> = queued.drain(..).filter(|p| !p.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let grouped = grouped.clone();
        tokio::spawn(async move {
            let alone = run(&pool, batch, &grouped).await;
            // The slot is free before the calls that go alone are sent: one
            // waiting on a row lock holds up nobody else.
            drop(slot);
            commit_alone(&pool, alone).await;
        });
    }
}

/// Sends `batch` (in arrival order) as one statement and answers the
/// callers whose outcome it settled; returns, in arrival order, the
/// commits to send alone (a call's second commit, calls the statement
/// skipped, all of them after a refused statement).
async fn run(pool: &PgPool, batch: Vec<Pending>, grouped_total: &AtomicU64) -> Vec<Pending> {
    let mut firsts: Vec<(usize, Pending)> = Vec::with_capacity(batch.len());
    let mut alone: Vec<(usize, Pending)> = Vec::new();
    let mut seen = HashSet::with_capacity(batch.len());
    for (arrival, p) in batch.into_iter().enumerate() {
        if seen.insert(p.call.id) {
            firsts.push((arrival, p));
        } else {
            alone.push((arrival, p));
        }
    }
    firsts.sort_by_key(|(_, p)| p.call.id.as_uuid());
    match commit_many(pool, &firsts).await {
        Ok(written) => {
            if firsts.len() >= 2 {
                grouped_total.fetch_add(written.len() as u64, Ordering::Relaxed);
            }
            let mut missed = Vec::new();
            for (arrival, p) in firsts {
                if written.contains(&p.call.id.as_uuid()) {
                    let _ = p.reply.send(Ok(p.call.version + 1));
                } else {
                    missed.push((arrival, p));
                }
            }
            alone.extend(settle_missed(pool, missed).await);
        }
        Err(BatchError::Refused(error)) => {
            tracing::debug!(%error, calls = firsts.len(), "grouped commit refused; committing its calls one by one");
            alone.extend(firsts);
        }
        Err(BatchError::NotSent(error)) => {
            let error = Arc::new(error);
            for (_, p) in firsts {
                let _ = p
                    .reply
                    .send(Err(StoreError::backend(Unsent(error.clone()))));
            }
        }
        Err(BatchError::Unknown(error)) => {
            tracing::warn!(%error, calls = firsts.len(), "grouped commit's outcome unknown");
            let error = Arc::new(error);
            for (_, p) in firsts {
                let _ = p
                    .reply
                    .send(Err(StoreError::backend(OutcomeUnknown(error.clone()))));
            }
        }
    }
    alone.sort_by_key(|(arrival, _)| *arrival);
    alone.into_iter().map(|(_, p)| p).collect()
}

/// The statement was never sent (no connection).
#[derive(Debug, thiserror::Error)]
#[error("the grouped commit could not be sent")]
struct Unsent(#[source] Arc<sqlx::Error>);

/// Answers the calls a statement did not write: `NotFound` if the call does
/// not exist, `Conflict` if its version moved; returns the ones still at
/// their expected version (skipped: locked elsewhere or settled), to be
/// sent alone — and all of them if their versions cannot be read.
async fn settle_missed(pool: &PgPool, missed: Vec<(usize, Pending)>) -> Vec<(usize, Pending)> {
    if missed.is_empty() {
        return missed;
    }
    let ids: Vec<Uuid> = missed.iter().map(|(_, p)| p.call.id.as_uuid()).collect();
    let versions: HashMap<Uuid, i64> = match sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT id, version FROM phone_calls WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows.into_iter().collect(),
        Err(error) => {
            tracing::debug!(%error, "group commit: versions of the calls not written unreadable; committing them alone");
            return missed;
        }
    };
    let mut skipped = Vec::new();
    for (arrival, p) in missed {
        match versions.get(&p.call.id.as_uuid()) {
            None => {
                let _ = p.reply.send(Err(StoreError::NotFound));
            }
            Some(&v) if version_to_db(p.call.version).is_ok_and(|expected| expected == v) => {
                skipped.push((arrival, p));
            }
            Some(_) => {
                tracing::debug!(call_id = %p.call.id, "commit lost a version race");
                let _ = p.reply.send(Err(StoreError::Conflict));
            }
        }
    }
    skipped
}

/// Commits each of `alone` on its own statement: commits of one call in
/// order, different calls concurrently (at most [`ALONE_AT_ONCE`]); a
/// commit whose caller gave up is not sent.
async fn commit_alone(pool: &PgPool, alone: Vec<Pending>) {
    let mut chains: Vec<Vec<Pending>> = Vec::new();
    for p in alone {
        match chains.iter_mut().find(|c| c[0].call.id == p.call.id) {
            Some(chain) => chain.push(p),
            None => chains.push(vec![p]),
        }
    }
    futures::stream::iter(chains)
        .for_each_concurrent(ALONE_AT_ONCE, |chain| async move {
            for p in chain {
                if p.reply.is_closed() {
                    continue;
                }
                let outcome = commit_one(pool, &p.call, &p.events).await;
                let _ = p.reply.send(outcome);
            }
        })
        .await;
}

/// Why a grouped statement wrote nothing anyone can rely on.
enum BatchError {
    /// PostgreSQL refused it with an `ERROR` (rolled back), or a record
    /// could not be encoded (never sent): commit the calls alone.
    Refused(StoreError),
    /// Not sent (no connection, a value the driver could not encode):
    /// nothing was written.
    NotSent(sqlx::Error),
    /// The connection failed while it ran (or a `FATAL` error): it may have
    /// been committed.
    Unknown(sqlx::Error),
}

impl BatchError {
    fn classify(e: sqlx::Error) -> Self {
        use sqlx::postgres::{PgDatabaseError, PgSeverity};
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Encode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::NotSent(e),
            sqlx::Error::Database(d) => {
                let fatal = d.try_downcast_ref::<PgDatabaseError>().is_none_or(|pg| {
                    matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                });
                if fatal {
                    Self::Unknown(e)
                } else {
                    Self::Refused(commit_error(e))
                }
            }
            _ => Self::Unknown(e),
        }
    }
}

/// Sends `batch` (distinct calls, in id order) as one statement; the ids of
/// the calls written.
async fn commit_many(
    pool: &PgPool,
    batch: &[(usize, Pending)],
) -> Result<HashSet<Uuid>, BatchError> {
    let batch: Vec<&Pending> = batch.iter().map(|(_, p)| p).collect();
    let mut calls = Vec::with_capacity(batch.len());
    let mut expected = Vec::with_capacity(batch.len());
    let mut facts = Vec::with_capacity(batch.len());
    for p in &batch {
        let next = p
            .call
            .version
            .checked_add(1)
            .ok_or_else(|| BatchError::Refused(crate::codec::corrupt("version", "overflow")))?;
        let r = CallRecord::new(&p.call, next).map_err(BatchError::Refused)?;
        expected.push(version_to_db(p.call.version).map_err(BatchError::Refused)?);
        facts.push(
            facts_without_nul(&r.facts)
                .map_err(BatchError::Refused)?
                .into_owned(),
        );
        calls.push(r);
    }
    let legs: Vec<_> = batch
        .iter()
        .flat_map(|p| {
            leg_records(&p.call)
                .into_iter()
                .map(move |l| (p.call.id.as_uuid(), l))
        })
        .collect();
    let events: Vec<_> = batch
        .iter()
        .flat_map(|p| p.events.iter().map(move |e| (p.call.id.as_uuid(), e)))
        .collect();
    macro_rules! col {
        ($items:expr, |$x:pat_param| $e:expr) => {
            $items.iter().map(|$x| $e).collect::<Vec<_>>()
        };
    }
    let rows = sqlx::query_scalar::<_, Uuid>(COMMIT_MANY_SQL)
        .bind(col!(calls, |r| r.id))
        .bind(&expected)
        .bind(col!(calls, |r| r.widget_id))
        .bind(col!(calls, |r| r.activist_name))
        .bind(col!(calls, |r| r.activist_first_name))
        .bind(col!(calls, |r| r.activist_last_name))
        .bind(col!(calls, |r| r.activist_email))
        .bind(col!(calls, |r| r.from_phone_number))
        .bind(col!(calls, |r| r.from_call_sid))
        .bind(col!(calls, |r| r.to_phone_number))
        .bind(col!(calls, |r| r.to_call_sid))
        .bind(col!(calls, |r| r.target_name))
        .bind(col!(calls, |r| r.target_caller_id))
        .bind(col!(calls, |r| r.conference_sid))
        .bind(col!(calls, |r| r.state))
        .bind(col!(calls, |r| r.settled))
        .bind(col!(calls, |r| r.connected_secs))
        .bind(&facts)
        .bind(col!(calls, |r| r.version))
        .bind(col!(calls, |r| r.created_at))
        .bind(col!(calls, |r| r.updated_at))
        .bind(col!(calls, |r| r.funnel_stage))
        .bind(col!(legs, |(id, _)| *id))
        .bind(col!(legs, |(_, l)| l.sid))
        .bind(col!(legs, |(_, l)| l.leg))
        .bind(col!(legs, |(_, l)| l.status))
        .bind(col!(legs, |(_, l)| l.answered_by))
        .bind(col!(legs, |(_, l)| l.from_phone_number))
        .bind(col!(legs, |(_, l)| l.to_phone_number))
        .bind(col!(legs, |(_, l)| l.duration_secs))
        .bind(col!(legs, |(_, l)| l.sip_response_code))
        .bind(col!(legs, |(_, l)| l.error_code))
        .bind(col!(legs, |(_, l)| l.error_message.map(without_nul)))
        .bind(col!(legs, |(_, l)| l.ringing_at))
        .bind(col!(legs, |(_, l)| l.answered_at))
        .bind(col!(legs, |(_, l)| l.ended_at))
        .bind(col!(events, |(id, _)| *id))
        .bind(col!(events, |(_, e)| e.leg_id.as_deref().map(without_nul)))
        .bind(col!(events, |(_, e)| without_nul(&e.kind)))
        .bind(col!(events, |(_, e)| without_nul(&e.payload)))
        .bind(col!(events, |(_, e)| e.sequence_number))
        .bind(col!(events, |(_, e)| truncate_micros(e.received_at)))
        .fetch_all(pool)
        .await
        .map_err(BatchError::classify)?;
    Ok(rows.into_iter().collect())
}
