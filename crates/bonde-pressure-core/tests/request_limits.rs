//! The limits on start requests (per client IP, per activist number) and
//! core's rule for which refused start uses up a request: through the
//! service and its `RateLimiter`.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::limits::{LimitKey, LimitKind, Quota, RequestLimits};
use bonde_pressure_core::simulated::{CommandKind, TelephonyCommand};
use bonde_pressure_core::{
    Dependencies, EventSink, InMemoryCallStore, InMemoryRateLimiter, ManualClock, PressureService,
    RateLimiter, Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony, StartError,
    StaticCampaignDirectory, StubActionRecorder, TelephonyError,
};
use chrono::Utc;
use common::demo_request;

struct Setup {
    service: Arc<PressureService>,
    telephony: Arc<SimulatedTelephony>,
    limiter: Arc<InMemoryRateLimiter>,
    clock: Arc<ManualClock>,
}

/// A service with these request limits, no caps on numbers, and its
/// limiter at hand.
fn setup(limits: RequestLimits) -> Setup {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistBusy),
        Duration::from_secs(3600),
    ));
    let limiter = Arc::new(InMemoryRateLimiter::new(clock.clone()));
    let config = ServiceConfig::default()
        .with_activist_calls(None)
        .with_target_dials(None);
    let service = Arc::new(
        PressureService::new(
            Dependencies::new(
                Arc::new(InMemoryCallStore::new()),
                telephony.clone(),
                Arc::new(StaticCampaignDirectory::demo()),
            )
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(clock.clone()),
            config,
        )
        .with_rate_limiter(limiter.clone())
        .with_request_limits(limits),
    );
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    Setup {
        service,
        telephony,
        limiter,
        clock,
    }
}

fn per_activist(limit: u32) -> RequestLimits {
    RequestLimits::new().with_per_activist(Some(Quota::gradual(limit, Duration::from_secs(3600))))
}

fn calls_placed(s: &Setup) -> usize {
    s.telephony
        .commands()
        .iter()
        .filter(|c| matches!(c, TelephonyCommand::CallActivist(_)))
        .count()
}

fn rate_limited(e: StartError) -> (&'static str, Duration) {
    match e {
        StartError::RateLimited { scope, retry_after } => (scope, retry_after),
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

/// Every variant of the taxonomy, and whether a start it refuses counts.
fn refusals() -> Vec<(TelephonyError, bool)> {
    vec![
        // The number itself was refused: an attempt.
        (TelephonyError::invalid_number(Some(21211), "invalid"), true),
        // The answer was lost: a call may have been placed.
        (TelephonyError::unavailable("timeout"), true),
        // Our side: the activist is not at fault.
        (
            TelephonyError::destination_not_permitted(Some(21215), "geo"),
            false,
        ),
        (
            TelephonyError::caller_id_rejected(Some(21210), "from"),
            false,
        ),
        (TelephonyError::auth(Some(20003), "credentials"), false),
        (
            TelephonyError::rate_limited(Some(Duration::from_secs(1))),
            false,
        ),
        (TelephonyError::rejected(400, Some(21205), "other"), false),
        (TelephonyError::not_found("gone"), false),
    ]
}

#[test]
fn which_refusals_count_is_decided_by_the_taxonomy() {
    for (error, counts) in refusals() {
        assert_eq!(error.counts_against_limits(), counts, "{error:?}");
        let started = StartError::Telephony {
            call_id: bonde_pressure_core::CallId::new(),
            error: error.clone(),
        };
        assert_eq!(started.counts_against_limits(), counts, "{error:?}");
    }
    // Refusals before the telephony never count.
    for e in [
        StartError::Invalid(vec![]),
        StartError::WidgetNotFound,
        StartError::WidgetNotPhone,
        StartError::TargetNotInWidget,
        StartError::RateLimited {
            scope: "target",
            retry_after: Duration::from_secs(1),
        },
    ] {
        assert!(!e.counts_against_limits(), "{e:?}");
    }
}

#[test]
fn sources_are_kept_and_errors_stay_cloneable() {
    use std::error::Error as _;
    let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
    let e = TelephonyError::unavailable("no answer").with_source(io);
    let copy = e.clone();
    for e in [&e, &copy] {
        assert_eq!(e.source().expect("a source").to_string(), "read timed out");
        let io = e.underlying().expect("the underlying error");
        assert_eq!(
            io.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
    }
    assert!(TelephonyError::unavailable("x").source().is_none());
    assert!(TelephonyError::unavailable("x").underlying().is_none());
    // The constructors fill the fields matched on.
    assert!(matches!(
        TelephonyError::destination_not_permitted(Some(21215), "m"),
        TelephonyError::DestinationNotPermitted { code: Some(21215), ref message, .. } if message == "m"
    ));
    assert_eq!(
        TelephonyError::caller_id_rejected(Some(21210), "m").code(),
        Some(21210)
    );
    assert_eq!(
        TelephonyError::rate_limited(None).to_string(),
        "telephony rate limit reached"
    );
}

/// A refused start keeps the whole chain: the start error, the
/// telephony's refusal, and the refusal's own cause.
#[tokio::test]
async fn a_refused_start_keeps_the_telephony_error_as_its_source() {
    use std::error::Error as _;
    let s = setup(RequestLimits::default());
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
    s.telephony.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::unavailable("no answer").with_source(io)),
    );
    let e = s.service.start(&demo_request()).await.unwrap_err();
    let StartError::Telephony { call_id, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        e.to_string(),
        format!("could not call the activist (call {call_id})")
    );
    let telephony = e.source().expect("the telephony error");
    assert!(
        telephony.downcast_ref::<TelephonyError>().is_some(),
        "{telephony:?}"
    );
    assert_eq!(
        telephony.to_string(),
        TelephonyError::unavailable("no answer").to_string()
    );
    let io = telephony.source().expect("the telephony error's own cause");
    assert_eq!(io.to_string(), "connection reset");
    assert!(io.source().is_none());
    assert_eq!(
        bonde_pressure_core::error_chain(&e).to_string(),
        format!(
            "could not call the activist (call {call_id}): {}: connection reset",
            TelephonyError::unavailable("no answer")
        )
    );
}

/// For each refusal, a per-activist limit of one: a refusal that counts
/// uses the request up (the next is refused before the telephony); one
/// that does not gives it back.
#[tokio::test]
async fn a_refused_start_uses_up_the_activist_request_only_when_it_counts() {
    for (error, counts) in refusals() {
        let s = setup(per_activist(1));
        s.telephony
            .set_failure(CommandKind::CallActivist, Some(error.clone()));
        let e = s.service.start(&demo_request()).await.unwrap_err();
        assert!(matches!(e, StartError::Telephony { .. }), "{e:?}");
        s.telephony.set_failure(CommandKind::CallActivist, None);
        let next = s.service.start(&demo_request()).await;
        if counts {
            let (scope, retry_after) = rate_limited(next.unwrap_err());
            assert_eq!(scope, "activist", "{error:?}");
            assert_eq!(retry_after, Duration::from_secs(3600));
            assert_eq!(calls_placed(&s), 1, "{error:?}");
        } else {
            next.unwrap_or_else(|e| panic!("{error:?} was not given back: {e:?}"));
            assert_eq!(calls_placed(&s), 2, "{error:?}");
        }
    }
}

/// Invalid requests, widget errors and used-up caps give the request back:
/// nobody can lock an activist out with made-up requests. A started call
/// keeps it.
#[tokio::test]
async fn refusals_before_the_telephony_give_the_activist_request_back() {
    let s = setup(per_activist(2));
    for i in 0..10 {
        let mut req = demo_request();
        match i % 3 {
            0 => req.widget_id = 999,
            1 => req.activist.email = "not-an-email".into(),
            _ => req.target.phone = "+5561999990001".into(),
        }
        let e = s.service.start(&req).await.unwrap_err();
        assert!(
            !matches!(e, StartError::RateLimited { .. }),
            "request {i}: {e:?}"
        );
    }
    // Spelled differently, the same number: one key.
    let mut national = demo_request();
    national.activist.phone = "(11) 91234-5678".into();
    let mut e164 = demo_request();
    e164.activist.phone = "+5511912345678".into();
    s.service.start(&national).await.unwrap();
    s.service.start(&e164).await.unwrap();
    let (scope, _) = rate_limited(s.service.start(&demo_request()).await.unwrap_err());
    assert_eq!(scope, "activist");
    assert_eq!(calls_placed(&s), 2);
    // Another number is not affected; a token comes back after 30 min.
    let mut other = demo_request();
    other.activist.phone = "11 91234-0000".into();
    s.service.start(&other).await.unwrap();
    s.clock.advance(Duration::from_secs(1800));
    s.service.start(&demo_request()).await.unwrap();
}

#[tokio::test]
async fn the_client_limit_is_a_bucket_per_ip_never_given_back() {
    let quota = Quota::gradual(2, Duration::from_secs(60));
    let s = setup(RequestLimits::new().with_per_client(Some(quota)));
    let a: IpAddr = "203.0.113.1".parse().unwrap();
    let b: IpAddr = "2001:db8::1".parse().unwrap();
    s.service.admit_client(a).await.unwrap();
    s.service.admit_client(a).await.unwrap();
    let (scope, retry_after) = rate_limited(s.service.admit_client(a).await.unwrap_err());
    assert_eq!(scope, "ip");
    assert_eq!(retry_after, Duration::from_secs(30));
    s.service.admit_client(b).await.unwrap();
    // The charge is the limiter's, under the client-IP kind.
    let key = LimitKey::new(LimitKind::ClientIp, "203.0.113.1");
    assert!(!s.limiter.peek(&key, quota).await.unwrap().is_admitted());
    s.clock.advance(Duration::from_secs(30));
    s.service.admit_client(a).await.unwrap();
    // No limit configured: anything goes.
    let open = setup(RequestLimits::new());
    for _ in 0..100 {
        open.service.admit_client(a).await.unwrap();
    }
    assert!(open.limiter.is_empty());
}

/// The per-activist limit is charged before validation (a burst of valid
/// requests cannot overshoot), so over it the request is refused even when
/// it is otherwise invalid; a number that does not parse is not charged.
#[tokio::test]
async fn the_activist_request_limit_comes_first() {
    let s = setup(per_activist(1));
    s.service.start(&demo_request()).await.unwrap();
    let mut invalid = demo_request();
    invalid.activist.email = "nope".into();
    let (scope, _) = rate_limited(s.service.start(&invalid).await.unwrap_err());
    assert_eq!(scope, "activist");
    let mut junk = demo_request();
    junk.activist.phone = "abc".into();
    for _ in 0..3 {
        assert!(matches!(
            s.service.start(&junk).await.unwrap_err(),
            StartError::Invalid(_)
        ));
    }
}
