//! # bonde-pressure-store
//!
//! [`CallStore`] adapters for bonde-pressure:
//!
//! - [`PgCallStore`]: PostgreSQL, for production (stateless replicas share it);
//! - [`SqliteCallStore`]: SQLite, the embedded default (one process, one file);
//! - [`PgRateLimiter`] and [`PgLease`]: core's `RateLimiter` and `Lease` on
//!   PostgreSQL, shared by replicas (SQLite deployments keep core's
//!   in-process ones).
//!
//! Both keep every guarantee of core's [`CallStore`]: a commit is one
//! transaction that updates `phone_calls` only if the stored version is still
//! the caller's (`WHERE id = $1 AND version = $2`), upserts the legs into
//! `twilio_calls` and appends the raw payloads to `twilio_call_events`.
//! Migrations (one folder per backend, embedded with `sqlx::migrate!`) run on
//! connect and through the `bonde-pressure-store migrate` command.
//!
//! [`connect_any`] picks the backend from the URL scheme:
//!
//! ```no_run
//! # async fn demo() -> Result<(), bonde_pressure_store::ConnectError> {
//! let store = bonde_pressure_store::connect_any("sqlite://calls.db").await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! With the `test-util` feature, `conformance` is the shared suite every
//! [`CallStore`] implementation (in-memory, SQLite, PostgreSQL) must pass,
//! and `personal_conformance` the one for core's `PersonalDataStore`
//! (retention, erasure, audit log).
//!
//! See `docs/storage.md` for the schema, the indexes and measurements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::do_not_call::DoNotCallList;
use bonde_pressure_core::ports::{CallStore, StoreError, StoredEvent};
use bonde_pressure_core::{InMemoryCallStore, PersonalDataStore};

mod codec;
#[cfg(feature = "test-util")]
pub mod conformance;
mod do_not_call;
#[cfg(feature = "test-util")]
pub mod do_not_call_conformance;
mod group_commit;
mod lease;
mod limiter;
#[cfg(feature = "test-util")]
pub mod limiter_conformance;
mod live;
mod personal;
#[cfg(feature = "test-util")]
pub mod personal_conformance;
mod postgres;
mod results;
#[cfg(feature = "test-util")]
pub mod results_conformance;
mod sqlite;

pub use lease::PgLease;
pub use limiter::PgRateLimiter;
pub use live::{LIVE_CHANNEL, LiveListener};
pub use personal::RETENTION_LOCK_KEY;
pub use postgres::PgCallStore;
pub use sqlite::SqliteCallStore;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:` (`sqlite:path`, `sqlite://path`, `sqlite::memory:`).
    Sqlite,
}

impl Backend {
    /// The backend of `url`, by its scheme.
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(ConnectError::UnsupportedScheme { scheme }),
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Why a store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL's scheme names no supported database.
    #[error("unsupported database URL scheme {scheme:?} (expected postgres:// or sqlite:)")]
    UnsupportedScheme {
        /// The scheme found (empty when there is none).
        scheme: String,
    },
    /// The URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database could not be reached or opened.
    #[error("cannot connect to the database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Migrations are off ([`StoreOptions::run_migrations`]) and the
    /// database lacks some of this build's: run `bonde-pressure-store
    /// migrate` first.
    #[error(
        "the database schema is behind this build: {} migration(s) not applied (first: {}); run `bonde-pressure-store migrate`",
        pending.len(),
        pending.first().copied().unwrap_or_default()
    )]
    SchemaBehind {
        /// The versions not applied yet, oldest first.
        pending: Vec<i64>,
    },
}

impl ConnectError {
    pub(crate) fn invalid_url(e: sqlx::Error) -> Self {
        ConnectError::InvalidUrl(Box::new(e))
    }

    pub(crate) fn database(e: sqlx::Error) -> Self {
        ConnectError::Database(Box::new(e))
    }
}

/// Pool and start-up settings of a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Maximum pooled connections (SQLite in-memory databases always use one).
    pub max_connections: u32,
    /// How long to wait for a pooled connection (default 2 s: while the
    /// database is unreachable, requests fail fast instead of queueing).
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the write lock held by another
    /// connection (another process; writers of one store queue in-process
    /// first, see [`SqliteCallStore`]).
    pub busy_timeout: Duration,
    /// SQLite: when a commit reaches the disk (file databases only).
    pub sqlite_durability: SqliteDurability,
    /// Run pending migrations when connecting.
    pub run_migrations: bool,
    /// PostgreSQL: every commit and every created call sends a `NOTIFY` on
    /// [`LIVE_CHANNEL`] in its own transaction (default on), which other
    /// replicas' listeners ([`PgCallStore::spawn_live_listener`]) turn into
    /// live updates. Off: a replica hears only its own commits.
    pub notify_commits: bool,
    /// PostgreSQL: commits of different calls that arrive while earlier
    /// ones are still in flight are sent together as one statement (default
    /// on; each keeps its own version check and outcome). Off: one
    /// statement per commit. See docs/storage.md ("Group commit").
    pub group_commits: bool,
}

/// When a SQLite commit is durable: the `synchronous` setting of a
/// WAL-mode database file.
///
/// A store answers Twilio only after its commit returns, so anything short
/// of [`SqliteDurability::Full`] can lose callbacks Twilio was told were
/// received (it will not resend them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteDurability {
    /// `synchronous = FULL` (the default): the WAL is fsynced on every
    /// commit, so a committed call survives an OS crash or power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: no fsync on commit (only at checkpoints).
    /// Still consistent after any crash and durable across an application
    /// crash, but an OS crash or power loss can roll back the last commits
    /// — payloads already acknowledged to Twilio. Faster on slow disks; see
    /// docs/storage.md for measured figures.
    Normal,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            busy_timeout: Duration::from_secs(10),
            sqlite_durability: SqliteDurability::Full,
            run_migrations: true,
            notify_commits: true,
            group_commits: true,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`StoreOptions::acquire_timeout`].
    pub fn acquire_timeout(mut self, t: Duration) -> Self {
        self.acquire_timeout = t;
        self
    }

    /// Sets [`StoreOptions::busy_timeout`].
    pub fn busy_timeout(mut self, t: Duration) -> Self {
        self.busy_timeout = t;
        self
    }

    /// Sets [`StoreOptions::sqlite_durability`].
    pub fn sqlite_durability(mut self, d: SqliteDurability) -> Self {
        self.sqlite_durability = d;
        self
    }

    /// Sets [`StoreOptions::run_migrations`].
    pub fn run_migrations(mut self, on: bool) -> Self {
        self.run_migrations = on;
        self
    }

    /// Sets [`StoreOptions::group_commits`].
    pub fn group_commits(mut self, on: bool) -> Self {
        self.group_commits = on;
        self
    }

    /// Sets [`StoreOptions::notify_commits`].
    pub fn notify_commits(mut self, on: bool) -> Self {
        self.notify_commits = on;
        self
    }
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Migrations applied by this run: `(version, description)`.
    pub applied: Vec<(i64, String)>,
    /// Every migration now applied, oldest first.
    pub current: Vec<(i64, String)>,
}

/// With migrations off: fails with [`ConnectError::SchemaBehind`] when
/// the database lacks some of `migrator`'s migrations.
pub(crate) async fn check_schema<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<(), ConnectError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let mut conn = pool.acquire().await.map_err(ConnectError::database)?;
    // No migrations table yet: nothing applied.
    let applied: Vec<i64> = conn
        .list_applied_migrations()
        .await
        .map(|list| list.into_iter().map(|m| m.version).collect())
        .unwrap_or_default();
    let pending: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(ConnectError::SchemaBehind { pending })
    }
}

pub(crate) async fn migration_report<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<MigrationReport, ConnectError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let applied_versions = |list: Vec<sqlx::migrate::AppliedMigration>| {
        list.into_iter().map(|m| m.version).collect::<Vec<i64>>()
    };
    let before = {
        let mut conn = pool.acquire().await.map_err(ConnectError::database)?;
        // No migrations table yet: nothing applied.
        conn.list_applied_migrations()
            .await
            .map(applied_versions)
            .unwrap_or_default()
    };
    migrator
        .run(pool)
        .await
        .map_err(|e| ConnectError::Migration(Box::new(e)))?;
    let after = {
        let mut conn = pool.acquire().await.map_err(ConnectError::database)?;
        conn.list_applied_migrations()
            .await
            .map(applied_versions)
            .map_err(|e| ConnectError::Migration(Box::new(e)))?
    };
    let describe = |v: i64| {
        let description = migrator
            .iter()
            .find(|m| m.version == v)
            .map(|m| m.description.to_string())
            .unwrap_or_default();
        (v, description)
    };
    let mut current: Vec<(i64, String)> = after.iter().copied().map(describe).collect();
    current.sort();
    let applied = current
        .iter()
        .filter(|(v, _)| !before.contains(v))
        .cloned()
        .collect();
    Ok(MigrationReport { applied, current })
}

/// Opens the store `url` names — [`PgCallStore`] for `postgres://`,
/// [`SqliteCallStore`] for `sqlite:` (creating the file if missing, WAL
/// mode, busy timeout) — with default [`StoreOptions`] (migrations run).
pub async fn connect_any(url: &str) -> Result<Arc<dyn CallStore>, ConnectError> {
    connect_any_with(url, &StoreOptions::default()).await
}

/// [`connect_any`] with options.
pub async fn connect_any_with(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn CallStore>, ConnectError> {
    Ok(match Backend::from_url(url)? {
        Backend::Postgres => Arc::new(PgCallStore::connect_with(url, options).await?),
        Backend::Sqlite => Arc::new(SqliteCallStore::connect_with(url, options).await?),
    })
}

/// One opened store seen through each of core's storage ports.
#[derive(Clone)]
#[non_exhaustive]
pub struct Stores {
    /// Calls and their event log.
    pub calls: Arc<dyn CallStore>,
    /// Retention, erasure and the audit log, on the same database.
    pub personal: Arc<dyn PersonalDataStore>,
    /// The do-not-call list, on the same database.
    pub do_not_call: Arc<dyn DoNotCallList>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// The ports, each from its own implementation (e.g. core's in-memory
    /// store and in-memory do-not-call list).
    pub fn new(
        calls: Arc<dyn CallStore>,
        personal: Arc<dyn PersonalDataStore>,
        do_not_call: Arc<dyn DoNotCallList>,
    ) -> Self {
        Self {
            calls,
            personal,
            do_not_call,
        }
    }

    /// Every port of one store.
    pub fn of<S: CallStore + PersonalDataStore + DoNotCallList>(store: Arc<S>) -> Self {
        Self {
            calls: store.clone(),
            personal: store.clone(),
            do_not_call: store,
        }
    }
}

/// [`connect_any_with`], returning every port of the store
/// ([`CallStore`], [`PersonalDataStore`], [`DoNotCallList`]).
pub async fn connect_stores_with(
    url: &str,
    options: &StoreOptions,
) -> Result<Stores, ConnectError> {
    Ok(match Backend::from_url(url)? {
        Backend::Postgres => Stores::of(Arc::new(PgCallStore::connect_with(url, options).await?)),
        Backend::Sqlite => Stores::of(Arc::new(SqliteCallStore::connect_with(url, options).await?)),
    })
}

/// [`connect_any_with`], also as the do-not-call list (the `do_not_call`
/// table of the same database, on the same pool).
pub async fn connect_any_with_list(
    url: &str,
    options: &StoreOptions,
) -> Result<(Arc<dyn CallStore>, Arc<dyn DoNotCallList>), ConnectError> {
    Ok(match Backend::from_url(url)? {
        Backend::Postgres => {
            let store = Arc::new(PgCallStore::connect_with(url, options).await?);
            (store.clone(), store)
        }
        Backend::Sqlite => {
            let store = Arc::new(SqliteCallStore::connect_with(url, options).await?);
            (store.clone(), store)
        }
    })
}

/// Connects to `url` without migrating, then applies the pending migrations
/// (what the `bonde-pressure-store migrate` command runs).
pub async fn migrate_url(url: &str) -> Result<(Backend, MigrationReport), ConnectError> {
    let backend = Backend::from_url(url)?;
    let options = StoreOptions::default().max_connections(1);
    let report = match backend {
        Backend::Postgres => {
            let store = PgCallStore::connect_unmigrated(url, &options).await?;
            let report = store.migrate().await;
            store.close().await;
            report?
        }
        Backend::Sqlite => {
            let store = SqliteCallStore::connect_unmigrated(url, &options).await?;
            let report = store.migrate().await;
            store.close().await;
            report?
        }
    };
    Ok((backend, report))
}

/// Reads the raw event log by leg id, orphans included: what arrived for a
/// leg, whether or not a call was known for it.
#[async_trait]
pub trait EventLog: CallStore {
    /// Every stored event naming `call_sid`, oldest first.
    async fn events_by_sid(&self, call_sid: &str) -> Result<Vec<StoredEvent>, StoreError>;
}

#[async_trait]
impl EventLog for InMemoryCallStore {
    async fn events_by_sid(&self, call_sid: &str) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .all_events()
            .into_iter()
            .filter(|e| e.raw.leg_id.as_deref() == Some(call_sid))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url_scheme() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::from_url("SQLITE://x.db").unwrap(), Backend::Sqlite);
        assert!(matches!(
            Backend::from_url("mysql://h/db"),
            Err(ConnectError::UnsupportedScheme { scheme }) if scheme == "mysql"
        ));
        assert!(matches!(
            Backend::from_url("calls.db"),
            Err(ConnectError::UnsupportedScheme { .. })
        ));
    }
}
