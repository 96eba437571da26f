//! Several replicas on one PostgreSQL database, black box: three processes
//! of the real `bonde-pressure` binary share a fresh database, the same
//! Twilio credentials and `BASE_URL`, and one fake Twilio REST API run by
//! this test. Each lifecycle's signed callbacks are spread round-robin over
//! the three processes and duplicated across them (every callback reaches two
//! different replicas, some all three, concurrently), in a shuffled order
//! within what the protocol allows (a callback is only sent once its cause
//! happened: the target's callbacks after the target was dialled, the
//! conference's end after the target's leg failed).
//!
//! With `CI=true` it must run; without `TEST_DATABASE_URL` (or PostgreSQL)
//! and without CI it says "skipped:" and passes.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bonde_pressure_twilio::signature::{SIGNATURE_HEADER, sign};
use common::{scratch_url, with_fresh_postgres};
use serde_json::{Value, json};
use sqlx::PgPool;

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "replicas-test-auth-token";
const FROM: &str = "+5511987650000";
/// What Twilio would sign: the public URL behind the (imagined) proxy, the
/// same for every replica.
const BASE: &str = "https://pressure.example.org";
const TARGET: &str = "+5561999990000";
const REPLICAS: usize = 3;

// ---------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// The fake Twilio REST API (one for all replicas)
// ---------------------------------------------------------------------------

/// What the replicas asked Twilio for.
#[derive(Default)]
struct Requests {
    /// `POST Calls.json`: the activist legs created, by the number called.
    calls_created: HashMap<String, Vec<String>>,
    /// `POST Conferences/{name}/Participants.json`: the target legs
    /// dialled, by conference name (the call id).
    dials: HashMap<String, Vec<String>>,
    /// `GET Calls/{sid}.json`: leg fetches, by leg sid.
    fetches: HashMap<String, usize>,
    /// Requests it does not know (answered 404), or a target dial to
    /// another number than the campaign's target, as `METHOD path`.
    unrecognised: Vec<String>,
}

#[derive(Default)]
struct FakeTwilio {
    requests: Mutex<Requests>,
    /// How long a leg fetch takes to answer.
    fetch_delay: Duration,
}

impl FakeTwilio {
    fn dials_for(&self, call_id: &str) -> Vec<String> {
        let r = self.requests.lock().unwrap();
        r.dials.get(call_id).cloned().unwrap_or_default()
    }
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn fake_twilio(State(fake): State<Arc<FakeTwilio>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let (response, delay) = answer(&fake, method, &path, &form);
    tokio::time::sleep(delay).await;
    response
}

/// The fake's answer to one request, and how long it takes to give it.
fn answer(
    fake: &FakeTwilio,
    method: Method,
    path: &str,
    form: &HashMap<String, String>,
) -> (Response, Duration) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let json = |status: StatusCode, body: Value| {
        ((status, axum::Json(body)).into_response(), Duration::ZERO)
    };
    let mut requests = fake.requests.lock().unwrap();
    if segments.get(..3) != Some(&["2010-04-01", "Accounts", AC][..]) {
        requests.unrecognised.push(format!("{method} {path}"));
        return json(
            StatusCode::NOT_FOUND,
            json!({"code": 20404, "message": "not found", "status": 404}),
        );
    }
    match (method, &segments[3..]) {
        (Method::POST, ["Calls.json"]) => {
            let sid = new_sid("CA");
            let to = form.get("To").cloned().unwrap_or_default();
            requests
                .calls_created
                .entry(to)
                .or_default()
                .push(sid.clone());
            json(StatusCode::CREATED, json!({"sid": sid, "status": "queued"}))
        }
        (Method::POST, ["Conferences", name, "Participants.json"]) => {
            if form.get("To").map(String::as_str) != Some(TARGET) {
                requests
                    .unrecognised
                    .push(format!("POST {path} To={:?}", form.get("To")));
            }
            let sid = new_sid("CA");
            requests
                .dials
                .entry((*name).to_owned())
                .or_default()
                .push(sid.clone());
            json(
                StatusCode::CREATED,
                json!({"call_sid": sid, "conference_sid": new_sid("CF"),
                       "status": "queued", "label": "target"}),
            )
        }
        (Method::GET, ["Calls", sid]) => {
            // A leg fetched by reconciliation: the activist never answered.
            let sid = sid.trim_end_matches(".json").to_owned();
            *requests.fetches.entry(sid.clone()).or_default() += 1;
            let (response, _) = json(
                StatusCode::OK,
                json!({"sid": sid, "status": "no-answer", "duration": "0"}),
            );
            (response, fake.fetch_delay)
        }
        // Hang-ups and conference ends.
        (Method::POST, ["Calls", sid] | ["Conferences", sid]) => json(
            StatusCode::OK,
            json!({"sid": sid.trim_end_matches(".json"), "status": "completed"}),
        ),
        (method, _) => {
            requests.unrecognised.push(format!("{method} {path}"));
            json(
                StatusCode::NOT_FOUND,
                json!({"code": 20404, "message": "not found", "status": 404}),
            )
        }
    }
}

async fn start_fake_twilio() -> (Arc<FakeTwilio>, SocketAddr) {
    start_fake(FakeTwilio::default()).await
}

async fn start_fake(fake: FakeTwilio) -> (Arc<FakeTwilio>, SocketAddr) {
    let fake = Arc::new(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(fake_twilio).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, addr)
}

// ---------------------------------------------------------------------------
// The replicas
// ---------------------------------------------------------------------------

/// Server processes, killed when dropped (also when the test panics).
struct Replicas {
    children: Vec<Child>,
    urls: Vec<String>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // What the servers said, next to the failed assertion.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{}", self.log_tails());
        }
    }
}

/// A free port on the loopback (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Replicas {
    /// Starts [`REPLICAS`] processes on `database_url` with the fake Twilio
    /// at `twilio`, every setting pinned (the environment is cleared; only
    /// `PATH` is passed on), plus `extra` settings; waits until each is
    /// ready.
    async fn start(database_url: &str, twilio: SocketAddr, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        let mut logs = Vec::new();
        let twilio_base = format!("http://{twilio}");
        // The binary loads the first `.env` found from its working
        // directory up: an empty one here, so none from a parent directory.
        std::fs::write(dir.path().join(".env"), "").unwrap();
        for i in 0..REPLICAS {
            let port = free_port();
            let log = dir.path().join(format!("replica-{i}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_bonde-pressure"))
                // An empty directory: no `.env` to load, nothing written.
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("DATABASE_URL", database_url)
                .env("BASE_URL", BASE)
                .env("TWILIO_ACCOUNT_SID", AC)
                .env("TWILIO_AUTH_TOKEN", TOKEN)
                .env("TWILIO_PHONE_NUMBER", FROM)
                .env("TWILIO_API_BASE", &twilio_base)
                .env("LOG_LEVEL", "warn")
                .env("LOG_FORMAT", "text")
                .env("RATE_LIMIT_PER_IP", "off")
                .env("RATE_LIMIT_PER_ACTIVIST", "off")
                .env("RATE_LIMIT_PER_TARGET", "off")
                .env("ACTIVIST_CALLS_PER_DAY", "0")
                .env("RECONCILE_INTERVAL_SECS", "0")
                .env("SHUTDOWN_GRACE_SECS", "1")
                .envs(extra.iter().copied())
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("the server binary runs");
            children.push(child);
            urls.push(format!("http://127.0.0.1:{port}"));
            logs.push(log);
        }
        let mut replicas = Replicas {
            children,
            urls,
            logs,
            _dir: dir,
        };
        replicas.wait_ready().await;
        replicas
    }

    /// The last lines each replica logged.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (i, log) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            out.push_str(&format!("--- replica {i} ---\n{tail}\n"));
        }
        out
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..REPLICAS {
            loop {
                if let Some(status) = self.children[i].try_wait().unwrap() {
                    panic!("replica {i} exited ({status}):\n{}", self.log_tails());
                }
                let ready = http
                    .get(format!("{}/readyz", self.urls[i]))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {i} not ready after 60 s:\n{}",
                    self.log_tails()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------

/// One webhook: its route and form.
#[derive(Clone, Debug)]
struct Callback {
    route: &'static str,
    form: Vec<(&'static str, String)>,
}

fn cb(route: &'static str, form: &[(&'static str, &str)]) -> Callback {
    let mut all = vec![("AccountSid", AC.to_owned())];
    all.extend(form.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Callback { route, form: all }
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// A lifecycle in flight: its call, where its callbacks go, what was sent.
struct Player<'a> {
    http: &'a reqwest::Client,
    replicas: &'a [String],
    call_id: String,
    rng: Rng,
    /// Round-robin position: each callback's first copy goes to the next
    /// replica, its other copies to the following ones.
    next_replica: usize,
    /// Deliveries sent (and accepted), copies included.
    delivered: usize,
}

impl Player<'_> {
    /// Sends one copy of `callback` to replica `replica`, signed for
    /// `BASE_URL`; returns the status and body.
    async fn send(&self, replica: usize, callback: &Callback) -> (StatusCode, String) {
        let path = format!("/v1/phone/{}/{}", callback.route, self.call_id);
        let signature = sign(TOKEN, &format!("{BASE}{path}"), &callback.form);
        let resp = self
            .http
            .post(format!("{}{path}", self.replicas[replica]))
            .header(SIGNATURE_HEADER, signature)
            .form(&callback.form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} to replica {replica}: {e}"));
        let status = resp.status();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Delivers `callbacks` in order, once each, all to replica `replica`.
    async fn deliver_in_order_to(&mut self, replica: usize, callbacks: &[Callback]) {
        for callback in callbacks {
            let (status, body) = self.send(replica, callback).await;
            assert!(
                status.is_success(),
                "call {}: {} to replica {replica}: {status} {body}",
                self.call_id,
                callback.route
            );
            self.delivered += 1;
        }
    }

    /// Delivers each callback to two different replicas (a third of them to
    /// all three), every copy shuffled with the others, three copies in
    /// flight at once. Every delivery must be accepted (2xx), and a TwiML
    /// route must answer the real script, never the fallback apology.
    async fn deliver(&mut self, callbacks: &[Callback]) {
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (k, _) in callbacks.iter().enumerate() {
            let n = if self.rng.next() % 3 == 0 { 3 } else { 2 };
            let first = self.next_replica;
            self.next_replica = (self.next_replica + 1) % REPLICAS;
            for copy in 0..n {
                copies.push((k, (first + copy) % REPLICAS));
            }
        }
        self.rng.shuffle(&mut copies);
        let this = &*self;
        for chunk in copies.chunks(3) {
            let sent = chunk.iter().map(|&(k, replica)| async move {
                let callback = &callbacks[k];
                let (status, body) = this.send(replica, callback).await;
                (callback, replica, status, body)
            });
            for (callback, replica, status, body) in futures::future::join_all(sent).await {
                assert!(
                    status.is_success(),
                    "call {}: {} {:?} to replica {replica}: {status} {body}",
                    this.call_id,
                    callback.route,
                    callback.form
                );
                let expected = match callback.route {
                    "answer" => Some("<Gather"),
                    "dial" => Some("<Conference"),
                    "after-dial" => Some("<Hangup"),
                    _ => None,
                };
                if let Some(tag) = expected {
                    assert!(
                        body.contains(tag) && !body.contains("problema técnico"),
                        "call {}: {} to replica {replica}: {body}",
                        this.call_id,
                        callback.route
                    );
                }
            }
        }
        self.delivered += copies.len();
    }
}

/// How a lifecycle ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Both talk, then hang up.
    Success,
    /// The target's line is busy.
    TargetBusy,
    /// The target does not answer.
    TargetNoAnswer,
    /// The activist does not answer (the target is never dialled).
    ActivistNoAnswer,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::TargetBusy,
        Outcome::TargetNoAnswer,
        Outcome::ActivistNoAnswer,
    ];

    /// The page's status, the detailed state, and how many times the
    /// target must have been dialled.
    fn expected(self) -> (&'static str, &'static str, usize) {
        match self {
            Outcome::Success => ("completed", "completed", 1),
            Outcome::TargetBusy => ("busy", "target_busy", 1),
            Outcome::TargetNoAnswer => ("no-answer", "target_no_answer", 1),
            Outcome::ActivistNoAnswer => ("canceled", "activist_no_answer", 0),
        }
    }
}

fn leg(route: &'static str, sid: &str, status: &str, seq: u32) -> Callback {
    cb(
        route,
        &[
            ("CallSid", sid),
            ("CallStatus", status),
            ("SequenceNumber", &seq.to_string()),
            ("Direction", "outbound-api"),
        ],
    )
}

fn conference(id: &str, cf: &str, event: &str, who: Option<(&str, &str)>, seq: u32) -> Callback {
    let seq = seq.to_string();
    let mut form = vec![
        ("ConferenceSid", cf),
        ("FriendlyName", id),
        ("StatusCallbackEvent", event),
        ("SequenceNumber", seq.as_str()),
    ];
    if let Some((sid, label)) = who {
        form.push(("CallSid", sid));
        form.push(("ParticipantLabel", label));
    }
    cb("conference-status-callback", &form)
}

fn with(mut callback: Callback, extra: &[(&'static str, &str)]) -> Callback {
    callback
        .form
        .extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    callback
}

/// What one lifecycle did, for the checks after all of them ran.
struct Played {
    call_id: String,
    outcome: Outcome,
    delivered: usize,
}

/// An activist number of its own for lifecycle `n`.
fn phone_of(n: usize) -> String {
    format!("+55119{:08}", 71_230_000 + n)
}

/// `POST /v1/phone/call` for `phone` to `replica`: the status, the
/// `Retry-After` header and the body.
async fn post_call(
    http: &reqwest::Client,
    replica: &str,
    phone: &str,
) -> (StatusCode, Option<String>, Value) {
    let resp = http
        .post(format!("{replica}/v1/phone/call"))
        .json(&json!({
            "widget_id": 1,
            "activist": {"name": "Ana Silva", "first_name": "Ana", "last_name": "Silva",
                         "email": "ana@example.org", "phone": phone},
            "target": {"name": "Demo Target", "phone": TARGET},
        }))
        .send()
        .await
        .expect("POST /v1/phone/call");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

/// The call id and the activist leg's sid of a started call.
fn ids(started: &Value) -> (String, String) {
    (
        started["call_id"].as_str().expect("call_id").to_owned(),
        started["twilio_call_sid"]
            .as_str()
            .expect("twilio_call_sid")
            .to_owned(),
    )
}

/// The activist's side after the greeting was asked for: answered by a
/// human, confirmed (pressed 1), in the conference `cf`.
fn activist_side(id: &str, a: &str, cf: &str) -> Vec<Callback> {
    vec![
        leg("status-callback", a, "initiated", 0),
        leg("status-callback", a, "ringing", 1),
        leg("status-callback", a, "in-progress", 2),
        cb(
            "amd-status-callback",
            &[("CallSid", a), ("AnsweredBy", "human")],
        ),
        with(leg("dial", a, "in-progress", 3), &[("Digits", "1")]),
        conference(id, cf, "conference-start", None, 0),
        conference(id, cf, "participant-join", Some((a, "activist")), 1),
    ]
}

/// Waits until the target of call `id` was dialled; returns its leg's sid.
async fn wait_for_dial(fake: &FakeTwilio, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(sid) = fake.dials_for(id).first() {
            return sid.clone();
        }
        assert!(
            Instant::now() < deadline,
            "call {id}: the target was never dialled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a call on replica `n % 3`, then plays `outcome`'s callbacks.
async fn play(
    http: &reqwest::Client,
    replicas: &[String],
    fake: &FakeTwilio,
    n: usize,
    outcome: Outcome,
) -> Played {
    let (status, _, started) = post_call(http, &replicas[n % REPLICAS], &phone_of(n)).await;
    assert_eq!(status, StatusCode::OK, "lifecycle {n}: {started}");
    let (id, a) = ids(&started);
    let mut p = Player {
        http,
        replicas,
        call_id: id.clone(),
        rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1)),
        next_replica: (n + 1) % REPLICAS,
        delivered: 0,
    };

    if outcome == Outcome::ActivistNoAnswer {
        p.deliver(&[
            leg("status-callback", &a, "initiated", 0),
            leg("status-callback", &a, "ringing", 1),
            with(
                leg("status-callback", &a, "no-answer", 2),
                &[("CallDuration", "0")],
            ),
        ])
        .await;
        return Played {
            call_id: id,
            outcome,
            delivered: p.delivered,
        };
    }

    // The activist answers: Twilio asks for the greeting first, then the
    // rest of the activist's side arrives in any order.
    let cf = new_sid("CF");
    p.deliver(&[leg("answer", &a, "in-progress", 2)]).await;
    p.deliver(&activist_side(&id, &a, &cf)).await;

    // One of the replicas dials the target.
    let b = wait_for_dial(fake, &id).await;

    // The activist's end, once the conference is over.
    let activist_end = |seq: u32| {
        vec![
            conference(&id, &cf, "conference-end", None, seq),
            conference(
                &id,
                &cf,
                "participant-leave",
                Some((&a, "activist")),
                seq + 1,
            ),
            with(
                leg("after-dial", &a, "in-progress", 4),
                &[("DialCallStatus", "completed")],
            ),
            with(
                leg("status-callback", &a, "completed", 5),
                &[("CallDuration", "60")],
            ),
        ]
    };
    match outcome {
        Outcome::Success => {
            // Both hang up whenever they like: the target's side and the
            // ends in any order.
            let mut all = vec![
                leg("dial-status-callback", &b, "initiated", 0),
                leg("dial-status-callback", &b, "ringing", 1),
                leg("dial-status-callback", &b, "in-progress", 2),
                cb(
                    "dial-amd-status-callback",
                    &[("CallSid", &b), ("AnsweredBy", "human")],
                ),
                conference(&id, &cf, "participant-join", Some((&b, "target")), 2),
                conference(&id, &cf, "participant-leave", Some((&b, "target")), 3),
                with(
                    leg("dial-status-callback", &b, "completed", 3),
                    &[("CallDuration", "42")],
                ),
            ];
            all.extend(activist_end(4));
            p.deliver(&all).await;
        }
        Outcome::TargetBusy | Outcome::TargetNoAnswer => {
            let (status, sip) = if outcome == Outcome::TargetBusy {
                ("busy", "486")
            } else {
                ("no-answer", "480")
            };
            p.deliver(&[
                leg("dial-status-callback", &b, "initiated", 0),
                leg("dial-status-callback", &b, "ringing", 1),
                with(
                    leg("dial-status-callback", &b, status, 2),
                    &[("SipResponseCode", sip)],
                ),
            ])
            .await;
            // The service ends the conference; then Twilio reports it.
            p.deliver(&activist_end(2)).await;
        }
        Outcome::ActivistNoAnswer => unreachable!(),
    }
    Played {
        call_id: id,
        outcome,
        delivered: p.delivered,
    }
}

/// Polls `GET /v1/phone/status/{id}` on `replica` until a final status.
async fn final_status(http: &reqwest::Client, replica: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = http
            .get(format!("{replica}/v1/phone/status/{id}"))
            .header("cache-control", "no-cache")
            .send()
            .await
            .expect("GET status")
            .json()
            .await
            .expect("status JSON");
        let status = v["status"].as_str().expect("status").to_owned();
        if ["completed", "busy", "canceled", "failed", "no-answer"].contains(&status.as_str()) {
            return status;
        }
        assert!(Instant::now() < deadline, "call {id} still {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Rows of the event log, by call (`None`: stored without a call).
async fn events_by_call(pool: &PgPool) -> HashMap<Option<String>, i64> {
    sqlx::query_as::<_, (Option<String>, i64)>(
        "SELECT phone_call_id::text, count(*) FROM twilio_call_events GROUP BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("count events")
    .into_iter()
    .collect()
}

/// `bonde_pressure_webhooks_total` of one replica, summed by outcome.
async fn webhooks_by_outcome(http: &reqwest::Client, replica: &str) -> HashMap<String, u64> {
    let text = http
        .get(format!("{replica}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("bonde_pressure_webhooks_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").expect("a sample");
        let outcome = labels
            .split(',')
            .find_map(|l| l.strip_prefix("outcome=\""))
            .expect("an outcome label")
            .trim_end_matches('"');
        let value: f64 = value.trim().parse().expect("a number");
        *out.entry(outcome.to_owned()).or_default() += value as u64;
    }
    out
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Lifecycles played; their callbacks are spread over the replicas.
const LIFECYCLES: usize = 32;
/// Lifecycles in flight at once.
const CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_dial_once_store_every_payload_and_agree_on_the_outcome() {
    with_fresh_postgres(async |url, pool| {
        let (fake, twilio) = start_fake_twilio().await;
        let replicas = Replicas::start(&url, twilio, &[]).await;
        let http = http_client();

        use futures::StreamExt;
        let played: Vec<Played> = futures::stream::iter(0..LIFECYCLES)
            .map(|n| {
                let outcome = Outcome::ALL[n % Outcome::ALL.len()];
                play(&http, &replicas.urls, &fake, n, outcome)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        assert_eq!(played.len(), LIFECYCLES);

        // The final statuses, as every replica reports them.
        for p in &played {
            let (page, state, _) = p.outcome.expected();
            for replica in &replicas.urls {
                assert_eq!(
                    final_status(&http, replica, &p.call_id).await,
                    page,
                    "call {} ({:?}) on {replica}",
                    p.call_id,
                    p.outcome
                );
                let details: Value = http
                    .get(format!("{replica}/v1/phone/calls/{}", p.call_id))
                    .send()
                    .await
                    .expect("GET details")
                    .json()
                    .await
                    .expect("details JSON");
                assert_eq!(
                    details["state"], state,
                    "call {} ({:?}) on {replica}: {details}",
                    p.call_id, p.outcome
                );
            }
        }

        // The target dialled exactly once per call that reached it, never
        // for the others; one activist leg created per call.
        {
            let requests = fake.requests.lock().unwrap();
            for p in &played {
                let (_, _, dials) = p.outcome.expected();
                assert_eq!(
                    requests.dials.get(&p.call_id).map_or(0, Vec::len),
                    dials,
                    "call {} ({:?})",
                    p.call_id,
                    p.outcome
                );
            }
            assert_eq!(
                requests.dials.len(),
                played
                    .iter()
                    .filter(|p| p.outcome.expected().2 == 1)
                    .count()
            );
            assert_eq!(requests.calls_created.len(), LIFECYCLES);
            assert!(requests.calls_created.values().all(|sids| sids.len() == 1));
            assert_eq!(requests.unrecognised, Vec::<String>::new());
        }

        // Every replica took its share of the callbacks, and all were
        // handled (`ok`: no contention, fallback or error).
        let delivered: usize = played.iter().map(|p| p.delivered).sum();
        let mut handled = 0;
        for replica in &replicas.urls {
            let by_outcome = webhooks_by_outcome(&http, replica).await;
            assert_eq!(
                by_outcome.keys().collect::<Vec<_>>(),
                ["ok"],
                "{replica}: {by_outcome:?}"
            );
            assert!(
                by_outcome["ok"] > delivered as u64 / 6,
                "{replica}: {by_outcome:?} of {delivered}"
            );
            handled += by_outcome["ok"];
        }
        assert_eq!(handled, delivered as u64);

        // Every accepted delivery stored exactly once, with its call; a
        // duplicate is a delivery of its own.
        let events = events_by_call(&pool).await;
        assert_eq!(events.get(&None), None, "payloads stored without a call");
        for p in &played {
            assert_eq!(
                events.get(&Some(p.call_id.clone())).copied().unwrap_or(0),
                p.delivered as i64,
                "call {} ({:?})",
                p.call_id,
                p.outcome
            );
        }
        assert_eq!(events.len(), LIFECYCLES);
        drop(replicas);
    })
    .await;
}

/// The activist's daily cap is counted in the database, so it holds
/// whichever replica the requests reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_holds_across_replicas() {
    with_fresh_postgres(async |url, _pool| {
        let (fake, twilio) = start_fake_twilio().await;
        let replicas = Replicas::start(&url, twilio, &[("ACTIVIST_CALLS_PER_DAY", "2")]).await;
        let http = http_client();
        let phone = phone_of(900);
        for replica in &replicas.urls[..2] {
            let (status, _, body) = post_call(&http, replica, &phone).await;
            assert_eq!(status, StatusCode::OK, "{replica}: {body}");
        }
        // The third call for the number, through the third replica.
        let (status, retry_after, body) = post_call(&http, &replicas.urls[2], &phone).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(retry_after.is_some(), "429 without Retry-After");
        // Another number is not affected.
        let (status, _, body) = post_call(&http, &replicas.urls[2], &phone_of(901)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let requests = fake.requests.lock().unwrap();
        assert_eq!(requests.calls_created.get(&phone).map_or(0, Vec::len), 2);
    })
    .await;
}

/// `RATE_LIMIT_PER_ACTIVIST` across replicas: two requests for a number,
/// each through its own replica, use its budget up; the third, through the
/// third replica, is refused. On main each process has its own buckets, so
/// the third replica lets it through (issue 14, "Shared limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_activist_rate_limit_holds_across_replicas() {
    with_fresh_postgres(async |url, _pool| {
        let (fake, twilio) = start_fake_twilio().await;
        let replicas = Replicas::start(&url, twilio, &[("RATE_LIMIT_PER_ACTIVIST", "2/h")]).await;
        let http = http_client();
        let phone = phone_of(910);
        for replica in &replicas.urls[..2] {
            let (status, _, body) = post_call(&http, replica, &phone).await;
            assert_eq!(status, StatusCode::OK, "{replica}: {body}");
        }
        let (status, retry_after, body) = post_call(&http, &replicas.urls[2], &phone).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(retry_after.is_some(), "429 without Retry-After");
        let (status, _, body) = post_call(&http, &replicas.urls[2], &phone_of(911)).await;
        assert_eq!(status, StatusCode::OK, "another number: {body}");
        let requests = fake.requests.lock().unwrap();
        assert_eq!(requests.calls_created.get(&phone).map_or(0, Vec::len), 2);
    })
    .await;
}

/// `RATE_LIMIT_PER_TARGET` across replicas: the target is dialled twice,
/// once by replica 0 and once by replica 1 (each call's callbacks reach only
/// its replica, so that one dials); a request through replica 2 then finds
/// the target's budget used up. On main replica 2 has its own, untouched
/// bucket and accepts it (issue 14, "Shared limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_target_rate_limit_holds_across_replicas() {
    with_fresh_postgres(async |url, _pool| {
        let (fake, twilio) = start_fake_twilio().await;
        let replicas = Replicas::start(&url, twilio, &[("RATE_LIMIT_PER_TARGET", "2/h")]).await;
        let http = http_client();
        for replica in 0..2 {
            let (status, _, started) =
                post_call(&http, &replicas.urls[replica], &phone_of(920 + replica)).await;
            assert_eq!(status, StatusCode::OK, "{started}");
            let (id, a) = ids(&started);
            let mut p = Player {
                http: &http,
                replicas: &replicas.urls,
                call_id: id.clone(),
                rng: Rng(1),
                next_replica: replica,
                delivered: 0,
            };
            let mut callbacks = vec![leg("answer", &a, "in-progress", 2)];
            callbacks.extend(activist_side(&id, &a, &new_sid("CF")));
            p.deliver_in_order_to(replica, &callbacks).await;
            wait_for_dial(&fake, &id).await;
        }
        let (status, retry_after, body) = post_call(&http, &replicas.urls[2], &phone_of(922)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(retry_after.is_some(), "429 without Retry-After");
    })
    .await;
}

/// One reconciliation pass at a time across replicas: calls left stale
/// (created, then no callback at all) are caught up by reconciliation, which
/// fetches the activist's leg from Twilio (it never answered). Every replica
/// runs a pass every second and a fetch takes 1.2 s, so without the lease the
/// replicas' passes overlap and each stale leg is fetched by several of
/// them; under the lease one pass runs at a time, it is fetched once, and the next pass finds
/// the call settled (issue 14, "One reconciler at a time").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconciliation_pass_runs_at_a_time_across_replicas() {
    with_fresh_postgres(async |url, _pool| {
        let (fake, twilio) = start_fake(FakeTwilio {
            fetch_delay: Duration::from_millis(1200),
            ..FakeTwilio::default()
        })
        .await;
        let replicas = Replicas::start(
            &url,
            twilio,
            &[("RECONCILE_INTERVAL_SECS", "1"), ("STALE_AFTER_SECS", "1")],
        )
        .await;
        let http = http_client();
        let mut stale = Vec::new();
        for n in 0..REPLICAS {
            let (status, _, started) =
                post_call(&http, &replicas.urls[n], &phone_of(930 + n)).await;
            assert_eq!(status, StatusCode::OK, "{started}");
            stale.push(ids(&started));
        }
        // Reconciliation settles them: the activist never answered.
        for (id, _) in &stale {
            for replica in &replicas.urls {
                assert_eq!(final_status(&http, replica, id).await, "canceled", "{id}");
            }
        }
        // Two more passes on every replica find nothing left to fetch.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let requests = fake.requests.lock().unwrap();
        for (id, a) in &stale {
            assert_eq!(
                requests.fetches.get(a).copied().unwrap_or(0),
                1,
                "call {id}: its activist leg fetched more than once"
            );
        }
    })
    .await;
}

/// Reads the SSE stream until an event whose data contains `needle`.
async fn next_event_with(resp: &mut reqwest::Response, buf: &mut String, needle: &str) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains(needle) {
                return event;
            }
            continue;
        }
        let chunk = resp
            .chunk()
            .await
            .expect("SSE stream")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_subscriber_sees_another_replicas_commit_promptly() {
    with_fresh_postgres(async |url, _pool| {
        let (_fake, twilio) = start_fake_twilio().await;
        // The store poll at its default: the commit must come another way.
        let replicas = Replicas::start(&url, twilio, &[("SSE_POLL_MS", "2000")]).await;
        let http = http_client();
        let (status, _, started) = post_call(&http, &replicas.urls[0], &phone_of(940)).await;
        assert_eq!(status, StatusCode::OK, "{started}");
        let (id, a) = ids(&started);
        let mut stream = http
            .get(format!("{}/v1/phone/calls/{id}/events", replicas.urls[0]))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(stream.status(), StatusCode::OK);
        let mut buf = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            next_event_with(&mut stream, &mut buf, "\"state\":\"created\""),
        )
        .await
        .expect("the stream's first event: the call as created");
        let mut p = Player {
            http: &http,
            replicas: &replicas.urls,
            call_id: id.clone(),
            rng: Rng(1),
            next_replica: 2,
            delivered: 0,
        };
        p.deliver_in_order_to(2, &[leg("status-callback", &a, "ringing", 1)])
            .await;
        let committed = Instant::now();
        let seen = tokio::time::timeout(
            Duration::from_millis(500),
            next_event_with(&mut stream, &mut buf, "\"state\":\"activist_ringing\""),
        )
        .await;
        assert!(
            seen.is_ok(),
            "replica 1's subscriber did not see replica 3's commit within 500 ms ({:?})",
            committed.elapsed()
        );
    })
    .await;
}

#[test]
fn scratch_urls_keep_host_and_options() {
    assert_eq!(
        scratch_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        scratch_url("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
}
