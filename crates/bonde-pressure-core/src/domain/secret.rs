//! Secret values (tokens, passwords, keys) that never show in logs.

use std::fmt;
use std::str::FromStr;

/// A secret value (an auth token, an API key's secret, a database URL with
/// its password): `Debug` prints `Secret(***)` and `Display` prints `***`,
/// so a secret logged or formatted by mistake shows nothing.
/// [`Secret::expose`] is the only way to read it.
///
/// One type for the whole workspace: configuration parses it (`FromStr`:
/// trimmed, never empty), and adapters (the Twilio client, the HTTP
/// server's admin token) take it as is.
///
/// ```
/// use bonde_pressure_core::Secret;
///
/// let token: Secret = " s3cr3t ".parse().unwrap();
/// assert_eq!(token.expose(), "s3cr3t");
/// assert_eq!(format!("{token} {token:?}"), "*** Secret(***)");
/// assert!("  ".parse::<Secret>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, as is.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A blank secret was given where one is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not be empty")]
#[non_exhaustive]
pub struct EmptySecret;

impl FromStr for Secret {
    type Err = EmptySecret;

    /// A configured secret: surrounding whitespace dropped, refused when
    /// nothing is left.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EmptySecret);
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.to_string(), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Secret::from("hunter2"), s);
    }

    #[test]
    fn parsed_secrets_are_trimmed_and_never_empty() {
        assert_eq!("\tk \n".parse::<Secret>().unwrap().expose(), "k");
        assert_eq!("".parse::<Secret>(), Err(EmptySecret));
        assert_eq!(
            " ".parse::<Secret>().unwrap_err().to_string(),
            "must not be empty"
        );
    }
}
