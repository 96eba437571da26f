//! Parsed domain values: nothing unvalidated gets past these types.

mod ids;
mod people;
mod phone;
mod policy;

pub use ids::{CallId, CallSid, ConferenceSid, IdError, WidgetId};
pub use people::{Activist, Email, PersonName, PersonNameError, Target};
pub use phone::{PhoneNumber, PhoneNumberError, Region, RegionError, mask_phone};
pub use policy::{
    NON_GEOGRAPHIC_CODES, NumberPolicy, NumberRefusal, NumberType, NumberTypeError, PolicyError,
};
