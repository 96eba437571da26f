//! Client configuration: account, credentials, numbers, URLs, timeouts, retries.

use std::time::Duration;

use bonde_pressure_core::PhoneNumber;

use crate::ids::is_sid;
use crate::urls::{CallbackUrls, UrlError};

/// Twilio's production API.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Shortest request timeout accepted (shorter values are raised to it).
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest request timeout accepted (longer values are lowered to it):
/// webhooks wait on some requests, and Twilio gives them 15 s in all, so one
/// attempt must leave time for the rest of the webhook's work.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a configuration was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The account SID is not `AC` followed by 32 hex digits.
    #[error("invalid Twilio account SID (expected AC followed by 32 hex digits)")]
    AccountSid,
    /// The API key SID is not `SK` followed by 32 hex digits.
    #[error("invalid Twilio API key SID (expected SK followed by 32 hex digits)")]
    ApiKeySid,
    /// An empty auth token or API key secret.
    #[error("empty Twilio auth token or API key secret")]
    EmptySecret,
    /// The public base URL is unusable.
    #[error("invalid public base URL: {0}")]
    BaseUrl(String),
    /// The API base URL is unusable.
    #[error("invalid Twilio API base URL: {0}")]
    ApiBase(String),
    /// The HTTP client could not be built (the cause is the
    /// [`source`](std::error::Error::source)).
    #[error("HTTP client could not be built")]
    HttpClient(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The callback URLs' connection overrides are malformed.
    #[error("invalid Twilio connection overrides: {0}")]
    ConnectionOverrides(String),
}

impl From<UrlError> for ConfigError {
    fn from(error: UrlError) -> Self {
        match error {
            UrlError::BaseUrl(reason) => ConfigError::BaseUrl(reason),
            UrlError::ConnectionOverrides(reason) => ConfigError::ConnectionOverrides(reason),
        }
    }
}

/// Equal when the same refusal: [`ConfigError::HttpClient`]s compare their
/// causes' messages.
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        use ConfigError::*;
        match (self, other) {
            (AccountSid, AccountSid) | (ApiKeySid, ApiKeySid) | (EmptySecret, EmptySecret) => true,
            (BaseUrl(a), BaseUrl(b))
            | (ApiBase(a), ApiBase(b))
            | (ConnectionOverrides(a), ConnectionOverrides(b)) => a == b,
            (HttpClient(a), HttpClient(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for ConfigError {}

/// The workspace's secret type (core's [`bonde_pressure_core::Secret`]):
/// `Debug` and `Display` never show it.
pub use bonde_pressure_core::Secret;

/// How REST requests authenticate (HTTP Basic). The account SID is always in
/// the path. Note that webhook signatures are always computed with the
/// account's **auth token**, even when REST requests use an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `AccountSid:AuthToken`.
    AuthToken(Secret),
    /// `ApiKeySid:ApiKeySecret` (recommended for production: revocable).
    ApiKey {
        /// The key's SID (`SK…`).
        sid: String,
        /// The key's secret.
        secret: Secret,
    },
}

impl Credentials {
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Credentials::AuthToken(t) if t.expose().is_empty() => Err(ConfigError::EmptySecret),
            Credentials::AuthToken(_) => Ok(()),
            Credentials::ApiKey { sid, secret } => {
                if !is_sid(sid, "SK") {
                    return Err(ConfigError::ApiKeySid);
                }
                if secret.expose().is_empty() {
                    return Err(ConfigError::EmptySecret);
                }
                Ok(())
            }
        }
    }
}

/// Retries of transient failures: exponential backoff with full jitter,
/// bounded in attempts and in total time.
///
/// Idempotent requests (hang up, end conference, fetch) are retried on HTTP
/// 429 (and Twilio code 20429), any 5xx, connection failures and timeouts.
///
/// Requests that **create** a call (the activist's call, the target
/// participant) are retried only when Twilio surely did not act on them:
/// 429 / 20429, 503, and connection failures (the request never reached
/// Twilio). A timeout, a 500, 502, 504 or other 5xx may come after Twilio
/// placed the call, and a second request would ring a real person twice, so
/// those are reported (as "unavailable, may have taken effect" where that
/// applies) and left to reconciliation, unless
/// [`RetryPolicy::retry_unsafe_timeouts`] is set.
///
/// Other 4xx are never retried.
///
/// The defaults (4 attempts, 6 s budget) with the default 4 s request
/// timeout keep one command under 10 s
/// ([`crate::client::worst_case_duration`]), inside the 15 s Twilio gives a
/// webhook, since effects run inside webhook handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles with each retry.
    pub initial_backoff: Duration,
    /// Largest backoff between two attempts.
    pub max_backoff: Duration,
    /// No retry is started once this much time has passed since the first
    /// attempt (nor when its backoff would end past it).
    pub max_elapsed: Duration,
    /// Also retry call-creating requests whose outcome is unknown (timeouts,
    /// 5xx other than 503, unreadable error answers): may place duplicate calls.
    pub retry_unsafe_timeouts: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(6),
            retry_unsafe_timeouts: false,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff before retry number `retry` (1-based): a random duration
    /// in `[0, min(max_backoff, initial_backoff * 2^(retry-1))]` ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_cap(retry);
        let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=cap_us))
    }

    /// The upper bound of the backoff before retry number `retry` (1-based).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }
}

/// Everything the Twilio client needs.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    account_sid: String,
    credentials: Credentials,
    from_number: PhoneNumber,
    api_base: String,
    callbacks: CallbackUrls,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl TwilioConfig {
    /// A configuration with the default API base ([`DEFAULT_API_BASE`]),
    /// the default request timeout ([`DEFAULT_REQUEST_TIMEOUT`], 4 s) and the
    /// default [`RetryPolicy`]. `public_base_url` is the URL Twilio reaches
    /// this service at (`BASE_URL`).
    pub fn new(
        account_sid: impl Into<String>,
        credentials: Credentials,
        from_number: PhoneNumber,
        public_base_url: &str,
    ) -> Result<Self, ConfigError> {
        let account_sid = account_sid.into().trim().to_owned();
        if !is_sid(&account_sid, "AC") {
            return Err(ConfigError::AccountSid);
        }
        credentials.validate()?;
        Ok(Self {
            account_sid,
            credentials,
            from_number,
            api_base: DEFAULT_API_BASE.to_owned(),
            callbacks: CallbackUrls::new(public_base_url)?,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        })
    }

    /// Points the client at another API base (`TWILIO_API_BASE`: a fake in
    /// tests, a regional edge...): `http(s)://host[:port]`, no trailing path.
    pub fn with_api_base(mut self, api_base: &str) -> Result<Self, ConfigError> {
        let base = api_base.trim().trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| ConfigError::ApiBase("must start with http:// or https://".into()))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(ConfigError::ApiBase(
                "expected scheme://host[:port] and nothing else".into(),
            ));
        }
        self.api_base = base.to_owned();
        Ok(self)
    }

    /// Sets the Twilio connection overrides of the callback URLs (see
    /// [`CallbackUrls::with_connection_overrides`]; default
    /// [`crate::urls::DEFAULT_CONNECTION_OVERRIDES`]).
    pub fn with_connection_overrides(
        mut self,
        overrides: Option<&str>,
    ) -> Result<Self, ConfigError> {
        self.callbacks = self.callbacks.with_connection_overrides(overrides)?;
        Ok(self)
    }

    /// Sets the timeout of one HTTP request, kept within
    /// [`MIN_REQUEST_TIMEOUT`]..=[`MAX_REQUEST_TIMEOUT`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.clamp(MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT);
        self
    }

    /// Sets the retry policy (`max_attempts` is raised to at least 1).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// The account SID.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// The REST credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Our number: caller id of the activist leg, and of the target leg unless the request names one.
    pub fn from_number(&self) -> &PhoneNumber {
        &self.from_number
    }

    /// The API base URL, without a trailing slash.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The callback URLs.
    pub fn callbacks(&self) -> &CallbackUrls {
        &self.callbacks
    }

    /// The timeout of one HTTP request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The Basic auth user and password.
    pub(crate) fn basic_auth(&self) -> (&str, &str) {
        match &self.credentials {
            Credentials::AuthToken(t) => (&self.account_sid, t.expose()),
            Credentials::ApiKey { sid, secret } => (sid, secret.expose()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number() -> PhoneNumber {
        PhoneNumber::parse_e164("+5511912345678").unwrap()
    }

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn http_client_errors_keep_their_cause() {
        use std::error::Error as _;
        let e =
            ConfigError::HttpClient(std::sync::Arc::new(std::io::Error::other("no TLS backend")));
        assert_eq!(e.to_string(), "HTTP client could not be built");
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("no TLS backend")
        );
        assert_eq!(e.clone(), e);
        assert_ne!(
            e,
            ConfigError::HttpClient(std::sync::Arc::new(std::io::Error::other("other")))
        );
        assert_ne!(e, ConfigError::EmptySecret);
    }

    #[test]
    fn validates_sids_and_secrets() {
        let ok = TwilioConfig::new(
            AC,
            Credentials::AuthToken("t".into()),
            number(),
            "https://x",
        );
        assert!(ok.is_ok());
        assert_eq!(
            TwilioConfig::new(
                "AC123",
                Credentials::AuthToken("t".into()),
                number(),
                "https://x"
            )
            .unwrap_err(),
            ConfigError::AccountSid
        );
        assert_eq!(
            TwilioConfig::new(AC, Credentials::AuthToken("".into()), number(), "https://x")
                .unwrap_err(),
            ConfigError::EmptySecret
        );
        let bad_key = Credentials::ApiKey {
            sid: AC.into(),
            secret: "s".into(),
        };
        assert_eq!(
            TwilioConfig::new(AC, bad_key, number(), "https://x").unwrap_err(),
            ConfigError::ApiKeySid
        );
        assert!(matches!(
            TwilioConfig::new(AC, Credentials::AuthToken("t".into()), number(), "x"),
            Err(ConfigError::BaseUrl(_))
        ));
        // The URL module's errors keep their kind and reason.
        let overrides = ok.unwrap().with_connection_overrides(Some("rc"));
        let Err(ConfigError::ConnectionOverrides(reason)) = overrides else {
            panic!("{overrides:?}");
        };
        assert!(reason.contains("key=value"), "{reason}");
    }

    #[test]
    fn basic_auth_user_depends_on_credentials() {
        let c = TwilioConfig::new(
            AC,
            Credentials::AuthToken("tok".into()),
            number(),
            "https://x",
        )
        .unwrap();
        assert_eq!(c.basic_auth(), (AC, "tok"));
        let sk = "SK0123456789abcdef0123456789abcdef";
        let c = TwilioConfig::new(
            AC,
            Credentials::ApiKey {
                sid: sk.into(),
                secret: "sec".into(),
            },
            number(),
            "https://x",
        )
        .unwrap();
        assert_eq!(c.basic_auth(), (sk, "sec"));
        assert_eq!(c.account_sid(), AC);
    }

    #[test]
    fn secrets_never_print() {
        let c = TwilioConfig::new(
            AC,
            Credentials::AuthToken("supersecret".into()),
            number(),
            "https://x",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(!shown.contains("912345678"), "phone number leaked: {shown}");
    }

    #[test]
    fn timeouts_are_bounded_and_api_base_checked() {
        let c = TwilioConfig::new(
            AC,
            Credentials::AuthToken("t".into()),
            number(),
            "https://x",
        )
        .unwrap();
        assert_eq!(
            c.clone()
                .with_request_timeout(Duration::from_secs(3600))
                .request_timeout(),
            MAX_REQUEST_TIMEOUT
        );
        assert_eq!(
            c.clone()
                .with_request_timeout(Duration::ZERO)
                .request_timeout(),
            MIN_REQUEST_TIMEOUT
        );
        assert_eq!(
            c.clone()
                .with_api_base("http://127.0.0.1:9999/")
                .unwrap()
                .api_base(),
            "http://127.0.0.1:9999"
        );
        assert!(c.clone().with_api_base("127.0.0.1").is_err());
        assert!(c.clone().with_api_base("https://x/2010-04-01").is_err());
        assert_eq!(
            c.with_retry(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            })
            .retry()
            .max_attempts,
            1
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(3), Duration::from_millis(350));
        assert_eq!(p.backoff_cap(60), Duration::from_millis(350));
        for retry in 1..6 {
            assert!(p.backoff(retry) <= p.backoff_cap(retry));
        }
    }
}
