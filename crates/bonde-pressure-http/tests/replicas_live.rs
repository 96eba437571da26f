//! Two replicas (two wired apps) on one fresh PostgreSQL database: an SSE
//! subscriber on replica 1 sees the commits made through replica 2 at once
//! (PostgreSQL `LISTEN/NOTIFY`, not the SSE poll, which is set to ten
//! minutes), and replica 1's status cache follows them.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bonde_pressure_core::CallId;
use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring::{self, App};
use common::*;
use futures::StreamExt;
use serde_json::Value;

async fn replica(url: &str, extra: &[&str]) -> App {
    let mut args = vec![
        "bonde-pressure",
        "--database-url",
        url,
        "--reconcile-interval",
        "0",
        "--rate-limit-per-ip",
        "off",
        "--rate-limit-per-activist",
        "off",
        "--rate-limit-per-target",
        "off",
        "--sse-poll-interval",
        "600000",
    ];
    args.extend_from_slice(extra);
    let app = wiring::build(&Config::from_args(args).expect("config"))
        .await
        .expect("wired");
    // Listening before anything is committed.
    let start = Instant::now();
    while !app.service.live_updates().is_complete() {
        assert!(start.elapsed() < Duration::from_secs(10), "never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_replica_sees_commits_made_through_another_at_once() {
    with_fresh_postgres(async |url: String, _pool| {
        // Replica 1 is idle; replica 2's simulated telephony plays the
        // call (a tick of 150 ms between steps) and commits every step.
        let one = replica(&url, &["--simulated-tick", "0"]).await;
        let two = replica(&url, &["--simulated-tick", "150"]).await;
        assert!(one.live_listener.is_some() && two.live_listener.is_some());
        assert!(
            one.service.call_cache().is_some(),
            "cache on with a listener"
        );
        let (r1, r2) = (router(&one), router(&two));

        // When replica 2 committed each version of each call.
        let committed: Arc<Mutex<HashMap<(CallId, u64), Instant>>> = Default::default();
        let log = committed.clone();
        two.service.live_updates().observe(move |u| {
            log.lock()
                .unwrap()
                .insert((u.call_id, u.version), Instant::now());
        });

        let id = start(&r2, "11 91234-5675").await;
        let call_id: CallId = id.parse::<uuid::Uuid>().unwrap().into();
        // The page on replica 1 polls the status (filling its cache)…
        let status = json_body(send(&r1, get(&format!("/v1/phone/status/{id}"))).await).await;
        assert_eq!(status["call_id"], id.as_str());
        // …and follows the call's events there.
        let resp = send(&r1, get(&format!("/v1/phone/calls/{id}/events"))).await;
        assert_eq!(resp.status(), 200);
        let mut stream = resp.into_body().into_data_stream();
        let mut received: Vec<(u64, Instant, Value)> = Vec::new();
        let mut buffer = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        'read: while Instant::now() < deadline {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event well before the ten-minute poll");
            let Some(chunk) = chunk else { break };
            buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let v: Value = serde_json::from_str(data).unwrap();
                    let version = v["version"].as_u64().unwrap();
                    let terminal = v["terminal"] == true;
                    received.push((version, Instant::now(), v));
                    if terminal {
                        break 'read;
                    }
                }
            }
        }
        let last = &received.last().expect("events").2;
        assert_eq!(last["terminal"], true, "{received:?}");
        assert!(received.len() >= 3, "{received:?}");
        // Each event after the first came from a commit of replica 2's:
        // how long after that commit replica 1's subscriber had it.
        let committed = committed.lock().unwrap().clone();
        let mut delays: Vec<Duration> = received[1..]
            .iter()
            .map(|(v, at, _)| {
                let c = committed
                    .get(&(call_id, *v))
                    .unwrap_or_else(|| panic!("version {v} not committed by replica 2"));
                at.saturating_duration_since(*c)
            })
            .collect();
        delays.sort();
        let worst = *delays.last().unwrap();
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "cross-replica SSE delays: {delays:?} (versions {:?})",
            received.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        // The goal is ~100 ms; 500 ms leaves room for a loaded CI box.
        assert!(worst < Duration::from_millis(500), "{delays:?}");

        // Replica 1's cached status followed too: the final status at once.
        let final_status = last["status"].as_str().unwrap();
        let s1 = json_body(send(&r1, get(&format!("/v1/phone/status/{id}"))).await).await;
        let s2 = json_body(send(&r2, get(&format!("/v1/phone/status/{id}"))).await).await;
        assert_eq!(s1, s2);
        assert_eq!(s1["status"], final_status);
        assert!(
            one.service
                .call_cache()
                .unwrap()
                .get(call_id)
                .is_some_and(|c| c.version == received.last().unwrap().0),
            "replica 1 cached the final version"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_updates_there_is_no_listener_and_no_status_cache() {
    with_fresh_postgres(async |url: String, _pool| {
        let app = wiring::build(
            &Config::from_args([
                "bonde-pressure",
                "--database-url",
                &url,
                "--reconcile-interval",
                "0",
                "--pg-live-updates",
                "false",
            ])
            .unwrap(),
        )
        .await
        .unwrap();
        assert!(app.live_listener.is_none());
        assert!(app.service.call_cache().is_none());
    })
    .await;
}
