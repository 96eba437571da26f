//! # Embedding bonde-pressure-core
//!
//! A small program built on core alone, with its own telephony: the
//! [`ConsoleTelephony`] prints what a provider would be asked to do and
//! plays the provider's callbacks back into the service through the
//! [`EventSink`] port; calls are kept in core's [`InMemoryCallStore`].
//! [`run`] drives one call from start to `completed` and then runs a
//! reconciliation pass with core's [`Reconciler`]. `docs/embedding.md` walks through it; run it with
//! `cargo run -p bonde-pressure-embed-example`.

pub mod console;
pub mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    ActivistInput, Call, CallId, Dependencies, EventSink, InMemoryCallStore, NoopActionRecorder,
    PressureService, ReconcileReport, Reconciler, ServiceConfig, StartCallRequest,
    StaticCampaignDirectory, StoredEvent, SystemClock, TargetInput, Telephony, Widget, WidgetId,
    WidgetTarget,
};

pub use console::ConsoleTelephony;

/// The example campaign's widget id.
pub const WIDGET_ID: i64 = 7;
/// The example campaign's target, as its author typed the number.
pub const TARGET_PHONE: &str = "+55 61 99888-7766";
/// The example activist's number, as typed on the campaign page.
pub const ACTIVIST_PHONE: &str = "11 98765-4321";
/// How many stale calls one reconciliation pass looks at (the HTTP server
/// uses the same batch).
pub const RECONCILE_BATCH: u32 = 200;
/// How often a long-running embedding runs a reconciliation pass (the HTTP
/// server's default `RECONCILE_INTERVAL_SECS`).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// The campaigns the example knows: one widget with one target.
pub fn campaigns() -> StaticCampaignDirectory {
    let id = WidgetId::new(WIDGET_ID).expect("a positive widget id");
    StaticCampaignDirectory::new([Widget::new(
        id,
        vec![WidgetTarget::new("Senator Example", TARGET_PHONE)],
    )])
}

/// The service over `telephony`, the in-memory `store` and [`campaigns`],
/// with core's default settings.
pub fn service(store: Arc<InMemoryCallStore>, telephony: Arc<dyn Telephony>) -> PressureService {
    let deps = Dependencies::new(store, telephony, Arc::new(campaigns()))
        .with_recorder(Arc::new(NoopActionRecorder))
        .with_clock(Arc::new(SystemClock));
    PressureService::new(deps, ServiceConfig::default())
}

/// What the campaign page would send to start a call.
pub fn start_request() -> StartCallRequest {
    StartCallRequest::new(
        WIDGET_ID,
        ActivistInput::new("Ana Souza", "ana@example.org", ACTIVIST_PHONE)
            .with_first_name("Ana")
            .with_last_name("Souza"),
        TargetInput::new("Senator Example", TARGET_PHONE),
    )
}

/// The parts wired together.
#[derive(Debug)]
pub struct Embedded {
    /// The service (it is the telephony's [`EventSink`]).
    pub service: Arc<PressureService>,
    /// The console provider.
    pub telephony: Arc<ConsoleTelephony>,
    /// The store.
    pub store: Arc<InMemoryCallStore>,
    /// Reconciliation over the service: a long-running program spawns
    /// `reconciler.run(shutdown)`; [`run`] makes one pass.
    pub reconciler: Reconciler,
}

/// Wires the console telephony, the in-memory store and the service, and
/// connects the telephony's callbacks to the service.
pub fn wire() -> Embedded {
    let store = Arc::new(InMemoryCallStore::new());
    let telephony = Arc::new(ConsoleTelephony::new());
    let service = Arc::new(service(store.clone(), telephony.clone()));
    // The service is the sink of the telephony's callbacks; held weakly,
    // so the two do not keep each other alive.
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    let reconciler = Reconciler::new(service.clone())
        .with_interval(RECONCILE_INTERVAL)
        .with_batch(RECONCILE_BATCH);
    Embedded {
        service,
        telephony,
        store,
        reconciler,
    }
}

/// What [`run`] did.
#[derive(Debug)]
pub struct Outcome {
    /// The call as stored at the end.
    pub call: Call,
    /// Its event log (every callback's payload, as received).
    pub events: Vec<StoredEvent>,
    /// Callbacks delivered to the service.
    pub callbacks: usize,
    /// The reconciliation pass's report.
    pub report: ReconcileReport,
    /// What the console provider printed.
    pub transcript: Vec<String>,
}

/// Why [`run`] failed.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Starts one call, plays the console provider's callbacks until none is
/// left (the call is then `completed`), then runs one reconciliation pass.
pub async fn run(embedded: &Embedded) -> Result<Outcome, Error> {
    let started = embedded.service.start(&start_request()).await?;
    println!(
        "started call {} (page status {})",
        started.call_id,
        started.status.as_str()
    );
    let callbacks = embedded.telephony.play_callbacks().await;
    let call = stored(embedded, started.call_id).await?;
    println!(
        "call {} is {} after {callbacks} callbacks",
        call.id,
        call.state().as_str()
    );
    // What `reconciler.run(shutdown)` does every `RECONCILE_INTERVAL`: calls
    // not updated for `stale_after` are checked against the provider, and
    // expired.
    let report = embedded.reconciler.run_once().await?;
    println!("reconciliation: {report:?}");
    let events = embedded.service.store().events(call.id).await?;
    Ok(Outcome {
        call,
        events,
        callbacks,
        report,
        transcript: embedded.telephony.transcript(),
    })
}

async fn stored(embedded: &Embedded, id: CallId) -> Result<Call, Error> {
    Ok(embedded
        .service
        .call(id)
        .await?
        .ok_or_else(|| format!("call {id} is not stored"))?)
}
