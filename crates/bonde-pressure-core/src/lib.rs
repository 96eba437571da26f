//! # bonde-pressure-core
//!
//! The domain of phone pressure campaigns, with no I/O: an activist is
//! called (leg A), confirms, waits in a conference, and a target (leg B) is
//! added to it; both legs and the conference are tracked until the call ends.
//!
//! - [`domain`]: parsed values ([`PhoneNumber`], [`CallId`], [`LegId`]...),
//!   and the workspace's [`Secret`] (never shown by `Debug` or `Display`).
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
//!   the voice script of each moment, reconcile stale calls; the
//!   [`Reconciler`] runs reconciliation passes at its own cadence.
//! - [`live`]: the one live-update mechanism — the service publishes a
//!   [`live::CallUpdate`] after every commit; subscribe per call or per
//!   widget ([`PressureService::live_updates`]).
//! - [`validate`]: pure input validation — a start request's JSON body
//!   checked into a [`StartCallRequest`], or every [`FieldError`] at once.
//! - [`view`]: the read models every adapter shows ([`CallSummary`],
//!   [`CallDetails`]), with phones and e-mails masked by the one masking of
//!   the workspace ([`domain::mask_phone`], [`domain::mask_email`]) unless
//!   the caller asks for [`Disclosure::Unmasked`].
//! - [`spool`]: the payload promise — every provider payload handed to the
//!   service ([`PressureService::handle`], [`PressureService::record_unparsed`])
//!   is stored exactly once, whatever fails; while the store is unavailable
//!   it waits in a bounded in-process spool ([`PressureService::flush_spool`]).
//! - Fakes that ship with the crate: [`InMemoryCallStore`],
//!   [`SimulatedTelephony`] (feature `simulated`), [`StaticCampaignDirectory`],
//!   [`StubActionRecorder`]; with the `mock` feature, mockall mocks of the ports.
//!
//! Every port trait and every type in a port's signature (requests,
//! answers, errors) is re-exported here, at the crate root, beside its
//! trait. Port structs are `#[non_exhaustive]`: build them with their
//! `new(...)` constructor and `with_*` setters (or `Default`). Each change
//! to this crate's public API is recorded in the repository's `CHANGELOG.md`.
//!
//! # Runtime
//!
//! Core does no I/O and spawns no task of its own; it reads the time, waits
//! and draws its jitter only through the [`Clock`] port. Which runtime it
//! needs depends on two choices:
//!
//! - **Feature `simulated`** (on by default): [`SimulatedTelephony`] plays
//!   its callbacks from tasks it spawns with `tokio::spawn`, so it must be
//!   used inside a [tokio](https://docs.rs/tokio) runtime (any flavour).
//!   Without the feature (`default-features = false`) the `simulated`
//!   module is not built.
//! - **The clock's timer**: [`Clock::sleep`]'s default (what [`SystemClock`]
//!   uses) is `tokio::time::sleep`, so with it the service must run inside a
//!   tokio runtime with the time driver enabled (what `#[tokio::main]` and
//!   `#[tokio::test]` give); a current-thread runtime is enough.
//!
//! Without `simulated` and with a [`Clock`] whose `sleep` uses the
//! embedder's own timer (or [`ManualClock`]), core runs on any executor:
//! what else it uses of tokio (`tokio::sync` channels and locks,
//! `tokio::task::yield_now`) needs no runtime. `docs/embedding.md` walks
//! through a whole embedding (`examples/embed` in the repository).
//!
//! # Examples
//!
//! Start a call and follow it to the end: a service over the in-memory
//! store and the simulated telephony, whose callbacks go back into the
//! service through the [`EventSink`] port; then a reconciliation pass, as
//! an embedder runs every few seconds.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bonde_pressure_core::{
//!     ActivistInput, DetailedState, Dependencies, EventSink, InMemoryCallStore,
//!     PressureService, Reconciler, Scenario, ScenarioPicker, ServiceConfig,
//!     SimulatedTelephony, StartCallRequest, StaticCampaignDirectory, TargetInput,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telephony = Arc::new(SimulatedTelephony::new(
//!     ScenarioPicker::Always(Scenario::Success),
//!     Duration::ZERO,
//! ));
//! let deps = Dependencies::new(
//!     Arc::new(InMemoryCallStore::new()),
//!     telephony.clone(),
//!     // Widget 1, target "Demo Target" +55 61 99999-0000.
//!     Arc::new(StaticCampaignDirectory::demo()),
//! );
//! let service = Arc::new(PressureService::new(deps, ServiceConfig::default()));
//! let sink: Arc<dyn EventSink> = service.clone();
//! telephony.connect(Arc::downgrade(&sink));
//!
//! let request = StartCallRequest::new(
//!     1,
//!     ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
//!     TargetInput::new("Demo Target", "+55 61 99999-0000"),
//! );
//! let started = service.start(&request).await?;
//!
//! // The simulated activist answers, confirms, talks to the target; both hang up.
//! let call = loop {
//!     let call = service.call(started.call_id).await?.expect("stored");
//!     if call.is_settled() {
//!         break call;
//!     }
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//! };
//! assert_eq!(call.state(), DetailedState::Completed);
//!
//! // One reconciliation pass (a long-running embedder spawns
//! // `reconciler.run(shutdown)`, which makes one every 30 s).
//! let reconciler = Reconciler::new(service.clone());
//! let report = reconciler.run_once().await?;
//! assert_eq!(report.errors, 0);
//! # Ok(())
//! # }
//! ```
//!
//! Handle a provider's report yourself: an adapter parses a webhook into a
//! provider-neutral [`CallEvent`] and hands it to
//! [`PressureService::handle`] with the payload as received, which is
//! stored with the call.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bonde_pressure_core::{
//!     ActivistInput, CallEvent, DetailedState, Dependencies, InMemoryCallStore, Leg,
//!     LegStatus, PressureService, RawEvent, Scenario, ScenarioPicker, ServiceConfig,
//!     SimulatedTelephony, StartCallRequest, StaticCampaignDirectory, TargetInput,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Not connected to the service: it plays no callbacks of its own.
//! let telephony = SimulatedTelephony::new(ScenarioPicker::Always(Scenario::Success), Duration::ZERO);
//! let deps = Dependencies::new(
//!     Arc::new(InMemoryCallStore::new()),
//!     Arc::new(telephony),
//!     Arc::new(StaticCampaignDirectory::demo()),
//! );
//! let service = PressureService::new(deps, ServiceConfig::default());
//! let started = service
//!     .start(&StartCallRequest::new(
//!         1,
//!         ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
//!         TargetInput::new("Demo Target", "+55 61 99999-0000"),
//!     ))
//!     .await?;
//!
//! // The activist's phone does not answer.
//! let no_answer: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::NoAnswer)
//!     .with_leg_id(started.leg_id.clone())
//!     .with_duration_secs(0)
//!     .into();
//! let payload = RawEvent::new("status-callback", "CallStatus=no-answer", chrono::Utc::now());
//! let outcome = service.handle(started.call_id, no_answer, Some(payload)).await?;
//! assert_eq!(outcome.call.state(), DetailedState::ActivistNoAnswer);
//! assert!(outcome.effects.is_empty());
//! // Delivered twice, it changes nothing more: events are merged, not replayed.
//! let again: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::NoAnswer)
//!     .with_leg_id(started.leg_id.clone())
//!     .with_duration_secs(0)
//!     .into();
//! let outcome = service.handle(started.call_id, again, None).await?;
//! assert_eq!(outcome.call.state(), DetailedState::ActivistNoAnswer);
//! assert_eq!(service.store().events(started.call_id).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Bring your own provider: implement [`Telephony`] (the required
//! methods; [`Telephony::conference_participants`] has a default). Its
//! leg and conference ids are its own: core only stores them and passes
//! them back. See the trait's guarantees before writing a real one.
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use bonde_pressure_core::{
//!     ActivistCallRequest, ActivistInput, CallId, ConferenceId, Dependencies, DialedLeg,
//!     HangUp, InMemoryCallStore, LegId, LegSnapshot, LegStatus, PressureService,
//!     ServiceConfig, StartCallRequest, StaticCampaignDirectory, TargetCallRequest,
//!     TargetInput, Telephony, TelephonyError,
//! };
//!
//! /// Places calls through some provider's API.
//! struct MyProvider;
//!
//! #[async_trait]
//! impl Telephony for MyProvider {
//!     async fn call_activist(&self, req: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError> {
//!         // Ask the provider to call `req.to`, with callbacks tagged with
//!         // `req.call_id` and the activist's leg; map its refusals onto
//!         // `TelephonyError`'s variants.
//!         let leg: LegId = format!("my-{}-a", req.call_id.as_uuid().simple())
//!             .parse()
//!             .map_err(|e| TelephonyError::unavailable("bad id").with_source(e))?;
//!         Ok(DialedLeg::new(leg).with_status(LegStatus::Queued))
//!     }
//!     async fn add_target(&self, _req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
//!         Err(TelephonyError::unavailable("not in this sketch"))
//!     }
//!     async fn hang_up(&self, _: CallId, _: &LegId, _: HangUp) -> Result<(), TelephonyError> {
//!         Ok(()) // Ending an ended leg is not an error.
//!     }
//!     async fn end_conference(&self, _: CallId, _: &ConferenceId) -> Result<(), TelephonyError> {
//!         Ok(())
//!     }
//!     async fn fetch_leg(&self, leg_id: &LegId) -> Result<LegSnapshot, TelephonyError> {
//!         Err(TelephonyError::not_found(format!("no leg {leg_id}")))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let deps = Dependencies::new(
//!     Arc::new(InMemoryCallStore::new()),
//!     Arc::new(MyProvider),
//!     Arc::new(StaticCampaignDirectory::demo()),
//! );
//! let service = PressureService::new(deps, ServiceConfig::default());
//! let started = service
//!     .start(&StartCallRequest::new(
//!         1,
//!         ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
//!         TargetInput::new("Demo Target", "+55 61 99999-0000"),
//!     ))
//!     .await?;
//! assert!(started.leg_id.is_some_and(|leg| leg.as_str().starts_with("my-")));
//! # Ok(())
//! # }
//! ```
//!
//! Build port structs with their constructors:
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

pub mod cache;
pub mod call;
mod chain;
pub mod do_not_call;
pub mod domain;
mod fakes;
pub mod lease;
pub mod limits;
pub mod live;
mod memory;
pub mod ports;
pub mod privacy;
mod recent;
pub mod results;
pub mod script;
mod service;
#[cfg(feature = "simulated")]
pub mod simulated;
pub mod spool;
pub mod validate;
pub mod view;

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
    PersonName, PhoneNumber, Region, Secret, Target, WidgetId,
};
pub use fakes::{
    ManualClock, NoopActionRecorder, StaticCampaignDirectory, StubActionRecorder, demo_widget,
};
#[cfg(feature = "mock")]
pub use lease::MockLease;
pub use lease::{InMemoryLease, Lease, LeaseError};
#[cfg(feature = "mock")]
pub use limits::MockRateLimiter;
pub use limits::{
    Admission, InMemoryRateLimiter, LayeredRateLimiter, LimitKey, LimitKind, LimitRoute,
    LimiterError, Quota, RateLimiter, Refill, RequestLimits,
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
    SeriesBucket, TargetResults, percentile_nearest_rank, percentile_nearest_rank_counted,
};
pub use script::{CallerIdPolicy, CampaignSettings, Messages, ScriptMoment, VoiceScript};
pub use service::{
    ActivistInput, Dependencies, FieldError, HandleOutcome, PressureService, ReconcileReport,
    Reconciler, ServiceConfig, ServiceError, StartCallRequest, StartError, StartedCall,
    TargetInput,
};
#[cfg(feature = "simulated")]
pub use simulated::{Scenario, ScenarioPicker, SimulatedTelephony};
pub use spool::{DEFAULT_SPOOL_CAPACITY, SpoolFull, SpoolStats};
pub use view::{CallDetails, CallSummary, Disclosure};
