//! Identifiers: our call id, the widget id, and the telephony provider's
//! opaque ids of legs and conferences.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not a UUID.
    #[error("not a valid call id (expected a UUID)")]
    CallId,
    /// Not a provider id ([`LegId`], [`ConferenceId`]).
    #[error("not a valid {kind} id: {reason}")]
    ProviderId {
        /// Which id (`leg`, `conference`).
        kind: &'static str,
        /// What is wrong with it (`empty`, `longer than 128 bytes`...).
        reason: &'static str,
    },
    /// Not a positive integer.
    #[error("not a valid widget id (expected a positive integer)")]
    WidgetId,
}

/// Our id for one pressure call (both legs and the conference).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(Uuid);

impl CallId {
    /// A new random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for CallId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl FromStr for CallId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::CallId)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

/// The longest provider id accepted, in bytes.
pub const MAX_PROVIDER_ID_LEN: usize = 128;

/// Why `s` is not a provider id, if it is not: empty, longer than
/// [`MAX_PROVIDER_ID_LEN`] bytes, or holding anything but printable ASCII
/// other than the space.
fn provider_id_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("empty")
    } else if s.len() > MAX_PROVIDER_ID_LEN {
        Some("longer than 128 bytes")
    } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
        Some("not printable ASCII without whitespace")
    } else {
        None
    }
}

macro_rules! provider_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Opaque: core never looks inside it. It only checks what any
        /// provider's id satisfies: 1 to [`MAX_PROVIDER_ID_LEN`] bytes of
        /// printable ASCII (`!` to `~`, no whitespace or control characters),
        /// so it is safe to log and to store as text. A provider's own format
        /// is its adapter's to check (the Twilio adapter accepts only its
        /// SIDs). Parsing trims surrounding whitespace.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id (see [`FromStr`]).
            pub fn parse(s: &str) -> Result<Self, IdError> {
                s.parse()
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                match provider_id_problem(s) {
                    None => Ok(Self(s.to_owned())),
                    Some(reason) => Err(IdError::ProviderId { kind: $kind, reason }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                if provider_id_problem(&value).is_none() {
                    Ok(Self(value))
                } else {
                    value.parse()
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

provider_id!(
    /// The telephony provider's id of one leg (one phone call it placed).
    LegId, "leg"
);
provider_id!(
    /// The telephony provider's id of one conference.
    ConferenceId, "conference"
);

/// A BONDE widget id (the campaign form the activist filled in).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct WidgetId(i64);

impl WidgetId {
    /// Accepts positive ids only.
    pub fn new(id: i64) -> Result<Self, IdError> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(IdError::WidgetId)
        }
    }

    /// The numeric id.
    pub fn get(&self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for WidgetId {
    type Error = IdError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<WidgetId> for i64 {
    fn from(value: WidgetId) -> Self {
        value.0
    }
}

impl FromStr for WidgetId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<i64>()
            .map_err(|_| IdError::WidgetId)
            .and_then(Self::new)
    }
}

impl fmt::Display for WidgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for WidgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WidgetId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_are_opaque() {
        // Any provider's ids: Twilio's SIDs, UUIDs, URIs, numbers.
        for ok in [
            "CA0123456789abcdef0123456789abcdef",
            "3f2c8a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f",
            "v3:leg/42?x=1",
            "7",
        ] {
            assert_eq!(ok.parse::<LegId>().unwrap().as_str(), ok);
            assert_eq!(ConferenceId::parse(ok).unwrap().to_string(), ok);
        }
        assert_eq!(LegId::parse(" abc\n").unwrap().as_str(), "abc");
        let max = "x".repeat(MAX_PROVIDER_ID_LEN);
        assert_eq!(LegId::parse(&max).unwrap().as_str(), max);
    }

    #[test]
    fn provider_ids_refuse_what_no_provider_id_is() {
        let err = |s: &str| LegId::parse(s).unwrap_err();
        assert_eq!(
            err(""),
            IdError::ProviderId {
                kind: "leg",
                reason: "empty"
            }
        );
        assert_eq!(err("   "), err(""));
        assert_eq!(
            err(&"x".repeat(MAX_PROVIDER_ID_LEN + 1)).to_string(),
            "not a valid leg id: longer than 128 bytes"
        );
        for bad in ["a b", "a\tb", "a\u{7f}", "a\u{0}", "légua"] {
            assert_eq!(
                err(bad),
                IdError::ProviderId {
                    kind: "leg",
                    reason: "not printable ASCII without whitespace"
                },
                "{bad:?}"
            );
        }
        assert_eq!(
            ConferenceId::parse("").unwrap_err().to_string(),
            "not a valid conference id: empty"
        );
    }

    #[test]
    fn provider_ids_are_json_strings() {
        let id = LegId::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"CA0123456789abcdef0123456789abcdef\"");
        assert_eq!(serde_json::from_str::<LegId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<LegId>("\"\"").is_err());
        assert!(serde_json::from_str::<ConferenceId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<LegId>("1").is_err());
    }

    #[test]
    fn call_ids_and_widget_ids() {
        let id = CallId::new();
        assert_eq!(id.to_string().parse::<CallId>().unwrap(), id);
        assert!("not-a-uuid".parse::<CallId>().is_err());
        assert!(WidgetId::new(0).is_err());
        assert_eq!("42".parse::<WidgetId>().unwrap().get(), 42);
        assert!(serde_json::from_str::<WidgetId>("-1").is_err());
    }
}
