//! Connection hygiene, over raw TCP against the served binary wiring
//! (127.0.0.1, port 0), with short timeouts: silent and slow clients are
//! cut off, idle keep-alive connections closed, a trickling body gets 408 at
//! a total deadline, an oversized `Content-Length` gets 413 at once, and
//! connections over the cap wait — while other clients keep being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wiring::WiringError>>>,
}

impl Server {
    /// Stops the server and waits for it (graceful shutdown).
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

/// Serves the in-memory demo with these settings on top of the defaults.
async fn serve(extra: &[&str]) -> Server {
    let mut args = vec![
        "bonde-pressure",
        "--database-url",
        "memory:",
        "--simulated-tick",
        "0",
        "--reconcile-interval",
        "0",
        "--shutdown-grace",
        "2",
        "--rate-limit-per-ip",
        "off",
        "--max-body-bytes",
        "1000",
    ];
    args.extend_from_slice(extra);
    let config = Config::from_args(args).expect("config");
    let app = wiring::build(&config).await.expect("wired");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wiring::serve(
        app,
        listener,
        config.reconcile_interval,
        config.shutdown_grace,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// One response read off a connection: status, headers (lower-cased
/// names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a `Content-Length` body), within `within`.
async fn read_reply(stream: &mut TcpStream, within: Duration) -> Option<Reply> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return Some(Reply {
                    status,
                    headers,
                    body,
                });
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Waits for the server to close `stream` (EOF or reset) and returns how
/// long it took, or `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A response (e.g. hyper's own 408) before closing is fine.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .ok()
        .map(|_| t.elapsed())
}

async fn get(stream: &mut TcpStream, path: &str) -> Reply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    read_reply(stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// A fresh client asks `/healthz`: the server keeps serving others.
async fn others_are_served(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get(&mut c, "/healthz").await.status, 200);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let server = serve(&["--header-read-timeout", "300"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    others_are_served(server.addr).await;
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("the silent connection is closed");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_read_timeout() {
    let server = serve(&["--header-read-timeout", "400"]).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let t = Instant::now();
    // A byte every 50 ms: the timeout covers the whole head, not each byte.
    let head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in head.iter() {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if t.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let took = if cut {
        t.elapsed()
    } else {
        closed_within(&mut slow, Duration::from_secs(3))
            .await
            .map(|_| t.elapsed())
            .expect("the slow connection is closed")
    };
    assert!(took < Duration::from_millis(2500), "{took:?}");
    others_are_served(server.addr).await;
    server.stop().await;
}

/// Which setting closes idle keep-alive connections: the header-read
/// timeout, which hyper restarts each time it waits for the next request.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_header_read_timeout() {
    let server = serve(&["--header-read-timeout", "300"]).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    // Two requests on one connection: it is kept alive...
    assert_eq!(get(&mut c, "/healthz").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&mut c, "/readyz").await.status, 200);
    // ...then left idle: closed after about the header-read timeout.
    let took = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(took >= Duration::from_millis(200), "{took:?}");

    // With the timeout off, an idle connection stays open.
    let server2 = serve(&["--header-read-timeout", "0"]).await;
    let mut c = TcpStream::connect(server2.addr).await.unwrap();
    assert_eq!(get(&mut c, "/healthz").await.status, 200);
    assert!(
        closed_within(&mut c, Duration::from_millis(800))
            .await
            .is_none(),
        "no timeout: still open"
    );
    server.stop().await;
    server2.stop().await;
}

#[tokio::test]
async fn a_trickling_body_gets_408_at_the_total_body_deadline() {
    let server = serve(&[
        "--header-read-timeout",
        "5000",
        "--request-body-timeout",
        "500",
    ])
    .await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(
        b"POST /v1/phone/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let (mut reader, mut writer) = c.split();
    // A byte every 50 ms would take 45 s; each byte resets a per-frame timeout,
    // not this one.
    let trickle = async {
        loop {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = trickle => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("no answer within 5 s"),
    }
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&response).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    others_are_served(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_content_length_gets_413_at_once() {
    // A long body deadline: the 413 does not wait for it.
    let server = serve(&["--request-body-timeout", "30000"]).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let t = Instant::now();
    c.write_all(
        b"POST /v1/phone/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await
    .unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(2))
        .await
        .expect("an answer without sending the body");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, r#"{"detail":"Request body too large."}"#);
    // ...and the connection is closed rather than left to receive the body.
    assert!(
        closed_within(&mut c, Duration::from_secs(2))
            .await
            .is_some(),
        "closed after the 413"
    );
    // The same with a webhook route.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(
        b"POST /v1/phone/status-callback/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n",
    )
    .await
    .unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(2)).await.unwrap();
    assert_eq!(reply.status, 413);
    // A body just under the limit is read as usual (422: not the front-end's shape).
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let body = format!("{{\"x\":\"{}\"}}", "a".repeat(900));
    let req = format!(
        "POST /v1/phone/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(2)).await.unwrap();
    assert_eq!(reply.status, 422, "{reply:?}");
    // A chunked body over the limit (no Content-Length) is 413 too.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let chunk = "a".repeat(1500);
    let req = format!(
        "POST /v1/phone/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(2)).await.unwrap();
    assert_eq!(reply.status, 413);
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_while_served_clients_keep_working() {
    let server = serve(&["--max-connections", "3", "--header-read-timeout", "10000"]).await;
    // A client already served, on a kept-alive connection.
    let mut served = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get(&mut served, "/healthz").await.status, 200);
    // Two silent connections fill the cap.
    let silent1 = TcpStream::connect(server.addr).await.unwrap();
    let _silent2 = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A fourth connects (the kernel's backlog) but is not served yet.
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_reply(&mut waiting, Duration::from_millis(500))
            .await
            .is_none(),
        "over the cap: not served yet"
    );
    // The served client keeps being served.
    assert_eq!(get(&mut served, "/healthz").await.status, 200);
    assert_eq!(get(&mut served, "/readyz").await.status, 200);

    // A slot frees: the waiting client is served.
    drop(silent1);
    let reply = read_reply(&mut waiting, Duration::from_secs(3))
        .await
        .expect("served once a slot is free");
    assert_eq!(reply.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stays_graceful() {
    let server = serve(&["--header-read-timeout", "10000"]).await;
    // An idle keep-alive connection does not hold the shutdown up.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get(&mut idle, "/healthz").await.status, 200);
    let addr = server.addr;
    let t = Instant::now();
    server.stop().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        closed_within(&mut idle, Duration::from_secs(2))
            .await
            .is_some()
    );
    // No longer listening.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// The header-read timeout does not cut a long response: an SSE stream
/// stays open well past it.
#[tokio::test]
async fn a_live_event_stream_outlives_the_header_read_timeout() {
    // Scripted steps an hour apart: the call stays unfinished.
    let server = serve(&[
        "--header-read-timeout",
        "300",
        "--simulated-tick",
        "3600000",
    ])
    .await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let body = r#"{"widget_id":1,"activist":{"name":"Ana","email":"ana@example.org","phone":"11 91234-5670"},"target":{"name":"Demo Target","phone":"+5561999990000"}}"#;
    let req = format!(
        "POST /v1/phone/call HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let reply = read_reply(&mut c, Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let id = v["call_id"].as_str().unwrap();

    let mut sse = TcpStream::connect(server.addr).await.unwrap();
    let req = format!("GET /v1/phone/calls/{id}/events HTTP/1.1\r\nHost: test\r\n\r\n");
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1200) {
        match tokio::time::timeout(Duration::from_millis(100), sse.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "the stream was closed after {:?}: {}",
                t.elapsed(),
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("event: state"), "{text}");
    drop(sse);
    server.stop().await;
}
