//! Two replicas (two apps wired by `wiring::build`) on one PostgreSQL
//! database share their rate limits: per client IP and per activist number,
//! the quota holds across them. Skipped without `TEST_DATABASE_URL`
//! (failing with `CI=true`).

mod common;

use axum::http::StatusCode;
use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring::{self, App};
use common::{front_end_body, post_call, router, send, with_fresh_postgres};
use serde_json::json;

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
    with_fresh_postgres(async |url, _pool| {
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
    with_fresh_postgres(async |url, _pool| {
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
    with_fresh_postgres(async |url, _pool| {
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
