//! `X-Twilio-Signature` computation and validation.
//!
//! The signature is `base64(HMAC-SHA1(auth_token, url + params))` where
//! `url` is the full URL Twilio requested (scheme, host, port if any, path
//! and query) and, for form-encoded POSTs, `params` is every parameter sorted
//! by name, each appended as `name + value` (a repeated name contributes each
//! of its values, sorted). JSON bodies are not signed as parameters: the URL
//! carries `bodySHA256`, the hex SHA-256 of the body, and the signature covers
//! the URL alone.
//!
//! Twilio may sign the URL with or without the scheme's default port (`:443`
//! for https, `:80` for http), so validation accepts both forms.
//!
//! Signatures are always made with the account's **auth token**, whatever
//! credentials the REST client uses.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header Twilio puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header (or an empty one).
    #[error("missing X-Twilio-Signature")]
    Missing,
    /// The signature does not match the URL and parameters.
    #[error("X-Twilio-Signature does not match")]
    Mismatch,
    /// A JSON body whose URL carries no `bodySHA256` parameter.
    #[error("bodySHA256 missing from the URL of a JSON request")]
    MissingBodyHash,
    /// The body does not hash to the URL's `bodySHA256`.
    #[error("body does not match bodySHA256")]
    BodyHashMismatch,
}

/// `url` without its fragment: everything from the first `#` on is dropped.
/// Twilio signs the URL it requests, and a fragment (such as the connection
/// overrides `#rc=2&rp=ct,5xx`) is never part of a request.
pub fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// The signature Twilio would send for a request to `url` with these POST
/// parameters (pass no parameters for GET requests and JSON bodies). A
/// `#fragment` in `url` is ignored, as Twilio does.
pub fn sign<K, V>(auth_token: &str, url: &str, params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let url = without_fragment(url);
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // Sorting the pairs sorts by name, then each name's values.
    pairs.sort_unstable();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts any key length");
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// Hex SHA-256 of a body, as in the `bodySHA256` URL parameter.
pub fn body_sha256_hex(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The URL in its other port form: with the scheme's default port added if
/// it has none, without it if it has exactly the default port; `None` if the
/// URL has another port or cannot be read.
pub fn alternate_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    // IPv6 literals: the port follows the closing bracket.
    let host_end = if hostport.starts_with('[') {
        hostport.find(']')? + 1
    } else {
        hostport.find(':').unwrap_or(hostport.len())
    };
    let (host, port) = hostport.split_at(host_end);
    if host.is_empty() {
        return None;
    }
    match port.strip_prefix(':') {
        None if port.is_empty() => Some(format!("{scheme}://{userinfo}{host}:{default}{tail}")),
        Some(p) if p == default => Some(format!("{scheme}://{userinfo}{host}{tail}")),
        _ => None,
    }
}

/// Checks the signature of a form-encoded (or bodiless) request, in constant
/// time, accepting the URL with and without the default port. A `#fragment`
/// in `url` is ignored, as Twilio signs without it.
pub fn validate<K, V>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
    signature: Option<&str>,
) -> Result<(), SignatureError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::Missing)?;
    let url = without_fragment(url);
    let mut ok = ct_eq(&sign(auth_token, url, params), signature);
    if let Some(other) = alternate_port_form(url) {
        ok |= ct_eq(&sign(auth_token, &other, params), signature);
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks the signature of a request with a JSON body: the URL must carry
/// `bodySHA256` matching the body, and the signature must match the URL
/// (with no parameters).
pub fn validate_json(
    auth_token: &str,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    validate::<&str, &str>(auth_token, url, &[], signature)?;
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default();
    let expected = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
        .ok_or(SignatureError::MissingBodyHash)?;
    if ct_eq(&body_sha256_hex(body), &expected.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(SignatureError::BodyHashMismatch)
    }
}

/// Validates webhook signatures with the account's auth token.
#[derive(Clone)]
pub struct SignatureValidator {
    auth_token: String,
}

impl std::fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureValidator { auth_token: *** }")
    }
}

impl SignatureValidator {
    /// A validator for this auth token.
    pub fn new(auth_token: impl Into<String>) -> Self {
        Self {
            auth_token: auth_token.into(),
        }
    }

    /// See [`validate`].
    pub fn validate<K, V>(
        &self,
        url: &str,
        params: &[(K, V)],
        signature: Option<&str>,
    ) -> Result<(), SignatureError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        validate(&self.auth_token, url, params, signature)
    }

    /// See [`validate_json`].
    pub fn validate_json(
        &self,
        url: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        validate_json(&self.auth_token, url, body, signature)
    }

    /// See [`sign`].
    pub fn sign<K, V>(&self, url: &str, params: &[(K, V)]) -> String
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        sign(&self.auth_token, url, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn official_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn official_vector() {
        assert_eq!(
            sign(TOKEN, URL, &official_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn fragments_are_not_signed() {
        let overrides = "https://mycompany.com/myapp.php?foo=1&bar=2#rc=2&rp=ct,5xx";
        // What Twilio sends: the signature of the URL it requests, which
        // never carries the fragment.
        let twilio_signature = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert_eq!(sign(TOKEN, overrides, &official_params()), twilio_signature);
        assert_eq!(
            validate(TOKEN, overrides, &official_params(), Some(twilio_signature)),
            Ok(())
        );
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2#rc=2&rp=ct,5xx";
        assert_eq!(
            validate(TOKEN, with_port, &official_params(), Some(twilio_signature)),
            Ok(())
        );
        assert_eq!(without_fragment("https://a.b/c#x#y"), "https://a.b/c");
        assert_eq!(without_fragment("https://a.b/c"), "https://a.b/c");
    }

    #[test]
    fn official_vector_with_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign(TOKEN, with_port, &official_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        // Either signature validates against either URL form.
        for url in [URL, with_port] {
            for sig in [
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
            ] {
                assert_eq!(
                    validate(TOKEN, url, &official_params(), Some(sig)),
                    Ok(()),
                    "{url} {sig}"
                );
            }
        }
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut reversed = official_params();
        reversed.reverse();
        assert_eq!(sign(TOKEN, URL, &reversed), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    }

    #[test]
    fn repeated_keys_append_each_sorted_value() {
        let params = [
            ("StatusCallbackEvent", "ringing"),
            ("A", "1"),
            ("StatusCallbackEvent", "answered"),
        ];
        // Derived by hand: url + "A1" + "StatusCallbackEventanswered" + "StatusCallbackEventringing".
        let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
        mac.update(
            format!("{URL}A1StatusCallbackEventansweredStatusCallbackEventringing").as_bytes(),
        );
        let expected = BASE64.encode(mac.finalize().into_bytes());
        assert_eq!(sign(TOKEN, URL, &params), expected);
        let swapped = [
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "ringing"),
            ("A", "1"),
        ];
        assert_eq!(sign(TOKEN, URL, &swapped), expected);
    }

    #[test]
    fn empty_params_sign_the_url_alone() {
        let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
        mac.update(URL.as_bytes());
        let expected = BASE64.encode(mac.finalize().into_bytes());
        let none: [(&str, &str); 0] = [];
        assert_eq!(sign(TOKEN, URL, &none), expected);
        assert_eq!(validate(TOKEN, URL, &none, Some(&expected)), Ok(()));
    }

    #[test]
    fn wrong_token_tampered_param_or_url_fail() {
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert_eq!(
            validate("54321", URL, &official_params(), Some(sig)),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = official_params();
        tampered[2].1 = "9999".into();
        assert_eq!(
            validate(TOKEN, URL, &tampered, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        let mut extra = official_params();
        extra.push(("Extra".into(), "x".into()));
        assert_eq!(
            validate(TOKEN, URL, &extra, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(
                TOKEN,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &official_params(),
                Some(sig)
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(
                TOKEN,
                "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
                &official_params(),
                Some(sig)
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(TOKEN, URL, &official_params(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            validate(TOKEN, URL, &official_params(), Some("  ")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            validate(
                TOKEN,
                URL,
                &official_params(),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8")
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn port_forms() {
        assert_eq!(
            alternate_port_form("https://a.b/x?y=1").as_deref(),
            Some("https://a.b:443/x?y=1")
        );
        assert_eq!(
            alternate_port_form("https://a.b:443/x").as_deref(),
            Some("https://a.b/x")
        );
        assert_eq!(
            alternate_port_form("http://a.b").as_deref(),
            Some("http://a.b:80")
        );
        assert_eq!(
            alternate_port_form("http://u:p@a.b:80/").as_deref(),
            Some("http://u:p@a.b/")
        );
        assert_eq!(
            alternate_port_form("https://[::1]/x").as_deref(),
            Some("https://[::1]:443/x")
        );
        assert_eq!(alternate_port_form("http://a.b:8000/x"), None);
        assert_eq!(alternate_port_form("ftp://a.b/x"), None);
        assert_eq!(alternate_port_form("nonsense"), None);
    }

    #[test]
    fn http_default_port_is_accepted_too() {
        let url = "http://example.com/v1/phone/status-callback/x";
        let params = [("CallSid", "CA1"), ("CallStatus", "ringing")];
        let sig = sign(
            TOKEN,
            "http://example.com:80/v1/phone/status-callback/x",
            &params,
        );
        assert_eq!(validate(TOKEN, url, &params, Some(&sig)), Ok(()));
    }

    #[test]
    fn json_bodies_use_body_sha256() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = body_sha256_hex(body);
        assert_eq!(hash.len(), 64);
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={hash}");
        let none: [(&str, &str); 0] = [];
        let sig = sign(TOKEN, &url, &none);
        let v = SignatureValidator::new(TOKEN);
        assert_eq!(v.validate_json(&url, body, Some(&sig)), Ok(()));
        assert_eq!(
            v.validate_json(&url, b"{\"property\": \"other\"}", Some(&sig)),
            Err(SignatureError::BodyHashMismatch)
        );
        let bare = "https://mycompany.com/myapp.php";
        let bare_sig = sign(TOKEN, bare, &none);
        assert_eq!(
            v.validate_json(bare, body, Some(&bare_sig)),
            Err(SignatureError::MissingBodyHash)
        );
        assert_eq!(
            v.validate_json(&url, body, Some(&bare_sig)),
            Err(SignatureError::Mismatch)
        );
        // Known SHA-256 of the empty string.
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(!format!("{v:?}").contains(TOKEN));
    }
}
