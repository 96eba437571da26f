//! The rate-limiter conformance suite against core's `InMemoryRateLimiter`
//! and `PgRateLimiter` (a fresh database per test at `TEST_DATABASE_URL`;
//! skipped without it unless `CI=true`), then what only the shared one
//! does: count across replicas (two pools), purge expired keys, keep no
//! value in the clear. Also `PgLease`, and two reconcilers on one database
//! under it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    InMemoryRateLimiter, Lease, LimitKey, LimitKind, ManualClock, Quota, RateLimiter,
};
use bonde_pressure_store::limiter_conformance::{self, limiter_epoch};
use bonde_pressure_store::{PgLease, PgRateLimiter};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Runs `check` on a migrated fresh database, with a manual clock at the
/// suite's epoch.
async fn with_postgres(check: impl AsyncFnOnce(PgPool, Arc<ManualClock>)) {
    common::with_fresh_postgres(async |store, pool| {
        store.migrate().await.expect("migrate the test database");
        check(pool, Arc::new(ManualClock::new(limiter_epoch()))).await;
    })
    .await;
}

/// A second pool on the same database (another replica).
async fn second_pool(pool: &PgPool) -> PgPool {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("second pool")
}

macro_rules! limiter_tests {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let clock = Arc::new(ManualClock::new(limiter_epoch()));
                    let limiter: Arc<dyn RateLimiter> = Arc::new(InMemoryRateLimiter::new(clock.clone()));
                    limiter_conformance::$check(limiter, clock).await;
                }
            )*
        }

        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_postgres(async |pool, clock| {
                        let limiter: Arc<dyn RateLimiter> =
                            Arc::new(PgRateLimiter::new(pool, clock.clone()));
                        limiter_conformance::$check(limiter, clock).await;
                    })
                    .await;
                }
            )*
        }
    };
}

bonde_pressure_store::for_each_limiter_check!(limiter_tests);

/// Two replicas (two pools, two limiters) and 32 tasks each charging one
/// key never admit more than the quota between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_quota() {
    with_postgres(async |pool, clock| {
        let other = second_pool(&pool).await;
        let limiters: [Arc<dyn RateLimiter>; 2] = [
            Arc::new(PgRateLimiter::new(pool.clone(), clock.clone())),
            Arc::new(PgRateLimiter::new(other.clone(), clock.clone())),
        ];
        for (key, quota) in [
            (
                LimitKey::new(LimitKind::TargetDials, "+5561999990000"),
                Quota::per_hour(7),
            ),
            (
                LimitKey::new(LimitKind::ActivistRequests, "+5561999990001"),
                Quota::gradual(7, Duration::from_secs(3600)),
            ),
        ] {
            let mut tasks = Vec::new();
            for i in 0..64 {
                let l = limiters[i % 2].clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    l.charge(&key, quota).await.unwrap().is_admitted()
                }));
            }
            let mut admitted = 0;
            for t in tasks {
                admitted += usize::from(t.await.unwrap());
            }
            assert_eq!(admitted, 7, "{key:?}");
            // Either replica sees the quota used up.
            for l in &limiters {
                assert!(!l.peek(&key, quota).await.unwrap().is_admitted());
            }
        }
        other.close().await;
    })
    .await;
}

/// Keys like new (window empty, bucket full) are deleted by the purge, the
/// others kept; `charge` purges by itself once due.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_keys_are_purged() {
    with_postgres(async |pool, clock| {
        let l = PgRateLimiter::new(pool.clone(), clock.clone());
        let hour = Quota::per_hour(2);
        let bucket = Quota::gradual(2, Duration::from_secs(60));
        for i in 0..10 {
            let k = LimitKey::new(LimitKind::TargetDials, format!("+55619999900{i:02}"));
            assert!(l.charge(&k, hour).await.unwrap().is_admitted());
            let ip = LimitKey::new(LimitKind::ClientIp, format!("203.0.113.{i}"));
            assert!(l.charge(&ip, bucket).await.unwrap().is_admitted());
        }
        assert_eq!(l.purge_expired().await.unwrap(), 0);
        assert_eq!(l.stored_keys().await.unwrap(), 20);
        // After 30 s the buckets are full again: like new keys.
        clock.advance(Duration::from_secs(30));
        assert_eq!(l.purge_expired().await.unwrap(), 10);
        assert_eq!(l.stored_keys().await.unwrap(), 10);
        let k = LimitKey::new(LimitKind::TargetDials, "+5561999990000");
        assert!(l.charge(&k, hour).await.unwrap().is_admitted());
        assert!(
            !l.charge(&k, hour).await.unwrap().is_admitted(),
            "still counted"
        );
        // An hour later the windows are empty; the next charge purges them
        // itself (its own key excepted).
        clock.advance(Duration::from_secs(3600));
        let fresh = LimitKey::new(LimitKind::TargetDials, "+5561999998888");
        assert!(l.charge(&fresh, hour).await.unwrap().is_admitted());
        assert_eq!(l.stored_keys().await.unwrap(), 1);
    })
    .await;
}

/// The table holds hashes of the values, not the numbers or addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_value_is_stored_in_the_clear() {
    with_postgres(async |pool, clock| {
        let l = PgRateLimiter::new(pool.clone(), clock.clone());
        let k = LimitKey::new(LimitKind::ActivistCalls, "+5561999990000");
        assert!(l.charge(&k, Quota::per_day(3)).await.unwrap().is_admitted());
        let (dump,): (String,) =
            sqlx::query_as("SELECT string_agg(r::text, ' ') FROM rate_limits r")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(dump.contains("activist_calls"), "{dump}");
        assert!(!dump.contains("5561999990000"), "{dump}");
    })
    .await;
}

/// One holder at a time across two pools; renewal, expiry and release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_has_one_holder_at_a_time() {
    with_postgres(async |pool, clock| {
        let other = second_pool(&pool).await;
        let a = PgLease::new(pool.clone(), clock.clone());
        let b = PgLease::new(other.clone(), clock.clone());
        let ttl = Duration::from_secs(60);
        // Racing for a new lease: exactly one wins, many times over.
        for round in 0..20 {
            let name = format!("job-{round}");
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let l = if i % 2 == 0 { a.clone() } else { b.clone() };
                    let name = name.clone();
                    tokio::spawn(async move {
                        l.try_acquire(&name, &format!("holder-{i}"), ttl)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                won += usize::from(t.await.unwrap());
            }
            assert_eq!(won, 1, "round {round}");
        }
        assert!(a.try_acquire("job", "a", ttl).await.unwrap());
        assert!(!b.try_acquire("job", "b", ttl).await.unwrap());
        clock.advance(Duration::from_secs(50));
        assert!(a.try_acquire("job", "a", ttl).await.unwrap(), "renewed");
        clock.advance(Duration::from_secs(50));
        assert!(!b.try_acquire("job", "b", ttl).await.unwrap());
        let (holder, until) = a.current("job").await.unwrap().unwrap();
        assert_eq!(holder, "a");
        assert_eq!(until, limiter_epoch() + chrono::TimeDelta::seconds(110));
        // "a" dies: once its lease expired, "b" takes over.
        clock.advance(Duration::from_secs(10));
        assert!(b.try_acquire("job", "b", ttl).await.unwrap());
        a.release("job", "a").await.unwrap();
        assert!(
            !a.try_acquire("job", "a", ttl).await.unwrap(),
            "a former holder releases nothing"
        );
        b.release("job", "b").await.unwrap();
        assert!(a.try_acquire("job", "a", ttl).await.unwrap());
        other.close().await;
    })
    .await;
}

/// Two services (two replicas, two pools) on one database, each with a
/// reconciler under a `PgLease`: exactly one pass runs per round, the
/// other replica's is skipped, and it takes over after the holder died.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_reconcilers_on_one_database_take_turns_by_the_lease() {
    use bonde_pressure_core::{
        Dependencies, PressureService, Reconciler, Scenario, ScenarioPicker, ServiceConfig,
        SimulatedTelephony, StaticCampaignDirectory,
    };
    use bonde_pressure_store::PgCallStore;
    with_postgres(async |pool, clock| {
        let other = second_pool(&pool).await;
        let reconciler = |pool: PgPool, name: &str| {
            let deps = Dependencies::new(
                Arc::new(PgCallStore::from_pool(pool.clone())),
                Arc::new(SimulatedTelephony::new(
                    ScenarioPicker::Always(Scenario::Success),
                    Duration::from_secs(3600),
                )),
                Arc::new(StaticCampaignDirectory::demo()),
            )
            .with_clock(clock.clone());
            let service = Arc::new(PressureService::new(deps, ServiceConfig::default()));
            let lease: Arc<dyn Lease> = Arc::new(PgLease::new(pool, clock.clone()));
            Reconciler::new(service)
                .with_lease(lease, name)
                .with_lease_ttl(Duration::from_secs(120))
        };
        let a = reconciler(pool.clone(), "replica-a");
        let b = reconciler(other.clone(), "replica-b");
        let mut ran = [0usize; 2];
        for _ in 0..10 {
            clock.advance(Duration::from_secs(30));
            let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert!(
                ra.skipped != rb.skipped,
                "one pass per round: {ra:?} {rb:?}"
            );
            ran[usize::from(ra.skipped)] += 1;
        }
        // The first holder kept the lease by renewing it.
        assert!(ran == [10, 0] || ran == [0, 10], "{ran:?}");
        let (survivor, dead) = if ran[0] == 10 { (&b, &a) } else { (&a, &b) };
        // The holder dies (no more passes): the other waits out the ttl.
        clock.advance(Duration::from_secs(119));
        assert!(survivor.run_once().await.unwrap().skipped);
        clock.advance(Duration::from_secs(1));
        assert!(!survivor.run_once().await.unwrap().skipped);
        // Back, the former holder finds the lease taken.
        assert!(dead.run_once().await.unwrap().skipped);
        other.close().await;
    })
    .await;
}
