//! Which numbers may be called: the number policy.
//!
//! A number is callable only if both checks pass:
//! - its [`NumberType`] (from the numbering-plan metadata) is allowed; by
//!   default [mobile](NumberType::Mobile), [fixed line](NumberType::FixedLine)
//!   and [either](NumberType::FixedLineOrMobile);
//! - its country calling code is not a non-geographic one
//!   ([`NON_GEOGRAPHIC_CODES`]: international freephone, satellite, global
//!   services), unless the operator listed that code explicitly. The metadata
//!   types some satellite ranges (+881, +870, parts of +882) as mobile, so the
//!   type check alone would not stop them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{PhoneNumber, PhoneNumberError, Region};

/// A number's type, as the numbering-plan metadata classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NumberType {
    /// A mobile phone.
    Mobile,
    /// A fixed line.
    FixedLine,
    /// Fixed line or mobile: the plan does not tell them apart (US, Canada...).
    FixedLineOrMobile,
    /// Freephone (0800 in Brazil): the callee pays.
    TollFree,
    /// Premium rate (0900, 0500 in Brazil).
    PremiumRate,
    /// Shared cost (0300, 0303, 3003, 4003, 4004 in Brazil).
    SharedCost,
    /// A personal number, forwarded anywhere.
    Personal,
    /// Voice over IP.
    Voip,
    /// A pager.
    Pager,
    /// A universal access ("company") number.
    Uan,
    /// A voicemail access number.
    Voicemail,
    /// Anything else, or not placed by the metadata.
    Unknown,
}

impl NumberType {
    /// Every type.
    pub const ALL: [NumberType; 12] = [
        NumberType::Mobile,
        NumberType::FixedLine,
        NumberType::FixedLineOrMobile,
        NumberType::TollFree,
        NumberType::PremiumRate,
        NumberType::SharedCost,
        NumberType::Personal,
        NumberType::Voip,
        NumberType::Pager,
        NumberType::Uan,
        NumberType::Voicemail,
        NumberType::Unknown,
    ];

    /// The types allowed by default.
    pub const DEFAULT_ALLOWED: [NumberType; 3] = [
        NumberType::Mobile,
        NumberType::FixedLine,
        NumberType::FixedLineOrMobile,
    ];

    /// The snake_case name (`fixed_line_or_mobile`), as configured.
    pub fn as_str(&self) -> &'static str {
        match self {
            NumberType::Mobile => "mobile",
            NumberType::FixedLine => "fixed_line",
            NumberType::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::SharedCost => "shared_cost",
            NumberType::Personal => "personal",
            NumberType::Voip => "voip",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
        }
    }

    /// What it is, in words, for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            NumberType::Mobile => "a mobile number",
            NumberType::FixedLine => "a fixed-line number",
            NumberType::FixedLineOrMobile => "a fixed-line or mobile number",
            NumberType::TollFree => "a toll-free number",
            NumberType::PremiumRate => "a premium-rate number",
            NumberType::SharedCost => "a shared-cost number",
            NumberType::Personal => "a personal (forwarding) number",
            NumberType::Voip => "a VoIP number",
            NumberType::Pager => "a pager number",
            NumberType::Uan => "a universal access (company) number",
            NumberType::Voicemail => "a voicemail access number",
            NumberType::Unknown => "a number of unknown type",
        }
    }

    pub(crate) fn from_metadata(t: phonenumber::Type) -> Self {
        use phonenumber::Type as T;
        match t {
            T::Mobile => NumberType::Mobile,
            T::FixedLine => NumberType::FixedLine,
            T::FixedLineOrMobile => NumberType::FixedLineOrMobile,
            T::TollFree => NumberType::TollFree,
            T::PremiumRate => NumberType::PremiumRate,
            T::SharedCost => NumberType::SharedCost,
            T::PersonalNumber => NumberType::Personal,
            T::Voip => NumberType::Voip,
            T::Pager => NumberType::Pager,
            T::Uan => NumberType::Uan,
            T::Voicemail => NumberType::Voicemail,
            _ => NumberType::Unknown,
        }
    }
}

impl fmt::Display for NumberType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown number type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown number type {0:?}: expected one of mobile, fixed_line, fixed_line_or_mobile, toll_free, premium_rate, shared_cost, personal, voip, pager, uan, voicemail, unknown"
)]
#[non_exhaustive]
pub struct NumberTypeError(pub String);

impl FromStr for NumberType {
    type Err = NumberTypeError;
    /// Accepts the snake_case name, case-insensitively, with `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        NumberType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| NumberTypeError(s.to_owned()))
    }
}

/// Non-geographic country calling codes: international freephone (800),
/// shared cost (808), Inmarsat (870), universal personal telecommunications
/// (878), global mobile satellite (881), international networks (882, 883),
/// international premium rate (979) and 888 (OCHA). Refused unless listed
/// explicitly.
pub const NON_GEOGRAPHIC_CODES: [u16; 9] = [800, 808, 870, 878, 881, 882, 883, 888, 979];

/// Why the number policy refused a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Its type is not allowed.
    #[error("{} cannot be called: only {} numbers are allowed", .0.describe(), allowed_list(.1))]
    Type(NumberType, Vec<NumberType>),
    /// Its country calling code is a non-geographic one that was not listed.
    #[error(
        "non-geographic numbers (+{0}: satellite, international freephone or premium) cannot be called"
    )]
    NonGeographic(u16),
}

fn allowed_list(types: &[NumberType]) -> String {
    types
        .iter()
        .map(|t| t.as_str().replace('_', "-"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PolicyError {
    /// The field error kind: `value_error.phone.type` or `value_error.phone.country`.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Type(..) => "value_error.phone.type",
            PolicyError::NonGeographic(_) => "value_error.phone.country",
        }
    }
}

/// Why typed input may not be called: it is not a usable number, or the
/// number policy refuses it. See [`NumberPolicy::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberRefusal {
    /// Not a (valid, stable) phone number: `value_error.phone`.
    #[error(transparent)]
    Phone(#[from] PhoneNumberError),
    /// A number the policy refuses: `value_error.phone.type` / `.country`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl NumberRefusal {
    /// The field error kind: `value_error.phone`, `value_error.phone.type`
    /// or `value_error.phone.country`.
    pub fn kind(&self) -> &'static str {
        match self {
            NumberRefusal::Phone(_) => "value_error.phone",
            NumberRefusal::Policy(p) => p.kind(),
        }
    }
}

/// The number policy: allowed types, and the non-geographic codes listed explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPolicy {
    allowed_types: Vec<NumberType>,
    listed_codes: Vec<u16>,
}

impl Default for NumberPolicy {
    fn default() -> Self {
        Self::new(NumberType::DEFAULT_ALLOWED.to_vec(), Vec::new())
    }
}

impl NumberPolicy {
    /// Numbers of `allowed_types`; a non-geographic code is allowed only if
    /// it is in `listed_codes` (the operator's explicit country code list).
    pub fn new(allowed_types: Vec<NumberType>, listed_codes: Vec<u16>) -> Self {
        Self {
            allowed_types,
            listed_codes,
        }
    }

    /// The allowed types.
    pub fn allowed_types(&self) -> &[NumberType] {
        &self.allowed_types
    }

    /// Parses what a person typed ([`PhoneNumber::parse`]) and checks it
    /// ([`NumberPolicy::check`]).
    ///
    /// A number that reads as a valid number of a refused type but does not
    /// read back as itself (Brazilian `0900 123 4567`, premium rate) is
    /// reported as the type refusal ([`PolicyError::Type`]), the clearer
    /// reason, rather than [`PhoneNumberError::NoRoundTrip`].
    pub fn parse(&self, input: &str, region: Region) -> Result<PhoneNumber, NumberRefusal> {
        match PhoneNumber::parse(input, region) {
            Ok(number) => {
                self.check(&number)?;
                Ok(number)
            }
            Err(PhoneNumberError::NoRoundTrip) => {
                match PhoneNumber::first_reading_type(input, region) {
                    Some(t) if !self.allowed_types.contains(&t) => {
                        Err(PolicyError::Type(t, self.allowed_types.clone()).into())
                    }
                    _ => Err(PhoneNumberError::NoRoundTrip.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `number` may be called.
    pub fn check(&self, number: &PhoneNumber) -> Result<(), PolicyError> {
        let code = number.country_code();
        if NON_GEOGRAPHIC_CODES.contains(&code) && !self.listed_codes.contains(&code) {
            return Err(PolicyError::NonGeographic(code));
        }
        let t = number.number_type();
        if !self.allowed_types.contains(&t) {
            return Err(PolicyError::Type(t, self.allowed_types.clone()));
        }
        Ok(())
    }
}

/// Every assigned country calling code (ITU-T E.164 list; prefix-free).
const COUNTRY_CODES: &[u16] = &[
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 379, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675,
    676, 677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850,
    852, 853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966,
    967, 968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// The country calling code an E.164 number's digits start with, from a
/// fixed list (no metadata).
pub(crate) fn country_code_of(digits: &str) -> Option<u16> {
    (1..=3.min(digits.len())).find_map(|n| {
        let code: u16 = digits[..n].parse().ok()?;
        COUNTRY_CODES.contains(&code).then_some(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Region;

    #[test]
    fn a_refused_type_that_does_not_read_back_reports_the_type() {
        let policy = NumberPolicy::default();
        for input in [
            "0900 123 4567",
            "0900-123-4567",
            "(0900) 123 4567",
            "09001234567",
            "+55 0900 123 4567",
        ] {
            let err = policy.parse(input, Region::BRAZIL).unwrap_err();
            assert_eq!(err.kind(), "value_error.phone.type", "{input}: {err:?}");
            assert!(
                matches!(
                    err,
                    NumberRefusal::Policy(PolicyError::Type(NumberType::PremiumRate, _))
                ),
                "{input}: {err:?}"
            );
            assert!(err.to_string().contains("premium-rate"), "{err}");
        }
        // Allowed types still parse, junk is still a plain phone error.
        assert!(policy.parse("11 91234-5678", Region::BRAZIL).is_ok());
        assert_eq!(
            policy
                .parse("11 9123A-5678", Region::BRAZIL)
                .unwrap_err()
                .kind(),
            "value_error.phone"
        );
        // If premium rate were allowed, the read-back failure is what remains.
        let premium = NumberPolicy::new(vec![NumberType::PremiumRate], vec![]);
        assert_eq!(
            premium.parse("0900 123 4567", Region::BRAZIL),
            Err(NumberRefusal::Phone(PhoneNumberError::NoRoundTrip))
        );
    }

    #[test]
    fn the_fixed_code_list_covers_the_metadata_and_is_prefix_free() {
        for code in 1u16..1000 {
            if phonenumber::metadata::DATABASE.by_code(&code).is_some() {
                assert!(COUNTRY_CODES.contains(&code), "+{code} missing");
            }
        }
        for a in COUNTRY_CODES {
            for b in COUNTRY_CODES {
                if a != b {
                    let (a, b) = (a.to_string(), b.to_string());
                    assert!(!b.starts_with(&a), "{a} is a prefix of {b}");
                }
            }
        }
        assert_eq!(country_code_of("5511912345678"), Some(55));
        assert_eq!(country_code_of("14158675309"), Some(1));
        assert_eq!(country_code_of("881612345678"), Some(881));
    }

    #[test]
    fn type_names_parse() {
        for t in NumberType::ALL {
            assert_eq!(t.as_str().parse::<NumberType>(), Ok(t));
        }
        assert_eq!(
            "Fixed-Line".parse::<NumberType>(),
            Ok(NumberType::FixedLine)
        );
        assert!("landline".parse::<NumberType>().is_err());
    }

    fn br(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, Region::BRAZIL).unwrap()
    }

    #[test]
    fn brazilian_costly_numbers_are_refused_by_type() {
        let policy = NumberPolicy::default();
        assert_eq!(policy.check(&br("11 91234-5678")), Ok(()));
        assert_eq!(policy.check(&br("11 3456-7890")), Ok(()));
        for (input, t) in [
            ("0800 123 4567", NumberType::TollFree),
            ("0300 123 4567", NumberType::SharedCost),
            ("0303 123 4567", NumberType::SharedCost),
            ("3003 1234", NumberType::SharedCost),
            ("4003 1234", NumberType::SharedCost),
            ("4004 1234", NumberType::SharedCost),
            ("0500 123 4567", NumberType::PremiumRate),
        ] {
            let n = br(input);
            let err = policy.check(&n).unwrap_err();
            assert_eq!(
                err,
                PolicyError::Type(t, NumberType::DEFAULT_ALLOWED.to_vec()),
                "{input}"
            );
            assert_eq!(err.kind(), "value_error.phone.type");
        }
    }

    #[test]
    fn non_geographic_codes_are_refused_unless_listed() {
        let policy = NumberPolicy::new(NumberType::ALL.to_vec(), vec![]);
        for input in [
            "+881 612345678",
            "+870 301234567",
            "+882 3421234",
            "+800 12345678",
            "+979 123456789",
        ] {
            let n = PhoneNumber::parse(input, Region::BRAZIL).unwrap();
            assert!(
                matches!(policy.check(&n), Err(PolicyError::NonGeographic(_))),
                "{input}"
            );
            let listed = NumberPolicy::new(NumberType::ALL.to_vec(), vec![n.country_code()]);
            assert_eq!(listed.check(&n), Ok(()), "{input}");
        }
        // Costly geographic ranges abroad are refused by type.
        let policy = NumberPolicy::default();
        for input in ["+351 760 123 456", "+33 8 99 12 34 56"] {
            let n = PhoneNumber::parse(input, Region::BRAZIL).unwrap();
            assert!(
                matches!(policy.check(&n), Err(PolicyError::Type(..))),
                "{input}: {:?}",
                n.number_type()
            );
        }
    }
}
