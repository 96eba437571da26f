//! Personal data over HTTP: who an admin token is in the audit log, and
//! the background retention task.

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{ActorId, Privacy, RetentionPass};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::metrics::{self, Metrics};

/// The label the token id is computed over.
const TOKEN_ID_LABEL: &[u8] = b"bonde-pressure audit token id v1";

/// The audit log's name for a bearer token: `tok_` and the first 8 bytes
/// (16 hex digits) of HMAC-SHA256 keyed with the token over a fixed label.
/// Stable for a token, different for another, and the token cannot be
/// read back from it (only guessed, one HMAC per guess: use long random
/// tokens).
pub fn token_id(token: &str) -> ActorId {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(TOKEN_ID_LABEL);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    ActorId::new(format!("tok_{hex}"))
}

/// Runs retention passes every `interval` (the first one `interval` after
/// start) until `stop` turns true; a pass whose batch was full is followed
/// at once by another. `interval` zero: no task. Passes skipped because
/// another replica runs one are counted, not logged as errors.
pub fn spawn_retention(
    privacy: Arc<Privacy>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if interval.is_zero() {
            return;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            loop {
                if *stop.borrow() {
                    return;
                }
                let more = run_pass(&privacy, &metrics).await;
                if !more {
                    break;
                }
            }
        }
    })
}

/// One pass, counted in [`metrics::RETENTION`]; `true` when more is due now.
pub async fn run_pass(privacy: &Privacy, metrics: &Metrics) -> bool {
    match privacy.retention_pass().await {
        Ok(RetentionPass::Ran(r)) => {
            metrics.inc(metrics::RETENTION, &[("what", "passes")]);
            metrics.add(
                metrics::RETENTION,
                &[("what", "calls_erased")],
                r.calls_erased,
            );
            metrics.add(
                metrics::RETENTION,
                &[("what", "events_deleted")],
                r.events_deleted,
            );
            if r.calls_erased > 0 || r.events_deleted > 0 {
                tracing::info!(
                    calls_erased = r.calls_erased,
                    events_deleted = r.events_deleted,
                    more = r.more,
                    "retention pass"
                );
            }
            r.more
        }
        Ok(_) => {
            metrics.inc(metrics::RETENTION, &[("what", "skipped")]);
            tracing::debug!("retention pass skipped: another replica runs one");
            false
        }
        Err(error) => {
            metrics.inc(metrics::RETENTION, &[("what", "failed_passes")]);
            tracing::warn!(%error, "retention pass failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_stable_short_and_never_the_token() {
        let a = token_id("s3cret-admin");
        assert_eq!(a, token_id("s3cret-admin"));
        assert_ne!(a, token_id("s3cret-admin2"));
        assert!(
            a.as_str().starts_with("tok_") && a.as_str().len() == 20,
            "{a}"
        );
        assert!(!a.as_str().contains("s3cret"));
    }
}
