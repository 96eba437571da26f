//! Cross-replica live updates over PostgreSQL `LISTEN/NOTIFY`: two stores
//! on one fresh database stand for two replicas; replica A's listener feeds
//! A's hub with B's commits (not its own), and after its connection is
//! killed it resynchronises its subscribers so that a commit made during the
//! gap is still seen.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bonde_pressure_core::live::{LiveUpdates, Notice, Subscription};
use bonde_pressure_core::ports::CallStore;
use bonde_pressure_core::{Call, CallId};
use bonde_pressure_store::PgCallStore;
use common::with_fresh_postgres;

async fn next(sub: &mut Subscription, within: Duration) -> Option<Notice> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .flatten()
}

/// Waits until the hub has a listening listener (its first resync).
async fn listening(live: &LiveUpdates) {
    let start = Instant::now();
    while !live.is_complete() {
        assert!(start.elapsed() < Duration::from_secs(10), "never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn commit(store: &PgCallStore, call: &mut Call) {
    call.version = store.commit(call, &[]).await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_commit_reaches_the_hub_and_its_own_is_skipped() {
    with_fresh_postgres(async |a: Arc<PgCallStore>, pool| {
        a.migrate().await.unwrap();
        let b = PgCallStore::from_pool(pool.clone());
        let live = LiveUpdates::new(64);
        let listener = a.spawn_live_listener(live.clone());
        listening(&live).await;

        let mut call =
            bonde_pressure_store::conformance::new_call(7, bonde_pressure_store::conformance::t0());
        let mut all = live.subscribe();
        // Created by B: heard.
        b.create(&call).await.unwrap();
        match next(&mut all, Duration::from_secs(5)).await {
            Some(Notice::Update(u)) => assert_eq!((u.call_id, u.version), (call.id, 0)),
            other => panic!("{other:?}"),
        }
        // Committed by A (its service publishes it itself): not heard;
        // then by B: heard, and it is the next notice.
        commit(&a, &mut call).await;
        let sent = Instant::now();
        commit(&b, &mut call).await;
        match next(&mut all, Duration::from_secs(5)).await {
            Some(Notice::Update(u)) => {
                assert_eq!(
                    (u.call_id, u.widget_id, u.version),
                    (call.id, call.widget_id, 2)
                );
                assert_eq!(u.state, call.state());
            }
            other => panic!("{other:?}"),
        }
        let latency = sent.elapsed();
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        assert!(next(&mut all, Duration::from_millis(200)).await.is_none());
        assert_eq!(listener.heard(), 2);
        // A commit that lost its version race notifies nothing.
        let mut stale = call.clone();
        stale.version = 1;
        assert!(b.commit(&stale, &[]).await.is_err());
        assert!(next(&mut all, Duration::from_millis(200)).await.is_none());
        // A store with notifications off is not heard.
        let quiet = PgCallStore::from_pool(pool.clone()).notify_commits(false);
        commit(&quiet, &mut call).await;
        assert!(next(&mut all, Duration::from_millis(200)).await.is_none());
        listener.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_resynchronises_and_a_commit_made_in_the_gap_is_seen() {
    with_fresh_postgres(async |a: Arc<PgCallStore>, pool| {
        a.migrate().await.unwrap();
        let b = PgCallStore::from_pool(pool.clone());
        let live = LiveUpdates::new(64);
        let listener = a.spawn_live_listener(live.clone());
        listening(&live).await;
        let mut call =
            bonde_pressure_store::conformance::new_call(7, bonde_pressure_store::conformance::t0());
        let id: CallId = call.id;
        let mut sub = live.subscribe_call(id);
        b.create(&call).await.unwrap();
        assert!(matches!(
            next(&mut sub, Duration::from_secs(5)).await,
            Some(Notice::Update(_))
        ));

        // Kill the listener's backend, then commit at once through B:
        // the notification is sent while nobody listens.
        let killed: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query ILIKE 'LISTEN%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(killed.len(), 1, "one listener backend");
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(killed[0])
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(terminated);
        commit(&b, &mut call).await;

        // The subscriber is told to resynchronise, and learns of version 1
        // either from a re-read after that resync (the commit fell in the
        // gap) or as an update (the listener was already back).
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut resynced, mut seen) = (false, false);
        while Instant::now() < deadline && !(resynced && seen) {
            match next(&mut sub, Duration::from_secs(1)).await {
                Some(Notice::Resync) => {
                    resynced = true;
                    seen |= a.get(id).await.unwrap().unwrap().version == 1;
                }
                Some(Notice::Update(u)) => {
                    assert_eq!(u.version, 1);
                    seen = true;
                }
                other => assert!(other.is_none(), "{other:?}"),
            }
        }
        assert!(resynced, "no resync after the listener was killed");
        assert!(seen, "the commit made in the gap was not seen");
        assert!(live.is_complete());
        assert_eq!(listener.connections(), 2);
        // Listening again: the next commit is heard as an update (after,
        // possibly, version 1's when the listener was back before it).
        commit(&b, &mut call).await;
        loop {
            match next(&mut sub, Duration::from_secs(5)).await {
                Some(Notice::Update(u)) if u.version == 1 => continue,
                Some(Notice::Update(u)) => {
                    assert_eq!(u.version, 2);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
}
