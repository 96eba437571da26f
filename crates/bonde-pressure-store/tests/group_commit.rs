//! PostgreSQL group commit: commits of different calls that queue while a
//! batch slot is busy are sent as one statement, and every caller still
//! gets its own outcome. The slot is held deterministically: a transaction
//! on another connection locks one call's leg row, so that call's next
//! commit (sent alone, the slot being free) waits in its leg upsert —
//! checked in `pg_stat_activity` — and everything sent meanwhile queues.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::ports::{CallStore, RawEvent, StoreError};
use bonde_pressure_core::{Call, CallId};
use bonde_pressure_store::PgCallStore;
use bonde_pressure_store::conformance::{Outcome, at, build_call, lifecycle, new_call, raw_event};
use common::with_fresh_postgres;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;

/// `call` taken to "activist ringing" (a leg with its id and status).
fn ringing(call: &Call) -> Call {
    let mut next = call.clone();
    for (i, e) in lifecycle(Outcome::ActivistRinging, at(0))
        .iter()
        .enumerate()
    {
        next = next.apply(e, at(i as i64 + 1)).0;
    }
    assert!(!next.is_settled());
    next
}

fn payload(call: &Call, what: &str) -> RawEvent {
    raw_event(
        "status-callback",
        None,
        &format!("call={}&{what}", call.id),
        Some(1),
    )
}

/// A store whose pool allows one batch in flight (4 connections).
async fn one_slot_store(pool: &PgPool) -> Arc<PgCallStore> {
    let small = PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("connect");
    let store = PgCallStore::from_pool(small);
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// Creates `n` new calls.
async fn created(store: &PgCallStore, n: usize) -> Vec<Call> {
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        let call = new_call(31, at(0));
        store.create(&call).await.expect("create");
        calls.push(call);
    }
    calls
}

/// Holds a row locked on its own connection until released (or dropped:
/// rolled back).
struct RowLock(PgConnection);

impl RowLock {
    /// Locks `call`'s row in `phone_calls`.
    async fn call(pool: &PgPool, call: &Call) -> Self {
        Self::take(
            pool,
            "SELECT 1 FROM phone_calls WHERE id = $1::text::uuid FOR UPDATE",
            call.id.to_string(),
        )
        .await
    }

    /// Locks the row of `call`'s activist leg in `twilio_calls`.
    async fn leg(pool: &PgPool, call: &Call) -> Self {
        let sid = call
            .facts
            .activist
            .leg_id
            .as_ref()
            .expect("a leg")
            .to_string();
        Self::take(
            pool,
            "SELECT 1 FROM twilio_calls WHERE sid = $1 FOR UPDATE",
            sid,
        )
        .await
    }

    async fn take(pool: &PgPool, sql: &str, key: String) -> Self {
        let mut conn = PgConnection::connect_with(&pool.connect_options())
            .await
            .expect("connect");
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        let locked = sqlx::query(sql).bind(key).execute(&mut conn).await.unwrap();
        assert_eq!(locked.rows_affected(), 1, "{sql}");
        Self(conn)
    }

    async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// How the grouped statement's text starts (the single-call one starts
/// `WITH upd AS`).
const GROUPED: &str = "WITH i AS%";

/// Waits until `store` holds `n` commits in its queue (polled for up to
/// 10 s), so that they are all taken into the next statement.
async fn all_queued(store: &PgCallStore, n: usize) {
    let start = std::time::Instant::now();
    while store.queued_commits() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} queued, not {n}",
            store.queued_commits()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The backend pid of a statement whose text is like `query`, waiting on a
/// lock (polled for up to 10 s).
async fn waiting_statement(pool: &PgPool, query: &str) -> i32 {
    let start = std::time::Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE $1",
        )
        .bind(query)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no grouped statement waits on a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn commit(
    store: &Arc<PgCallStore>,
    call: Call,
    events: Vec<RawEvent>,
) -> JoinHandle<Result<u64, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.commit(&call, &events).await })
}

/// Takes `blocked` to ringing (its leg row exists), locks that leg's row
/// and sends a commit changing the leg: it takes the only slot and waits
/// in its leg upsert. Returns the lock and the commit.
async fn hold_the_slot(
    store: &Arc<PgCallStore>,
    pool: &PgPool,
    blocked: &Call,
) -> (RowLock, JoinHandle<Result<u64, StoreError>>) {
    let ringing = ringing(blocked);
    store.commit(&ringing, &[]).await.expect("ringing");
    let lock = RowLock::leg(pool, &ringing).await;
    let mut next = ringing.with_version(1);
    next.facts.activist.sip_response_code = Some(180);
    let handle = commit(store, next, vec![payload(blocked, "blocked")]);
    waiting_statement(pool, GROUPED).await;
    assert!(
        !handle.is_finished(),
        "the blocked commit waits for the leg's lock"
    );
    (lock, handle)
}

async fn payloads(store: &PgCallStore, id: CallId) -> Vec<String> {
    store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.raw.payload)
        .collect()
}

async fn legs(pool: &PgPool, id: CallId) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM twilio_calls WHERE phone_call_id = $1")
        .bind(id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commits_share_one_statement_and_keep_their_own_outcomes() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 23).await;
        let (blocked, rest) = calls.split_first().unwrap();
        let (good, rest) = rest.split_at(20);
        let (stale, gone) = (&rest[0], &rest[1]);
        let (lock, first) = hold_the_slot(&store, &pool, blocked).await;

        let next: Vec<Call> = good.iter().map(ringing).collect();
        let queued: Vec<_> = next
            .iter()
            .map(|c| commit(&store, c.clone(), vec![payload(c, "good")]))
            .collect();
        // A commit from a version that is not the stored one: refused.
        let mut from_stale = ringing(stale);
        from_stale.version = 7;
        let refused = commit(&store, from_stale, vec![payload(stale, "stale")]);
        // A call that was never created.
        let unknown = commit(&store, ringing(&new_call(31, at(0))), vec![]);
        // A caller that gives up while its commit queues: never sent.
        let gave_up = {
            let store = store.clone();
            let call = ringing(gone);
            let events = vec![payload(gone, "gave-up")];
            tokio::time::timeout(Duration::from_millis(50), async move {
                store.commit(&call, &events).await
            })
            .await
        };
        assert!(gave_up.is_err(), "still queued after 50 ms");
        all_queued(&store, 23).await;
        lock.release().await;

        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (call, handle) in next.iter().zip(queued) {
            assert_eq!(handle.await.unwrap().unwrap(), 1);
            let got = store.get(call.id).await.unwrap().unwrap();
            assert_eq!(got, call.clone().with_version(1));
            assert_eq!(
                payloads(&store, call.id).await,
                vec![format!("call={}&good", call.id)]
            );
            assert_eq!(legs(&pool, call.id).await, 1, "the activist's leg upserted");
        }
        assert!(matches!(refused.await.unwrap(), Err(StoreError::Conflict)));
        assert!(
            payloads(&store, stale.id).await.is_empty(),
            "a refused commit stores nothing"
        );
        assert_eq!(legs(&pool, stale.id).await, 0);
        assert!(matches!(unknown.await.unwrap(), Err(StoreError::NotFound)));
        assert_eq!(store.get(gone.id).await.unwrap().unwrap().version, 0);
        assert!(payloads(&store, gone.id).await.is_empty());
        // The 20 good commits went together (the refused ones wrote nothing).
        assert_eq!(store.grouped_commits(), 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_refuses_is_committed_call_by_call() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 11).await;
        let (blocked, rest) = calls.split_first().unwrap();
        let (lock, first) = hold_the_slot(&store, &pool, blocked).await;
        // Two calls claiming one leg id: one statement cannot upsert that
        // leg twice, so PostgreSQL refuses the whole batch.
        let mut next: Vec<Call> = rest.iter().map(ringing).collect();
        next[1].facts.activist.leg_id = next[0].facts.activist.leg_id.clone();
        let queued: Vec<_> = next
            .iter()
            .map(|c| commit(&store, c.clone(), vec![payload(c, "queued")]))
            .collect();
        all_queued(&store, 10).await;
        lock.release().await;

        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (call, handle) in next.iter().zip(queued) {
            assert_eq!(
                handle.await.unwrap().unwrap(),
                1,
                "each committed on its own"
            );
            assert_eq!(
                store.get(call.id).await.unwrap().unwrap(),
                call.clone().with_version(1)
            );
            assert_eq!(
                payloads(&store, call.id).await,
                vec![format!("call={}&queued", call.id)]
            );
        }
        assert_eq!(store.grouped_commits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_commits_of_one_call_never_share_a_batch() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 3).await;
        let (blocked, x, y) = (&calls[0], &calls[1], &calls[2]);
        let (lock, first) = hold_the_slot(&store, &pool, blocked).await;
        // Both from version 0 of x: only one can be the next version.
        let a = commit(&store, ringing(x), vec![payload(x, "a")]);
        let b = commit(&store, ringing(x), vec![payload(x, "b")]);
        let other = commit(&store, ringing(y), vec![payload(y, "y")]);
        all_queued(&store, 3).await;
        lock.release().await;

        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(other.await.unwrap().unwrap(), 1);
        let outcomes = [a.await.unwrap(), b.await.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|o| matches!(o, Ok(1))).count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Err(StoreError::Conflict)))
                .count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            payloads(&store, x.id).await.len(),
            1,
            "only the winner's payload"
        );
        assert_eq!(store.get(x.id).await.unwrap().unwrap().version, 1);
        assert_eq!(
            store.grouped_commits(),
            2,
            "x's first commit and y's went together"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grouping_off_every_commit_is_its_own_statement() {
    with_fresh_postgres(async |_store, pool| {
        let store = Arc::new(
            Arc::try_unwrap(one_slot_store(&pool).await)
                .unwrap()
                .group_commits(false),
        );
        let calls = created(&store, 9).await;
        let (blocked, rest) = calls.split_first().unwrap();
        // As in hold_the_slot: the blocked commit waits in its leg upsert —
        // here in the single-call statement (grouped, it would hold the
        // only slot and the others would queue behind it).
        let ringing_blocked = ringing(blocked);
        store.commit(&ringing_blocked, &[]).await.unwrap();
        let lock = RowLock::leg(&pool, &ringing_blocked).await;
        let mut next = ringing_blocked.with_version(1);
        next.facts.activist.sip_response_code = Some(180);
        let first = commit(&store, next, vec![]);
        waiting_statement(&pool, "WITH upd AS%").await;
        let others: Vec<_> = rest
            .iter()
            .map(|c| commit(&store, ringing(c), vec![]))
            .collect();
        for handle in others {
            let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("not queued behind the blocked commit");
            assert_eq!(outcome.unwrap().unwrap(), 1);
        }
        assert!(!first.is_finished());
        assert_eq!(store.queued_commits(), 0);
        lock.release().await;
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(store.grouped_commits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_locked_elsewhere_holds_up_only_itself() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 6).await;
        let (locked, others) = calls.split_first().unwrap();
        let lock = RowLock::call(&pool, locked).await;
        let waiting = commit(&store, ringing(locked), vec![payload(locked, "locked")]);
        let next: Vec<Call> = others.iter().map(ringing).collect();
        let done: Vec<_> = next
            .iter()
            .map(|c| commit(&store, c.clone(), vec![payload(c, "other")]))
            .collect();
        // The grouped statement skips the locked row: the other calls
        // commit (through the only slot) while that one still waits.
        for (call, handle) in next.iter().zip(done) {
            let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("not held up by the locked call");
            assert_eq!(outcome.unwrap().unwrap(), 1);
            assert_eq!(
                store.get(call.id).await.unwrap().unwrap(),
                call.clone().with_version(1)
            );
        }
        assert!(!waiting.is_finished());
        lock.release().await;
        assert_eq!(waiting.await.unwrap().unwrap(), 1);
        assert_eq!(
            payloads(&store, locked.id).await,
            vec![format!("call={}&locked", locked.id)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_unsettles_a_call_is_not_grouped() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 3).await;
        let settled = build_call(
            31,
            at(0),
            Outcome::Completed {
                talk_secs: Some(30),
            },
        );
        assert!(settled.is_settled());
        store.create(&settled).await.unwrap();
        let (lock, first) = hold_the_slot(&store, &pool, &calls[0]).await;
        // A late opt-out on a completed call: unsettled again (the
        // do-not-call listing is pending), which moves it out of the
        // results rollup — not a grouped statement's business.
        let mut unsettled = settled.clone();
        unsettled.facts.opted_out = true;
        assert!(!unsettled.is_settled());
        let late = commit(&store, unsettled.clone(), vec![payload(&settled, "late")]);
        let next: Vec<Call> = calls[1..].iter().map(ringing).collect();
        let queued: Vec<_> = next
            .iter()
            .map(|c| commit(&store, c.clone(), vec![]))
            .collect();
        all_queued(&store, 3).await;
        lock.release().await;

        assert_eq!(first.await.unwrap().unwrap(), 2);
        for handle in queued {
            assert_eq!(handle.await.unwrap().unwrap(), 1);
        }
        assert_eq!(late.await.unwrap().unwrap(), 1);
        assert_eq!(
            store.get(settled.id).await.unwrap().unwrap(),
            unsettled.with_version(1)
        );
        assert_eq!(
            store.grouped_commits(),
            2,
            "only the two ringing calls went together"
        );
        let listed = store.list_unfinished(at(100_000), 100).await.unwrap();
        assert!(listed.iter().any(|c| c.id == settled.id));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_connection_dies_is_not_retried_as_a_conflict() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let calls = created(&store, 4).await;
        let (lock, first) = hold_the_slot(&store, &pool, &calls[0]).await;
        let next: Vec<Call> = calls[1..].iter().map(ringing).collect();
        let queued: Vec<_> = next
            .iter()
            .map(|c| commit(&store, c.clone(), vec![]))
            .collect();
        // The waiting statement's connection is terminated (FATAL): its
        // outcome is unknown to the store, so its caller hears so, and no
        // second attempt turns it into a Conflict or a double write.
        let pid = waiting_statement(&pool, GROUPED).await;
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(killed);
        // (Sent again, it would wait on the leg's lock: a timeout here.)
        let outcome = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("answered at once, not sent again")
            .unwrap();
        assert!(
            matches!(outcome, Err(StoreError::Backend(_))),
            "{outcome:?}"
        );
        assert_eq!(
            store.get(calls[0].id).await.unwrap().unwrap().version,
            1,
            "not written"
        );
        assert!(payloads(&store, calls[0].id).await.is_empty());
        // The queue behind it goes on.
        for handle in queued {
            assert_eq!(handle.await.unwrap().unwrap(), 1);
        }
        lock.release().await;
    })
    .await;
}

/// Every stored column of a call, its legs and its events (but the events'
/// ids), as canonical JSON text.
async fn stored_rows(pool: &PgPool, id: CallId) -> (String, String, String) {
    sqlx::query_as(
        "SELECT (SELECT to_jsonb(p)::text FROM phone_calls p WHERE p.id = $1), \
         (SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY t.sid), '[]')::text \
            FROM twilio_calls t WHERE t.phone_call_id = $1), \
         (SELECT COALESCE(jsonb_agg(to_jsonb(e) - 'id' ORDER BY e.id), '[]')::text \
            FROM twilio_call_events e WHERE e.phone_call_id = $1)",
    )
    .bind(id.as_uuid())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_statement_writes_what_a_single_one_writes() {
    with_fresh_postgres(async |_store, pool| {
        let store = one_slot_store(&pool).await;
        let blocked = created(&store, 1).await.remove(0);
        // Every unsettled outcome's call (both legs, the conference, the
        // funnel stage...), committed from version 0 with two payloads
        // (one holding a NUL).
        let mut twins = Vec::new();
        for outcome in Outcome::ALL {
            let base = new_call(32, at(0));
            let mut next = base.clone();
            for (i, e) in lifecycle(outcome, at(0)).iter().enumerate() {
                next = next.apply(e, at(i as i64 + 1)).0;
            }
            if next.is_settled() {
                continue;
            }
            let events = vec![
                payload(&base, "first"),
                raw_event(
                    "dial-status-callback",
                    next.facts.target.leg_id.as_ref(),
                    "a\0b",
                    Some(3),
                ),
            ];
            twins.push((base, next, events));
        }
        assert!(twins.len() >= 4, "{}", twins.len());
        for (base, _, _) in &twins {
            store.create(base).await.unwrap();
        }
        let (lock, first) = hold_the_slot(&store, &pool, &blocked).await;
        let queued: Vec<_> = twins
            .iter()
            .map(|(_, next, events)| commit(&store, next.clone(), events.clone()))
            .collect();
        all_queued(&store, twins.len()).await;
        lock.release().await;
        first.await.unwrap().unwrap();
        for handle in queued {
            assert_eq!(handle.await.unwrap().unwrap(), 1);
        }
        assert_eq!(store.grouped_commits(), twins.len() as u64);
        let mut grouped = Vec::new();
        for (base, _, _) in &twins {
            grouped.push(stored_rows(&pool, base.id).await);
        }
        // The same calls again, each through the single-call statement.
        let single = PgCallStore::from_pool(pool.clone()).group_commits(false);
        for ((base, next, events), grouped) in twins.iter().zip(grouped) {
            sqlx::query("DELETE FROM phone_calls WHERE id = $1")
                .bind(base.id.as_uuid())
                .execute(&pool)
                .await
                .unwrap();
            single.create(base).await.unwrap();
            assert_eq!(single.commit(next, events).await.unwrap(), 1);
            let alone = stored_rows(&pool, base.id).await;
            assert_eq!(grouped, alone, "{:?}", next.state());
        }
    })
    .await;
}
