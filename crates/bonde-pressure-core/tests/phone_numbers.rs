//! Property: a generated number (several regions and types, typed in several
//! ways) that validation accepts reads back as itself from its E.164 text,
//! validated or trusted, and through serde; its type is the plan's.

use bonde_pressure_core::{NumberPolicy, NumberType, PhoneNumber, Region};
use proptest::prelude::*;

/// Example national numbers of several plans: (country code, number, type).
const SAMPLES: &[(u16, &str, NumberType)] = &[
    (55, "1123456789", NumberType::FixedLine),
    (55, "11961234567", NumberType::Mobile),
    (55, "800123456", NumberType::TollFree),
    (55, "500123456", NumberType::PremiumRate),
    (55, "40041234", NumberType::SharedCost),
    (1, "2015550123", NumberType::FixedLineOrMobile),
    (1, "8002345678", NumberType::TollFree),
    (351, "212345678", NumberType::FixedLine),
    (351, "912345678", NumberType::Mobile),
    (351, "760123456", NumberType::PremiumRate),
    (33, "123456789", NumberType::FixedLine),
    (33, "612345678", NumberType::Mobile),
    (33, "891123456", NumberType::PremiumRate),
    (44, "1212345678", NumberType::FixedLine),
    (44, "7400123456", NumberType::Mobile),
    (44, "8001234567", NumberType::TollFree),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_numbers_read_back_as_themselves(
        sample in 0..SAMPLES.len(),
        last3 in 0u32..1000,
        style in 0usize..5,
    ) {
        let (cc, national, kind) = SAMPLES[sample];
        let national = format!("{}{last3:03}", &national[..national.len() - 3]);
        let input = match style {
            0 => format!("+{cc}{national}"),
            1 => format!("+{cc} {} {}", &national[..2], &national[2..]),
            2 => format!("+{cc}-{}-{}", &national[..3], &national[3..]),
            3 => format!(" +{cc} ({}) {} ", &national[..2], &national[2..]),
            _ if cc == 55 => format!("({}) {}", &national[..2], &national[2..]),
            _ => format!("+{cc}.{national}"),
        };
        let Ok(n) = PhoneNumber::parse(&input, Region::BRAZIL) else {
            return Ok(());
        };
        prop_assert_eq!(n.country_code(), cc);
        prop_assert_eq!(PhoneNumber::parse_e164(n.as_e164()), Ok(n.clone()));
        prop_assert_eq!(PhoneNumber::from_trusted_e164(n.as_e164()), Ok(n.clone()));
        prop_assert_eq!(PhoneNumber::parse(n.as_e164(), Region::BRAZIL), Ok(n.clone()));
        let json = serde_json::to_string(&n).unwrap();
        prop_assert_eq!(serde_json::from_str::<PhoneNumber>(&json).unwrap(), n.clone());
        prop_assert_eq!(n.number_type(), kind, "{}", input);
        let allowed = NumberType::DEFAULT_ALLOWED.contains(&kind);
        prop_assert_eq!(NumberPolicy::default().check(&n).is_ok(), allowed, "{}", input);
    }

    /// Anything typed either parses to a number that reads back, or is
    /// refused with an error: never a panic, never a number that would not
    /// load back from storage.
    #[test]
    fn arbitrary_input_never_yields_a_number_that_does_not_read_back(
        input in "[+0-9 ()A-Za-z.#*-]{0,24}",
    ) {
        if let Ok(n) = PhoneNumber::parse(&input, Region::BRAZIL) {
            prop_assert!(!input.chars().any(|c| c.is_ascii_alphabetic()));
            prop_assert_eq!(PhoneNumber::parse_e164(n.as_e164()), Ok(n.clone()));
            prop_assert_eq!(PhoneNumber::from_trusted_e164(n.as_e164()), Ok(n));
        }
    }
}

/// The samples themselves are valid numbers of their type (so the property
/// above is not vacuous).
#[test]
fn every_sample_is_valid_and_of_its_type() {
    for (cc, national, kind) in SAMPLES {
        let n = PhoneNumber::parse(&format!("+{cc}{national}"), Region::BRAZIL).unwrap();
        assert_eq!(n.number_type(), *kind, "+{cc}{national}");
    }
}
