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
//!
//! Two more modes serve `scripts/throughput.sh` (docs/performance.md):
//! - `--mode fake-twilio`: only the fake Twilio API, until SIGINT/SIGTERM,
//!   then prints how many requests of each kind it answered;
//! - `--mode seed --out DIR`: starts `--calls` calls through the server's
//!   API (`POST /v1/phone/call`; a fake Twilio must already be running) and
//!   writes the request lists the wrk scenarios cycle through (one request
//!   a line: `METHOD<TAB>PATH<TAB>SIGNATURE or -<TAB>BODY`, callbacks signed
//!   in advance, since wrk's Lua cannot compute an HMAC), plus `calls.tsv`
//!   (`n<TAB>call id<TAB>activist leg sid`) for the pgbench ceilings.

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

/// What the load generator does.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Play `--calls` full lifecycles (with its own fake Twilio).
    Lifecycles,
    /// Seed `--calls` calls through the server and write wrk request lists to `--out`.
    Seed,
    /// Only serve the fake Twilio API until interrupted.
    FakeTwilio,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Signed Twilio lifecycles against a bonde-pressure server")]
struct Args {
    /// What to do.
    #[arg(long, value_enum, default_value_t = Mode::Lifecycles)]
    mode: Mode,
    /// `--mode seed`: the directory the request lists are written to.
    #[arg(long, default_value = "throughput-requests")]
    out: std::path::PathBuf,
    /// `--mode seed`: the seed of the shuffles (same seed, same order).
    #[arg(long, default_value_t = 14)]
    shuffle_seed: u64,
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
    /// Requests answered, by kind (`activist call`, `target dial`, `other`).
    by_kind: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl FakeTwilio {
    fn count(&self, kind: &'static str) {
        *self.by_kind.lock().unwrap().entry(kind).or_default() += 1;
    }
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
        (Method::POST, ["Calls.json"]) => {
            fake.count("activist call");
            json(
                StatusCode::CREATED,
                serde_json::json!({"sid": new_sid("CA"), "status": "queued"}),
            )
        }
        (Method::POST, ["Conferences", name, "Participants.json"]) => {
            fake.count("target dial");
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
            fake.count("call or conference update");
            json(
                StatusCode::OK,
                serde_json::json!({"sid": sid.trim_end_matches(".json"), "status": "completed"}),
            )
        }
        _ => {
            fake.count("unknown");
            json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"code": 20404, "message": "not found", "status": 404}),
            )
        }
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

    /// Starts call number `n` through the server's API; returns its id and
    /// the activist leg's sid.
    async fn start_call(&self, n: usize) -> Result<(String, String), String> {
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
        Ok((id, a_sid))
    }

    async fn lifecycle(&self, n: usize) -> Result<(), String> {
        let (id, a_sid) = self.start_call(n).await?;
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

/// A small deterministic shuffle (xorshift64*), so a seed gives the same
/// request order on every run.
fn shuffled(n: usize, state: &mut u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        order.swap(i, (r % (i as u64 + 1)) as usize);
    }
    order
}

/// One line of a wrk request list: a form POST signed as Twilio would sign it.
fn signed_post(ctx: &Ctx, path: &str, params: &[(&str, String)]) -> String {
    let signature = sign(&ctx.args.auth_token, &format!("{}{path}", ctx.base), params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    format!("POST\t{path}\t{signature}\t{body}\n")
}

/// An activist leg's status callback (what Twilio posts to `status-callback`).
fn activist_status(sid: &str, status: &str, seq: u32) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", format!("AC{}", "0".repeat(32))),
        ("CallSid", sid.to_owned()),
        ("CallStatus", status.to_owned()),
        ("SequenceNumber", seq.to_string()),
        ("Direction", "outbound-api".to_owned()),
    ]
}

/// A started call: its id and its activist leg's sid.
type StartedCall = (String, String);

/// `--mode seed`: starts `--calls` calls through the server, then writes
/// the request lists of `scripts/throughput.sh`'s scenarios to `--out`.
async fn seed(ctx: Arc<Ctx>) -> Result<(), Box<dyn std::error::Error>> {
    let n = ctx.args.calls;
    let started = Instant::now();
    let calls: Arc<Mutex<Vec<Option<StartedCall>>>> = Arc::new(Mutex::new(vec![None; n]));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..ctx.args.concurrency.max(1))
        .map(|_| {
            let (ctx, next, calls) = (ctx.clone(), next.clone(), calls.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    match ctx.start_call(i).await {
                        Ok(call) => calls.lock().unwrap()[i] = Some(call),
                        Err(e) => ctx.stats.failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let failures = ctx.stats.failures.lock().unwrap().clone();
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} of {n} calls not started; first: {first}",
            failures.len()
        )
        .into());
    }
    let calls: Vec<StartedCall> = calls.lock().unwrap().drain(..).flatten().collect();
    println!(
        "seeded {} calls in {:.1} s",
        calls.len(),
        started.elapsed().as_secs_f64()
    );

    let out = &ctx.args.out;
    std::fs::create_dir_all(out)?;
    let write = |name: &str, lines: String| std::fs::write(out.join(name), lines);
    let mut state = ctx.args.shuffle_seed | 1;
    write(
        "calls.tsv",
        calls
            .iter()
            .enumerate()
            .map(|(i, (id, sid))| format!("{}\t{id}\t{sid}\n", i + 1))
            .collect(),
    )?;
    write("healthz.req", "GET\t/healthz\t-\t\n".to_owned())?;
    write(
        "status.req",
        shuffled(n, &mut state)
            .into_iter()
            .map(|i| format!("GET\t/v1/phone/status/{}\t-\t\n", calls[i].0))
            .collect(),
    )?;
    // Three passes over the calls in fresh random orders, each a status the
    // call has not reported yet: every callback of the list is a real commit
    // (a wrk run longer than the list sends known facts again).
    let mut random = String::new();
    for (status, seq) in [("initiated", 0), ("ringing", 1), ("in-progress", 2)] {
        for i in shuffled(n, &mut state) {
            let (id, sid) = &calls[i];
            random.push_str(&signed_post(
                &ctx,
                &format!("/v1/phone/status-callback/{id}"),
                &activist_status(sid, status, seq),
            ));
        }
    }
    write("callback_random.req", random)?;
    let (id, sid) = &calls[0];
    write(
        "callback_repeat.req",
        signed_post(
            &ctx,
            &format!("/v1/phone/status-callback/{id}"),
            &activist_status(sid, "ringing", 1),
        ),
    )?;
    write(
        "dial.req",
        shuffled(n, &mut state)
            .into_iter()
            .map(|i| {
                let (id, sid) = &calls[i];
                let mut gather = activist_status(sid, "in-progress", 3);
                gather.push(("Digits", "1".to_owned()));
                signed_post(&ctx, &format!("/v1/phone/dial/{id}"), &gather)
            })
            .collect(),
    )?;
    println!("request lists written to {}", out.display());
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
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
    if args.mode != Mode::Seed {
        let listener = tokio::net::TcpListener::bind(args.fake_twilio).await?;
        let app = Router::new().fallback(fake_twilio).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    if args.mode == Mode::FakeTwilio {
        println!("fake Twilio listening on {}", args.fake_twilio);
        interrupted().await?;
        let by_kind = fake.by_kind.lock().unwrap();
        let kinds: Vec<String> = by_kind.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "fake Twilio requests: {} ({})",
            *fake.requests.lock().unwrap(),
            kinds.join(", ")
        );
        return Ok(());
    }

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
    if args.mode == Mode::Seed {
        return seed(ctx).await;
    }

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
