//! `bonde-pressure`: the server. Configuration from the environment and
//! `.env` (see `docs/configuration.md`); with none, a demo service with a
//! simulated telephony and the demo widget `1`.

use std::process::ExitCode;

use bonde_pressure_http::config::Config;
use bonde_pressure_http::wiring;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env().and_then(|c| c.check().map(|()| c)) {
        Ok(c) => c,
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
