//! Parsed domain values: nothing unvalidated gets past these types.

mod ids;
mod people;
mod phone;

pub use ids::{CallId, CallSid, ConferenceSid, IdError, WidgetId};
pub use people::{Activist, Email, PersonName, PersonNameError, Target};
pub use phone::{PhoneNumber, PhoneNumberError, Region, RegionError, mask_phone};
