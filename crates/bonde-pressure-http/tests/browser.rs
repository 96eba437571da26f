//! Browser tests: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with `fantoccini`) against the
//! real server bound on 127.0.0.1, port 0.
//!
//! - The demo page places simulated calls for several scenarios (the
//!   activist number's last digit picks one) and shows each one's final
//!   screen.
//! - The dashboard shows the numbers the stats API gives, live counters
//!   included, in pt-BR and in English.
//!
//! Screenshots go to `target/tmp/browser-screenshots/`. Without Chromium
//! the test prints that it was skipped — unless `CI=true`, where it fails
//! (`.ci/run` installs the packages).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const TOKEN: &str = "browser-test-admin-token";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "CI=true but {reason}: the browser test cannot run"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_driver(chromedriver: &PathBuf) -> (Driver, String) {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (driver, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver_url: &str, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1800", "--lang=pt-BR"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a WebDriver session")
}

/// The server, with a fast simulated telephony, on 127.0.0.1:0.
async fn start_server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = Config::from_args([
        "bonde-pressure",
        "--database-url",
        "memory:",
        "--simulated-tick",
        "60",
        "--reconcile-interval",
        "0",
        "--rate-limit-per-ip",
        "off",
        "--rate-limit-per-activist",
        "off",
        "--rate-limit-per-target",
        "off",
        "--admin-token",
        TOKEN,
        "--demo-page",
        "true",
    ])
    .expect("config");
    let app = wiring::build(&config).await.expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wiring::serve(
        app,
        listener,
        Duration::ZERO,
        Duration::from_secs(1),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn save_screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
}

/// Evaluates `js` (an expression) until it returns something other than
/// `null`/`false`, or panics after `timeout`.
async fn wait_js(c: &Client, js: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = c
            .execute(&format!("return ({js});"), vec![])
            .await
            .expect("execute");
        if !(v.is_null() || v == Value::Bool(false)) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {js}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Plain digits of a number shown with the page's locale.
fn digits(s: &str) -> u64 {
    s.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

async fn demo_call(c: &Client, base: &str, phone: &str) -> String {
    c.goto(&format!("{base}/"))
        .await
        .expect("open the demo page");
    wait_js(
        c,
        "document.body.dataset.ready === 'true'",
        Duration::from_secs(10),
    )
    .await;
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("Ana Souza")
        .await
        .unwrap();
    c.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("ana@example.org")
        .await
        .unwrap();
    c.find(Locator::Id("phone"))
        .await
        .unwrap()
        .send_keys(phone)
        .await
        .unwrap();
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_js(
        c,
        "(() => { const s = document.getElementById('screen'); \
         return s && s.dataset.final === 'true' ? s.dataset.status : null; })()",
        Duration::from_secs(30),
    )
    .await;
    status.as_str().expect("a status").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_and_dashboard_in_headless_chromium() {
    let (Some(chromium), Some(chromedriver)) = (
        find_binary(&["chromium", "chromium-browser"]),
        find_binary(&["chromedriver"]),
    ) else {
        skip("chromium or chromedriver not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let (addr, stop) = start_server().await;
    let base = format!("http://{addr}");
    let (_driver, driver_url) = start_driver(&chromedriver).await;
    let c = browser(&driver_url, &chromium).await;

    // ---- demo page: one call per scenario, each to its final screen.
    let scenarios = [
        ("11 91234-5670", "completed"),
        ("11 91234-5671", "canceled"),
        ("11 91234-5675", "busy"),
        ("11 91234-5676", "no-answer"),
        ("11 91234-5677", "no-answer"),
        ("11 91234-5678", "canceled"),
    ];
    for (phone, expected) in scenarios {
        let status = demo_call(&c, &base, phone).await;
        assert_eq!(status, expected, "final screen for {phone}");
        let title = text(&c, "#screen-title").await;
        assert!(!title.is_empty(), "{phone}: the screen has a title");
        if expected == "canceled" {
            assert!(
                c.find(Locator::Id("change-number"))
                    .await
                    .unwrap()
                    .is_displayed()
                    .await
                    .unwrap(),
                "canceled offers to change the number"
            );
        }
        save_screenshot(
            &c,
            &format!("demo-{}-{expected}", &phone[phone.len() - 1..]),
        )
        .await;
    }
    // A refused number shows the API's field error in the form.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_js(
        &c,
        "document.body.dataset.ready === 'true'",
        Duration::from_secs(10),
    )
    .await;
    for (id, v) in [
        ("name", "Ana"),
        ("email", "ana@example.org"),
        ("phone", "123"),
    ] {
        c.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(v)
            .await
            .unwrap();
    }
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let err = wait_js(
        &c,
        "document.getElementById('form-error').textContent || null",
        Duration::from_secs(10),
    )
    .await;
    assert!(err.as_str().unwrap().contains("phone"), "{err}");

    // ---- dashboard: sign in with the keyboard, compare with the API.
    c.goto(&format!("{base}/dashboard")).await.unwrap();
    let token_input = c.find(Locator::Id("token")).await.unwrap();
    token_input
        .send_keys(&format!("{TOKEN}{}", fantoccini::key::Key::Enter))
        .await
        .unwrap();
    wait_js(
        &c,
        "document.body.dataset.state === 'loaded'",
        Duration::from_secs(10),
    )
    .await;
    let stored = c
        .execute(
            "return [sessionStorage.getItem('bonde-pressure.admin-token'), \
             localStorage.length, document.cookie];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!([TOKEN, 0, ""]), "session storage only");

    let q = c
        .execute(
            "return ['from','to','tz'].map(id => document.getElementById(id).value);",
            vec![],
        )
        .await
        .unwrap();
    let api: Value = reqwest::Client::new()
        .get(format!("{base}/v1/phone/widgets/1/stats"))
        .query(&[("from", &q[0]), ("to", &q[1]), ("tz", &q[2])])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["total"], 6);
    assert_eq!(digits(&text(&c, "#total-all").await), 6);
    for status in [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "failed",
        "canceled",
    ] {
        assert_eq!(
            digits(&text(&c, &format!("#total-{status}")).await),
            api["by_status"][status].as_u64().unwrap(),
            "{status}"
        );
    }
    for step in api["funnel"].as_array().unwrap() {
        let stage = step["stage"].as_str().unwrap();
        let shown = c
            .execute(
                &format!(
                    "return document.querySelector('#funnel-table tr[data-stage=\"{stage}\"] td').textContent;"
                ),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            digits(shown.as_str().unwrap()),
            step["calls"].as_u64().unwrap(),
            "{stage}"
        );
    }
    let t = &api["targets"][0];
    assert_eq!(
        digits(&text(&c, "#targets tbody tr td[data-col=calls]").await),
        t["calls"].as_u64().unwrap()
    );
    assert_eq!(
        digits(&text(&c, "#targets tbody tr td[data-col=completed]").await),
        t["completed"].as_u64().unwrap()
    );
    assert_eq!(
        digits(&text(&c, "#targets tbody tr td[data-col=median]").await),
        t["median_talk_secs"].as_u64().unwrap()
    );
    // The charts have text alternatives.
    let titles = c
        .execute(
            "return ['#funnel-chart svg', '#series-chart svg'].map(s => \
             document.querySelector(s).getAttribute('role') + '|' + \
             document.querySelector(s + ' > title').textContent);",
            vec![],
        )
        .await
        .unwrap();
    for t in titles.as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert!(t.starts_with("img|") && t.len() > 10, "{t}");
    }
    // Live counters agree (today's calls are all of them).
    let live = wait_js(
        &c,
        "(() => { const e = document.getElementById('live-total'); return e ? e.textContent : null; })()",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(digits(live.as_str().unwrap()), 6);
    save_screenshot(&c, "dashboard-pt-BR").await;

    // A new call moves the live counters without reloading.
    let status = {
        let c2 = browser(&driver_url, &chromium).await;
        let s = demo_call(&c2, &base, "11 91234-5679").await;
        c2.close().await.unwrap();
        s
    };
    assert_eq!(status, "completed");
    wait_js(
        &c,
        "document.getElementById('live-total').textContent.replace(/\\D/g, '') === '7'",
        Duration::from_secs(15),
    )
    .await;

    // English labels.
    c.find(Locator::Id("lang-en"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "header h1").await, "Campaign results");
    assert_eq!(
        c.execute("return document.documentElement.lang;", vec![])
            .await
            .unwrap(),
        "en"
    );
    save_screenshot(&c, "dashboard-en").await;

    c.close().await.unwrap();
    let _ = stop.send(());
}
