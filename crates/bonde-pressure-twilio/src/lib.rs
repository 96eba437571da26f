//! # bonde-pressure-twilio
//!
//! The Twilio adapter of bonde-pressure, with no Twilio SDK:
//!
//! - [`TwilioClient`]: core's [`Telephony`](bonde_pressure_core::Telephony)
//!   port over Twilio's REST API (create the activist's call, add the target
//!   to the conference, hang up / cancel a leg, end a conference, fetch a
//!   leg), with bounded retries and Twilio's error codes mapped onto core's
//!   [`TelephonyError`](bonde_pressure_core::TelephonyError) taxonomy
//!   ([`error::map_error`]).
//!   [`TwilioClient::create_call`] also places a call running inline TwiML
//!   ([`CallInstructions`]).
//! - [`TwilioConfig`], [`Credentials`], [`RetryPolicy`]: its configuration.
//! - [`ids`]: Twilio's Call and Conference SIDs, checked where they become
//!   core's opaque [`LegId`](bonde_pressure_core::LegId) and
//!   [`ConferenceId`](bonde_pressure_core::ConferenceId).
//! - [`urls`]: the webhook route contract ([`Route`], path templates,
//!   [`CallbackUrls`]), shared with the HTTP crate.
//! - [`twiml`]: a TwiML writer and [`twiml::render`] of core's voice scripts.
//! - [`webhook`]: Twilio's webhook forms parsed into core
//!   [`CallEvent`](bonde_pressure_core::CallEvent)s.
//! - [`signature`]: `X-Twilio-Signature` signing and validation.
//!
//! No `reqwest` type appears in the public API.

pub mod client;
pub mod config;
pub mod error;
pub mod forms;
pub mod ids;
pub mod signature;
pub mod twiml;
pub mod urls;
pub mod webhook;

pub use client::{CallInstructions, CreateCallError, TwilioClient};
pub use config::{ConfigError, Credentials, RetryPolicy, Secret, TwilioConfig};
pub use error::Refusal;
pub use forms::{AmdForm, CallForm, CallStatusForm, ConferenceForm, GatherForm};
pub use ids::{SidError, parse_call_sid, parse_conference_sid};
pub use signature::{SignatureError, SignatureValidator};
pub use urls::{CallbackUrls, Route, UrlError};
pub use webhook::WebhookError;
