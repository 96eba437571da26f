//! `cargo run -p bonde-pressure-embed-example`: one call through core with
//! a console telephony, then a reconciliation pass (see docs/embedding.md).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let embedded = bonde_pressure_embed_example::wire();
    match bonde_pressure_embed_example::run(&embedded).await {
        Ok(outcome) => {
            println!(
                "done: call {} ended {} with {} payloads stored",
                outcome.call.id,
                outcome.call.state().as_str(),
                outcome.events.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
