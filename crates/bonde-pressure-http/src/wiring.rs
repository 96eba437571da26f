//! From a [`Config`] to a running server: picks the store, the telephony,
//! the campaign directory and the action recorder, builds the service and
//! the router, runs the reconciliation task, serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bonde_pressure_core::{
    ActionRecorder, CallStore, CampaignDirectory, CampaignResults, Dependencies, EventSink,
    InMemoryCallStore, NoopActionRecorder, PersonalDataStore, PressureService, Privacy,
    RetentionConfig, ScenarioPicker, ServiceConfig, SimulatedTelephony, StaticCampaignDirectory,
    SystemClock, Telephony,
};
use bonde_pressure_store::Stores;
use bonde_pressure_twilio::{Credentials, TwilioClient, TwilioConfig};
use tokio::sync::watch;

use bonde_pressure_core::do_not_call::{
    DoNotCallHasher, DoNotCallList, DoNotCallSource, InMemoryDoNotCallList,
};
use bonde_pressure_core::limits::{
    InMemoryRateLimiter, LayeredRateLimiter, Quota, RateLimiter, RequestLimits,
};
use bonde_pressure_core::{Clock, Lease};

use crate::campaigns::{CachedDirectory, GraphqlCampaignDirectory, load_campaigns_file};
use crate::config::{Config, ConfigError, LogFormat};
use crate::deadline::{DeadlineDoNotCallList, DeadlineRateLimiter, DeadlineStore};
use crate::do_not_call::load_do_not_call_file;
use crate::metrics::{self, Metrics};
use crate::recorder::GraphqlActionRecorder;
use crate::state::{AppState, HttpOptions, SignatureCheck, WebhookAuth};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The campaigns file could not be loaded.
    #[error(transparent)]
    Campaigns(#[from] crate::campaigns::CampaignsFileError),
    /// The store could not be opened; the cause is the source.
    #[error("cannot open the database: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The telephony could not be set up; the cause is the source.
    #[error("cannot set up the telephony: {0}")]
    Telephony(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The do-not-call file could not be loaded.
    #[error(transparent)]
    DoNotCall(#[from] crate::do_not_call::DoNotCallFileError),
    /// Binding or serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

impl WiringError {
    /// The store could not be opened because of `cause`.
    pub fn store(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        WiringError::Store(Box::new(cause))
    }

    /// The telephony could not be set up because of `cause`.
    pub fn telephony(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        WiringError::Telephony(Box::new(cause))
    }
}

/// Sets up logging: `LOG_LEVEL` as an env-filter, text or JSON lines.
/// Phone numbers are masked by core's types; request bodies are never logged.
pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Which telephony the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelephonyKind {
    /// Scripted lifecycles, no provider.
    Simulated,
    /// Twilio's REST API.
    Twilio,
}

/// A wired application: the state (and so the router), and what `serve` needs.
pub struct App {
    /// The handlers' state.
    pub state: AppState,
    /// The service (reconciliation runs on it).
    pub service: Arc<PressureService>,
    /// Which telephony is in use.
    pub telephony: TelephonyKind,
    /// The simulated telephony, when in use (tests inspect its commands).
    pub simulated: Option<Arc<SimulatedTelephony>>,
    /// Time between retention passes (`RETENTION_INTERVAL_SECS`; zero: none).
    pub retention_interval: Duration,
    /// How connections are served.
    pub server: ServerOptions,
    /// The lease reconciliation runs under and its ttl: with PostgreSQL
    /// (and `RECONCILE_LEASE_TTL_SECS` > 0), one replica at a time runs
    /// passes; `None`: every replica does.
    pub reconcile_lease: Option<(Arc<dyn Lease>, Duration)>,
    /// PostgreSQL with `PG_LIVE_UPDATES`: the listener feeding other
    /// replicas' commits into the service's live updates (dropping the app
    /// stops it).
    pub live_listener: Option<Arc<bonde_pressure_store::LiveListener>>,
}

/// Connection-level settings of [`serve`] (see `docs/configuration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Time allowed to send a request's headers, counted from when the
    /// server waits for them: on a new connection and between requests on
    /// a kept-alive one, so it also closes idle keep-alive connections.
    /// `None`: no limit.
    pub header_read_timeout: Option<Duration>,
    /// Most connections served at once (`None`: no limit); more wait in the
    /// listen backlog, not accepted, until one closes.
    pub max_connections: Option<usize>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Some(Duration::from_secs(10)),
            max_connections: Some(512),
        }
    }
}

impl ServerOptions {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: Some(config.header_read_timeout).filter(|d| !d.is_zero()),
            max_connections: Some(config.max_connections).filter(|n| *n > 0),
        }
    }

    /// With this header-read (and keep-alive idle) timeout.
    pub fn header_read_timeout(mut self, t: Option<Duration>) -> Self {
        self.header_read_timeout = t;
        self
    }

    /// With this connection cap.
    pub fn max_connections(mut self, n: Option<usize>) -> Self {
        self.max_connections = n;
        self
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("telephony", &self.telephony)
            .finish_non_exhaustive()
    }
}

fn service_config(config: &Config) -> ServiceConfig {
    ServiceConfig::default()
        .with_default_region(config.default_region)
        .with_allowed_country_codes(config.allowed_country_codes.0.clone())
        .with_stale_after(config.stale_after)
        .with_expire_after(config.expire_after)
        .with_machine_verdict_grace(config.machine_verdict_grace)
        .with_allowed_number_types(config.allowed_number_types.0.clone())
        .with_activist_calls(
            (config.activist_calls_per_day > 0)
                .then(|| Quota::per_day(config.activist_calls_per_day)),
        )
        .with_target_dials(
            config
                .rate_limit_per_target
                .0
                .map(|r| Quota::new(r.count, r.per)),
        )
        .with_do_not_call_digit(config.do_not_call_key_press.0)
}

/// The limits of `POST /v1/phone/call` per client IP and per activist
/// number: token buckets ([`Quota::gradual`]) of `RATE_LIMIT_PER_IP` and
/// `RATE_LIMIT_PER_ACTIVIST`, charged by core through the service's limiter.
fn request_limits(config: &Config) -> RequestLimits {
    let bucket = |r: crate::config::Rate| Quota::gradual(r.count, r.per);
    RequestLimits::new()
        .with_per_client(config.rate_limit_per_ip.0.map(bucket))
        .with_per_activist(config.rate_limit_per_activist.0.map(bucket))
}

fn directory(config: &Config) -> Result<Arc<dyn CampaignDirectory>, WiringError> {
    if let (Some(url), Some(token)) = (&config.graphql_api_url, &config.graphql_api_token) {
        tracing::info!("campaigns from BONDE GraphQL");
        let gql = GraphqlCampaignDirectory::new(url.clone(), token.clone());
        return Ok(Arc::new(CachedDirectory::new(
            Arc::new(gql),
            Duration::from_secs(60),
        )));
    }
    if let Some(path) = &config.campaigns_file {
        tracing::info!(path = %path.display(), "campaigns from file");
        let mut campaigns = load_campaigns_file(path)?;
        let policy = service_config(config).number_policy();
        let dropped = campaigns.retain_callable(config.default_region, &policy);
        if dropped > 0 {
            tracing::warn!(dropped, "campaign targets dropped by the number policy");
        }
        return Ok(Arc::new(campaigns));
    }
    tracing::info!("campaigns: built-in demo widget 1 (target Demo Target +5561*****0000)");
    Ok(Arc::new(StaticCampaignDirectory::demo()))
}

fn recorder(config: &Config) -> Arc<dyn ActionRecorder> {
    match (&config.graphql_api_url, &config.graphql_api_token) {
        (Some(url), Some(token)) => {
            Arc::new(GraphqlActionRecorder::new(url.clone(), token.clone()))
        }
        _ => Arc::new(NoopActionRecorder),
    }
}

/// The database used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://bonde-pressure.db";

/// Opens the store the configuration names: `postgres://…` → PostgreSQL,
/// `sqlite:…` → SQLite (file created if missing), `memory:` → core's
/// in-memory store (nothing survives a restart); unset → the SQLite file
/// [`DEFAULT_DATABASE_URL`]. Migrations run on connect.
pub async fn open_store(config: &Config) -> Result<Arc<dyn CallStore>, WiringError> {
    Ok(open_stores(config).await?.calls)
}

/// [`open_store`], seen through every storage port: calls, personal data
/// (retention, erasure, audit log) and the do-not-call list, on the same
/// database (core's in-memory store and list for `memory:`).
pub async fn open_stores(config: &Config) -> Result<Stores, WiringError> {
    let url = config
        .database_url
        .as_ref()
        .map(|s| s.expose().to_owned())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let url = normalise_database_url(&url);
    if url == "memory:" {
        tracing::warn!("in-memory store: calls are lost on restart");
        let memory = Arc::new(InMemoryCallStore::new());
        return Ok(Stores::new(
            memory.clone(),
            memory,
            Arc::new(InMemoryDoNotCallList::new()),
        ));
    }
    let backend = bonde_pressure_store::Backend::from_url(&url).map_err(WiringError::store)?;
    let options = store_options(config);
    let stores = bonde_pressure_store::connect_stores_with(&url, &options)
        .await
        .map_err(WiringError::store)?;
    tracing::info!(backend = backend.as_str(), "store opened");
    Ok(stores)
}

/// The pool and start-up settings `config` asks for.
fn store_options(config: &Config) -> bonde_pressure_store::StoreOptions {
    bonde_pressure_store::StoreOptions::default()
        .acquire_timeout(config.database_acquire_timeout)
        .max_connections(config.database_max_connections)
        .run_migrations(config.migrate_on_start)
        .notify_commits(config.pg_live_updates)
        .group_commits(config.pg_group_commits)
}

/// The personal-data policy of `config` over `store`.
fn privacy(config: &Config, store: Arc<dyn PersonalDataStore>) -> Arc<Privacy> {
    Arc::new(Privacy::new(
        store,
        Arc::new(SystemClock),
        RetentionConfig::days(config.retention_days).batch(config.retention_batch),
    ))
}

/// [`open_stores`], and the same store's [`CampaignResults`] and
/// [`PersonalDataStore`] (the in-memory store, SQLite and PostgreSQL all
/// implement them).
#[allow(clippy::type_complexity)]
pub async fn open_all_stores(
    config: &Config,
) -> Result<
    (
        Arc<dyn CallStore>,
        Arc<dyn DoNotCallList>,
        Arc<dyn CampaignResults>,
        Arc<dyn PersonalDataStore>,
    ),
    WiringError,
> {
    Ok(open_database(config).await?.stores)
}

type Stores4 = (
    Arc<dyn CallStore>,
    Arc<dyn DoNotCallList>,
    Arc<dyn CampaignResults>,
    Arc<dyn PersonalDataStore>,
);

/// The opened database: [`open_all_stores`]' ports, a probe of the pool's
/// use (none for the in-memory store), and the PostgreSQL store again when
/// the store is on PostgreSQL (for the shared rate limiter and the
/// reconciliation lease).
struct Database {
    stores: Stores4,
    probe: Option<metrics::PoolProbe>,
    postgres: Option<Arc<bonde_pressure_store::PgCallStore>>,
}

async fn open_database(config: &Config) -> Result<Database, WiringError> {
    let url = config
        .database_url
        .as_ref()
        .map(|s| s.expose().to_owned())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let url = normalise_database_url(&url);
    if url == "memory:" {
        tracing::warn!("in-memory store: calls are lost on restart");
        let store = Arc::new(InMemoryCallStore::new());
        return Ok(Database {
            stores: (
                store.clone(),
                Arc::new(InMemoryDoNotCallList::new()),
                store.clone(),
                store,
            ),
            probe: None,
            postgres: None,
        });
    }
    let backend = bonde_pressure_store::Backend::from_url(&url).map_err(WiringError::store)?;
    let options = store_options(config);
    let err = |e: bonde_pressure_store::ConnectError| WiringError::store(e);
    let database = match backend {
        bonde_pressure_store::Backend::Postgres => {
            let s = Arc::new(
                bonde_pressure_store::PgCallStore::connect_with(&url, &options)
                    .await
                    .map_err(err)?,
            );
            let pool = s.pool().clone();
            Database {
                stores: (s.clone(), s.clone(), s.clone(), s.clone()),
                probe: Some(Arc::new(move || {
                    pool_use(
                        pool.size(),
                        pool.num_idle(),
                        pool.options().get_max_connections(),
                    )
                })),
                postgres: Some(s),
            }
        }
        _ => {
            let s = Arc::new(
                bonde_pressure_store::SqliteCallStore::connect_with(&url, &options)
                    .await
                    .map_err(err)?,
            );
            let pool = s.pool().clone();
            Database {
                stores: (s.clone(), s.clone(), s.clone(), s),
                probe: Some(Arc::new(move || {
                    pool_use(
                        pool.size(),
                        pool.num_idle(),
                        pool.options().get_max_connections(),
                    )
                })),
                postgres: None,
            }
        }
    };
    tracing::info!(backend = backend.as_str(), "store opened");
    Ok(database)
}

/// A pool's use from sqlx's figures (open connections, idle ones, maximum).
fn pool_use(size: u32, idle: usize, max: u32) -> metrics::PoolUse {
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    metrics::PoolUse {
        in_use: size - idle,
        idle,
        max,
    }
}

/// The admin token: `ADMIN_TOKEN`; when unset with the simulated telephony
/// (zero config), a random one generated now and logged once, so the demo's
/// dashboard can be opened. A configured token is never logged; with Twilio
/// and no `ADMIN_TOKEN` there is none (admin routes answer 401).
pub fn admin_token(config: &Config, kind: TelephonyKind) -> Option<crate::config::Secret> {
    if let Some(t) = &config.admin_token {
        return Some(t.clone());
    }
    if kind != TelephonyKind::Simulated {
        return None;
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    tracing::warn!(
        admin_token = %token,
        "ADMIN_TOKEN is not set: generated this admin token for the dashboard and the results API (it changes at every start; set ADMIN_TOKEN to choose one)"
    );
    Some(crate::config::Secret::new(token))
}

/// The demo page's widget (the demo widget, id 1) and its targets, when the
/// page is on: `DEMO_PAGE`, by default on with the simulated telephony only.
async fn demo_page(
    config: &Config,
    directory: &Arc<dyn CampaignDirectory>,
    kind: TelephonyKind,
) -> Option<crate::routes::pages::DemoPage> {
    let on = config.demo_page.unwrap_or(kind == TelephonyKind::Simulated);
    if !on {
        return None;
    }
    let id = bonde_pressure_core::WidgetId::new(1).ok()?;
    let targets = match directory.widget(id).await {
        Ok(Some(w)) => w
            .targets
            .into_iter()
            .map(|t| crate::routes::pages::DemoTarget {
                name: t.name,
                phone: t.phone,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => {
            tracing::warn!(%error, "demo page: the demo widget could not be read");
            Vec::new()
        }
    };
    tracing::info!("demo campaign page at /");
    Some(crate::routes::pages::DemoPage {
        widget_id: id.get(),
        targets,
    })
}

/// Accepts SQLAlchemy-style schemes (`postgresql+asyncpg://`, upstream's
/// habit) by dropping the driver suffix.
pub fn normalise_database_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.contains('+') => {
            let base = scheme.split('+').next().unwrap_or(scheme);
            format!("{base}://{rest}")
        }
        _ => url.to_owned(),
    }
}

fn twilio_client(
    config: &Config,
    settings: &crate::config::TwilioSettings,
) -> Result<TwilioClient, WiringError> {
    let err = |e: bonde_pressure_twilio::ConfigError| WiringError::telephony(e);
    let credentials = match (&config.twilio_api_key_sid, &config.twilio_api_key_secret) {
        (Some(sid), Some(secret)) => Credentials::ApiKey {
            sid: sid.trim().to_owned(),
            secret: secret.clone(),
        },
        _ => Credentials::AuthToken(settings.auth_token.clone()),
    };
    let cfg = TwilioConfig::new(
        settings.account_sid.clone(),
        credentials,
        settings.phone_number.clone(),
        &config.public_base_url(),
    )
    .map_err(err)?
    .with_api_base(&config.twilio_api_base)
    .map_err(err)?
    .with_connection_overrides(Some(&config.twilio_callback_overrides))
    .map_err(err)?;
    TwilioClient::new(cfg).map_err(err)
}

/// Wires everything from `config` (no socket is opened).
pub async fn build(config: &Config) -> Result<App, WiringError> {
    config.check()?;
    let metrics = Arc::new(Metrics::new());
    let Database {
        stores: (store, do_not_call, results, personal),
        probe,
        postgres: pool,
    } = open_database(config).await?;
    if let Some(probe) = probe {
        metrics.set_pool_probe(probe);
    }
    let privacy = privacy(config, personal);
    // Every store operation made for a request is bounded by its deadline.
    let store: Arc<dyn CallStore> = Arc::new(DeadlineStore::new(store));
    let do_not_call: Arc<dyn DoNotCallList> = Arc::new(DeadlineDoNotCallList::new(do_not_call));

    let twilio = config.twilio()?;
    let (telephony, simulated, kind): (Arc<dyn Telephony>, _, _) = match twilio {
        Some(settings) => {
            let client = twilio_client(config, &settings)?;
            tracing::info!(api_base = %config.twilio_api_base, "Twilio telephony");
            (
                Arc::new(client) as Arc<dyn Telephony>,
                None,
                TelephonyKind::Twilio,
            )
        }
        None => {
            tracing::info!(
                tick_ms = config.simulated_tick.as_millis() as u64,
                "simulated telephony (no Twilio credentials)"
            );
            let sim = Arc::new(SimulatedTelephony::new(
                ScenarioPicker::ByActivistLastDigit,
                config.simulated_tick,
            ));
            (
                sim.clone() as Arc<dyn Telephony>,
                Some(sim),
                TelephonyKind::Simulated,
            )
        }
    };

    let directory = directory(config)?;
    let demo_page = demo_page(config, &directory, kind).await;
    let deps = Dependencies::new(store, telephony, directory)
        .with_recorder(recorder(config))
        .with_clock(Arc::new(SystemClock));
    let hasher = match &config.do_not_call_hash_key {
        Some(key) => DoNotCallHasher::new(key.expose().as_bytes()),
        None => {
            tracing::warn!(
                "DO_NOT_CALL_HASH_KEY is not set: the do-not-call list uses a public default key, so its hashes can be enumerated"
            );
            DoNotCallHasher::default()
        }
    };
    let mut service = PressureService::new(deps, service_config(config))
        .with_do_not_call(do_not_call, hasher)
        .with_request_limits(request_limits(config));
    if let (Some(pool), true) = (&pool, config.shared_rate_limits) {
        service = service.with_rate_limiter(shared_rate_limiter(pool));
        tracing::info!(
            "rate limits shared through PostgreSQL (per-IP behind an in-process pre-filter)"
        );
    }
    let reconcile_lease = pool
        .clone()
        .filter(|_| !config.reconcile_lease_ttl.is_zero())
        .map(|pool| {
            let lease: Arc<dyn Lease> = Arc::new(bonde_pressure_store::PgLease::new(
                pool.pool().clone(),
                Arc::new(SystemClock),
            ));
            (lease, config.reconcile_lease_ttl)
        });
    // Other replicas' commits (PostgreSQL): heard through LISTEN/NOTIFY.
    let live_listener = match &pool {
        Some(pg) if config.pg_live_updates => Some(Arc::new(
            pg.spawn_live_listener(service.live_updates().clone()),
        )),
        _ => None,
    };
    // The status cache is coherent only if every commit to the store is
    // published here: this process is the only writer (SQLite, memory) or
    // it hears the others.
    let coherent = pool.is_none() || live_listener.is_some();
    if config.status_cache_size > 0 && coherent {
        service = service.with_call_cache(
            bonde_pressure_core::cache::CallCache::new(config.status_cache_size)
                .with_max_age(config.status_cache_max_age),
        );
    }
    if let Some(path) = &config.do_not_call_file {
        let numbers = load_do_not_call_file(path, config.default_region)?;
        let added = service
            .add_to_do_not_call_list(&numbers, DoNotCallSource::File)
            .await
            .map_err(WiringError::store)?;
        tracing::info!(path = %path.display(), numbers = numbers.len(), added, "do-not-call file loaded");
    }
    crate::metrics::count_state_transitions(service.live_updates(), metrics.clone());
    let service = Arc::new(service);
    if let Some(sim) = &simulated {
        let sink: Weak<dyn EventSink> = Arc::downgrade(&service) as Weak<dyn EventSink>;
        sim.connect(sink);
    }

    let options = HttpOptions {
        cors_origins: config.cors_origins.clone(),
        max_body_bytes: config.max_body_bytes,
        trusted_proxy_hops: config.trusted_proxy_hops,
        admin_token: admin_token(config, kind),
        sse_poll_interval: config.sse_poll_interval,
        request_timeout: config.request_timeout,
        request_body_timeout: config.request_body_timeout,
        demo_page,
    };
    let check = match (&config.twilio_auth_token, config.webhook_signature_check) {
        (Some(token), true) => SignatureCheck::Verify(token.clone()),
        (None, true) => SignatureCheck::RejectAll,
        // `Config::check` refuses this with Twilio credentials.
        (_, false) => SignatureCheck::Off,
    };
    let webhooks =
        WebhookAuth::new(&config.public_base_url(), check).map_err(WiringError::telephony)?;
    let state = AppState::new(service.clone())
        .with_options(options)
        .with_metrics(metrics)
        .with_webhooks(webhooks)
        .with_results(results)
        .with_privacy(privacy);
    Ok(App {
        state,
        service,
        telephony: kind,
        simulated,
        server: ServerOptions::from_config(config),
        retention_interval: config.retention_interval,
        reconcile_lease,
        live_listener,
    })
}

/// The rate limiter of a PostgreSQL deployment: a [`LayeredRateLimiter`]
/// with core's in-process limiter in front of a [`PgRateLimiter`] shared by
/// every replica, on `store`'s pool (per-IP limits pre-filtered in-process, the others counted
/// in the database; the in-process one answers while the database fails, or
/// when a check runs past the request's store budget: [`DeadlineRateLimiter`]).
///
/// [`PgRateLimiter`]: bonde_pressure_store::PgRateLimiter
pub fn shared_rate_limiter(store: &bonde_pressure_store::PgCallStore) -> Arc<dyn RateLimiter> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Arc::new(LayeredRateLimiter::new(
        Arc::new(InMemoryRateLimiter::new(clock.clone())),
        Arc::new(DeadlineRateLimiter::new(Arc::new(
            bonde_pressure_store::PgRateLimiter::new(store.pool().clone(), clock),
        ))),
    ))
}

/// Counts a reconciliation pass's findings in `bonde_pressure_reconcile_total`
/// (`what=passes, examined, legs_fetched, expired, legs_hung_up, lost_dials,
/// errors, conferences_fetched, joins_recovered, unreadable_rows,
/// unreadable_calls`). A damaged row counts in `unreadable_rows` every pass
/// it is met, and in `unreadable_calls` once per call.
pub fn record_reconcile(metrics: &Metrics, r: &bonde_pressure_core::ReconcileReport) {
    if r.skipped {
        // Another replica holds the reconciliation lease.
        metrics.inc(metrics::RECONCILE, &[("what", "skipped_passes")]);
        return;
    }
    metrics.inc(metrics::RECONCILE, &[("what", "passes")]);
    if r.lease_lost {
        // The lease could not be renewed: the pass stopped early.
        metrics.inc(metrics::RECONCILE, &[("what", "lease_lost_passes")]);
    }
    // Damaged rows: `unreadable_rows` every pass while damaged; each call once.
    for (what, n) in [
        ("examined", r.examined),
        ("legs_fetched", r.legs_fetched),
        ("expired", r.expired),
        ("legs_hung_up", r.legs_hung_up),
        ("lost_dials", r.lost_dials),
        ("errors", r.errors),
        ("conferences_fetched", r.conferences_fetched),
        ("joins_recovered", r.joins_recovered),
        ("unreadable_rows", r.unreadable),
        ("unreadable_calls", r.unreadable_new.len()),
    ] {
        metrics.add(metrics::RECONCILE, &[("what", what)], n as u64);
    }
}

/// Runs a [`Reconciler`](bonde_pressure_core::Reconciler) over `service`
/// (a pass of at most 200 calls every `interval`; zero: none) until `stop`
/// turns true, counting each pass in the metrics ([`record_reconcile`];
/// a failed pass in `what=failed_passes`).
pub fn spawn_reconciler(
    service: Arc<PressureService>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    spawn_reconciler_under(service, metrics, interval, None, stop)
}

/// [`spawn_reconciler`] under a lease (with its ttl; see
/// [`Reconciler::with_lease`](bonde_pressure_core::Reconciler::with_lease)):
/// passes run only while this replica holds it, skipped ones count in
/// `what=skipped_passes`, passes stopped because the lease could not be
/// renewed in `what=lease_lost_passes`. The holder name is this process's id and a random
/// suffix. The lease is released when `stop` turns true.
pub fn spawn_reconciler_under(
    service: Arc<PressureService>,
    metrics: Arc<Metrics>,
    interval: Duration,
    lease: Option<(Arc<dyn Lease>, Duration)>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        let mut reconciler = bonde_pressure_core::Reconciler::new(service)
            .with_interval(interval)
            .with_batch(200);
        if let Some((lease, ttl)) = lease {
            let holder = format!(
                "pid{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            tracing::info!(%holder, ttl_secs = ttl.as_secs(), "reconciliation runs under a lease");
            reconciler = reconciler.with_lease(lease, holder).with_lease_ttl(ttl);
        }
        let stopped = async move {
            let _ = stop.changed().await;
        };
        reconciler
            .run_with(stopped, |outcome| match outcome {
                Ok(report) => record_reconcile(&metrics, report),
                Err(_) => metrics.inc(metrics::RECONCILE, &[("what", "failed_passes")]),
            })
            .await;
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

/// Serves `app` on `listener` until `shutdown` resolves, with the
/// reconciliation task running; waits up to `grace` for in-flight requests.
///
/// Connections are served over HTTP/1.1 by hyper with a timer, so
/// [`ServerOptions::header_read_timeout`] closes connections that send no
/// (or too slow) headers, idle keep-alive ones included, and at most
/// [`ServerOptions::max_connections`] are served at once.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    reconcile_interval: Duration,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WiringError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconciler = spawn_reconciler_under(
        app.service.clone(),
        app.state.metrics.clone(),
        reconcile_interval,
        app.reconcile_lease.clone(),
        stop_rx.clone(),
    );
    let retention = app.state.privacy.clone().map(|privacy| {
        crate::privacy::spawn_retention(
            privacy,
            app.state.metrics.clone(),
            app.retention_interval,
            stop_rx.clone(),
        )
    });
    let options = app.server;
    let router = crate::router(app.state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = options
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(options.header_read_timeout);

    tokio::pin!(shutdown);
    loop {
        // A free slot first: over the cap, connections wait in the backlog.
        let permit = match &slots {
            Some(slots) => tokio::select! {
                p = slots.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
                _ = &mut shutdown => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: back off a little, keep serving.
                    tracing::warn!(%error, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                let router = router.clone();
                async move {
                    use tower::ServiceExt;
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            },
        );
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Once shutdown starts, give in-flight requests (and SSE streams) `grace`.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
    reconciler.abort();
    if let Some(task) = retention {
        task.abort();
    }
    Ok(())
}

/// Everything the binary does: wire, bind `HOST:PORT`, serve until a signal.
pub async fn run(config: Config) -> Result<(), WiringError> {
    let app = build(&config).await?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        base_url = %config.public_base_url(),
        telephony = ?app.telephony,
        "bonde-pressure listening"
    );
    serve(
        app,
        listener,
        config.reconcile_interval,
        config.shutdown_grace,
        shutdown_signal(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_telephony_errors_keep_their_cause() {
        use std::error::Error as _;
        let e = WiringError::store(std::io::Error::other("connection refused"));
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("connection refused")
        );
        let twilio = bonde_pressure_twilio::ConfigError::EmptySecret;
        let e = WiringError::telephony(twilio.clone());
        let cause = e.source().expect("the cause");
        assert_eq!(
            cause.downcast_ref::<bonde_pressure_twilio::ConfigError>(),
            Some(&twilio)
        );
    }

    #[test]
    fn database_urls_drop_driver_suffixes() {
        assert_eq!(
            normalise_database_url("postgresql+asyncpg://u:p@h/db"),
            "postgresql://u:p@h/db"
        );
        assert_eq!(normalise_database_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(normalise_database_url("memory:"), "memory:");
    }

    #[tokio::test]
    async fn half_configured_services_do_not_start() {
        let config = Config::from_args(["x", "--database-url", "mysql://h/db"]).unwrap();
        let err = build(&config).await.unwrap_err();
        assert!(err.to_string().contains("mysql"), "{err}");
        let config = Config::from_args([
            "x",
            "--database-url",
            "memory:",
            "--twilio-account-sid",
            "not-a-sid",
            "--twilio-auth-token",
            "t",
            "--twilio-phone-number",
            "+5511987650000",
            "--base-url",
            "https://pressure.example.org",
        ])
        .unwrap();
        assert!(matches!(
            build(&config).await,
            Err(WiringError::Telephony(_))
        ));
    }
}
