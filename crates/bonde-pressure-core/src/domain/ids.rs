//! Identifiers: our call id and Twilio's resource SIDs.

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
    /// Not `prefix` followed by 32 hex digits.
    #[error("not a valid {kind} SID (expected {prefix} followed by 32 hex digits)")]
    Sid {
        /// What kind of SID was expected.
        kind: &'static str,
        /// Its two-letter prefix.
        prefix: &'static str,
    },
    /// Not a positive integer.
    #[error("not a valid widget id (expected a positive integer)")]
    WidgetId,
}

/// Our id for one pressure call (both legs and the conference). Also the
/// conference's friendly name.
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

macro_rules! sid_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The SID text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            fn valid(s: &str) -> bool {
                s.len() == 34
                    && s.starts_with($prefix)
                    && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                if Self::valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::Sid { kind: $kind, prefix: $prefix })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                if Self::valid(&value) {
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

sid_newtype!(
    /// A Twilio Call SID: `CA` followed by 32 hex digits.
    CallSid, "CA", "Call"
);
sid_newtype!(
    /// A Twilio Conference SID: `CF` followed by 32 hex digits.
    ConferenceSid, "CF", "Conference"
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
    fn sids_are_checked() {
        let ok = format!("CA{}", "a1".repeat(16));
        assert_eq!(ok.parse::<CallSid>().unwrap().as_str(), ok);
        assert!(
            format!("CF{}", "0".repeat(32))
                .parse::<ConferenceSid>()
                .is_ok()
        );
        assert!(
            ok.parse::<ConferenceSid>().is_err(),
            "CA is not a conference"
        );
        assert!("CA123".parse::<CallSid>().is_err());
        assert!(format!("CA{}", "z".repeat(32)).parse::<CallSid>().is_err());
        assert!(serde_json::from_str::<CallSid>("\"CA1\"").is_err());
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
