//! Tests pin their settings: an exported `TWILIO_*`, `GRAPHQL_API_URL` or
//! any other variable of the server never reaches a test's configuration.
//!
//! The check runs this test binary again with live settings exported (a
//! test cannot change its own process environment), and has it build the
//! tests' configuration and app there.

mod common;

use bonde_pressure_http::wiring::TelephonyKind;

/// What a developer's shell might export: every one would switch a test to
/// a live integration (or break it) if the tests read the environment.
const LIVE: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
    ("TWILIO_AUTH_TOKEN", "live-token"),
    ("TWILIO_PHONE_NUMBER", "+5511987650000"),
    ("TWILIO_API_KEY_SID", "SK0123456789abcdef0123456789abcdef"),
    ("TWILIO_API_KEY_SECRET", "live-key-secret"),
    ("TWILIO_API_BASE", "https://api.twilio.example.org"),
    ("BASE_URL", "https://live.example.org"),
    ("GRAPHQL_API_URL", "https://graphql.example.org/v1/graphql"),
    ("GRAPHQL_API_TOKEN", "live-graphql-token"),
    ("DATABASE_URL", "postgres://live@db.example.org/live"),
    ("ADMIN_TOKEN", "live-admin"),
    ("CAMPAIGNS_FILE", "/nonexistent/live-campaigns.json"),
    ("RATE_LIMIT_PER_IP", "1/h"),
];

/// Builds the tests' configuration and app, and checks they are the
/// pinned ones, whatever the environment holds. Run on its own by
/// [`exported_live_settings_do_not_reach_the_tests`] with [`LIVE`]
/// exported; in a plain run it checks the developer's own environment.
#[tokio::test]
async fn the_test_configuration_is_pinned() {
    let config = common::test_config(&[]);
    assert!(config.twilio().unwrap().is_none(), "{config:?}");
    assert_eq!(config.twilio_api_key_sid, None);
    assert_eq!(config.base_url, None);
    assert_eq!(config.graphql_api_url, None);
    assert!(config.graphql_api_token.is_none());
    assert_eq!(
        config.database_url.as_ref().map(|s| s.expose()),
        Some("memory:")
    );
    assert!(config.admin_token.is_none());
    assert_eq!(config.campaigns_file, None);
    assert_eq!(config.rate_limit_per_ip.0, None);
    assert_eq!(config.twilio_api_base, "https://api.twilio.com");

    let app = common::app().await;
    assert_eq!(app.telephony, TelephonyKind::Simulated);
    assert!(app.simulated.is_some());
}

#[test]
fn exported_live_settings_do_not_reach_the_tests() {
    let exe = std::env::current_exe().expect("this test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "the_test_configuration_is_pinned", "--nocapture"])
        .envs(LIVE.iter().copied())
        .output()
        .expect("run this test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "with live settings exported, the tests' configuration changed:\n{stdout}\n{stderr}"
    );
    // It ran (a filter matching nothing would pass too).
    assert!(stdout.contains("1 passed"), "{stdout}");
    // No live value leaked into its output either.
    for (_, value) in LIVE {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "{value} in output"
        );
    }
}
