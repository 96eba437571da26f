//! The two people of a pressure call.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::PhoneNumber;

/// Why a name or e-mail was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonNameError {
    /// Empty or only spaces.
    #[error("must not be empty")]
    Empty,
    /// Longer than the limit (in characters).
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// Contains control characters.
    #[error("must not contain control characters")]
    ControlCharacters,
    /// Not an e-mail address.
    #[error("not a valid e-mail address")]
    Email,
}

fn clean(input: &str, max: usize) -> Result<String, PersonNameError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(PersonNameError::Empty);
    }
    if s.chars().count() > max {
        return Err(PersonNameError::TooLong(max));
    }
    if s.chars().any(char::is_control) {
        return Err(PersonNameError::ControlCharacters);
    }
    Ok(s.to_owned())
}

/// A person's name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonName(String);

impl PersonName {
    /// Maximum length in characters.
    pub const MAX: usize = 200;

    /// Parses a name.
    pub fn parse(input: &str) -> Result<Self, PersonNameError> {
        clean(input, Self::MAX).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PersonName {
    type Error = PersonNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PersonName> for String {
    fn from(value: PersonName) -> Self {
        value.0
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, checked for shape only (`local@domain.tld`, no spaces,
/// at most 254 characters). Deliverability is the campaign platform's concern.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Parses an e-mail address.
    pub fn parse(input: &str) -> Result<Self, PersonNameError> {
        let s = clean(input, 254)?;
        let (local, domain) = s.rsplit_once('@').ok_or(PersonNameError::Email)?;
        let shape_ok = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(char::is_whitespace)
            && !local.contains('@');
        if shape_ok {
            Ok(Self(s))
        } else {
            Err(PersonNameError::Email)
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address with its local part hidden: `***@example.org`
    /// ([`mask_email`]).
    pub fn masked(&self) -> String {
        mask_email(&self.0)
    }
}

/// Masks any e-mail-like text for logs and public views: only the domain
/// shows (`ana@example.org` → `***@example.org`); text without an `@` is
/// hidden entirely, one `*` per character.
///
/// The one e-mail masking of the workspace: [`Email`]'s `Debug`, the
/// unvalidated input's `Debug` and the call read model
/// ([`crate::view::CallDetails`]) all use it.
pub fn mask_email(raw: &str) -> String {
    match raw.rsplit_once('@') {
        Some((_, domain)) => format!("***@{domain}"),
        None => "*".repeat(raw.chars().count()),
    }
}

impl TryFrom<String> for Email {
    type Error = PersonNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: keep only the domain in debug output.
        write!(f, "Email({})", self.masked())
    }
}

/// The person who fills in the campaign form and is called first (leg A).
///
/// Build it with [`Activist::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Activist {
    /// Full name.
    pub name: PersonName,
    /// First name, when the form sent one.
    pub first_name: Option<PersonName>,
    /// Last name, when the form sent one.
    pub last_name: Option<PersonName>,
    /// E-mail address.
    pub email: Email,
    /// Phone number we call.
    pub phone: PhoneNumber,
}

/// The name that replaces an erased activist's name.
pub const ERASED_NAME: &str = "[erased]";

/// The e-mail that replaces an erased activist's address (`.invalid` is
/// reserved: it never delivers).
pub const ERASED_EMAIL: &str = "erased@erased.invalid";

impl Activist {
    /// `name`, reached at `phone`, writing from `email`; no first or last
    /// name (see [`Activist::with_first_name`], [`Activist::with_last_name`]).
    pub fn new(name: PersonName, email: Email, phone: PhoneNumber) -> Self {
        Self {
            name,
            first_name: None,
            last_name: None,
            email,
            phone,
        }
    }

    /// With the first name the form sent (if any).
    pub fn with_first_name(mut self, first_name: impl Into<Option<PersonName>>) -> Self {
        self.first_name = first_name.into();
        self
    }

    /// With the last name the form sent (if any).
    pub fn with_last_name(mut self, last_name: impl Into<Option<PersonName>>) -> Self {
        self.last_name = last_name.into();
        self
    }

    /// What an activist becomes once their personal data is erased: name
    /// [`ERASED_NAME`], no first or last name, e-mail [`ERASED_EMAIL`],
    /// phone [`PhoneNumber::erased`]. Stores build it as is for an erased
    /// call, without parsing what the columns hold.
    pub fn erased() -> Self {
        Self {
            name: PersonName(ERASED_NAME.to_owned()),
            first_name: None,
            last_name: None,
            email: Email(ERASED_EMAIL.to_owned()),
            phone: PhoneNumber::erased(),
        }
    }

    /// Every personal field is the erased placeholder.
    pub fn is_erased(&self) -> bool {
        *self == Self::erased()
    }
}

/// The decision-maker the activist talks to (leg B). Build it with
/// [`Target::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// Name as configured in the widget.
    pub name: PersonName,
    /// Phone number we add to the conference.
    pub phone: PhoneNumber,
}

impl Target {
    /// `name`, reached at `phone`.
    pub fn new(name: PersonName, phone: PhoneNumber) -> Self {
        Self { name, phone }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            PersonName::parse("  Ana Maria ").unwrap().as_str(),
            "Ana Maria"
        );
        assert_eq!(PersonName::parse(" "), Err(PersonNameError::Empty));
        assert_eq!(
            PersonName::parse(&"a".repeat(201)),
            Err(PersonNameError::TooLong(200))
        );
        assert_eq!(
            PersonName::parse("a\u{0}b"),
            Err(PersonNameError::ControlCharacters)
        );
        assert_eq!(
            PersonName::parse("João Ñandú 李").unwrap().as_str(),
            "João Ñandú 李"
        );
    }

    #[test]
    fn the_erased_placeholders_parse_as_their_types() {
        let a = Activist::erased();
        assert_eq!(PersonName::parse(ERASED_NAME).unwrap(), a.name);
        assert_eq!(Email::parse(ERASED_EMAIL).unwrap(), a.email);
        assert!(a.phone.is_erased() && a.is_erased());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Activist>(&json).unwrap(), a);
    }

    #[test]
    fn emails_are_shape_checked() {
        assert!(Email::parse("ana@nossas.org").is_ok());
        for bad in [
            "ana",
            "ana@",
            "@x.org",
            "ana@org",
            "a na@x.org",
            "ana@x.org.",
            "a@b@c.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", Email::parse("ana@nossas.org").unwrap()),
            "Email(***@nossas.org)"
        );
    }

    #[test]
    fn emails_are_masked_to_their_domain() {
        assert_eq!(mask_email("ana@nossas.org"), "***@nossas.org");
        assert_eq!(mask_email("a@b@c.org"), "***@c.org");
        assert_eq!(mask_email("nope"), "****");
        assert_eq!(mask_email(""), "");
        let email = Email::parse("ana.maria@nossas.org").unwrap();
        assert_eq!(email.masked(), "***@nossas.org");
    }
}
