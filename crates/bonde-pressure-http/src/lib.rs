//! # bonde-pressure-http
//!
//! The HTTP adapter of bonde-pressure: the campaign page's routes (a drop-in
//! for the previous FastAPI service), Twilio's webhooks, call details and
//! live updates, health, metrics and OpenAPI — over core's
//! [`PressureService`](bonde_pressure_core::PressureService).
//!
//! - [`router`] builds the [`axum::Router`] from an [`AppState`].
//! - [`config::Config`] reads the environment (upstream's variable names).
//! - [`wiring`] turns a configuration into a running service (store,
//!   telephony, campaigns, action recorder) — what the `bonde-pressure`
//!   binary does.
//! - [`campaigns`] and [`recorder`] implement core's `CampaignDirectory` and
//!   `ActionRecorder` over a local file and BONDE's GraphQL API.
//! - [`deadline::DeadlineStore`]: wrap the store the service uses in it (as
//!   [`wiring::build`] does) so each request's store deadline applies; the
//!   router gives every request its deadline.
//! - [`wiring::serve`] serves a wired app with the connection timeouts and cap
//!   of [`wiring::ServerOptions`].
//!
//! See `docs/http-api.md` for routes, shapes and status codes.

pub mod body;
pub mod campaigns;
pub mod config;
pub mod deadline;
pub mod do_not_call;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod privacy;
pub mod recorder;
pub mod routes;
pub mod spool;
pub mod state;
pub mod wiring;

pub use error::AppError;
pub use routes::router;
pub use state::{AppState, HttpOptions, SignatureCheck, WebhookAuth};
