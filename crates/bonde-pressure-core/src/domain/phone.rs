//! Phone numbers: parsed once at the edge, E.164 everywhere inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::policy::NumberType;

/// Why a phone number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneNumberError {
    /// Nothing (or only spaces) was given.
    #[error("phone number is empty")]
    Empty,
    /// The text is not a phone number at all.
    #[error("not a phone number: {0}")]
    Unparsable(String),
    /// It parses, but no such number can exist (wrong length or prefix for its country).
    #[error("not a valid phone number for its country")]
    Invalid,
    /// A `+E.164` value was required (stored data, configuration) and the text is not one.
    #[error("expected an E.164 number such as +5511912345678")]
    NotE164,
    /// It parses, but its E.164 form does not read back as the same number.
    #[error("not a valid phone number: it does not read back as itself")]
    NoRoundTrip,
}

/// Typed input may hold ASCII digits, white space (a non-breaking space
/// pasted from a page too), `( ) - . /` and one leading `+`.
fn check_characters(s: &str) -> Result<(), PhoneNumberError> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.contains('+') {
        return Err(PhoneNumberError::Unparsable(
            "only one leading + is allowed".into(),
        ));
    }
    if let Some(c) = body.chars().find(|c| {
        !(c.is_ascii_digit() || c.is_whitespace() || matches!(c, '(' | ')' | '-' | '.' | '/'))
    }) {
        let what = if c.is_alphabetic() {
            "letters are not allowed".to_owned()
        } else {
            format!("character {c:?} is not allowed")
        };
        return Err(PhoneNumberError::Unparsable(format!(
            "{what}: use digits, spaces, ( ) - . and one leading +"
        )));
    }
    Ok(())
}

/// The digits of a strict E.164 value: `+`, then 1 to 15 digits, the first not 0.
fn e164_digits(s: &str) -> Result<&str, PhoneNumberError> {
    let digits = s.strip_prefix('+').ok_or(PhoneNumberError::NotE164)?;
    if digits.is_empty()
        || digits.len() > 15
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PhoneNumberError::NotE164);
    }
    Ok(digits)
}

/// Why a region code was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region code {0:?}: expected an ISO 3166 alpha-2 code such as BR")]
#[non_exhaustive]
pub struct RegionError(String);

/// The region used to read numbers written without a country code
/// (`11 91234-5678` is read as Brazilian when the region is `BR`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(phonenumber::country::Id);

impl Region {
    /// Brazil, the default region.
    pub const BRAZIL: Region = Region(phonenumber::country::Id::BR);

    /// The ISO 3166 alpha-2 code, e.g. `"BR"`.
    pub fn code(&self) -> &str {
        self.0.as_ref()
    }
}

impl Default for Region {
    fn default() -> Self {
        Self::BRAZIL
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Region {
    type Err = RegionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        phonenumber::country::Id::from_str(&s.trim().to_ascii_uppercase())
            .map(Region)
            .map_err(|_| RegionError(s.to_owned()))
    }
}

/// A valid phone number, held in E.164 form (`+5511912345678`).
///
/// `Debug` and `Display` **mask** the number (`+5511*****5678`) so that it
/// cannot leak into logs by accident; use [`PhoneNumber::as_e164`] where the
/// real number is needed (telephony requests, storage).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber {
    e164: String,
    country_code: u16,
}

impl PhoneNumber {
    /// Parses what a person typed: E.164 (`+55 11 91234-5678`) or a national
    /// number (`(11) 91234-5678`) read in `default_region`.
    ///
    /// Only digits, spaces, `( ) - . /` and one leading `+` are accepted:
    /// letters are refused, not read as keypad digits, and so are a repeated
    /// `+` and any other character. The number must be valid for its country
    /// and must read back as itself: its E.164 form, parsed again, gives the
    /// same number (some national prefixes are stripped differently the
    /// second time, and such a number would not load back from storage).
    pub fn parse(input: &str, default_region: Region) -> Result<Self, PhoneNumberError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        if trimmed.len() > 64 {
            return Err(PhoneNumberError::Unparsable("too long".into()));
        }
        check_characters(trimmed)?;
        let spaced: String = trimmed
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        // `00` international prefix is common in typed input; the library reads it per region.
        let parsed = phonenumber::parse(Some(default_region.0), &spaced)
            .map_err(|e| PhoneNumberError::Unparsable(e.to_string()))?;
        if !phonenumber::is_valid(&parsed) || parsed.extension().is_some() {
            return Err(PhoneNumberError::Invalid);
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        let again = phonenumber::parse(None, &e164).map_err(|_| PhoneNumberError::NoRoundTrip)?;
        if again.format().mode(phonenumber::Mode::E164).to_string() != e164
            || !phonenumber::is_valid(&again)
        {
            return Err(PhoneNumberError::NoRoundTrip);
        }
        Ok(Self {
            e164,
            country_code: parsed.code().value(),
        })
    }

    /// The type of the number `input` first reads as in `default_region`
    /// (before the read-back check), if it reads as a valid number at all.
    /// Used to report a refused type for numbers that also fail to read back
    /// (Brazilian `0900…` premium numbers).
    pub(crate) fn first_reading_type(input: &str, default_region: Region) -> Option<NumberType> {
        let trimmed = input.trim();
        check_characters(trimmed).ok()?;
        let spaced: String = trimmed
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        let parsed = phonenumber::parse(Some(default_region.0), &spaced).ok()?;
        phonenumber::is_valid(&parsed).then(|| {
            NumberType::from_metadata(parsed.number_type(&phonenumber::metadata::DATABASE))
        })
    }

    /// Parses a strict E.164 value (`+` then digits), as found in
    /// configuration. The number must be valid for its country (see
    /// [`PhoneNumber::parse`]). Stored numbers are read with
    /// [`PhoneNumber::from_trusted_e164`] instead.
    pub fn parse_e164(input: &str) -> Result<Self, PhoneNumberError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        e164_digits(s)?;
        Self::parse(s, Region::default())
    }

    /// Decodes an E.164 value that was validated when it was first accepted
    /// (a stored row, a serialized call). Only the syntax is checked (`+`,
    /// 1 to 15 digits, an assigned country calling code); no numbering-plan
    /// metadata is used, so a number that was valid when it was stored loads
    /// back whatever the metadata says today.
    pub fn from_trusted_e164(input: &str) -> Result<Self, PhoneNumberError> {
        let digits = e164_digits(input)?;
        let country_code =
            super::policy::country_code_of(digits).ok_or(PhoneNumberError::NotE164)?;
        Ok(Self {
            e164: input.to_owned(),
            country_code,
        })
    }

    /// The number's type according to the numbering-plan metadata
    /// ([`NumberType::Unknown`] when the metadata does not place it).
    pub fn number_type(&self) -> NumberType {
        match phonenumber::parse(None, &self.e164) {
            Ok(p) => NumberType::from_metadata(p.number_type(&phonenumber::metadata::DATABASE)),
            Err(_) => NumberType::Unknown,
        }
    }

    /// The number in E.164 form, e.g. `+5511912345678`. Never log this.
    pub fn as_e164(&self) -> &str {
        &self.e164
    }

    /// The country calling code (55 for Brazil).
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The number with its middle digits hidden: `+5511*****5678`.
    pub fn masked(&self) -> String {
        mask_phone(&self.e164)
    }

    /// The placeholder that replaces an erased number ([`ERASED_E164`],
    /// country code 0, which no real number has). It is not a callable
    /// number: it only stands in for a number that was erased for privacy
    /// (see [`crate::Call::erase`]), so an erased call still loads.
    pub fn erased() -> Self {
        Self {
            e164: ERASED_E164.to_owned(),
            country_code: 0,
        }
    }

    /// This is the [erased placeholder](Self::erased).
    pub fn is_erased(&self) -> bool {
        self.e164 == ERASED_E164
    }
}

/// The stored text of an erased number ([`PhoneNumber::erased`]). Never a
/// valid number: country code 0 does not exist, so [`PhoneNumber::parse`]
/// never produces it.
pub const ERASED_E164: &str = "+0";

/// Masks any phone-number-like text for logs and public views.
///
/// An international number (`+` and at least 12 characters, as E.164 numbers
/// with an area code are) keeps its first 5 characters (country and area
/// code) and last 4: `+5511*****5678`. Anything else (national input as
/// typed, `11 98765-4321`; fragments) keeps only its last 4 characters, so
/// at most 4 of its digits show; 9 characters or fewer are hidden entirely.
pub fn mask_phone(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let n = chars.len();
    if n <= 9 {
        return "*".repeat(n);
    }
    let shown_prefix = if chars[0] == '+' && n >= 12 { 5 } else { 0 };
    chars[..shown_prefix]
        .iter()
        .chain(std::iter::repeat_n(&'*', n - shown_prefix - 4))
        .chain(&chars[n - 4..])
        .collect()
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneNumberError;
    /// Serialized numbers were validated when accepted: decoded with
    /// [`PhoneNumber::from_trusted_e164`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        // A serialised erased call keeps its placeholder (round trip).
        if value == ERASED_E164 {
            return Ok(Self::erased());
        }
        Self::from_trusted_e164(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.e164
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_brazilian_formats_normalise_to_e164() {
        for input in [
            "11 91234-5678",
            "(11) 91234-5678",
            "11912345678",
            "+55 11 91234-5678",
            "+5511912345678",
            "  +55 (11) 9 1234 5678 ",
            "11\u{a0}91234-5678",
            "11\t91234.5678",
        ] {
            let n = PhoneNumber::parse(input, Region::BRAZIL).unwrap();
            assert_eq!(n.as_e164(), "+5511912345678", "input {input:?}");
            assert_eq!(n.country_code(), 55);
        }
    }

    #[test]
    fn default_region_is_configurable() {
        let us: Region = "us".parse().unwrap();
        let n = PhoneNumber::parse("(415) 867-5309", us).unwrap();
        assert_eq!(n.as_e164(), "+14158675309");
        assert_eq!(n.country_code(), 1);
        assert!("XX".parse::<Region>().is_err());
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(
            PhoneNumber::parse("", Region::BRAZIL),
            Err(PhoneNumberError::Empty)
        );
        assert_eq!(
            PhoneNumber::parse("   ", Region::BRAZIL),
            Err(PhoneNumberError::Empty)
        );
        assert!(matches!(
            PhoneNumber::parse("hello", Region::BRAZIL),
            Err(PhoneNumberError::Unparsable(_))
        ));
        assert_eq!(
            PhoneNumber::parse("123", Region::BRAZIL),
            Err(PhoneNumberError::Invalid)
        );
        assert!(PhoneNumber::parse(&"9".repeat(100), Region::BRAZIL).is_err());
    }

    #[test]
    fn strict_e164_requires_plus() {
        assert!(PhoneNumber::parse_e164("+5561999990000").is_ok());
        assert_eq!(
            PhoneNumber::parse_e164("5561999990000"),
            Err(PhoneNumberError::NotE164)
        );
        assert_eq!(
            PhoneNumber::parse_e164("+55 61 99999-0000"),
            Err(PhoneNumberError::NotE164)
        );
    }

    #[test]
    fn debug_and_display_never_show_the_whole_number() {
        let n = PhoneNumber::parse("+5511912345678", Region::BRAZIL).unwrap();
        assert_eq!(n.to_string(), "+5511*****5678");
        assert!(!format!("{n:?}").contains("912345678"));
        assert_eq!(mask_phone("1234"), "****");
        // national input as typed shows no more than its last 4 digits
        assert_eq!(mask_phone("11987654321"), "*******4321");
        assert_eq!(mask_phone("(11) 98765-4321"), "***********4321");
        assert_eq!(mask_phone("+5561999990000"), "+5561*****0000");
    }

    #[test]
    fn letters_repeated_plus_and_junk_are_refused_not_converted() {
        for input in [
            "11 9123A-5678",
            "++5511912345678",
            "+55+11912345678",
            "11 91234-5678#",
            "11*912345678",
            "tel:+5511912345678",
            "11 91234\u{0}5678",
        ] {
            assert!(
                matches!(
                    PhoneNumber::parse(input, Region::BRAZIL),
                    Err(PhoneNumberError::Unparsable(_))
                ),
                "{input:?}"
            );
        }
    }

    #[test]
    fn brazilian_0900_numbers_are_refused_because_they_do_not_read_back() {
        for input in [
            "0900 123 4567",
            "0900-123-4567",
            "(0900) 123 4567",
            "09001234567",
            "+55 0900 123 4567",
        ] {
            let r = PhoneNumber::parse(input, Region::BRAZIL);
            assert!(r.is_err(), "{input:?}: {r:?}");
        }
    }

    #[test]
    fn trusted_decoding_needs_no_metadata() {
        // The 0900 number the old parser stored: it no longer validates, but it loads.
        let n = PhoneNumber::from_trusted_e164("+559001234567").unwrap();
        assert_eq!(n.as_e164(), "+559001234567");
        assert_eq!(n.country_code(), 55);
        assert!(PhoneNumber::parse_e164("+559001234567").is_err());
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<PhoneNumber>(&json).unwrap(), n);
        for bad in [
            "",
            "559001234567",
            "+",
            "+0123",
            "+55 11",
            "+1234567890123456",
        ] {
            assert_eq!(
                PhoneNumber::from_trusted_e164(bad),
                Err(PhoneNumberError::NotE164),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_round_trip_is_e164() {
        let n = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"+5511912345678\"");
        assert_eq!(serde_json::from_str::<PhoneNumber>(&json).unwrap(), n);
        assert!(serde_json::from_str::<PhoneNumber>("\"nope\"").is_err());
    }
}
