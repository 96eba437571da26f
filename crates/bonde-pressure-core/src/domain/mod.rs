//! Parsed domain values: nothing unvalidated gets past these types.

mod ids;
mod people;
mod phone;
mod policy;
mod secret;

pub use ids::{CallId, ConferenceId, IdError, LegId, MAX_PROVIDER_ID_LEN, WidgetId};
pub use people::{
    Activist, ERASED_EMAIL, ERASED_NAME, Email, PersonName, PersonNameError, Target, mask_email,
};
pub use phone::{ERASED_E164, PhoneNumber, PhoneNumberError, Region, RegionError, mask_phone};
pub use policy::{
    NON_GEOGRAPHIC_CODES, NumberPolicy, NumberRefusal, NumberType, NumberTypeError, PolicyError,
};
pub use secret::{EmptySecret, Secret};
