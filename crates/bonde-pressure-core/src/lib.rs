//! # bonde-pressure-core
//!
//! The domain of phone pressure campaigns, with no I/O: an activist is
//! called (leg A), confirms, waits in a conference, and a target (leg B) is
//! added to it; both legs and the conference are tracked until the call ends.
//!
//! - [`domain`]: parsed values ([`PhoneNumber`], [`CallId`], [`LegId`]...).
//! - [`call`]: facts that only grow ([`CallFacts`]), merged by a join, so any
//!   order or duplication of callbacks gives the same state; the
//!   [`DetailedState`] and [`UiStatus`] derived from them; the pure
//!   [`call::apply`] returning the [`Effect`]s to run, each exactly once.
//! - [`ports`]: [`Telephony`], [`CallStore`], [`CampaignDirectory`],
//!   [`ActionRecorder`], [`EventSink`], with what implementations must
//!   guarantee.
//! - [`limits`]: the [`RateLimiter`] port (caps on how often a number is
//!   called, limits on start requests) and [`InMemoryRateLimiter`];
//!   [`do_not_call`]: the
//!   [`DoNotCallList`] port (keyed hashes of numbers never to call again) and
//!   [`InMemoryDoNotCallList`]; [`NumberPolicy`]: which numbers may be called.
//! - [`privacy`]: retention, erasure of one person's data and the audit log
//!   of unmasked reads ([`Privacy`], the [`PersonalDataStore`] port).
//! - [`PressureService`]: start a call, handle an event (load, apply, commit
//!   with a version check, retry on conflict, then run the effects), decide
//!   the voice script of each moment, reconcile stale calls.
//! - Fakes that ship with the crate: [`InMemoryCallStore`],
//!   [`SimulatedTelephony`], [`StaticCampaignDirectory`],
//!   [`StubActionRecorder`]; with the `mock` feature, mockall mocks of the ports.
//!
//! Every port trait and every type in a port's signature (requests,
//! answers, errors) is re-exported here, at the crate root, beside its
//! trait. Port structs are `#[non_exhaustive]`: build them with their
//! `new(...)` constructor and `with_*` setters (or `Default`). Each change
//! to this crate's public API is recorded in the repository's `CHANGELOG.md`.
//!
//! ```
//! use bonde_pressure_core::{
//!     Call, CallEvent, DialedLeg, Leg, LegId, LegStatus, ServiceConfig,
//! };
//!
//! let leg_id: LegId = "leg-1".parse().unwrap();
//! let leg = DialedLeg::new(leg_id.clone()).with_status(LegStatus::Queued);
//! let config = ServiceConfig::default().with_max_commit_attempts(3);
//! let event: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::Ringing)
//!     .with_leg_id(leg_id)
//!     .into();
//! # let _ = (leg, config, event);
//! # fn restore(call: Call) -> Call { call.with_version(1) }
//! ```
//!
//! Struct literals do not compile outside the crate, so adding a field is
//! not a breaking change:
//!
//! ```compile_fail,E0639
//! # use bonde_pressure_core::{DialedLeg, LegId};
//! let leg_id: LegId = "leg-1".parse().unwrap();
//! let leg = DialedLeg { leg_id, status: None };
//! ```
//!
//! ```compile_fail,E0639
//! # use bonde_pressure_core::ServiceConfig;
//! let config = ServiceConfig { max_commit_attempts: 3, ..ServiceConfig::default() };
//! ```
//!
//! ```compile_fail,E0639
//! # use bonde_pressure_core::Call;
//! fn restore(call: Call) -> Call { Call { version: 1, ..call } }
//! ```
//!
//! ```compile_fail,E0639
//! # use bonde_pressure_core::{CallEvent, Leg, LegStatus};
//! let event = CallEvent::LegStatus {
//!     leg: Leg::Activist,
//!     leg_id: None,
//!     status: LegStatus::Ringing,
//!     duration_secs: None,
//!     sip_response_code: None,
//!     at: None,
//! };
//! ```

pub mod call;
mod chain;
pub mod do_not_call;
pub mod domain;
mod fakes;
pub mod limits;
mod memory;
pub mod ports;
pub mod privacy;
mod recent;
pub mod results;
pub mod script;
mod service;
pub mod simulated;

pub use call::{
    AnsweredBy, Call, CallEvent, CallFacts, Confirmation, DetailedState, Effect, HangUp, Leg,
    LegError, LegStatus, LegStatusEvent, UiStatus,
};
pub use chain::{ErrorChain, error_chain};
/// The time-zone type of [`ResultsQuery`] (re-exported `chrono_tz`).
pub use chrono_tz::{self, Tz};
#[cfg(feature = "mock")]
pub use do_not_call::MockDoNotCallList;
pub use do_not_call::{
    DoNotCallHash, DoNotCallHasher, DoNotCallList, DoNotCallSource, InMemoryDoNotCallList,
};
pub use domain::{
    Activist, CallId, ConferenceId, Email, IdError, LegId, NumberPolicy, NumberRefusal, NumberType,
    PersonName, PhoneNumber, Region, Target, WidgetId,
};
pub use fakes::{
    ManualClock, NoopActionRecorder, StaticCampaignDirectory, StubActionRecorder, demo_widget,
};
#[cfg(feature = "mock")]
pub use limits::MockRateLimiter;
pub use limits::{
    Admission, InMemoryRateLimiter, LimitKey, LimitKind, LimiterError, Quota, RateLimiter, Refill,
    RequestLimits,
};
pub use memory::InMemoryCallStore;
pub use ports::{
    ActionRecorder, ActivistCallRequest, CallStore, CampaignDirectory, Clock, ConferenceSnapshot,
    DialedLeg, DirectoryError, ErrorSource, EventSink, LegSnapshot, ParticipantSnapshot, RawEvent,
    RecentCalls, RecorderError, StoreError, StoredEvent, SystemClock, TargetCallRequest, Telephony,
    TelephonyError, UnreadableCall, Widget, WidgetAction, WidgetTarget,
};
#[cfg(feature = "mock")]
pub use ports::{MockActionRecorder, MockCallStore, MockCampaignDirectory, MockTelephony};
#[cfg(feature = "mock")]
pub use privacy::MockPersonalDataStore;
pub use privacy::{
    ActorId, AuditEntry, ErasureReport, PersonKey, PersonalDataStore, Privacy, RetentionConfig,
    RetentionPass, RetentionReport,
};
pub use results::{
    CallCursor, CampaignResults, FunnelStage, FunnelStep, Interval, ResultsQuery, ResultsReport,
    SeriesBucket, TargetResults, percentile_nearest_rank,
};
pub use script::{CallerIdPolicy, CampaignSettings, Messages, ScriptMoment, VoiceScript};
pub use service::{
    ActivistInput, Dependencies, FieldError, HandleOutcome, PressureService, ReconcileReport,
    ServiceConfig, ServiceError, StartCallRequest, StartError, StartedCall, TargetInput,
};
pub use simulated::{Scenario, ScenarioPicker, SimulatedTelephony};
