//! Two replicas (two apps wired by `wiring::build`) on one PostgreSQL
//! database share their rate limits: per client IP and per activist number,
//! the quota holds across them. Skipped without `TEST_DATABASE_URL`
//! (failing with `CI=true`).

mod common;

use axum::http::StatusCode;
use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring::{self, App};
use common::{front_end_body, post_call, router, send};
use serde_json::json;

/// Runs `check` with the URL of a scratch database (dropped afterwards).
async fn with_scratch_database(check: impl AsyncFnOnce(String)) {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            panic!("TEST_DATABASE_URL must be set when CI=true");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: TEST_DATABASE_URL not set");
        return;
    };
    use futures::FutureExt;
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("TEST_DATABASE_URL reachable");
    let name = format!("bp_limits_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("create the scratch database");
    let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
    let scratch = format!("{}/{name}", base.rsplit_once('/').map_or(base, |(b, _)| b));
    let outcome = std::panic::AssertUnwindSafe(check(scratch))
        .catch_unwind()
        .await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .expect("drop the scratch database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn replica(url: &str, limits: &[&str]) -> App {
    let mut args = vec![
        "bonde-pressure",
        "--database-url",
        url,
        "--simulated-tick",
        "0",
        "--reconcile-interval",
        "0",
        "--trusted-proxy-hops",
        "1",
        "--rate-limit-per-ip",
        "off",
        "--rate-limit-per-activist",
        "off",
        "--rate-limit-per-target",
        "off",
    ];
    args.extend_from_slice(limits);
    wiring::build(&Config::from_args(args).expect("config"))
        .await
        .expect("wired")
}

fn from_ip(
    mut req: axum::http::Request<axum::body::Body>,
    ip: &str,
) -> axum::http::Request<axum::body::Body> {
    req.headers_mut()
        .insert("x-forwarded-for", ip.parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_limit_holds_across_replicas() {
    with_scratch_database(async |url| {
        let limits = ["--rate-limit-per-ip", "4/h"];
        let replicas = [replica(&url, &limits).await, replica(&url, &limits).await];
        assert!(replicas[0].reconcile_lease.is_some(), "PostgreSQL: a lease");
        let routers = [router(&replicas[0]), router(&replicas[1])];
        // Garbage bodies count too; alternate between the replicas.
        let mut admitted = 0;
        for i in 0..12 {
            let resp = send(
                &routers[i % 2],
                from_ip(post_call(&json!({"junk": true})), "203.0.113.5"),
            )
            .await;
            if resp.status() != StatusCode::TOO_MANY_REQUESTS {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 4, "4/h in all, not per replica");
        // Another client is not affected.
        let resp = send(
            &routers[1],
            from_ip(post_call(&json!({"junk": true})), "203.0.113.6"),
        )
        .await;
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_activist_limit_holds_across_replicas() {
    with_scratch_database(async |url| {
        let limits = ["--rate-limit-per-activist", "2/h"];
        let replicas = [replica(&url, &limits).await, replica(&url, &limits).await];
        let routers = [router(&replicas[0]), router(&replicas[1])];
        let mut statuses = Vec::new();
        for i in 0..6 {
            let resp = send(
                &routers[i % 2],
                from_ip(
                    post_call(&front_end_body("11 91234-5678")),
                    &format!("203.0.113.{i}"),
                ),
            )
            .await;
            statuses.push(resp.status());
        }
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let limited = statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!((ok, limited), (2, 4), "{statuses:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_limits_can_be_turned_off() {
    with_scratch_database(async |url| {
        let limits = [
            "--rate-limit-per-ip",
            "2/h",
            "--shared-rate-limits",
            "false",
            "--reconcile-lease-ttl",
            "0",
        ];
        let replicas = [replica(&url, &limits).await, replica(&url, &limits).await];
        assert!(replicas[0].reconcile_lease.is_none());
        let routers = [router(&replicas[0]), router(&replicas[1])];
        let mut admitted = 0;
        for i in 0..8 {
            let resp = send(
                &routers[i % 2],
                from_ip(post_call(&json!({"junk": true})), "203.0.113.5"),
            )
            .await;
            if resp.status() != StatusCode::TOO_MANY_REQUESTS {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 4, "each replica counts on its own");
    })
    .await;
}
