//! The campaign page's contract, in process (tower `oneshot`), on the
//! simulated telephony.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bonde_pressure_core::TelephonyError;
use bonde_pressure_core::simulated::CommandKind;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn the_front_end_request_starts_a_call() {
    let app = app().await;
    let r = router(&app);
    let resp = send(&r, post_call(&front_end_body("11 91234-5670"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let v = json_body(resp).await;
    assert_eq!(v["status"], "initiated");
    assert!(uuid::Uuid::parse_str(v["call_id"].as_str().unwrap()).is_ok());
    let sid = v["twilio_call_sid"].as_str().unwrap();
    assert!(sid.starts_with("CA") && sid.len() == 34, "{sid}");
    assert_eq!(v["twilio_call_status"], "queued");
    // The telephony was asked to call the normalised number.
    let sim = app.simulated.as_ref().unwrap();
    let cmds = format!("{:?}", sim.commands());
    assert!(cmds.contains("CallActivist"), "{cmds}");
}

#[tokio::test]
async fn cors_preflight_allows_the_page_headers() {
    let app = app().await;
    let r = router(&app);
    for path in [
        "/v1/phone/call",
        "/v1/phone/status/3f1c0f5e-3d59-4a51-9a57-0f6b0a0c0e11",
    ] {
        let resp = send(
            &r,
            Request::options(path)
                .header("origin", "https://www.bonde.org")
                .header("access-control-request-method", "GET")
                .header(
                    "access-control-request-headers",
                    "content-type,accept,cache-control,ngrok-skip-browser-warning",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for want in [
            "content-type",
            "accept",
            "cache-control",
            "ngrok-skip-browser-warning",
        ] {
            assert!(allowed.contains(want), "{want} in {allowed}");
        }
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(
            methods.contains("GET") && methods.contains("POST"),
            "{methods}"
        );
    }
}

#[tokio::test]
async fn cors_origins_can_be_restricted() {
    let app = app_with(&["--cors-origins", "https://www.bonde.org"]).await;
    let r = router(&app);
    let preflight = |origin: &'static str| {
        Request::options("/v1/phone/call")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let ok = send(&r, preflight("https://www.bonde.org")).await;
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://www.bonde.org"
    );
    let other = send(&r, preflight("https://evil.example")).await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn validation_errors_have_fastapi_shape() {
    let app = app().await;
    let r = router(&app);

    // JSON syntax error
    let resp = send(
        &r,
        Request::post("/v1/phone/call")
            .header("content-type", "application/json")
            .body(Body::from("{\"widget_id\": 1,"))
            .unwrap(),
    )
    .await;
    let items = validation_items(resp).await;
    assert_eq!(items[0]["type"], "json_invalid");
    assert_eq!(items[0]["loc"][0], "body");

    // missing fields, all reported
    let resp = send(
        &r,
        post_call(&json!({"widget_id": 1, "activist": {"name": "Ana"}})),
    )
    .await;
    let items = validation_items(resp).await;
    let locs: Vec<Value> = items.iter().map(|i| i["loc"].clone()).collect();
    assert!(
        locs.contains(&json!(["body", "activist", "email"])),
        "{locs:?}"
    );
    assert!(
        locs.contains(&json!(["body", "activist", "phone"])),
        "{locs:?}"
    );
    assert!(locs.contains(&json!(["body", "target"])), "{locs:?}");
    assert!(items.iter().all(|i| i["type"] == "missing"));

    // bad phone number
    let resp = send(&r, post_call(&front_end_body("123"))).await;
    let items = validation_items(resp).await;
    assert_eq!(items[0]["loc"], json!(["body", "activist", "phone"]));
    assert_eq!(items[0]["type"], "value_error.phone");

    // several invalid values at once
    let mut body = front_end_body("11 91234-5670");
    body["activist"]["email"] = json!("not-an-email");
    body["target"]["phone"] = json!("abc");
    let items = validation_items(send(&r, post_call(&body)).await).await;
    let locs: Vec<Value> = items.iter().map(|i| i["loc"].clone()).collect();
    assert!(
        locs.contains(&json!(["body", "activist", "email"])),
        "{locs:?}"
    );
    assert!(
        locs.contains(&json!(["body", "target", "phone"])),
        "{locs:?}"
    );

    // a country outside the allowlist
    let items =
        validation_items(send(&r, post_call(&front_end_body("+1 415 555 2671"))).await).await;
    assert_eq!(items[0]["loc"], json!(["body", "activist", "phone"]));
    assert_eq!(items[0]["type"], "value_error.phone.country");

    // wrong types
    let items = validation_items(
        send(
            &r,
            post_call(
                &json!({"widget_id": "x", "activist": [], "target": {"name": 3, "phone": "1"}}),
            ),
        )
        .await,
    )
    .await;
    let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"int_parsing")
            && kinds.contains(&"model_attributes_type")
            && kinds.contains(&"string_type"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn the_country_allowlist_is_configurable() {
    let app = app_with(&["--allowed-country-codes", "*"]).await;
    let r = router(&app);
    let resp = send(&r, post_call(&front_end_body("+1 415 555 2670"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn widget_errors_use_upstream_messages() {
    let dir = std::env::temp_dir().join(format!("bp-campaigns-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("campaigns.json");
    std::fs::write(
        &file,
        r#"{"widgets": [
            {"id": 1, "kind": "phone", "targets": [{"name": "Demo Target", "phone": "61 99999-0000"}]},
            {"id": 2, "kind": "form", "targets": []}
        ]}"#,
    )
    .unwrap();
    let app = app_with(&["--campaigns-file", file.to_str().unwrap()]).await;
    let r = router(&app);

    let mut body = front_end_body("11 91234-5670");
    // the widget's national spelling matches the E.164 one
    assert_eq!(send(&r, post_call(&body)).await.status(), StatusCode::OK);

    // Upstream's FastAPI: HTTPException(status_code=422, detail=[{loc, msg, type}]).
    let upstream = |msg: &str| json!({"detail": [{"loc": ["body", "widget_id"], "msg": msg, "type": "value_error"}]});
    body["widget_id"] = json!(999);
    let resp = send(&r, post_call(&body)).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_body(resp).await, upstream("Widget not found."));

    body["widget_id"] = json!(2);
    let resp = send(&r, post_call(&body)).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        json_body(resp).await,
        upstream("Widget is not a 'phone' kind.")
    );

    body["widget_id"] = json!(1);
    body["target"]["phone"] = json!("+5561988887777");
    let resp = send(&r, post_call(&body)).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        json_body(resp).await,
        upstream("Target is not present in Widget settings.")
    );

    // the metrics still tell them apart
    let metrics = String::from_utf8(body_bytes(send(&r, get("/metrics")).await).await).unwrap();
    for line in [
        "bonde_pressure_call_requests_total{outcome=\"widget_not_found\"} 1",
        "bonde_pressure_call_requests_total{outcome=\"rejected\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn status_polling_reaches_the_final_status_of_each_scenario() {
    let app = app().await;
    let r = router(&app);
    // Last digit of the activist's number picks the simulated scenario.
    // Activist-side ends are `canceled` (the screen with the activist's own
    // number); `busy` / `no-answer` speak of the target.
    let cases = [
        ("0", "completed", "completed"),
        ("1", "canceled", "activist_busy"),
        ("2", "canceled", "activist_no_answer"),
        ("3", "canceled", "activist_voicemail"),
        ("4", "canceled", "not_confirmed"),
        ("5", "busy", "target_busy"),
        ("6", "no-answer", "target_no_answer"),
        ("7", "no-answer", "target_voicemail"),
        ("8", "canceled", "abandoned"),
    ];
    for (digit, status, state) in cases {
        let id = start(&r, &format!("11 91234-567{digit}")).await;
        let got = poll_final(&r, &id, Duration::from_secs(10)).await;
        assert_eq!(got, status, "scenario {digit}");
        let details = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
        assert_eq!(details["state"], state, "scenario {digit}");
        assert_eq!(details["terminal"], true);
    }
}

#[tokio::test]
async fn status_with_a_slow_telephony_starts_initiated() {
    let app = app_with(&["--simulated-tick", "5"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let v = json_body(send(&r, get(&format!("/v1/phone/status/{id}"))).await).await;
    assert_eq!(v, json!({"call_id": id, "status": "initiated"}));
    assert_eq!(
        poll_final(&r, &id, Duration::from_secs(10)).await,
        "completed"
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids_get_json_errors() {
    let app = app().await;
    let r = router(&app);
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/v1/phone/status/{unknown}"),
        format!("/v1/phone/calls/{unknown}"),
        format!("/v1/phone/calls/{unknown}/events"),
    ] {
        let resp = send(&r, get(&path)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json_body(resp).await, json!({"detail": "Call not found."}));
    }
    for path in [
        "/v1/phone/status/nope",
        "/v1/phone/calls/123",
        "/v1/phone/calls/x/events",
    ] {
        let items = validation_items(send(&r, get(path)).await).await;
        assert_eq!(items[0]["loc"], json!(["path", "call_id"]), "{path}");
    }
    let resp = send(&r, get("/nowhere")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await, json!({"detail": "Not Found"}));
    let resp = send(
        &r,
        Request::delete("/v1/phone/call")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        json_body(resp).await,
        json!({"detail": "Method Not Allowed"})
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = app_with(&[
        "--rate-limit-per-ip",
        "2/min",
        "--rate-limit-per-activist",
        "1/h",
        "--trusted-proxy-hops",
        "1",
    ])
    .await;
    let r = router(&app);
    let from = |ip: &str, phone: &str| {
        Request::post("/v1/phone/call")
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("198.51.100.9, {ip}"))
            .body(Body::from(front_end_body(phone).to_string()))
            .unwrap()
    };
    // per activist: the second call from the same number is refused
    assert_eq!(
        send(&r, from("203.0.113.1", "11 91234-5670"))
            .await
            .status(),
        StatusCode::OK
    );
    let resp = send(&r, from("203.0.113.2", "+55 11 91234-5670")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry), "{retry}");
    assert_eq!(
        json_body(resp).await["detail"],
        "Too many requests. Try again later."
    );

    // per IP (the right-most X-Forwarded-For entry): the third request is refused,
    // even an invalid one, and another IP is not affected
    assert_eq!(
        send(&r, from("203.0.113.1", "11 91234-5671"))
            .await
            .status(),
        StatusCode::OK
    );
    let resp = send(&r, from("203.0.113.1", "11 91234-5672")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(
        send(&r, from("203.0.113.3", "11 91234-5673"))
            .await
            .status(),
        StatusCode::OK
    );

    let metrics = String::from_utf8(body_bytes(send(&r, get("/metrics")).await).await).unwrap();
    assert!(
        metrics.contains("bonde_pressure_call_requests_total{outcome=\"rate_limited\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_unless_trusted() {
    let app = app_with(&["--rate-limit-per-ip", "1/min"]).await;
    let r = router(&app);
    // In process there is no peer address, and the header is not trusted: no IP, no IP limit.
    for i in 0..3 {
        let req = Request::post("/v1/phone/call")
            .header("content-type", "application/json")
            .header("x-forwarded-for", "203.0.113.1")
            .body(Body::from(
                front_end_body(&format!("11 91234-567{i}")).to_string(),
            ))
            .unwrap();
        assert_eq!(send(&r, req).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn invalid_requests_do_not_use_up_the_target_or_activist_limits() {
    let app = app_with(&[
        "--rate-limit-per-target",
        "2/h",
        "--rate-limit-per-activist",
        "2/h",
    ])
    .await;
    let r = router(&app);
    // Many requests naming the target (and one activist), each refused by
    // validation or by the widget checks.
    for i in 0..10 {
        let mut body = front_end_body("11 91234-5670");
        match i % 3 {
            0 => body["widget_id"] = json!(999),
            1 => body["activist"]["email"] = json!("not-an-email"),
            _ => body["activist"]["name"] = json!(""),
        }
        let resp = send(&r, post_call(&body)).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "request {i}"
        );
    }
    // The target and the activist can still be called.
    assert_eq!(
        send(&r, post_call(&front_end_body("11 91234-5670")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&r, post_call(&front_end_body("11 91234-5671")))
            .await
            .status(),
        StatusCode::OK
    );
    // Issue 8: a valid request is not charged to the target either; only a
    // dial is (see `a_target_is_charged_when_dialled_not_when_requested`).
    // The first call (activist number ending in 0) was confirmed and dialled
    // the target; the second (ending in 1: busy) never reached it.
    let first = start(&r, "11 91234-5680").await;
    assert_eq!(
        poll_final(&r, &first, Duration::from_secs(10)).await,
        "completed"
    );
    // Two dials in the hour: the next request is refused up front.
    let resp = send(&r, post_call(&front_end_body("11 91234-5672"))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_short_forwarded_chain_is_attributed_to_the_peer() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    // Two trusted proxies, one IP allowed once a minute.
    let app = app_with(&["--rate-limit-per-ip", "1/min", "--trusted-proxy-hops", "2"]).await;
    let r = router(&app);
    let from = |peer: &str, xff: &str, phone: &str| {
        let mut req = post_call(&front_end_body(phone));
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    // A client reaching us directly writes its own single entry each time:
    // fewer entries than trusted hops, so the peer address is the client.
    assert_eq!(
        send(&r, from("192.0.2.10:5000", "198.51.100.1", "11 91234-5670"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&r, from("192.0.2.10:5001", "198.51.100.2", "11 91234-5671"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Through both proxies, the entry the outer one appended is the client.
    assert_eq!(
        send(
            &r,
            from(
                "10.0.0.2:4000",
                "1.2.3.4, 203.0.113.7, 10.0.0.1",
                "11 91234-5672"
            )
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(
            &r,
            from(
                "10.0.0.2:4001",
                "5.6.7.8, 203.0.113.7, 10.0.0.1",
                "11 91234-5673"
            )
        )
        .await
        .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn garbage_bodies_get_4xx_never_5xx() {
    let app = app().await;
    let r = router(&app);
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"str\"".to_vec(),
        b"{}".to_vec(),
        b"{\"widget_id\": 1e400}".to_vec(),
        b"{\"widget_id\": -5, \"activist\": {\"name\": \"\", \"email\": \"\", \"phone\": \"\"}, \"target\": {\"name\": \"\", \"phone\": \"\"}}".to_vec(),
        b"{\"widget_id\": 99999999999999999999999}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        "{\"widget_id\":1,\"activist\":{\"name\":\"\u{0}\",\"email\":\"a@b.co\",\"phone\":\"+5511912345670\"},\"target\":{\"name\":\"x\",\"phone\":\"+5561999990000\"}}".as_bytes().to_vec(),
        format!("{{\"widget_id\": 1, \"activist\": {{\"name\": \"{}\", \"email\": \"a@b.co\", \"phone\": \"{}\"}}, \"target\": {{\"name\": \"x\", \"phone\": \"+5561999990000\"}}}}", "a".repeat(5000), "9".repeat(200)).into_bytes(),
        "[".repeat(10_000).into_bytes(),
    ];
    // pseudo-random bytes
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for n in 0..50 {
        let mut b = Vec::new();
        for _ in 0..(n * 7 % 300) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push((x % 256) as u8);
        }
        bodies.push(b);
    }
    for body in bodies {
        let resp = send(
            &r,
            Request::post("/v1/phone/call")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
        let status = resp.status();
        assert!(
            status.is_client_error(),
            "{status} for {:?}",
            String::from_utf8_lossy(&body)
        );
        let v = json_body(resp).await;
        assert!(v.get("detail").is_some());
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_json_413() {
    let app = app_with(&["--max-body-bytes", "1024"]).await;
    let r = router(&app);
    let mut body = front_end_body("11 91234-5670");
    body["activist"]["name"] = json!("a".repeat(2000));
    let resp = send(&r, post_call(&body)).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json_body(resp).await,
        json!({"detail": "Request body too large."})
    );
}

#[tokio::test]
async fn telephony_refusals_map_to_4xx_or_502() {
    let app = app().await;
    let r = router(&app);
    let sim = app.simulated.clone().unwrap();
    sim.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::invalid_number(
            Some(21211),
            "Invalid 'To' Phone Number",
        )),
    );
    let items = validation_items(send(&r, post_call(&front_end_body("11 91234-5670"))).await).await;
    assert_eq!(items[0]["loc"], json!(["body", "activist", "phone"]));
    assert_eq!(items[0]["type"], "value_error.phone.unreachable");

    sim.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::unavailable("timeout")),
    );
    let resp = send(&r, post_call(&front_end_body("11 91234-5671"))).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v = json_body(resp).await;
    assert_eq!(v["detail"], "Could not place the call. Try again later.");

    sim.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::rate_limited(Some(Duration::from_secs(7)))),
    );
    let resp = send(&r, post_call(&front_end_body("11 91234-5672"))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "7");
}

#[tokio::test]
async fn call_details_mask_numbers_unless_the_admin_token_is_presented() {
    let app = app_with(&["--admin-token", "s3cret-admin"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    poll_final(&r, &id, Duration::from_secs(10)).await;
    // The page's final status can come before the activist leg's own last
    // callbacks (the conference ends first): wait until both legs ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = json_body(send(&r, get(&format!("/v1/phone/calls/{id}"))).await).await;
        let ended = ["activist", "target"]
            .iter()
            .all(|leg| v["legs"][leg]["ended_at"].is_string());
        if ended || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v["unmasked"], false);
    assert_eq!(v["activist"]["phone"], "+5511*****5670");
    assert_eq!(v["target"]["phone"], "+5561*****0000");
    assert_eq!(v["activist"]["email"], "***@example.org");
    assert_eq!(v["state"], "completed");
    assert_eq!(v["legs"]["target"]["status"], "completed");
    // the activist joined through TwiML, reported by SID only
    assert_eq!(v["legs"]["activist"]["joined_conference"], true);
    assert_eq!(v["legs"]["target"]["left_conference"], true);
    // simulated reports carry no time: stamped when received
    for leg in ["activist", "target"] {
        for at in ["ringing_at", "answered_at", "ended_at"] {
            assert!(v["legs"][leg][at].is_string(), "{leg}.{at}: {v}");
        }
    }
    assert!(
        v["legs"]["activist"]["sid"]
            .as_str()
            .unwrap()
            .starts_with("CA")
    );
    let timeline = v["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 10, "{}", timeline.len());
    assert!(timeline.iter().all(|e| e.get("payload").is_none()));
    let text = v.to_string();
    assert!(
        !text.contains("5511912345670") && !text.contains("ana@example.org"),
        "{text}"
    );

    let authed = |token: &str| {
        Request::get(format!("/v1/phone/calls/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let v = json_body(send(&r, authed("s3cret-admin")).await).await;
    assert_eq!(v["unmasked"], true);
    assert_eq!(v["activist"]["phone"], "+5511912345670");
    assert!(v["timeline"][0]["payload"].is_string());

    let resp = send(&r, authed("wrong")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(resp).await, json!({"detail": "Invalid token."}));
}

#[tokio::test]
async fn sse_streams_state_changes_until_the_end() {
    let app = app_with(&["--simulated-tick", "5"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5675").await;
    let resp = send(&r, get(&format!("/v1/phone/calls/{id}/events"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The stream ends by itself once the call is terminal.
    let body = tokio::time::timeout(Duration::from_secs(20), body_bytes(resp))
        .await
        .expect("stream ended");
    let text = String::from_utf8(body).unwrap();
    let states: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.contains("event: state"));
    assert!(states.len() >= 3, "{text}");
    let last = states.last().unwrap();
    assert_eq!(last["state"], "target_busy");
    assert_eq!(last["status"], "busy");
    assert_eq!(last["terminal"], true);
    // versions only grow
    let versions: Vec<u64> = states
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[tokio::test]
async fn sse_wakes_on_core_live_updates_without_waiting_for_the_poll() {
    // A poll of ten minutes: every event after the first can only come
    // from core's live updates (`PressureService::live_updates`).
    let app = app_with(&["--simulated-tick", "20", "--sse-poll-interval", "600000"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5675").await;
    let resp = send(&r, get(&format!("/v1/phone/calls/{id}/events"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(20), body_bytes(resp))
        .await
        .expect("stream ended well before the poll");
    let text = String::from_utf8(body).unwrap();
    let events = text.lines().filter(|l| l.starts_with("data: ")).count();
    assert!(events >= 3, "{text}");
    assert!(text.contains("\"terminal\":true"), "{text}");
}

/// `/metrics` shows the open SSE streams (up while a client reads one,
/// down once it goes) and the database pool's connections.
#[tokio::test]
async fn metrics_gauge_open_streams_and_the_pool() {
    let app = app_with(&["--database-url", "sqlite::memory:"]).await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    let metrics = |r: axum::Router| async move {
        String::from_utf8(body_bytes(send(&r, get("/metrics")).await).await).unwrap()
    };
    let stream = send(&r, get(&format!("/v1/phone/calls/{id}/events"))).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let text = metrics(r.clone()).await;
    assert!(
        text.contains("# TYPE bonde_pressure_sse_streams_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("bonde_pressure_sse_streams_open{stream=\"call\"} 1\n"),
        "{text}"
    );
    // In-memory SQLite: one connection, never closed.
    assert!(
        text.contains("bonde_pressure_db_pool_connections{state=\"max\"} 1\n"),
        "{text}"
    );
    let in_use_and_idle: i64 = ["in_use", "idle"]
        .iter()
        .map(|s| {
            let prefix = format!("bonde_pressure_db_pool_connections{{state=\"{s}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("{s} in {text}"))
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(in_use_and_idle, 1, "{text}");
    drop(stream);
    let text = metrics(r.clone()).await;
    assert!(
        text.contains("bonde_pressure_sse_streams_open{stream=\"call\"} 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn sse_reconnections_after_the_last_event_get_204() {
    let app = app().await;
    let r = router(&app);
    let id = start(&r, "11 91234-5670").await;
    poll_final(&r, &id, Duration::from_secs(10)).await;
    let events = |last: Option<String>| {
        let mut req = Request::get(format!("/v1/phone/calls/{id}/events"));
        if let Some(v) = last {
            req = req.header("last-event-id", v);
        }
        req.body(Body::empty()).unwrap()
    };
    let read = |resp: axum::http::Response<Body>| async move {
        let body = tokio::time::timeout(Duration::from_secs(10), body_bytes(resp))
            .await
            .expect("stream ended");
        String::from_utf8(body).unwrap()
    };

    // A first connection gets the terminal event, then the stream ends.
    let resp = send(&r, events(None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = read(resp).await;
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids.len(), 1, "{text}");
    assert!(text.contains("\"terminal\":true"), "{text}");
    let version: u64 = ids[0].parse().unwrap();

    // The EventSource reconnects with that id: 204, so it stops.
    for last in [version.to_string(), (version + 3).to_string()] {
        let resp = send(&r, events(Some(last.clone()))).await;
        assert_eq!(
            resp.status(),
            StatusCode::NO_CONTENT,
            "Last-Event-ID {last}"
        );
        assert!(body_bytes(resp).await.is_empty());
    }
    // An older id (or a malformed one) still gets the final state.
    for last in [(version - 1).to_string(), "x".to_owned()] {
        let resp = send(&r, events(Some(last.clone()))).await;
        assert_eq!(resp.status(), StatusCode::OK, "Last-Event-ID {last}");
        let text = read(resp).await;
        assert!(text.contains(&format!("id: {version}")), "{text}");
    }
}

#[tokio::test]
async fn ops_routes() {
    let app = app().await;
    let r = router(&app);
    assert_eq!(
        json_body(send(&r, get("/healthz")).await).await,
        json!({"status": "ok"})
    );
    assert_eq!(
        json_body(send(&r, get("/readyz")).await).await,
        json!({"status": "ready"})
    );

    let id = start(&r, "11 91234-5670").await;
    poll_final(&r, &id, Duration::from_secs(10)).await;
    let resp = send(&r, get("/metrics")).await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(
        text.contains("bonde_pressure_call_requests_total{outcome=\"started\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("bonde_pressure_call_state_transitions_total{state=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "bonde_pressure_http_responses_total{route=\"/v1/phone/call\",status=\"200\"} 1"
        ),
        "{text}"
    );
    // Latency histograms per route; the start request took one observation.
    assert!(
        text.contains("# TYPE bonde_pressure_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            "bonde_pressure_http_request_duration_seconds_count{route=\"/v1/phone/call\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "bonde_pressure_http_request_duration_seconds_bucket{route=\"/v1/phone/call\",le=\"+Inf\"} 1\n"
        ),
        "{text}"
    );

    let spec = json_body(send(&r, get("/openapi.json")).await).await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/phone/call",
        "/v1/phone/status/{call_id}",
        "/v1/phone/calls/{call_id}",
        "/v1/phone/calls/{call_id}/events",
        "/healthz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
    // The campaign results routes: admin token, query parameters, schemas.
    for path in [
        "/v1/phone/widgets/{widget_id}/stats",
        "/v1/phone/widgets/{widget_id}/calls.csv",
        "/v1/phone/widgets/{widget_id}/events",
    ] {
        let op = &spec["paths"][path]["get"];
        assert!(op.is_object(), "{path} documented");
        assert_eq!(op["security"][0]["admin_token"], json!([]), "{path}");
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            params,
            ["widget_id", "from", "to", "tz", "interval"],
            "{path}"
        );
        for status in ["200", "401", "422"] {
            assert!(op["responses"].get(status).is_some(), "{path} {status}");
        }
    }
    let ok = |path: &str, content: &str| {
        spec["paths"][path]["get"]["responses"]["200"]["content"][content]["schema"].clone()
    };
    assert_eq!(
        ok("/v1/phone/widgets/{widget_id}/stats", "application/json")["$ref"],
        "#/components/schemas/StatsResponse"
    );
    assert!(ok("/v1/phone/widgets/{widget_id}/calls.csv", "text/csv").is_object());
    assert_eq!(
        ok("/v1/phone/widgets/{widget_id}/events", "text/event-stream")["$ref"],
        "#/components/schemas/CountersEvent"
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    for (schema, field) in [
        ("TargetResults", "p90_talk_secs"),
        ("ResultsReport", "funnel"),
        ("SeriesBucket", "start"),
        ("FunnelStep", "stage"),
        ("CountersEvent", "live"),
    ] {
        assert!(
            spec["components"]["schemas"][schema]["properties"]
                .get(field)
                .is_some(),
            "{schema}.{field}"
        );
    }
    let stats = spec["components"]["schemas"]["StatsResponse"].to_string();
    assert!(
        stats.contains("percentile_method") && stats.contains("ResultsReport"),
        "{stats}"
    );
    // The spec describes what the server sends (checked against the live
    // server with schemathesis, docs/http-api.md); these are the parts
    // that once disagreed.
    let schemas = &spec["components"]["schemas"];
    let loc = &schemas["ValidationItem"]["properties"]["loc"]["items"]["oneOf"];
    assert_eq!(loc[0]["type"], "string", "{loc}");
    assert_eq!(loc[1]["type"], "integer", "{loc}");
    let call_id = &spec["paths"]["/v1/phone/status/{call_id}"]["get"]["parameters"][0];
    assert_eq!(call_id["schema"]["format"], "uuid", "{call_id}");
    let required = schemas["CallStatusForm"]["required"].to_string();
    assert!(
        required.contains("CallSid") && required.contains("CallStatus"),
        "{required}"
    );
    // The request body's schema is core's real type, with the examples and
    // constraints the page's developers rely on.
    let body = &spec["paths"]["/v1/phone/call"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/StartCallRequest");
    let activist = &schemas["ActivistInput"];
    assert_eq!(
        activist["properties"]["email"]["example"],
        "ana@example.org"
    );
    assert_eq!(activist["properties"]["email"]["format"], "email");
    let required = activist["required"].to_string();
    assert!(
        required.contains("phone") && !required.contains("first_name"),
        "{required}"
    );
    assert_eq!(
        schemas["StartCallRequest"]["properties"]["widget_id"]["minimum"],
        1
    );
    let details = &schemas["CallDetails"]["properties"];
    assert_eq!(details["conference_sid"]["type"], json!(["string", "null"]));
    assert_eq!(details["created_at"]["type"], "string");
    let sse = &spec["paths"]["/v1/phone/calls/{call_id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["$ref"];
    assert_eq!(sse, "#/components/schemas/SseStateEvent");
    let resp = send(&r, get("/docs")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = String::from_utf8(body_bytes(resp).await).unwrap();
    assert!(html.contains("/openapi.json"));
}

/// Issue 11: HTTP matches core's error taxonomy only, so any telephony (here
/// the simulated one) gets the same answers, and core's rule decides which
/// refusal uses up the activist's request token.
#[tokio::test]
async fn core_refusals_map_to_answers_and_only_the_number_s_fault_counts() {
    let app = app_with(&["--rate-limit-per-activist", "1/h"]).await;
    let r = router(&app);
    let sim = app.simulated.clone().unwrap();
    let phone = "11 91234-5670";
    // Our side: each refusal gives the token back, so the same number may
    // try again at once.
    let ours: Vec<(TelephonyError, StatusCode, Option<&str>)> = vec![
        (
            TelephonyError::destination_not_permitted(Some(21215), "geo"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("value_error.phone.geo_permission"),
        ),
        (
            TelephonyError::caller_id_rejected(Some(21210), "from"),
            StatusCode::BAD_GATEWAY,
            None,
        ),
        (
            TelephonyError::auth(Some(20005), "inactive"),
            StatusCode::BAD_GATEWAY,
            None,
        ),
        (
            TelephonyError::rejected(400, Some(21205), "other"),
            StatusCode::BAD_GATEWAY,
            None,
        ),
        (
            TelephonyError::rate_limited(Some(Duration::from_secs(2))),
            StatusCode::SERVICE_UNAVAILABLE,
            None,
        ),
    ];
    for (error, status, kind) in ours {
        sim.set_failure(CommandKind::CallActivist, Some(error.clone()));
        let resp = send(&r, post_call(&front_end_body(phone))).await;
        assert_eq!(resp.status(), status, "{error:?}");
        let v = json_body(resp).await;
        match kind {
            Some(kind) => {
                assert_eq!(v["detail"][0]["loc"], json!(["body", "activist", "phone"]));
                assert_eq!(v["detail"][0]["type"], kind, "{error:?}");
            }
            None if status == StatusCode::BAD_GATEWAY => {
                assert_eq!(v["detail"], "Could not place the call. Try again later.")
            }
            None => {}
        }
    }
    // The number's fault: it counts, so the next request is refused (429)
    // before the telephony is asked.
    sim.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::invalid_number(Some(21211), "invalid")),
    );
    let items = validation_items(send(&r, post_call(&front_end_body(phone))).await).await;
    assert_eq!(items[0]["type"], "value_error.phone.unreachable");
    sim.set_failure(CommandKind::CallActivist, None);
    let resp = send(&r, post_call(&front_end_body(phone))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        json_body(resp).await["detail"],
        "Too many requests. Try again later."
    );
}
