//! Hand-written Prometheus counters (text exposition format 0.0.4).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bonde_pressure_core::live::LiveUpdates;
use bonde_pressure_core::{CallId, DetailedState};

type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    series: BTreeMap<Labels, u64>,
}

/// Counters by name and labels.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Calls started, by outcome (`started`, `invalid`, `widget_not_found`, `rate_limited`...).
pub const CALLS_STARTED: &str = "bonde_pressure_call_requests_total";
/// Webhooks received, by route and outcome.
pub const WEBHOOKS: &str = "bonde_pressure_webhooks_total";
/// Calls entering a detailed state (seen by this process's commits).
pub const STATE_TRANSITIONS: &str = "bonde_pressure_call_state_transitions_total";
/// HTTP responses by route and status.
pub const HTTP_RESPONSES: &str = "bonde_pressure_http_responses_total";
/// Reconciliation passes and their findings.
pub const RECONCILE: &str = "bonde_pressure_reconcile_total";
/// Webhook payloads kept for a store outage (`queued`, `stored`, `dropped`),
/// mirrored from core's spool totals at each scrape.
pub const SPOOLED_PAYLOADS: &str = "bonde_pressure_spooled_payloads_total";
/// Retention passes and what they erased.
pub const RETENTION: &str = "bonde_pressure_retention_total";

fn help(name: &str) -> &'static str {
    match name {
        CALLS_STARTED => "POST /v1/phone/call requests by outcome.",
        WEBHOOKS => "Twilio webhooks received, by route and outcome.",
        STATE_TRANSITIONS => "Calls entering a detailed state, committed by this process.",
        HTTP_RESPONSES => "HTTP responses by matched route and status code.",
        RECONCILE => "Reconciliation: passes, calls examined, legs fetched, expired, errors.",
        SPOOLED_PAYLOADS => {
            "Webhook payloads kept in memory during a store outage: queued, stored later, dropped (refused: the spool was full)."
        }
        RETENTION => "Retention: passes run, skipped and failed, calls erased, payloads deleted.",
        _ => "Counter.",
    }
}

/// Counts, in [`STATE_TRANSITIONS`], every call entering a detailed state
/// in a commit this process makes: an observer of core's live updates, so
/// none is missed however slow the scrapes.
pub fn count_state_transitions(live: &LiveUpdates, metrics: Arc<Metrics>) {
    // Last state seen per unfinished call (to count changes only).
    let last_state: Mutex<HashMap<CallId, DetailedState>> = Mutex::new(HashMap::new());
    live.observe(move |update| {
        let state = update.state;
        let changed = {
            let mut last = last_state.lock().unwrap_or_else(|p| p.into_inner());
            if last.len() >= 50_000 {
                // Forget finished calls first; they rarely change again.
                last.retain(|_, s| !s.is_terminal());
            }
            last.insert(update.call_id, state) != Some(state)
        };
        if changed {
            metrics.inc(STATE_TRANSITIONS, &[("state", state.as_str())]);
        }
    });
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// No counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help: help(name),
            series: BTreeMap::new(),
        });
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        *family.series.entry(key).or_default() += n;
    }

    /// Sets a counter kept elsewhere (a total core counts) to `value`.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: u64) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help: help(name),
            series: BTreeMap::new(),
        });
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        family.series.insert(key, value);
    }

    /// Mirrors core's payload spool totals into [`SPOOLED_PAYLOADS`]
    /// (`queued`, `stored`, and `dropped` for the payloads a full spool
    /// refused); nothing until a payload was queued or refused.
    pub fn record_spool(&self, stats: &bonde_pressure_core::SpoolStats) {
        if stats.queued == 0 && stats.refused == 0 {
            return;
        }
        for (outcome, value) in [
            ("queued", stats.queued),
            ("stored", stats.stored),
            ("dropped", stats.refused),
        ] {
            self.set(SPOOLED_PAYLOADS, &[("outcome", outcome)], value);
        }
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    /// A counter's value (tests).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        families
            .get(name)
            .and_then(|f| f.series.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in &family.series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let l: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc(CALLS_STARTED, &[("outcome", "started")]);
        m.inc(CALLS_STARTED, &[("outcome", "started")]);
        m.inc(
            WEBHOOKS,
            &[("route", "status-callback"), ("outcome", "a\"b")],
        );
        let text = m.render();
        assert!(text.contains("# TYPE bonde_pressure_call_requests_total counter"));
        assert!(text.contains("bonde_pressure_call_requests_total{outcome=\"started\"} 2"));
        assert!(text.contains(
            "bonde_pressure_webhooks_total{route=\"status-callback\",outcome=\"a\\\"b\"} 1"
        ));
        assert_eq!(m.get(CALLS_STARTED, &[("outcome", "started")]), 2);
    }
}
