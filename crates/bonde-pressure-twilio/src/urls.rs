//! The webhook route contract: the path of every URL Twilio calls back, and
//! the absolute URLs built from the public base URL.
//!
//! The HTTP crate serves the path templates ([`Route::path_template`], or the
//! `*_PATH` constants, in axum 0.8 syntax); this crate passes the absolute
//! URLs ([`CallbackUrls`]) to Twilio with every call it places, so nothing has
//! to be configured on the phone number itself.

use std::fmt;

use bonde_pressure_core::{CallId, Leg, ScriptMoment};

/// Why a base URL or connection overrides were refused.
///
/// This module depends on nothing else in the crate; the client's
/// configuration wraps these errors (into
/// [`ConfigError`](crate::ConfigError)'s `BaseUrl` and
/// `ConnectionOverrides`), never the other way round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The public base URL is unusable.
    #[error("invalid public base URL: {0}")]
    BaseUrl(String),
    /// The callback URLs' connection overrides are malformed.
    #[error("invalid Twilio connection overrides: {0}")]
    ConnectionOverrides(String),
}

/// Activist answer (voice `Url` of leg A, returns TwiML).
pub const ANSWER_PATH: &str = "/v1/phone/answer/{call_id}";
/// Activist status callback (leg A).
pub const STATUS_CALLBACK_PATH: &str = "/v1/phone/status-callback/{call_id}";
/// Activist async AMD callback.
pub const AMD_STATUS_CALLBACK_PATH: &str = "/v1/phone/amd-status-callback/{call_id}";
/// Gather action: the activist's confirmation (returns TwiML).
pub const DIAL_PATH: &str = "/v1/phone/dial/{call_id}";
/// Target status callback (leg B, Participants API `StatusCallback`).
pub const DIAL_STATUS_CALLBACK_PATH: &str = "/v1/phone/dial-status-callback/{call_id}";
/// Target AMD callback (Participants API `AmdStatusCallback`).
pub const DIAL_AMD_STATUS_CALLBACK_PATH: &str = "/v1/phone/dial-amd-status-callback/{call_id}";
/// Conference status callback.
pub const CONFERENCE_STATUS_CALLBACK_PATH: &str = "/v1/phone/conference-status-callback/{call_id}";
/// After the conference: the `<Dial action>` (returns TwiML).
pub const AFTER_DIAL_PATH: &str = "/v1/phone/after-dial/{call_id}";

/// One webhook route of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Route {
    /// `{base}/v1/phone/answer/{id}`: leg A answered; answer with TwiML.
    Answer,
    /// `{base}/v1/phone/status-callback/{id}`: leg A status.
    StatusCallback,
    /// `{base}/v1/phone/amd-status-callback/{id}`: leg A answering-machine verdict.
    AmdStatusCallback,
    /// `{base}/v1/phone/dial/{id}`: the gather's action (confirmation); answer with TwiML.
    Dial,
    /// `{base}/v1/phone/dial-status-callback/{id}`: leg B status.
    DialStatusCallback,
    /// `{base}/v1/phone/dial-amd-status-callback/{id}`: leg B answering-machine verdict.
    DialAmdStatusCallback,
    /// `{base}/v1/phone/conference-status-callback/{id}`: conference events.
    ConferenceStatusCallback,
    /// `{base}/v1/phone/after-dial/{id}`: the `<Dial action>`; answer with TwiML.
    AfterDial,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 8] = [
        Route::Answer,
        Route::StatusCallback,
        Route::AmdStatusCallback,
        Route::Dial,
        Route::DialStatusCallback,
        Route::DialAmdStatusCallback,
        Route::ConferenceStatusCallback,
        Route::AfterDial,
    ];

    /// The path template in axum 0.8 syntax (`/v1/phone/answer/{call_id}`).
    pub fn path_template(&self) -> &'static str {
        match self {
            Route::Answer => ANSWER_PATH,
            Route::StatusCallback => STATUS_CALLBACK_PATH,
            Route::AmdStatusCallback => AMD_STATUS_CALLBACK_PATH,
            Route::Dial => DIAL_PATH,
            Route::DialStatusCallback => DIAL_STATUS_CALLBACK_PATH,
            Route::DialAmdStatusCallback => DIAL_AMD_STATUS_CALLBACK_PATH,
            Route::ConferenceStatusCallback => CONFERENCE_STATUS_CALLBACK_PATH,
            Route::AfterDial => AFTER_DIAL_PATH,
        }
    }

    /// The route's name, also the [`bonde_pressure_core::RawEvent::kind`] of
    /// its payloads (`answer`, `status-callback`, `conference-status-callback`...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Route::Answer => "answer",
            Route::StatusCallback => "status-callback",
            Route::AmdStatusCallback => "amd-status-callback",
            Route::Dial => "dial",
            Route::DialStatusCallback => "dial-status-callback",
            Route::DialAmdStatusCallback => "dial-amd-status-callback",
            Route::ConferenceStatusCallback => "conference-status-callback",
            Route::AfterDial => "after-dial",
        }
    }

    /// The path for one call (`/v1/phone/answer/<uuid>`).
    pub fn path(&self, call_id: CallId) -> String {
        self.path_template()
            .replace("{call_id}", &call_id.to_string())
    }

    /// Twilio expects TwiML in the answer (answer, gather action, dial action).
    pub fn returns_twiml(&self) -> bool {
        matches!(self, Route::Answer | Route::Dial | Route::AfterDial)
    }

    /// The leg a status or AMD route reports on; `None` for the others.
    pub fn leg(&self) -> Option<Leg> {
        match self {
            Route::StatusCallback | Route::AmdStatusCallback => Some(Leg::Activist),
            Route::DialStatusCallback | Route::DialAmdStatusCallback => Some(Leg::Target),
            _ => None,
        }
    }

    /// An asynchronous callback (status, AMD, conference events): Twilio
    /// expects no TwiML and, unless asked to retry, drops it when our
    /// answer fails. The other routes return TwiML.
    pub fn is_callback(&self) -> bool {
        !self.returns_twiml()
    }

    /// The script moment a TwiML route asks for; `None` for callbacks.
    pub fn moment(&self) -> Option<ScriptMoment> {
        match self {
            Route::Answer => Some(ScriptMoment::Answered),
            Route::Dial => Some(ScriptMoment::Confirmed),
            Route::AfterDial => Some(ScriptMoment::AfterConference),
            _ => None,
        }
    }

    /// The TwiML route serving a script moment.
    pub fn for_moment(moment: ScriptMoment) -> Route {
        match moment {
            ScriptMoment::Answered => Route::Answer,
            ScriptMoment::Confirmed => Route::Dial,
            ScriptMoment::AfterConference => Route::AfterDial,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Twilio connection overrides appended (as a URL fragment) to every
/// asynchronous callback URL by default: retry twice (`rc=2`) on a
/// connection failure or a 5xx answer (`rp=ct,5xx`). Twilio's own default is
/// one attempt retried only on a connection failure, so a callback answered
/// with a 5xx (a deploy, a store outage) is lost.
pub const DEFAULT_CONNECTION_OVERRIDES: &str = "rc=2&rp=ct,5xx";

/// Builds the absolute callback URLs of the route contract from the public
/// base URL (`BASE_URL`, the URL Twilio reaches us at, which is also the URL
/// Twilio signs).
///
/// Asynchronous callback URLs ([`Route::is_callback`]) carry Twilio
/// connection overrides as a fragment (`…/status-callback/{id}#rc=2&rp=ct,5xx`,
/// [`DEFAULT_CONNECTION_OVERRIDES`]). A fragment is never sent in an HTTP
/// request, so the URL Twilio requests, and signs, has none:
/// [`CallbackUrls::signed_url`] never includes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrls {
    base: String,
    overrides: Option<String>,
}

impl CallbackUrls {
    /// Takes the public base URL: `http(s)://host[:port][/prefix]`, with or
    /// without a trailing slash, no query or fragment.
    pub fn new(base_url: &str) -> Result<Self, UrlError> {
        let base = base_url.trim().trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| UrlError::BaseUrl("must start with http:// or https://".into()))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(UrlError::BaseUrl("has no host".into()));
        }
        if base.contains(['?', '#']) || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BaseUrl(
                "must not contain a query, a fragment or spaces".into(),
            ));
        }
        Ok(Self {
            base: base.to_owned(),
            overrides: Some(DEFAULT_CONNECTION_OVERRIDES.to_owned()),
        })
    }

    /// Sets the connection overrides of the callback URLs (`rc=2&rp=ct,5xx`,
    /// without the `#`); `None` or an empty string sends none (Twilio's
    /// defaults apply). Refused: a `#`, spaces or control characters, or
    /// something that is not `key=value` pairs joined by `&`.
    pub fn with_connection_overrides(mut self, overrides: Option<&str>) -> Result<Self, UrlError> {
        let o = overrides.map(str::trim).unwrap_or_default();
        if o.is_empty() {
            self.overrides = None;
            return Ok(self);
        }
        let well_formed = !o
            .chars()
            .any(|c| c == '#' || c.is_whitespace() || c.is_control())
            && o.split('&').all(|pair| {
                pair.split_once('=')
                    .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty() && !v.contains('='))
            });
        if !well_formed {
            return Err(UrlError::ConnectionOverrides(format!(
                "expected key=value pairs joined by & (like {DEFAULT_CONNECTION_OVERRIDES}), got {o:?}"
            )));
        }
        self.overrides = Some(o.to_owned());
        Ok(self)
    }

    /// The connection overrides appended to callback URLs, if any.
    pub fn connection_overrides(&self) -> Option<&str> {
        self.overrides.as_deref()
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `route` for one call, without connection
    /// overrides: the URL Twilio requests and signs.
    pub fn url(&self, route: Route, call_id: CallId) -> String {
        format!("{}{}", self.base, route.path(call_id))
    }

    /// The URL given to Twilio for `route`: [`CallbackUrls::url`], plus the
    /// connection overrides as a fragment for asynchronous callbacks.
    pub fn webhook(&self, route: Route, call_id: CallId) -> String {
        match (&self.overrides, route.is_callback()) {
            (Some(o), true) => format!("{}#{o}", self.url(route, call_id)),
            _ => self.url(route, call_id),
        }
    }

    /// The URL Twilio requested (and signed) for a request this server
    /// received at `path_and_query` (`/v1/phone/dial/…?x=1`): the public
    /// base URL followed by the path and query. Use it, never the `Host`
    /// header, to check `X-Twilio-Signature` behind a proxy. A fragment
    /// (connection overrides) is never part of it: HTTP requests carry
    /// none, and one passed here is dropped.
    pub fn signed_url(&self, path_and_query: &str) -> String {
        let path_and_query = path_and_query
            .split_once('#')
            .map_or(path_and_query, |(before, _)| before);
        if path_and_query.starts_with('/') {
            format!("{}{}", self.base, path_and_query)
        } else {
            format!("{}/{}", self.base, path_and_query)
        }
    }

    /// The URL serving a script moment's TwiML.
    pub fn for_moment(&self, moment: ScriptMoment, call_id: CallId) -> String {
        self.url(Route::for_moment(moment), call_id)
    }

    /// `{base}/v1/phone/answer/{id}`.
    pub fn answer(&self, call_id: CallId) -> String {
        self.url(Route::Answer, call_id)
    }

    /// `{base}/v1/phone/status-callback/{id}`.
    /// With the connection overrides ([`CallbackUrls::webhook`]).
    pub fn status_callback(&self, call_id: CallId) -> String {
        self.webhook(Route::StatusCallback, call_id)
    }

    /// `{base}/v1/phone/amd-status-callback/{id}`.
    /// With the connection overrides ([`CallbackUrls::webhook`]).
    pub fn amd_status_callback(&self, call_id: CallId) -> String {
        self.webhook(Route::AmdStatusCallback, call_id)
    }

    /// `{base}/v1/phone/dial/{id}`.
    pub fn dial(&self, call_id: CallId) -> String {
        self.url(Route::Dial, call_id)
    }

    /// `{base}/v1/phone/dial-status-callback/{id}`.
    /// With the connection overrides ([`CallbackUrls::webhook`]).
    pub fn dial_status_callback(&self, call_id: CallId) -> String {
        self.webhook(Route::DialStatusCallback, call_id)
    }

    /// `{base}/v1/phone/dial-amd-status-callback/{id}`.
    /// With the connection overrides ([`CallbackUrls::webhook`]).
    pub fn dial_amd_status_callback(&self, call_id: CallId) -> String {
        self.webhook(Route::DialAmdStatusCallback, call_id)
    }

    /// `{base}/v1/phone/conference-status-callback/{id}`.
    /// With the connection overrides ([`CallbackUrls::webhook`]).
    pub fn conference_status_callback(&self, call_id: CallId) -> String {
        self.webhook(Route::ConferenceStatusCallback, call_id)
    }

    /// `{base}/v1/phone/after-dial/{id}`.
    pub fn after_dial(&self, call_id: CallId) -> String {
        self.url(Route::AfterDial, call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CallId {
        "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b".parse().unwrap()
    }

    #[test]
    fn builds_every_contract_url() {
        let urls = CallbackUrls::new("https://pressure.example.org/").unwrap();
        let id = id();
        let b = "https://pressure.example.org/v1/phone";
        let u = "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b";
        // TwiML routes: no overrides. Callbacks: Twilio retries them.
        let o = "#rc=2&rp=ct,5xx";
        assert_eq!(urls.answer(id), format!("{b}/answer/{u}"));
        assert_eq!(
            urls.status_callback(id),
            format!("{b}/status-callback/{u}{o}")
        );
        assert_eq!(
            urls.amd_status_callback(id),
            format!("{b}/amd-status-callback/{u}{o}")
        );
        assert_eq!(urls.dial(id), format!("{b}/dial/{u}"));
        assert_eq!(
            urls.dial_status_callback(id),
            format!("{b}/dial-status-callback/{u}{o}")
        );
        assert_eq!(
            urls.dial_amd_status_callback(id),
            format!("{b}/dial-amd-status-callback/{u}{o}")
        );
        assert_eq!(
            urls.conference_status_callback(id),
            format!("{b}/conference-status-callback/{u}{o}")
        );
        assert_eq!(urls.after_dial(id), format!("{b}/after-dial/{u}"));
    }

    /// Every route's webhook URL, stripped of its fragment as an HTTP client
    /// does, is exactly the URL validated for the request it causes.
    #[test]
    fn fragments_stay_out_of_the_signed_url() {
        let urls = CallbackUrls::new("https://p.example.org/prefix").unwrap();
        let id = id();
        for route in Route::ALL {
            let given = urls.webhook(route, id);
            assert_eq!(given.contains('#'), route.is_callback(), "{route}");
            let requested = given.split('#').next().unwrap();
            assert_eq!(urls.signed_url(&route.path(id)), requested, "{route}");
            assert_eq!(urls.url(route, id), requested, "{route}");
            // A fragment that reached us anyway is not signed either.
            assert_eq!(
                urls.signed_url(&format!("{}#rc=2&rp=ct,5xx", route.path(id))),
                requested
            );
        }
        assert_eq!(
            urls.signed_url("/v1/phone/dial/x?a=1#rc=1"),
            "https://p.example.org/prefix/v1/phone/dial/x?a=1"
        );
    }

    #[test]
    fn connection_overrides_are_configurable_and_checked() {
        let urls = CallbackUrls::new("https://p.example.org").unwrap();
        assert_eq!(
            urls.connection_overrides(),
            Some(DEFAULT_CONNECTION_OVERRIDES)
        );
        let id = id();
        let custom = urls
            .clone()
            .with_connection_overrides(Some("rc=3&rp=all&tt=12000"))
            .unwrap();
        assert!(custom.status_callback(id).ends_with(
            "/status-callback/0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b#rc=3&rp=all&tt=12000"
        ));
        for none in [None, Some(""), Some("  ")] {
            let plain = urls.clone().with_connection_overrides(none).unwrap();
            assert_eq!(plain.connection_overrides(), None);
            assert_eq!(
                plain.status_callback(id),
                plain.url(Route::StatusCallback, id)
            );
        }
        for bad in [
            "#rc=2",
            "rc=2&",
            "rc",
            "rc=2 rp=ct",
            "=2",
            "rc==2",
            "rc=2\nrp=ct",
        ] {
            assert!(
                matches!(
                    urls.clone().with_connection_overrides(Some(bad)),
                    Err(UrlError::ConnectionOverrides(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn base_url_with_prefix_and_port() {
        let urls = CallbackUrls::new("http://localhost:8000/pressure").unwrap();
        assert_eq!(urls.base(), "http://localhost:8000/pressure");
        assert!(
            urls.dial(id())
                .starts_with("http://localhost:8000/pressure/v1/phone/dial/")
        );
    }

    #[test]
    fn signed_url_is_base_plus_path_and_query() {
        let urls = CallbackUrls::new("https://p.example.org/prefix/").unwrap();
        assert_eq!(
            urls.signed_url("/v1/phone/dial/x?a=1"),
            "https://p.example.org/prefix/v1/phone/dial/x?a=1"
        );
        assert_eq!(urls.signed_url("v1"), "https://p.example.org/prefix/v1");
        let id = id();
        assert_eq!(urls.signed_url(&Route::Dial.path(id)), urls.dial(id));
    }

    #[test]
    fn rejects_bad_base_urls() {
        for bad in [
            "",
            "pressure.example.org",
            "ftp://x",
            "https://",
            "https://x/?a=1",
            "https://x/#f",
            "https://x y/",
        ] {
            assert!(CallbackUrls::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn routes_are_consistent() {
        for r in Route::ALL {
            assert!(r.path_template().starts_with("/v1/phone/"));
            assert!(r.path_template().ends_with("/{call_id}"));
            assert!(r.path_template().contains(r.as_str()));
            assert_eq!(r.returns_twiml(), r.moment().is_some());
            if let Some(m) = r.moment() {
                assert_eq!(Route::for_moment(m), r);
            }
        }
        assert_eq!(Route::DialStatusCallback.leg(), Some(Leg::Target));
        assert_eq!(Route::AmdStatusCallback.leg(), Some(Leg::Activist));
        assert_eq!(Route::ConferenceStatusCallback.leg(), None);
    }
}
