//! `bonde-pressure-store`: database maintenance for bonde-pressure.
//!
//! ```text
//! bonde-pressure-store migrate --database-url postgres://user@host/db
//! bonde-pressure-store migrate --database-url sqlite://calls.db
//! ```
//!
//! The backend is picked from the URL scheme; `DATABASE_URL` is read when
//! `--database-url` is absent.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bonde-pressure-store",
    version,
    about = "bonde-pressure database maintenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the pending migrations (PostgreSQL for postgres://, SQLite for sqlite:).
    Migrate {
        /// Database URL: postgres://… or sqlite:path (the SQLite file is created if missing).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { database_url } => {
            match bonde_pressure_store::migrate_url(&database_url).await {
                Ok((backend, report)) => {
                    let target = redact(&database_url);
                    if report.applied.is_empty() {
                        println!("{target}: {} schema up to date", backend.as_str());
                    } else {
                        for (version, description) in &report.applied {
                            println!("{target}: applied {version} {description}");
                        }
                    }
                    if let Some((version, _)) = report.current.last() {
                        println!(
                            "{target}: current {} schema version {version}",
                            backend.as_str()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("migrate {}: {e}", redact(&database_url));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact("sqlite://calls.db"), "sqlite://calls.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn cli_parses_migrate() {
        let cli = Cli::try_parse_from([
            "bonde-pressure-store",
            "migrate",
            "--database-url",
            "sqlite::memory:",
        ])
        .unwrap();
        let Command::Migrate { database_url } = cli.command;
        assert_eq!(database_url, "sqlite::memory:");
    }
}
