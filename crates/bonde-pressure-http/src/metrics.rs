//! Hand-written Prometheus counters, gauges and histograms (text exposition
//! format 0.0.4).

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

/// A histogram's series: counts per bucket (cumulated at render), sum.
#[derive(Default)]
struct Histogram {
    /// Observations per bucket of [`LATENCY_BUCKETS`], plus one for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

/// Counters, gauges and latency histograms by name and labels.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
    gauges: Mutex<BTreeMap<&'static str, BTreeMap<Labels, i64>>>,
    histograms: Mutex<BTreeMap<&'static str, BTreeMap<Labels, Histogram>>>,
    pool: Mutex<Option<PoolProbe>>,
}

/// Connections of a database pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections lent out.
    pub in_use: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// The pool's maximum.
    pub max: u32,
}

/// Reads a pool's [`PoolUse`] (at each scrape).
pub type PoolProbe = Arc<dyn Fn() -> PoolUse + Send + Sync>;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTP request latency by matched route (histogram; streams: until the
/// response head).
pub const HTTP_DURATION: &str = "bonde_pressure_http_request_duration_seconds";
/// Webhook processing time by route: signature check, parsing, core's
/// handling and the effects it ran (histogram).
pub const WEBHOOK_DURATION: &str = "bonde_pressure_webhook_processing_seconds";
/// Server-sent-event streams open now, by stream (`call`, `widget`) (gauge).
pub const SSE_STREAMS: &str = "bonde_pressure_sse_streams_open";
/// Database pool connections now, by state (`in_use`, `idle`, `max`)
/// (gauge, read at each scrape).
pub const DB_POOL: &str = "bonde_pressure_db_pool_connections";

/// A gauge counted up while this lives and down when it is dropped (an
/// open SSE stream).
#[derive(Debug)]
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    name: &'static str,
    label: (&'static str, &'static str),
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.metrics.gauge_add(self.name, &[self.label], -1);
    }
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
        HTTP_DURATION => {
            "HTTP request latency by matched route, in seconds (streams: until the response head)."
        }
        WEBHOOK_DURATION => {
            "Twilio webhook processing time by route, in seconds (signature, parsing, core, effects)."
        }
        SSE_STREAMS => "Server-sent-event streams open now, by stream.",
        DB_POOL => "Database pool connections now: in use, idle, and the pool's maximum.",
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

    /// Adds `delta` to a gauge.
    pub fn gauge_add(&self, name: &'static str, labels: &[(&'static str, &str)], delta: i64) {
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        *gauges.entry(name).or_default().entry(key).or_default() += delta;
    }

    /// Sets a gauge.
    pub fn gauge_set(&self, name: &'static str, labels: &[(&'static str, &str)], value: i64) {
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        gauges.entry(name).or_default().insert(key, value);
    }

    /// A gauge's value (tests).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> i64 {
        let gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        gauges
            .get(name)
            .and_then(|g| g.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// Reads the database pool's use into [`DB_POOL`] at each scrape.
    pub fn set_pool_probe(&self, probe: PoolProbe) {
        *self.pool.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }

    /// Reads the pool probe, if any, into [`DB_POOL`].
    pub fn record_pool(&self) {
        let probe = self.pool.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(probe) = probe {
            let u = probe();
            for (state, n) in [("in_use", u.in_use), ("idle", u.idle), ("max", u.max)] {
                self.gauge_set(DB_POOL, &[("state", state)], i64::from(n));
            }
        }
    }

    /// Counts one more open stream in [`SSE_STREAMS`] until the guard drops.
    pub fn open_stream(self: &Arc<Self>, stream: &'static str) -> GaugeGuard {
        self.gauge_add(SSE_STREAMS, &[("stream", stream)], 1);
        GaugeGuard {
            metrics: self.clone(),
            name: SSE_STREAMS,
            label: ("stream", stream),
        }
    }

    /// Records one observation, in seconds, in a latency histogram.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        let mut histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let h = histograms.entry(name).or_default().entry(key).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.counts[bucket] += 1;
        h.sum += seconds;
    }

    /// How many observations a histogram holds (tests).
    pub fn observations(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        histograms
            .get(name)
            .and_then(|h| h.get(&key))
            .map(|h| h.counts.iter().sum())
            .unwrap_or(0)
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
        drop(families);
        let gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        for (name, series) in gauges.iter() {
            let _ = writeln!(out, "# HELP {name} {}", help(name));
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{} {value}", label_set(labels, None));
            }
        }
        drop(gauges);
        let histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        for (name, series) in histograms.iter() {
            let _ = writeln!(out, "# HELP {name} {}", help(name));
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (labels, h) in series {
                let mut cumulated = 0;
                for (i, count) in h.counts.iter().enumerate() {
                    cumulated += count;
                    let le = LATENCY_BUCKETS
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulated}",
                        label_set(labels, Some(&le))
                    );
                }
                let _ = writeln!(out, "{name}_sum{} {}", label_set(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {cumulated}", label_set(labels, None));
            }
        }
        out
    }
}

/// `{k="v",…}` (with `le` last when given), or nothing without labels.
fn label_set(labels: &Labels, le: Option<&str>) -> String {
    let mut l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        l.push(format!("le=\"{le}\""));
    }
    if l.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", l.join(","))
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

    #[test]
    fn renders_histograms_cumulated_and_gauges() {
        let m = Arc::new(Metrics::new());
        for s in [0.0003, 0.004, 0.004, 42.0] {
            m.observe(HTTP_DURATION, &[("route", "/healthz")], s);
        }
        let text = m.render();
        assert!(text.contains("# TYPE bonde_pressure_http_request_duration_seconds histogram"));
        for (le, n) in [
            ("0.0005", 1),
            ("0.0025", 1),
            ("0.005", 3),
            ("10", 3),
            ("+Inf", 4),
        ] {
            let line = format!(
                "bonde_pressure_http_request_duration_seconds_bucket{{route=\"/healthz\",le=\"{le}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains(
            "bonde_pressure_http_request_duration_seconds_count{route=\"/healthz\"} 4\n"
        ));
        assert!(text.contains(
            "bonde_pressure_http_request_duration_seconds_sum{route=\"/healthz\"} 42.0083"
        ));
        assert_eq!(m.observations(HTTP_DURATION, &[("route", "/healthz")]), 4);

        let a = m.open_stream("call");
        let b = m.open_stream("call");
        assert_eq!(m.gauge(SSE_STREAMS, &[("stream", "call")]), 2);
        drop(a);
        assert!(
            m.render()
                .contains("# TYPE bonde_pressure_sse_streams_open gauge")
        );
        assert!(
            m.render()
                .contains("bonde_pressure_sse_streams_open{stream=\"call\"} 1\n")
        );
        drop(b);
        assert_eq!(m.gauge(SSE_STREAMS, &[("stream", "call")]), 0);
    }
}
