//! `bonde-pressure`: the server. Configuration from command-line flags, the
//! environment and `.env` (see `docs/configuration.md` or `bonde-pressure
//! --help`); with none, a demo service with a simulated telephony and the
//! demo widget `1`.

use std::process::ExitCode;

use bonde_pressure_http::config::{Config, ConfigError};
use bonde_pressure_http::wiring;

/// mimalloc instead of the system allocator: a request allocates and frees
/// many small buffers, which glibc's malloc spent about a fifth of the
/// server's CPU on under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        // `--help`, `--version` (exit 0) and usage errors (exit 2): clap's own text.
        Err(ConfigError::Cli(e)) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            eprintln!("bonde-pressure: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    wiring::init_tracing(&config);
    match wiring::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "bonde-pressure stopped");
            eprintln!("bonde-pressure: {e}");
            ExitCode::FAILURE
        }
    }
}
