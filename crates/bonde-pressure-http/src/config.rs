//! Configuration from the environment (and a `.env` file), with upstream's
//! variable names. See `docs/configuration.md` for every variable.

use std::str::FromStr;
use std::time::Duration;

use bonde_pressure_core::{NumberType, PhoneNumber, Region};
use clap::Parser;

/// The workspace's secret type (core's [`bonde_pressure_core::Secret`]):
/// never printed by `Debug` or `Display`; parsed trimmed and non-empty.
pub use bonde_pressure_core::Secret;

/// A rate: at most `count` requests per `per` (a token bucket of `count`
/// tokens refilled over `per`). Written `10/min`, `5/h`, `2/s`, `30/10m`;
/// `off` (or `0`) disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (the burst).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// `count` per `per`.
    pub fn new(count: u32, per: Duration) -> Self {
        Self { count, per }
    }
}

/// A rate setting: a [`Rate`] or disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

impl FromStr for RateSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s == "off" || s == "0" || s == "none" {
            return Ok(Self(None));
        }
        let err =
            || format!("expected a rate such as `10/min`, `5/h`, `30/10m` or `off`, got {s:?}");
        let (count, period) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (n, unit) = period.split_at(split);
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| err())?
        };
        let unit_secs = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(err()),
        };
        if count == 0 {
            return Ok(Self(None));
        }
        if n == 0 {
            return Err(err());
        }
        Ok(Self(Some(Rate::new(
            count,
            Duration::from_secs(n * unit_secs),
        ))))
    }
}

/// Country calling codes activists may be called in: `55`, `55,351`, or `*` (any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCodes(pub Vec<u16>);

impl FromStr for CountryCodes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "*" || s.eq_ignore_ascii_case("any") {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|c| {
                let c = c.trim().trim_start_matches('+');
                c.parse::<u16>()
                    .ok()
                    .filter(|n| (1..=999).contains(n))
                    .ok_or_else(|| {
                        format!("expected country calling codes such as `55,351` or `*`, got {c:?}")
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Allowed CORS origins: `*` (any) or a comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin.
    Any,
    /// These origins (`https://www.bonde.org`).
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "*" {
            return Ok(Self::Any);
        }
        let list: Vec<String> = s
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        for o in &list {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.contains(' ') {
                return Err(format!(
                    "CORS origins must look like https://example.org, got {o:?}"
                ));
            }
        }
        Ok(Self::List(list))
    }
}

/// Number types that may be called: `mobile,fixed_line,fixed_line_or_mobile`
/// (see [`NumberType`] for the names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberTypes(pub Vec<NumberType>);

impl FromStr for NumberTypes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let types = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<NumberType>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if types.is_empty() {
            return Err("expected at least one number type, e.g. `mobile,fixed_line`".into());
        }
        Ok(Self(types))
    }
}

/// A phone key (`0`-`9`, `*`) or `off` (`#` is not one: it ends a gather's input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySetting(pub Option<char>);

impl FromStr for KeySetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            // Not `#`: it ends a gather's input at the provider (Twilio's finishOnKey).
            (Some(c), None) if c.is_ascii_digit() || c == '*' => Ok(Self(Some(c))),
            _ => Err(format!(
                "expected one phone key (0-9 or *) or `off`, got {s:?}"
            )),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(format!(
            "BASE_URL must be the public http(s) URL of this service, got {s:?}"
        ));
    }
    if s.contains('?') || s.contains('#') || s.contains(' ') {
        return Err("BASE_URL must have no query, fragment or spaces".into());
    }
    Ok(s.to_owned())
}

fn parse_phone(s: &str) -> Result<PhoneNumber, String> {
    PhoneNumber::parse_e164(s).map_err(|e| format!("{e}"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected a number of milliseconds, got {s:?}"))
}

/// Every setting of the server, from command-line flags or environment
/// variables (a flag wins). Read with [`Config::from_env`] (which loads `.env`
/// first and parses the process's arguments and environment), or
/// [`Config::from_args`] / [`Config::from_args_and_env`] (explicit
/// arguments and variables only: tests and embedders).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bonde-pressure",
    version,
    about = "Phone pressure campaigns: calls an activist, then connects them to a target.",
    args_override_self = true
)]
pub struct Config {
    /// Public URL of this service, as Twilio reaches it (webhook URLs and
    /// signature checks are built from it). Required with Twilio credentials;
    /// with the simulated telephony it defaults to http://localhost:PORT.
    #[arg(long, env = "BASE_URL", value_parser = parse_base_url)]
    pub base_url: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Database: `sqlite://path.db` or `postgres://…`. Default: a SQLite
    /// file `bonde-pressure.db` in the working directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<Secret>,

    /// Twilio account SID (`AC…`). With the token and number: real calls.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token (also checks webhook signatures).
    #[arg(long, env = "TWILIO_AUTH_TOKEN")]
    pub twilio_auth_token: Option<Secret>,

    /// Optional API key SID (`SK…`) for REST requests instead of the auth
    /// token (webhook signatures still use TWILIO_AUTH_TOKEN).
    #[arg(long, env = "TWILIO_API_KEY_SID")]
    pub twilio_api_key_sid: Option<String>,

    /// The API key's secret.
    #[arg(long, env = "TWILIO_API_KEY_SECRET")]
    pub twilio_api_key_secret: Option<Secret>,

    /// The Twilio number calls are placed from (E.164).
    #[arg(long, env = "TWILIO_PHONE_NUMBER", value_parser = parse_phone)]
    pub twilio_phone_number: Option<PhoneNumber>,

    /// Twilio's REST API base URL (tests point it at a local fake).
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_base: String,

    /// Twilio connection overrides appended (as `#…`) to every
    /// asynchronous callback URL, so Twilio retries a failed callback;
    /// empty: none (Twilio's defaults, one attempt).
    #[arg(
        long,
        env = "TWILIO_CALLBACK_OVERRIDES",
        default_value = bonde_pressure_twilio::urls::DEFAULT_CONNECTION_OVERRIDES
    )]
    pub twilio_callback_overrides: String,

    /// BONDE GraphQL (Hasura) endpoint: widgets and widget actions. Without
    /// it, campaigns come from CAMPAIGNS_FILE (or the built-in demo widget).
    #[arg(long, env = "GRAPHQL_API_URL")]
    pub graphql_api_url: Option<String>,

    /// Hasura admin secret, sent as `x-hasura-admin-secret`.
    #[arg(long, env = "GRAPHQL_API_TOKEN")]
    pub graphql_api_token: Option<Secret>,

    /// A JSON campaigns file (`{"widgets": [...]}`), used when GRAPHQL_API_URL is unset.
    #[arg(long, env = "CAMPAIGNS_FILE")]
    pub campaigns_file: Option<std::path::PathBuf>,

    /// Log filter: `info`, `debug`, `bonde_pressure_http=debug,info`...
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        ignore_case = true
    )]
    pub log_format: LogFormat,

    /// Allowed CORS origins (`*` or a comma-separated list).
    #[arg(long, env = "CORS_ORIGINS", default_value = "*")]
    pub cors_origins: CorsOrigins,

    /// `POST /v1/phone/call` limit per client IP.
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value = "20/min")]
    pub rate_limit_per_ip: RateSetting,

    /// `POST /v1/phone/call` limit per activist number.
    #[arg(long, env = "RATE_LIMIT_PER_ACTIVIST", default_value = "5/10m")]
    pub rate_limit_per_activist: RateSetting,

    /// How often one target may be dialled (a sliding window): `POST
    /// /v1/phone/call` only checks it; a token is taken when the target is
    /// actually dialled, after the activist confirmed.
    #[arg(long, env = "RATE_LIMIT_PER_TARGET", default_value = "60/h")]
    pub rate_limit_per_target: RateSetting,

    /// How many times one activist number may be called per 24 hours,
    /// whoever asks (0: no cap).
    #[arg(long, env = "ACTIVIST_CALLS_PER_DAY", default_value_t = 10)]
    pub activist_calls_per_day: u32,

    /// Number types that may be called (comma-separated: `mobile`,
    /// `fixed_line`, `fixed_line_or_mobile`, `toll_free`, `premium_rate`,
    /// `shared_cost`, `personal`, `voip`, `pager`, `uan`, `voicemail`, `unknown`).
    #[arg(
        long,
        env = "ALLOWED_NUMBER_TYPES",
        default_value = "mobile,fixed_line,fixed_line_or_mobile"
    )]
    pub allowed_number_types: NumberTypes,

    /// The key that, pressed during the greeting, puts the activist's number
    /// on the do-not-call list (`off` to disable).
    #[arg(long, env = "DO_NOT_CALL_KEY_PRESS", default_value = "9")]
    pub do_not_call_key_press: KeySetting,

    /// Secret key of the do-not-call list's hashes (HMAC-SHA256). Without
    /// it a public default key is used and the list is enumerable.
    #[arg(long, env = "DO_NOT_CALL_HASH_KEY")]
    pub do_not_call_hash_key: Option<Secret>,

    /// A file of numbers to put on the do-not-call list at start-up (one per
    /// line, E.164 or national; `#` starts a comment).
    #[arg(long, env = "DO_NOT_CALL_FILE")]
    pub do_not_call_file: Option<std::path::PathBuf>,

    /// Reverse proxies in front of the service whose `X-Forwarded-For` entry
    /// is trusted (0: use the peer address, ignore the header).
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,

    /// Country calling codes activists may be called in (`55`, `55,351`, `*`).
    #[arg(long, env = "ALLOWED_COUNTRY_CODES", default_value = "55")]
    pub allowed_country_codes: CountryCodes,

    /// Region for numbers typed without a country code (ISO 3166 alpha-2).
    #[arg(long, env = "DEFAULT_REGION", default_value = "BR")]
    pub default_region: Region,

    /// Bearer token that unmasks phone numbers in `GET /v1/phone/calls/{id}`.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<Secret>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds between reconciliation passes (0: none).
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value = "30", value_parser = parse_secs)]
    pub reconcile_interval: Duration,

    /// With PostgreSQL: seconds a replica holds the reconciliation lease
    /// (only the holder runs passes); 0: no lease, every replica reconciles.
    #[arg(long, env = "RECONCILE_LEASE_TTL_SECS", default_value = "300", value_parser = parse_secs)]
    pub reconcile_lease_ttl: Duration,

    /// With PostgreSQL: count the per-activist, per-target and per-IP limits
    /// in the database, shared by every replica (per-IP behind an
    /// in-process pre-filter). `false`: each replica counts on its own.
    #[arg(long, env = "SHARED_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub shared_rate_limits: bool,

    /// Unfinished calls with no news for this many seconds are reconciled.
    #[arg(long, env = "STALE_AFTER_SECS", default_value = "120", value_parser = parse_secs)]
    pub stale_after: Duration,

    /// Unfinished calls this many seconds old are declared failed.
    #[arg(long, env = "EXPIRE_AFTER_SECS", default_value = "7200", value_parser = parse_secs)]
    pub expire_after: Duration,

    /// Milliseconds the page keeps showing `ringing` after the target joined
    /// while its answering-machine verdict is pending.
    #[arg(long, env = "MACHINE_VERDICT_GRACE_MS", default_value = "4000", value_parser = parse_millis)]
    pub machine_verdict_grace: Duration,

    /// Days personal data is kept: older calls are erased (name, e-mail,
    /// number) and older raw payloads deleted by the retention pass.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: u32,

    /// Seconds between retention passes (0: this replica runs none).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value = "3600", value_parser = parse_secs)]
    pub retention_interval: Duration,

    /// Calls erased and raw payloads deleted per retention batch, each at most.
    #[arg(long, env = "RETENTION_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub retention_batch: u32,

    /// Simulated telephony: milliseconds per scripted step.
    #[arg(long, env = "SIMULATED_TICK_MS", default_value = "800", value_parser = parse_millis)]
    pub simulated_tick: Duration,

    /// Check `X-Twilio-Signature` on webhooks. May be turned off only with the
    /// simulated telephony (no Twilio credentials).
    #[arg(long, env = "WEBHOOK_SIGNATURE_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_signature_check: bool,

    /// SSE subscribers re-read the store this often, in milliseconds (they also
    /// wake at once on this process's own commits).
    #[arg(long, env = "SSE_POLL_MS", default_value = "2000", value_parser = parse_millis)]
    pub sse_poll_interval: Duration,

    /// Serve the demo campaign page at `/` (default: on with the simulated
    /// telephony, off with Twilio).
    #[arg(long, env = "DEMO_PAGE", action = clap::ArgAction::Set)]
    pub demo_page: Option<bool>,

    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value = "20", value_parser = parse_secs)]
    pub shutdown_grace: Duration,

    /// Milliseconds a client has to send a request's headers, from the
    /// moment the server waits for them: on a new connection and between
    /// requests on a kept-alive one, so an idle keep-alive connection is
    /// closed after this long too (0: no limit).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub header_read_timeout: Duration,

    /// Milliseconds a client has to send a whole request body, however it
    /// trickles in (408 after that; 0: no limit).
    #[arg(long, env = "REQUEST_BODY_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub request_body_timeout: Duration,

    /// Most connections served at once; more wait in the listen backlog
    /// until one closes (0: no limit). Keep it below the open-file limit.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Per-request deadline on the store, in milliseconds: what one request
    /// may spend waiting for the database, a query hung on a connection
    /// included (503 with Retry-After, or fallback TwiML, after that).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub request_timeout: Duration,

    /// Milliseconds to wait for a pooled database connection (SQLite and
    /// PostgreSQL).
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value = "2000", value_parser = parse_millis)]
    pub database_acquire_timeout: Duration,

    /// Pooled database connections per process (PostgreSQL; at least 1).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "10", value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// Apply pending migrations at start-up (`false`: they are run
    /// beforehand, e.g. by `bonde-pressure-store migrate` in a deployment
    /// job, and a database lacking some of them is refused at start).
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
    /// PostgreSQL: commits send a `NOTIFY` and one extra connection
    /// `LISTEN`s, so SSE subscribers and the status cache follow other
    /// replicas' commits at once. Turn off behind a transaction-pooling
    /// pgbouncer (no `LISTEN` there): the status cache is then off too.
    #[arg(long, env = "PG_LIVE_UPDATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub pg_live_updates: bool,
    /// PostgreSQL: commits of different calls that arrive while earlier
    /// ones are in flight share one statement (each keeps its own version
    /// check and outcome). Off: one statement per commit.
    #[arg(long, env = "PG_GROUP_COMMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pg_group_commits: bool,

    /// Calls kept in memory for `GET /v1/phone/status/{id}` (0: no cache).
    /// Kept coherent by the commits this process makes and, on PostgreSQL,
    /// by the ones it hears (`PG_LIVE_UPDATES`).
    #[arg(long, env = "STATUS_CACHE_SIZE", default_value = "100000")]
    pub status_cache_size: usize,

    /// Milliseconds a call stays in the status cache at most (bounds how
    /// long a lost cross-replica notification can leave a status stale).
    #[arg(long, env = "STATUS_CACHE_MAX_AGE_MS", default_value = "10000", value_parser = parse_millis)]
    pub status_cache_max_age: Duration,
}

/// A configuration that cannot work (or a command line asking for help).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line or a variable is missing or malformed (clap's
    /// message names it), or `--help` / `--version` was asked for: print it
    /// with [`clap::Error::print`] and exit with [`clap::Error::exit_code`]
    /// (0 for help and version).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// Some Twilio variables are set but not all.
    #[error(
        "Twilio is half configured: set all of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER (missing: {0}), or none for the simulated telephony"
    )]
    PartialTwilio(String),
    /// Twilio credentials without `BASE_URL`: Twilio could not reach the
    /// webhooks and every signature check would fail.
    #[error(
        "BASE_URL is required with Twilio credentials: set it to this service's public URL as Twilio reaches it (e.g. https://pressure.example.org); webhook URLs and signature checks are built from it"
    )]
    MissingBaseUrl,
    /// Signature checks can be turned off only with the simulated telephony.
    #[error(
        "WEBHOOK_SIGNATURE_CHECK=false is allowed only with the simulated telephony (no Twilio credentials)"
    )]
    SignatureCheckOff,
    /// Only one of the API key SID and secret.
    #[error("set both TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET, or neither")]
    PartialApiKey,
    /// GraphQL URL without its token.
    #[error("GRAPHQL_API_URL is set but GRAPHQL_API_TOKEN is not")]
    GraphqlToken,
}

impl ConfigError {
    /// Whether this is `--help` or `--version` output rather than an error.
    pub fn is_help(&self) -> bool {
        matches!(self, ConfigError::Cli(e) if e.exit_code() == 0)
    }
}

/// The Twilio settings, when all three are configured.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// Account SID.
    pub account_sid: String,
    /// Auth token.
    pub auth_token: Secret,
    /// Our number.
    pub phone_number: PhoneNumber,
}

impl Config {
    /// Loads `.env` (if any, without overriding the environment), then
    /// parses the process's command line and the environment (a flag wins
    /// over its variable) and checks the result. `--help` and `--version`
    /// come back as a [`ConfigError::Cli`] to print (see [`ConfigError::is_help`]).
    ///
    /// The only constructor that reads the process environment: the
    /// binary's. `--help` names each variable but never shows its value.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        let matches = Self::documented_command().try_get_matches_from(std::env::args_os())?;
        let config = <Self as clap::FromArgMatches>::from_arg_matches(&matches)?;
        config.check()?;
        Ok(config)
    }

    /// Parses these arguments (the first is the program name), and nothing
    /// else: **no environment variable is read**, so tests and embedders
    /// get the same settings whatever the shell exports (an exported
    /// `TWILIO_*` or `GRAPHQL_API_URL` cannot switch them to live
    /// services). Then checks the result. See [`Config::from_args_and_env`]
    /// to give variables explicitly.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_args_and_env(args, std::iter::empty::<(&str, &str)>())
    }

    /// Parses these arguments (the first is the program name) and the
    /// variables of `env`, read as [`Config::from_env`] reads the process
    /// environment (a flag wins over its variable), then checks the
    /// result. The process environment itself is never read.
    pub fn from_args_and_env<I, T, E, K, V>(args: I, env: E) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
        E: IntoIterator<Item = (K, V)>,
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        use std::ffi::OsString;
        let env: std::collections::HashMap<OsString, OsString> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let command = Self::documented_command();
        // Each given variable becomes its flag, placed before the arguments:
        // a flag in `args` comes later and wins (`args_override_self`).
        let from_env: Vec<OsString> = command
            .get_arguments()
            .filter_map(|arg| {
                let value = env.get(arg.get_env()?)?;
                let mut flag = OsString::from(format!("--{}=", arg.get_long()?));
                flag.push(value);
                Some(flag)
            })
            .collect();
        let mut args = args.into_iter().map(Into::into);
        let program = args.next().unwrap_or_else(|| "bonde-pressure".into());
        let argv: Vec<OsString> = std::iter::once(program)
            .chain(from_env)
            .chain(args)
            .collect();
        // Without their `env`, the arguments never look at the process
        // environment (clap reads it when the command is built and parsed).
        let pinned = command.mut_args(|arg| arg.env(None::<&'static str>));
        let matches = match pinned.try_get_matches_from(&argv) {
            Ok(matches) => matches,
            Err(e) if e.exit_code() == 0 => {
                // `--help` / `--version`: rendered by the documented command,
                // which names each argument's variable.
                let e = Self::documented_command()
                    .try_get_matches_from(&argv)
                    .err()
                    .unwrap_or(e);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let config = <Self as clap::FromArgMatches>::from_arg_matches(&matches)?;
        config.check()?;
        Ok(config)
    }

    /// The command, with every argument's variable named in `--help` but
    /// its value (maybe a secret) never shown.
    fn documented_command() -> clap::Command {
        <Self as clap::CommandFactory>::command().mut_args(|arg| arg.hide_env_values(true))
    }

    /// Checks cross-variable rules.
    pub fn check(&self) -> Result<(), ConfigError> {
        let twilio = self.twilio()?;
        if twilio.is_some() && self.base_url.is_none() {
            return Err(ConfigError::MissingBaseUrl);
        }
        if twilio.is_some() && !self.webhook_signature_check {
            return Err(ConfigError::SignatureCheckOff);
        }
        if self.twilio_api_key_sid.is_some() != self.twilio_api_key_secret.is_some() {
            return Err(ConfigError::PartialApiKey);
        }
        if self.graphql_api_url.is_some() && self.graphql_api_token.is_none() {
            return Err(ConfigError::GraphqlToken);
        }
        Ok(())
    }

    /// The Twilio settings: `Some` when all are set, `None` when none is, an
    /// error when only some are.
    pub fn twilio(&self) -> Result<Option<TwilioSettings>, ConfigError> {
        match (
            &self.twilio_account_sid,
            &self.twilio_auth_token,
            &self.twilio_phone_number,
        ) {
            (Some(sid), Some(token), Some(number)) => Ok(Some(TwilioSettings {
                account_sid: sid.trim().to_owned(),
                auth_token: token.clone(),
                phone_number: number.clone(),
            })),
            (None, None, None) => Ok(None),
            (sid, token, number) => {
                let missing: Vec<&str> = [
                    (sid.is_none(), "TWILIO_ACCOUNT_SID"),
                    (token.is_none(), "TWILIO_AUTH_TOKEN"),
                    (number.is_none(), "TWILIO_PHONE_NUMBER"),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                Err(ConfigError::PartialTwilio(missing.join(", ")))
            }
        }
    }

    /// The public base URL, without a trailing slash.
    pub fn public_base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}", self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r: RateSetting = "10/min".parse().unwrap();
        assert_eq!(r.0, Some(Rate::new(10, Duration::from_secs(60))));
        let r: RateSetting = "5/10m".parse().unwrap();
        assert_eq!(r.0, Some(Rate::new(5, Duration::from_secs(600))));
        let r: RateSetting = "2/s".parse().unwrap();
        assert_eq!(r.0, Some(Rate::new(2, Duration::from_secs(1))));
        assert_eq!("off".parse::<RateSetting>().unwrap().0, None);
        assert_eq!("0".parse::<RateSetting>().unwrap().0, None);
        for bad in ["10", "x/min", "10/fortnight", "10/0m", "/min"] {
            assert!(bad.parse::<RateSetting>().is_err(), "{bad}");
        }
    }

    #[test]
    fn issue_8_settings_parse() {
        assert_eq!(
            "mobile, fixed-line".parse::<NumberTypes>().unwrap().0,
            vec![NumberType::Mobile, NumberType::FixedLine]
        );
        assert!("mobile,landline".parse::<NumberTypes>().is_err());
        assert!("".parse::<NumberTypes>().is_err());
        assert_eq!("9".parse::<KeySetting>().unwrap().0, Some('9'));
        assert_eq!("*".parse::<KeySetting>().unwrap().0, Some('*'));
        assert_eq!("OFF".parse::<KeySetting>().unwrap().0, None);
        for bad in ["#", "99", "a", ""] {
            assert!(bad.parse::<KeySetting>().is_err(), "{bad}");
        }
        let c = Config::from_args(["bonde-pressure"]).unwrap();
        assert_eq!(c.activist_calls_per_day, 10);
        assert_eq!(
            c.rate_limit_per_target.0,
            Some(Rate::new(60, Duration::from_secs(3600)))
        );
        assert_eq!(c.do_not_call_key_press.0, Some('9'));
        assert_eq!(
            c.allowed_number_types.0,
            NumberType::DEFAULT_ALLOWED.to_vec()
        );
    }

    #[test]
    fn country_codes_and_origins_parse() {
        assert_eq!("55".parse::<CountryCodes>().unwrap().0, vec![55]);
        assert_eq!("+55, 351".parse::<CountryCodes>().unwrap().0, vec![55, 351]);
        assert!("*".parse::<CountryCodes>().unwrap().0.is_empty());
        assert!("br".parse::<CountryCodes>().is_err());
        assert_eq!("*".parse::<CorsOrigins>().unwrap(), CorsOrigins::Any);
        assert_eq!(
            "https://a.org/, http://b.org"
                .parse::<CorsOrigins>()
                .unwrap(),
            CorsOrigins::List(vec!["https://a.org".into(), "http://b.org".into()])
        );
        assert!("a.org".parse::<CorsOrigins>().is_err());
    }

    #[test]
    fn defaults_and_cross_checks() {
        let c = Config::from_args(["x"]).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.public_base_url(), "http://localhost:8000");
        assert!(c.twilio().unwrap().is_none());
        assert_eq!(c.allowed_country_codes.0, vec![55]);

        let err = Config::from_args(["x", "--twilio-account-sid", "AC123"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("TWILIO_AUTH_TOKEN") && msg.contains("TWILIO_PHONE_NUMBER"),
            "{msg}"
        );

        let err = Config::from_args([
            "x",
            "--twilio-account-sid",
            "AC123",
            "--twilio-auth-token",
            "tok",
            "--twilio-phone-number",
            "+5511912345678",
            "--base-url",
            "https://pressure.example.org",
            "--webhook-signature-check",
            "false",
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::SignatureCheckOff));

        let err = Config::from_args(["x", "--port", "eighty"]).unwrap_err();
        assert!(err.to_string().contains("PORT") || err.to_string().contains("port"));

        let err = Config::from_args(["x", "--base-url", "localhost:8000"]).unwrap_err();
        assert!(err.to_string().contains("BASE_URL"), "{err}");
    }

    #[test]
    fn timeouts_deadlines_and_caps_have_the_documented_defaults() {
        let c = Config::from_args(["x"]).unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.request_body_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 512);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.database_acquire_timeout, Duration::from_secs(2));
        assert_eq!(c.database_max_connections, 10);
        assert!(c.migrate_on_start);
        assert!(c.pg_live_updates);
        assert!(c.pg_group_commits);
        assert_eq!(c.status_cache_size, 100_000);
        assert_eq!(c.status_cache_max_age, Duration::from_secs(10));
        assert_eq!(c.max_body_bytes, 64 * 1024);
        let c = Config::from_args([
            "x",
            "--header-read-timeout",
            "250",
            "--request-body-timeout",
            "0",
            "--max-connections",
            "7",
            "--request-timeout",
            "1500",
            "--database-acquire-timeout",
            "100",
            "--database-max-connections",
            "3",
            "--migrate-on-start",
            "false",
        ])
        .unwrap();
        assert_eq!(c.database_max_connections, 3);
        assert!(!c.migrate_on_start);
        let err = Config::from_args(["x", "--database-max-connections", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("DATABASE_MAX_CONNECTIONS")
                || err.to_string().contains("database-max-connections"),
            "{err}"
        );
        assert_eq!(c.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.request_body_timeout, Duration::ZERO);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.database_acquire_timeout, Duration::from_millis(100));
        let err = Config::from_args(["x", "--request-timeout", "5s"]).unwrap_err();
        assert!(err.to_string().contains("milliseconds"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::from_args([
            "x",
            "--twilio-auth-token",
            "supersecret",
            "--twilio-account-sid",
            "AC1",
            "--twilio-phone-number",
            "+5511912345678",
            "--base-url",
            "https://pressure.example.org",
            "--admin-token",
            "admintok",
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("supersecret") && !dbg.contains("admintok"),
            "{dbg}"
        );
        assert!(!dbg.contains("912345678"), "phone masked: {dbg}");
    }

    #[test]
    fn twilio_needs_a_base_url() {
        let twilio = [
            "x",
            "--twilio-account-sid",
            "AC123",
            "--twilio-auth-token",
            "tok",
            "--twilio-phone-number",
            "+5511912345678",
        ];
        let err = Config::from_args(twilio).unwrap_err();
        assert!(matches!(err, ConfigError::MissingBaseUrl), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("BASE_URL") && msg.contains("Twilio"), "{msg}");

        let mut with_url = twilio.to_vec();
        with_url.extend(["--base-url", "https://pressure.example.org/"]);
        let c = Config::from_args(with_url).unwrap();
        assert_eq!(c.public_base_url(), "https://pressure.example.org");
        assert!(c.twilio().unwrap().is_some());

        // the simulated telephony still defaults to localhost
        let c = Config::from_args(["x", "--port", "9001"]).unwrap();
        assert_eq!(c.public_base_url(), "http://localhost:9001");
    }

    #[test]
    fn command_line_flags_are_parsed_and_help_is_not_an_error() {
        let c = Config::from_args([
            "bonde-pressure",
            "--port",
            "9123",
            "--host",
            "127.0.0.1",
            "--rate-limit-per-ip",
            "off",
            "--cors-origins",
            "https://www.bonde.org",
        ])
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 9123));
        assert_eq!(c.rate_limit_per_ip.0, None);
        assert_eq!(
            c.cors_origins,
            CorsOrigins::List(vec!["https://www.bonde.org".into()])
        );

        let err = Config::from_args(["bonde-pressure", "--help"]).unwrap_err();
        assert!(err.is_help(), "{err:?}");
        let ConfigError::Cli(e) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(e.exit_code(), 0);
        let help = e.render().to_string();
        assert!(
            help.contains("--base-url") && help.contains("BASE_URL") && help.contains("--port"),
            "{help}"
        );
        let err = Config::from_args(["bonde-pressure", "--version"]).unwrap_err();
        assert!(err.is_help(), "{err:?}");

        let err = Config::from_args(["bonde-pressure", "--no-such-flag"]).unwrap_err();
        assert!(!err.is_help());
        assert!(matches!(&err, ConfigError::Cli(e) if e.exit_code() == 2));
        assert!(err.to_string().contains("--no-such-flag"), "{err}");
    }

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    /// Live settings given as variables: what an exported shell would set.
    fn live_variables() -> Vec<(&'static str, &'static str)> {
        vec![
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_AUTH_TOKEN", "live-token"),
            ("TWILIO_PHONE_NUMBER", "+5511987650000"),
            ("BASE_URL", "https://env.example.org"),
            ("GRAPHQL_API_URL", "https://graphql.example.org/v1/graphql"),
            ("GRAPHQL_API_TOKEN", "live-graphql-token"),
            ("PORT", "9001"),
        ]
    }

    #[test]
    fn explicit_variables_are_read_as_the_environment_and_flags_win() {
        let c = Config::from_args_and_env(
            ["x", "--base-url", "https://flag.example.org"],
            live_variables(),
        )
        .unwrap();
        let twilio = c.twilio().unwrap().expect("Twilio from the variables");
        assert_eq!(twilio.account_sid, AC);
        assert_eq!(twilio.auth_token.expose(), "live-token");
        assert_eq!(c.base_url.as_deref(), Some("https://flag.example.org"));
        assert_eq!(
            c.graphql_api_url.as_deref(),
            Some("https://graphql.example.org/v1/graphql")
        );
        assert_eq!(c.port, 9001);
        // A variable the parser refuses is reported like a flag.
        let err = Config::from_args_and_env(["x"], [("PORT", "eighty")]).unwrap_err();
        assert!(err.to_string().contains("eighty"), "{err}");
        // Unknown variables are ignored, as in the environment.
        assert!(Config::from_args_and_env(["x"], [("NOT_OURS", "1")]).is_ok());
    }

    #[test]
    fn arguments_alone_read_no_variable() {
        let c = Config::from_args(["x"]).unwrap();
        assert!(c.twilio().unwrap().is_none());
        assert_eq!(c.graphql_api_url, None);
        assert_eq!(c.base_url, None);
        assert_eq!(c.port, 8000);
    }

    #[test]
    fn help_names_the_variables_without_their_values() {
        let err = Config::from_args_and_env(["x", "--help"], live_variables()).unwrap_err();
        let ConfigError::Cli(e) = &err else {
            panic!("{err:?}")
        };
        let help = e.render().to_string();
        assert!(help.contains("[env: TWILIO_AUTH_TOKEN]"), "{help}");
        assert!(!help.contains("live-token"), "{help}");
    }
}
