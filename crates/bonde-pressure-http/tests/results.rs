//! Campaign results over HTTP: the stats report, the CSV export, the
//! widget's live counters, the admin token, and the pages (dashboard and
//! demo) with their security headers.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{
    app_with, body_bytes, front_end_body, get, json_body, poll_final, post_call, router, send,
    start, validation_items,
};
use futures::StreamExt;
use serde_json::{Value, json};

const TOKEN: &str = "results-admin-token";

async fn admin_app() -> bonde_pressure_http::wiring::App {
    app_with(&["--admin-token", TOKEN, "--demo-page", "true"]).await
}

fn admin_get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

/// Places one call per activist number and waits for each to end.
async fn place(r: &axum::Router, phones: &[&str]) {
    for p in phones {
        let id = start(r, p).await;
        poll_final(r, &id, Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn results_routes_need_the_admin_token() {
    let app = admin_app().await;
    let r = router(&app);
    for path in [
        "/v1/phone/widgets/1/stats",
        "/v1/phone/widgets/1/calls.csv",
        "/v1/phone/widgets/1/events",
    ] {
        let resp = send(&r, get(path)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = send(
            &r,
            Request::get(path)
                .header("authorization", "Bearer wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(json_body(resp).await["detail"], "Invalid token.");
    }
    // The scheme is case-insensitive.
    let resp = send(
        &r,
        Request::get("/v1/phone/widgets/1/stats")
            .header("authorization", format!("bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn stats_count_outcomes_funnel_targets_and_series() {
    let app = admin_app().await;
    let r = router(&app);
    // last digit: 0 success, 5 target busy, 1 activist busy, 6 target no answer, 9 success
    place(
        &r,
        &[
            "11 91234-5670",
            "11 91234-5675",
            "11 91234-5671",
            "11 91234-5676",
            "11 91234-5679",
        ],
    )
    .await;
    let resp = send(
        &r,
        admin_get("/v1/phone/widgets/1/stats?tz=America/Sao_Paulo&interval=hour"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let s = json_body(resp).await;
    assert_eq!(s["widget_id"], 1);
    assert_eq!(s["tz"], "America/Sao_Paulo");
    assert_eq!(s["interval"], "hour");
    assert_eq!(s["percentile_method"], "nearest-rank");
    assert_eq!(s["total"], 5);
    assert_eq!(
        s["by_status"],
        json!({"initiated": 0, "ringing": 0, "in-progress": 0, "completed": 2, "busy": 1,
               "no-answer": 1, "failed": 0, "canceled": 1})
    );
    assert_eq!(s["by_state"]["activist_busy"], 1);
    assert_eq!(s["by_state"]["target_busy"], 1);
    assert_eq!(s["by_state"]["target_no_answer"], 1);
    let funnel: Vec<(String, u64)> = s["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["stage"].as_str().unwrap().into(),
                f["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        funnel,
        [
            ("requested".into(), 5),
            ("activist_answered".into(), 4),
            ("confirmed".into(), 4),
            ("target_dialled".into(), 4),
            ("connected".into(), 2),
            ("completed".into(), 2),
        ]
    );
    let t = &s["targets"][0];
    assert_eq!(t["name"], "Demo Target");
    assert_eq!(t["phone"], "+5561999990000");
    assert_eq!(t["calls"], 5);
    assert_eq!(t["completed"], 2);
    assert!(t["median_talk_secs"].is_u64(), "{t}");
    assert!(t["p90_talk_secs"].is_u64(), "{t}");
    // The series: 168 hourly buckets of the last 7 days, the calls in the last one(s).
    let series = s["series"].as_array().unwrap();
    assert!(series.len() >= 168, "{}", series.len());
    assert_eq!(
        series
            .iter()
            .map(|b| b["total"].as_u64().unwrap())
            .sum::<u64>(),
        5
    );
    assert!(
        series[0]["start"].as_str().unwrap().ends_with(":00:00"),
        "{}",
        series[0]
    );
}

#[tokio::test]
async fn bad_stats_parameters_are_field_errors() {
    let app = admin_app().await;
    let r = router(&app);
    let items = validation_items(
        send(
            &r,
            admin_get("/v1/phone/widgets/1/stats?tz=Nowhere/City&from=tomorrow&to=2026-02-30"),
        )
        .await,
    )
    .await;
    let locs: Vec<Value> = items.iter().map(|i| i["loc"].clone()).collect();
    assert!(locs.contains(&json!(["query", "tz"])), "{locs:?}");
    assert!(locs.contains(&json!(["query", "from"])), "{locs:?}");
    assert!(locs.contains(&json!(["query", "to"])), "{locs:?}");
    let items = validation_items(
        send(
            &r,
            admin_get("/v1/phone/widgets/1/stats?from=2026-03-01&to=2026-01-01"),
        )
        .await,
    )
    .await;
    assert_eq!(items[0]["type"], "value_error.period");
    let items = validation_items(send(&r, admin_get("/v1/phone/widgets/abc/stats")).await).await;
    assert_eq!(items[0]["loc"], json!(["path", "widget_id"]));
    let items = validation_items(
        send(
            &r,
            admin_get("/v1/phone/widgets/1/calls.csv?interval=fortnight"),
        )
        .await,
    )
    .await;
    assert_eq!(items[0]["loc"], json!(["query", "interval"]));
}

#[tokio::test]
async fn csv_export_streams_every_call_with_formulas_escaped() {
    let app = admin_app().await;
    let r = router(&app);
    let mut body = front_end_body("11 91234-5670");
    body["activist"]["name"] = json!("=HYPERLINK(\"http://evil\",\"x\")");
    body["activist"]["email"] = json!("-evil@example.org");
    let resp = send(&r, post_call(&body)).await;
    let status = resp.status();
    let v = json_body(resp).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    poll_final(&r, v["call_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    place(&r, &["11 91234-5675"]).await;

    let resp = send(&r, admin_get("/v1/phone/widgets/1/calls.csv")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("widget-1-calls.csv")
    );
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("call_id,created_at,updated_at,widget_id,status,state"));
    let evil = lines
        .iter()
        .find(|l| l.contains("HYPERLINK"))
        .expect("the row");
    // Quoted (it holds quotes and a comma), and the formula neutralised.
    assert!(
        evil.contains(r#""'=HYPERLINK(""http://evil"",""x"")""#),
        "{evil}"
    );
    assert!(evil.contains(",'-evil@example.org,"), "{evil}");
    assert!(evil.contains(",'+5511912345670,"), "{evil}");
    assert!(evil.contains(",completed,completed,completed,"), "{evil}");
    assert!(lines.iter().any(|l| l.contains(",busy,target_busy,")));
    // No cell of any row starts with a formula character.
    for line in &lines[1..] {
        for cell in line.split(',') {
            let c = cell.trim_start_matches('"');
            assert!(
                !c.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell} in {line}"
            );
        }
    }
    // Another widget: just the header.
    let resp = send(&r, admin_get("/v1/phone/widgets/2/calls.csv")).await;
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert_eq!(text.lines().count(), 1);
}

/// Reads SSE `data:` payloads from a streaming body until `n` arrived.
async fn sse_data(body: &mut axum::body::BodyDataStream, buf: &mut String) -> Value {
    loop {
        if let Some(i) = buf.find("\n\n") {
            let frame: String = buf.drain(..i + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("chunk");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn widget_events_stream_live_counters() {
    let app = admin_app().await;
    let r = router(&app);
    place(&r, &["11 91234-5670"]).await;
    let resp = send(&r, admin_get("/v1/phone/widgets/1/events")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut buf = String::new();
    let first = sse_data(&mut body, &mut buf).await;
    assert_eq!(first["widget_id"], 1);
    assert_eq!(first["total"], 1);
    assert_eq!(first["by_status"]["completed"], 1);
    // A new call shows up in the counters, up to its end.
    place(&r, &["11 91234-5675"]).await;
    let mut last = first;
    for _ in 0..10 {
        last = sse_data(&mut body, &mut buf).await;
        if last["by_status"]["busy"] == 1 {
            break;
        }
    }
    assert_eq!(last["total"], 2, "{last}");
    assert_eq!(last["by_status"]["busy"], 1, "{last}");
    assert_eq!(last["live"], 0, "{last}");
    // Another widget's stream does not count them.
    let resp = send(&r, admin_get("/v1/phone/widgets/2/events")).await;
    let mut body = resp.into_body().into_data_stream();
    let mut buf = String::new();
    assert_eq!(sse_data(&mut body, &mut buf).await["total"], 0);
}

#[tokio::test]
async fn pages_are_self_contained_under_a_strict_csp() {
    let app = admin_app().await;
    let r = router(&app);
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/demo.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let resp = send(&r, get(path)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let text = String::from_utf8(body_bytes(resp).await).unwrap();
        if kind == "text/html" {
            // No inline script or style, nothing from elsewhere.
            assert!(!text.contains("<script>"), "{path}");
            assert!(!text.contains("<style"), "{path}");
            assert!(!text.contains(" style="), "{path}");
            assert!(!has_inline_handler(&text), "{path}: no inline handlers");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path}"
            );
        }
    }
    let demo = json_body(send(&r, get("/demo/config.json")).await).await;
    assert_eq!(demo["widget_id"], 1);
    assert_eq!(demo["targets"][0]["name"], "Demo Target");
}

/// An `on…=` attribute (an inline event handler).
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";

async fn twilio_app(extra: &[&str]) -> bonde_pressure_http::wiring::App {
    let mut args = vec![
        "--twilio-account-sid",
        AC,
        "--twilio-auth-token",
        "twilio-token",
        "--twilio-phone-number",
        "+5511987650000",
        "--base-url",
        "https://pressure.example.org",
    ];
    args.extend_from_slice(extra);
    app_with(&args).await
}

#[tokio::test]
async fn the_demo_page_is_off_with_twilio_unless_asked_for() {
    let app = twilio_app(&["--admin-token", TOKEN]).await;
    let r = router(&app);
    assert_eq!(send(&r, get("/")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&r, get("/demo.js")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The dashboard stays.
    assert_eq!(send(&r, get("/dashboard")).await.status(), StatusCode::OK);
    let app = twilio_app(&["--admin-token", TOKEN, "--demo-page", "true"]).await;
    assert_eq!(send(&router(&app), get("/")).await.status(), StatusCode::OK);
    // Simulated telephony: on by default, off when asked.
    let app = app_with(&[]).await;
    assert_eq!(send(&router(&app), get("/")).await.status(), StatusCode::OK);
    let app = app_with(&["--demo-page", "false"]).await;
    assert_eq!(
        send(&router(&app), get("/")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_admin_token_is_generated_only_in_zero_config() {
    // Simulated telephony, no ADMIN_TOKEN: one is generated.
    let app = app_with(&[]).await;
    let token = app
        .state
        .options
        .admin_token
        .clone()
        .expect("a generated token");
    assert!(token.expose().len() >= 32);
    let resp = send(
        &router(&app),
        Request::get("/v1/phone/widgets/1/stats")
            .header("authorization", format!("Bearer {}", token.expose()))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Twilio without ADMIN_TOKEN: none, the results stay closed.
    let app = twilio_app(&[]).await;
    assert!(app.state.options.admin_token.is_none());
    let resp = send(
        &router(&app),
        Request::get("/v1/phone/widgets/1/stats")
            .header("authorization", "Bearer anything")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// The CSV export's lines (CRLF-separated, the header first).
async fn csv_lines(r: &axum::Router) -> Vec<String> {
    let resp = send(r, admin_get("/v1/phone/widgets/1/calls.csv")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(text.ends_with("\r\n"), "{text}");
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A stored call that cannot be read (its facts and identity damaged with
/// SQL at `url`) does not cut the CSV export short: it is a line with its
/// id and the status `unreadable`, nothing of its content, and the calls
/// after it follow.
async fn csv_export_goes_past_a_damaged_row(url: &str, corrupt: &str) {
    let app = app_with(&["--admin-token", TOKEN, "--database-url", url]).await;
    let r = router(&app);
    let phones = [
        "11 91234-5670",
        "11 91234-5671",
        "11 91234-5672",
        "11 91234-5673",
    ];
    place(&r, &phones).await;
    let before = csv_lines(&r).await;
    assert_eq!(before.len(), 5, "{before:?}");
    let bad = before[2].split(',').next().unwrap().to_owned();
    let n = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let n = sqlx::query(corrupt)
            .bind(&bad)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n = sqlx::query(corrupt)
            .bind(uuid::Uuid::parse_str(&bad).unwrap())
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        n
    };
    assert_eq!(n, 1);

    let after = csv_lines(&r).await;
    assert_eq!(after.len(), 5, "{after:?}");
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    assert_eq!(after[2], format!("{bad},,,,unreadable,,,,,,,,,"));
    assert_eq!(after[3..], before[3..]);
    assert!(
        !after.iter().any(|l| l.contains("Segredo")),
        "nothing of the damaged row's content: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_goes_past_a_damaged_row_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calls.db").display());
    csv_export_goes_past_a_damaged_row(
        &url,
        "UPDATE phone_calls SET facts = '{\"activist\": 5}', \
         activist_name = 'Segredo Pessoal', activist_email = 'not an e-mail' WHERE id = ?1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_goes_past_a_damaged_row_on_postgres() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        // Same rule as the store's PostgreSQL tests.
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            panic!("TEST_DATABASE_URL must be set when CI=true");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: set TEST_DATABASE_URL=postgres://… to run the PostgreSQL CSV test"
        );
        return;
    };
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("TEST_DATABASE_URL reachable");
    let name = format!("bp_csv_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("create the scratch database");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (url.clone(), String::new()),
    };
    let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
    let server = if rest.contains('/') {
        base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b)
    } else {
        base.as_str()
    };
    let scratch = format!("{server}/{name}{query}");
    let outcome = tokio::spawn(async move {
        csv_export_goes_past_a_damaged_row(
            &scratch,
            "UPDATE phone_calls SET facts = '{\"activist\": 5}'::jsonb, \
             activist_name = 'Segredo Pessoal', activist_email = 'not an e-mail' WHERE id = $1",
        )
        .await
    })
    .await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .expect("drop the scratch database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
