//! Load generator: plays N concurrent, signed Twilio call lifecycles against
//! a running bonde-pressure server and reports callbacks/s and latency
//! percentiles.
//!
//! It also runs a fake Twilio REST API (Calls, Participants, Conferences) on
//! `--fake-twilio`, which the server must use as `TWILIO_API_BASE`, so the
//! server runs its real Twilio client and signature checks, and only this
//! machine's loopback is ever contacted. See docs/performance.md for the
//! server's settings and the figures.
//!
//! ```sh
//! cargo run --release -p bonde-pressure-http --example loadgen -- --calls 500 --concurrency 50
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bonde_pressure_twilio::signature::{SIGNATURE_HEADER, sign};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Signed Twilio lifecycles against a bonde-pressure server")]
struct Args {
    /// The server under test.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// The server's public BASE_URL (what signatures are computed on).
    #[arg(long)]
    base_url: Option<String>,
    /// The server's TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", default_value = "loadgen-token")]
    auth_token: String,
    /// Where the fake Twilio API listens (the server's TWILIO_API_BASE).
    #[arg(long, default_value = "127.0.0.1:8765")]
    fake_twilio: SocketAddr,
    /// Lifecycles to play.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Send every callback twice (Twilio retries), to measure duplicate handling.
    #[arg(long)]
    duplicates: bool,
    /// Widget to use (its target is `--target-phone`).
    #[arg(long, default_value_t = 1)]
    widget_id: i64,
    /// The widget's target number.
    #[arg(long, default_value = "+5561999990000")]
    target_phone: String,
}

/// The fake Twilio: remembers which target leg it created for which conference.
#[derive(Default)]
struct FakeTwilio {
    participants: Mutex<HashMap<String, String>>,
    requests: Mutex<u64>,
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn fake_twilio(State(fake): State<Arc<FakeTwilio>>, req: Request) -> Response {
    *fake.requests.lock().unwrap() += 1;
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // 2010-04-01 / Accounts / {AC} / ...
    let rest = segments.get(3..).unwrap_or_default();
    let json =
        |status: StatusCode, body: serde_json::Value| (status, axum::Json(body)).into_response();
    match (req.method().clone(), rest) {
        (Method::POST, ["Calls.json"]) => json(
            StatusCode::CREATED,
            serde_json::json!({"sid": new_sid("CA"), "status": "queued"}),
        ),
        (Method::POST, ["Conferences", name, "Participants.json"]) => {
            let sid = new_sid("CA");
            fake.participants
                .lock()
                .unwrap()
                .insert((*name).to_owned(), sid.clone());
            json(
                StatusCode::CREATED,
                serde_json::json!({"call_sid": sid, "conference_sid": new_sid("CF"), "status": "queued", "label": "target"}),
            )
        }
        (Method::POST | Method::GET, ["Calls", sid]) | (Method::POST, ["Conferences", sid]) => {
            json(
                StatusCode::OK,
                serde_json::json!({"sid": sid.trim_end_matches(".json"), "status": "completed"}),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": 20404, "message": "not found", "status": 404}),
        ),
    }
}

struct Stats {
    latencies: Mutex<Vec<Duration>>,
    failures: Mutex<Vec<String>>,
    completed: Mutex<usize>,
}

struct Ctx {
    args: Args,
    base: String,
    http: reqwest::Client,
    fake: Arc<FakeTwilio>,
    stats: Stats,
}

impl Ctx {
    /// Sends one signed form callback; records its latency.
    async fn callback(&self, path: &str, params: &[(&str, String)]) -> Result<String, String> {
        let url = format!("{}{}", self.base, path);
        let signature = sign(&self.args.auth_token, &url, params);
        let target = format!("{}{}", self.args.server.trim_end_matches('/'), path);
        let times = if self.args.duplicates { 2 } else { 1 };
        let mut body = String::new();
        for _ in 0..times {
            let started = Instant::now();
            let resp = self
                .http
                .post(&target)
                .header(SIGNATURE_HEADER, &signature)
                .form(params)
                .send()
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let status = resp.status();
            body = resp.text().await.map_err(|e| format!("{path}: {e}"))?;
            self.stats.latencies.lock().unwrap().push(started.elapsed());
            if !status.is_success() {
                return Err(format!("{path}: HTTP {status}: {body}"));
            }
        }
        Ok(body)
    }

    async fn lifecycle(&self, n: usize) -> Result<(), String> {
        let activist_phone = format!("+55119{:08}", n % 100_000_000);
        let start = self
            .http
            .post(format!(
                "{}/v1/phone/call",
                self.args.server.trim_end_matches('/')
            ))
            .json(&serde_json::json!({
                "widget_id": self.args.widget_id,
                "activist": {"name": "Load Test", "first_name": "Load", "last_name": "Test",
                             "email": format!("load{n}@example.org"), "phone": activist_phone},
                "target": {"name": "Target", "phone": self.args.target_phone},
            }))
            .send()
            .await
            .map_err(|e| format!("start: {e}"))?;
        let status = start.status();
        let started: serde_json::Value = start.json().await.map_err(|e| format!("start: {e}"))?;
        if !status.is_success() {
            return Err(format!("start: HTTP {status}: {started}"));
        }
        let id = started["call_id"]
            .as_str()
            .ok_or("start: no call_id")?
            .to_owned();
        let a_sid = started["twilio_call_sid"]
            .as_str()
            .ok_or("start: no twilio_call_sid")?
            .to_owned();
        let cf = new_sid("CF");
        let acct = format!("AC{}", "0".repeat(32));
        let leg = |sid: &str, status: &str, seq: u32| {
            vec![
                ("AccountSid", acct.clone()),
                ("CallSid", sid.to_owned()),
                ("CallStatus", status.to_owned()),
                ("SequenceNumber", seq.to_string()),
                ("Direction", "outbound-api".to_owned()),
            ]
        };
        let conf = |event: &str, sid: Option<(&str, &str)>, seq: u32| {
            let mut p = vec![
                ("AccountSid", acct.clone()),
                ("ConferenceSid", cf.clone()),
                ("FriendlyName", id.clone()),
                ("StatusCallbackEvent", event.to_owned()),
                ("SequenceNumber", seq.to_string()),
            ];
            if let Some((call_sid, label)) = sid {
                p.push(("CallSid", call_sid.to_owned()));
                p.push(("ParticipantLabel", label.to_owned()));
            }
            p
        };
        let amd = |sid: &str| {
            vec![
                ("AccountSid", acct.clone()),
                ("CallSid", sid.to_owned()),
                ("AnsweredBy", "human".to_owned()),
            ]
        };

        let p = |route: &str| format!("/v1/phone/{route}/{id}");
        self.callback(&p("status-callback"), &leg(&a_sid, "initiated", 0))
            .await?;
        self.callback(&p("status-callback"), &leg(&a_sid, "ringing", 1))
            .await?;
        self.callback(&p("answer"), &leg(&a_sid, "in-progress", 2))
            .await?;
        self.callback(&p("status-callback"), &leg(&a_sid, "in-progress", 2))
            .await?;
        self.callback(&p("amd-status-callback"), &amd(&a_sid))
            .await?;
        let mut gather = leg(&a_sid, "in-progress", 3);
        gather.push(("Digits", "1".to_owned()));
        self.callback(&p("dial"), &gather).await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("conference-start", None, 0),
        )
        .await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("participant-join", Some((&a_sid, "activist")), 1),
        )
        .await?;

        // The server dials the target through the fake Twilio.
        let deadline = Instant::now() + Duration::from_secs(10);
        let b_sid = loop {
            if let Some(sid) = self.fake.participants.lock().unwrap().get(&id).cloned() {
                break sid;
            }
            if Instant::now() > deadline {
                return Err(format!("{id}: target never dialled"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        self.callback(&p("dial-status-callback"), &leg(&b_sid, "initiated", 0))
            .await?;
        self.callback(&p("dial-status-callback"), &leg(&b_sid, "ringing", 1))
            .await?;
        self.callback(&p("dial-status-callback"), &leg(&b_sid, "in-progress", 2))
            .await?;
        self.callback(&p("dial-amd-status-callback"), &amd(&b_sid))
            .await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("participant-join", Some((&b_sid, "target")), 2),
        )
        .await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("participant-leave", Some((&b_sid, "target")), 3),
        )
        .await?;
        let mut b_done = leg(&b_sid, "completed", 3);
        b_done.push(("CallDuration", "42".to_owned()));
        self.callback(&p("dial-status-callback"), &b_done).await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("conference-end", None, 4),
        )
        .await?;
        self.callback(
            &p("conference-status-callback"),
            &conf("participant-leave", Some((&a_sid, "activist")), 5),
        )
        .await?;
        let mut after = leg(&a_sid, "in-progress", 4);
        after.push(("DialCallStatus", "completed".to_owned()));
        self.callback(&p("after-dial"), &after).await?;
        let mut a_done = leg(&a_sid, "completed", 5);
        a_done.push(("CallDuration", "60".to_owned()));
        self.callback(&p("status-callback"), &a_done).await?;

        let status: serde_json::Value = self
            .http
            .get(format!(
                "{}/v1/phone/status/{id}",
                self.args.server.trim_end_matches('/')
            ))
            .send()
            .await
            .map_err(|e| format!("status: {e}"))?
            .json()
            .await
            .map_err(|e| format!("status: {e}"))?;
        if status["status"] != "completed" {
            return Err(format!("{id}: ended as {status}"));
        }
        *self.stats.completed.lock().unwrap() += 1;
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    for addr in [args.fake_twilio.ip()] {
        if !addr.is_loopback() {
            return Err("the fake Twilio must listen on a loopback address".into());
        }
    }
    let fake = Arc::new(FakeTwilio::default());
    let listener = tokio::net::TcpListener::bind(args.fake_twilio).await?;
    let app = Router::new().fallback(fake_twilio).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let base = args
        .base_url
        .clone()
        .unwrap_or_else(|| args.server.clone())
        .trim_end_matches('/')
        .to_owned();
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base,
        fake: fake.clone(),
        stats: Stats {
            latencies: Mutex::default(),
            failures: Mutex::default(),
            completed: Mutex::default(),
        },
        args: args.clone(),
    });

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (ctx, next) = (ctx.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= ctx.args.calls {
                        break;
                    }
                    if let Err(e) = ctx.lifecycle(n).await {
                        ctx.stats.failures.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed();

    let mut lat = ctx.stats.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let failures = ctx.stats.failures.lock().unwrap().clone();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "lifecycles: {} requested, {} completed, {} failed",
        args.calls,
        *ctx.stats.completed.lock().unwrap(),
        failures.len()
    );
    println!(
        "callbacks: {} in {:.2} s = {:.0} callbacks/s (concurrency {}, duplicates {})",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        args.concurrency,
        args.duplicates
    );
    println!(
        "callback latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
    println!("fake Twilio requests: {}", *fake.requests.lock().unwrap());
    for f in failures.iter().take(5) {
        eprintln!("failure: {f}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} lifecycles failed", failures.len()).into())
    }
}
