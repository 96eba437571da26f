//! The state every handler shares.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use bonde_pressure_core::{PressureService, Privacy};
use bonde_pressure_twilio::{CallbackUrls, ConfigError as TwilioConfigError};

use crate::config::{CorsOrigins, Secret};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::spool::SpoolFlusher;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Allowed CORS origins.
    pub cors_origins: CorsOrigins,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Trusted reverse proxies in front of us (0: ignore `X-Forwarded-For`).
    pub trusted_proxy_hops: usize,
    /// Bearer token that unmasks phone numbers in call details.
    pub admin_token: Option<Secret>,
    /// SSE subscribers re-read the store this often (besides in-process notifications).
    pub sse_poll_interval: Duration,
    /// The most time a request may spend waiting for the store (see
    /// [`crate::deadline`]); zero: no limit.
    pub request_timeout: Duration,
    /// The most time a client may take to send a whole request body (408
    /// after that); zero: no limit.
    pub request_body_timeout: Duration,
    /// The demo campaign page served at `/`; `None`: off (404).
    pub demo_page: Option<crate::routes::pages::DemoPage>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            cors_origins: CorsOrigins::Any,
            max_body_bytes: 64 * 1024,
            trusted_proxy_hops: 0,
            admin_token: None,
            sse_poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            request_body_timeout: Duration::from_secs(10),
            demo_page: None,
        }
    }
}

/// Whether and how webhook signatures are checked.
#[derive(Debug, Clone)]
pub enum SignatureCheck {
    /// `X-Twilio-Signature` must match, computed with this auth token.
    Verify(Secret),
    /// No token to check with: every webhook is refused with 403 (the
    /// simulated telephony needs no webhooks).
    RejectAll,
    /// No check (allowed only with the simulated telephony: load tests, demos).
    Off,
}

/// How Twilio webhooks are authenticated and which URLs TwiML names.
#[derive(Debug, Clone)]
pub struct WebhookAuth {
    /// The public base URL Twilio calls: signatures are computed over
    /// `base + path + query`, whatever the Host header says (works behind a
    /// proxy), and TwiML actions point there.
    pub urls: CallbackUrls,
    /// The signature check.
    pub check: SignatureCheck,
}

impl WebhookAuth {
    /// Webhooks reached at `base_url`, checked with `check`.
    pub fn new(base_url: &str, check: SignatureCheck) -> Result<Self, TwilioConfigError> {
        Ok(Self {
            urls: CallbackUrls::new(base_url)?,
            check,
        })
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The orchestration service.
    pub service: Arc<PressureService>,
    /// HTTP settings.
    pub options: Arc<HttpOptions>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Webhook authentication.
    pub webhooks: Arc<WebhookAuth>,
    /// Flushes core's payload spool once the store answers again.
    pub spool_flusher: Arc<SpoolFlusher>,
    /// Retention, erasure and the audit log; `None`: erasure requests and
    /// unmasked reads are refused (503), since they could not be audited.
    pub privacy: Option<Arc<Privacy>>,
    /// Campaign results (stats, CSV, dashboard); `None`: those routes answer 404.
    pub results: Option<Arc<dyn bonde_pressure_core::CampaignResults>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state over `service`, with default options,
    /// and every webhook refused (base URL `http://localhost`, no auth token).
    pub fn new(service: Arc<PressureService>) -> Self {
        let spool_flusher = Arc::new(SpoolFlusher::new(service.clone()));
        Self {
            spool_flusher,
            service,
            options: Arc::new(HttpOptions::default()),
            metrics: Arc::new(Metrics::new()),
            webhooks: Arc::new(WebhookAuth {
                urls: CallbackUrls::new("http://localhost").expect("a valid base URL"),
                check: SignatureCheck::RejectAll,
            }),
            privacy: None,
            results: None,
        }
    }

    /// With this personal-data policy (erasure route, audit of unmasked reads).
    pub fn with_privacy(mut self, privacy: Arc<Privacy>) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// With campaign results (normally the store itself).
    pub fn with_results(mut self, results: Arc<dyn bonde_pressure_core::CampaignResults>) -> Self {
        self.results = Some(results);
        self
    }

    /// With these HTTP options.
    pub fn with_options(mut self, options: HttpOptions) -> Self {
        self.spool_flusher
            .set_attempt_timeout(options.request_timeout);
        self.options = Arc::new(options);
        self
    }

    /// With these metrics (give them to [`crate::metrics::count_state_transitions`] too).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// With this webhook authentication.
    pub fn with_webhooks(mut self, webhooks: WebhookAuth) -> Self {
        self.webhooks = Arc::new(webhooks);
        self
    }
}

/// The client's IP: the peer address, or — with `trusted_proxy_hops = n` —
/// the `n`-th `X-Forwarded-For` entry from the right (the one our outermost
/// trusted proxy saw). `None` when unknown (in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// Resolves the client IP from the peer address and the `X-Forwarded-For`
/// headers, trusting the `hops` right-most entries (appended by our own
/// proxies). With fewer entries than `hops` the request did not come through
/// all our proxies, so no entry can be trusted (the left-most one is whatever
/// the client wrote): the peer address is used.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    hops: usize,
) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .len()
        .checked_sub(hops)
        .and_then(|i| forwarded.get(i))
        .copied()
        .or(peer)
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            state.options.trusted_proxy_hops,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_client_ip_is_the_entry_our_outermost_proxy_saw() {
        let peer = ip("10.0.0.2");
        // untrusted header: the peer
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9"]), 0), peer);
        // one proxy: the right-most entry
        let h = xff(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(client_ip(peer, &h, 1), ip("203.0.113.9"));
        // two proxies: the second from the right, across repeated headers
        let h = xff(&["198.51.100.1", "203.0.113.9, 10.0.0.1"]);
        assert_eq!(client_ip(peer, &h, 2), ip("203.0.113.9"));
    }

    #[test]
    fn too_few_entries_fall_back_to_the_peer_not_to_the_client_supplied_one() {
        let peer = ip("10.0.0.2");
        // two trusted hops but a single (client-written) entry
        assert_eq!(client_ip(peer, &xff(&["203.0.113.66"]), 2), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), 1), peer);
        assert_eq!(client_ip(peer, &xff(&["garbage, also-bad"]), 1), peer);
        assert_eq!(client_ip(None, &xff(&["203.0.113.66"]), 3), None);
    }
}
