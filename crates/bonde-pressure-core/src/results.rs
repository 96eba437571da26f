//! Campaign results: what organisers see of a widget's calls over a period.
//!
//! The [`CampaignResults`] port answers one [`ResultsQuery`] with a
//! [`ResultsReport`] — totals per page status and per detailed state, the
//! [funnel](FunnelStage), per-target rows with median and p90 talk time, and
//! an hourly or daily series in the query's time zone — and lists a widget's
//! calls page by page for exports. It is separate from
//! [`crate::CallStore`]: the service never reads statistics.
//!
//! [`ResultsReport::from_calls`] is the reference implementation (the
//! in-memory store uses it); SQL implementations must give the same report
//! for the same calls, which the store crate's conformance suite checks.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration as TimeDelta, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::call::{Call, CallFacts, DetailedState, Leg, UiStatus};
use crate::domain::{CallId, WidgetId};
use crate::ports::{StoreError, UnreadableCall};

// ---------------------------------------------------------------- funnel

/// How far a call went, as a step of the results funnel
/// requested → activist answered → confirmed → target dialled → connected
/// → completed.
///
/// Each step requires the previous one, so a call's stage is the last step
/// of the longest run of steps it reached from the start; the funnel counts
/// the calls at or past each step. Stored as a projected column
/// (`funnel_stage`, [`FunnelStage::as_i16`]) by SQL stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum FunnelStage {
    /// The call was stored (every call).
    Requested,
    /// A person picked up the activist's phone: answered (by any sign,
    /// [`CallFacts::leg_answered`]) and not judged a machine before
    /// confirming.
    ActivistAnswered,
    /// The activist confirmed ([`CallFacts::activist_confirmed`]).
    Confirmed,
    /// The target was dialled (requested, or its leg is known).
    TargetDialled,
    /// The target answered, not a machine: they talked.
    Connected,
    /// They talked and the call ended ([`DetailedState::Completed`]).
    Completed,
}

impl FunnelStage {
    /// Every stage, in funnel order.
    pub const ALL: [FunnelStage; 6] = [
        FunnelStage::Requested,
        FunnelStage::ActivistAnswered,
        FunnelStage::Confirmed,
        FunnelStage::TargetDialled,
        FunnelStage::Connected,
        FunnelStage::Completed,
    ];

    /// The stage a call with these facts (and this derived state) reached.
    pub fn of(facts: &CallFacts, state: DetailedState) -> FunnelStage {
        let steps = [
            facts.leg_answered(Leg::Activist)
                && (facts.activist_confirmed() || !facts.activist.is_machine()),
            facts.activist_confirmed(),
            facts.requested.dial_target || facts.target.leg_id.is_some(),
            facts.target_answered() && !facts.target.is_machine(),
            state == DetailedState::Completed,
        ];
        let reached = steps.iter().take_while(|s| **s).count();
        FunnelStage::ALL[reached]
    }

    /// The stored number: 1 (requested) to 6 (completed).
    pub fn as_i16(&self) -> i16 {
        match self {
            FunnelStage::Requested => 1,
            FunnelStage::ActivistAnswered => 2,
            FunnelStage::Confirmed => 3,
            FunnelStage::TargetDialled => 4,
            FunnelStage::Connected => 5,
            FunnelStage::Completed => 6,
        }
    }

    /// Parses [`FunnelStage::as_i16`].
    pub fn from_i16(n: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_i16() == n)
    }

    /// The snake_case name (`activist_answered`), as served.
    pub fn as_str(&self) -> &'static str {
        match self {
            FunnelStage::Requested => "requested",
            FunnelStage::ActivistAnswered => "activist_answered",
            FunnelStage::Confirmed => "confirmed",
            FunnelStage::TargetDialled => "target_dialled",
            FunnelStage::Connected => "connected",
            FunnelStage::Completed => "completed",
        }
    }
}

impl Call {
    /// How far this call went ([`FunnelStage::of`]).
    pub fn funnel_stage(&self) -> FunnelStage {
        FunnelStage::of(&self.facts, self.state())
    }
}

// ------------------------------------------------------------ percentiles

/// The nearest-rank percentile of ascending `sorted` values: the value of
/// rank ⌈`percent`·n/100⌉ (1-based, at least 1), that is, the smallest value
/// with at least `percent`% of the values at or below it. It is always one
/// of the values (never interpolated), and it is what PostgreSQL's
/// `percentile_disc(percent/100)` returns. The median is the lower median
/// for an even count. `None` for no values.
pub fn percentile_nearest_rank(sorted: &[u32], percent: u32) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(percent.min(100)) * n).div_ceil(100).max(1);
    sorted.get((rank - 1) as usize).copied()
}

/// [`percentile_nearest_rank`] of values given as a histogram: `counts`
/// holds `(value, how many times)` in ascending value order (each value
/// once; zero counts are ignored). The same value as the sorted list
/// expanded from it, without expanding it.
pub fn percentile_nearest_rank_counted(counts: &[(u32, u64)], percent: u32) -> Option<u32> {
    let n: u64 = counts.iter().map(|(_, c)| c).sum();
    if n == 0 {
        return None;
    }
    let rank = (u64::from(percent.min(100)) * n).div_ceil(100).max(1);
    let mut seen = 0;
    for &(value, c) in counts {
        seen += c;
        if seen >= rank {
            return Some(value);
        }
    }
    None
}

// ----------------------------------------------------------------- query

/// The width of a series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Interval {
    /// One local hour.
    Hour,
    /// One local calendar day.
    Day,
}

impl Interval {
    /// `hour` or `day`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    /// The local bucket `t` falls in: its local time truncated to the hour
    /// or to midnight.
    pub fn bucket(&self, t: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
        let local = t.with_timezone(&tz).naive_local();
        match self {
            Interval::Hour => local
                .with_minute(0)
                .and_then(|l| l.with_second(0))
                .and_then(|l| l.with_nanosecond(0))
                .unwrap_or(local),
            Interval::Day => local.date().and_hms_opt(0, 0, 0).unwrap_or(local),
        }
    }

    fn step(&self) -> TimeDelta {
        match self {
            Interval::Hour => TimeDelta::hours(1),
            Interval::Day => TimeDelta::days(1),
        }
    }
}

/// What a results report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResultsQuery {
    /// The widget.
    pub widget_id: WidgetId,
    /// Calls created at or after this instant...
    pub from: DateTime<Utc>,
    /// ...and strictly before this one.
    pub to: DateTime<Utc>,
    /// The time zone of the series' buckets.
    pub tz: Tz,
    /// The series' bucket width.
    pub interval: Interval,
}

impl ResultsQuery {
    /// A query over `[from, to)` with buckets of `interval` in `tz`.
    pub fn new(
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: Tz,
        interval: Interval,
    ) -> Self {
        Self {
            widget_id,
            from,
            to,
            tz,
            interval,
        }
    }

    /// The default bucket width for a period: hours up to three days, days
    /// beyond.
    pub fn default_interval(from: DateTime<Utc>, to: DateTime<Utc>) -> Interval {
        if to - from <= TimeDelta::days(3) {
            Interval::Hour
        } else {
            Interval::Day
        }
    }

    /// Every bucket of the period, in order (empty ones included).
    pub fn buckets(&self) -> Vec<NaiveDateTime> {
        let mut out = Vec::new();
        if self.to <= self.from {
            return out;
        }
        let last = self
            .interval
            .bucket(self.to - TimeDelta::microseconds(1), self.tz);
        let mut b = self.interval.bucket(self.from, self.tz);
        while b <= last {
            // A local hour skipped by a DST change has no bucket.
            let exists = self.interval == Interval::Day
                || self.tz.from_local_datetime(&b).earliest().is_some();
            if exists {
                out.push(b);
            }
            b += self.interval.step();
        }
        out
    }
}

// ---------------------------------------------------------------- report

/// One step of the funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct FunnelStep {
    /// The step.
    pub stage: FunnelStage,
    /// Calls that reached it (or went further).
    pub calls: u64,
}

/// One target's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TargetResults {
    /// The target's name, as stored with the calls.
    pub name: String,
    /// The target's number (E.164).
    pub phone: String,
    /// Calls to this target.
    pub calls: u64,
    /// Calls where the target talked ([`FunnelStage::Connected`] or further).
    pub connected: u64,
    /// Completed calls.
    pub completed: u64,
    /// Total talk time of completed calls, in seconds.
    pub talk_secs: u64,
    /// Median talk time of completed calls with a known duration
    /// ([`percentile_nearest_rank`] 50).
    pub median_talk_secs: Option<u32>,
    /// 90th percentile of the same ([`percentile_nearest_rank`] 90).
    pub p90_talk_secs: Option<u32>,
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SeriesBucket {
    /// The bucket's local start (no offset: the query's time zone).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "2026-11-30T00:00:00"))]
    pub start: NaiveDateTime,
    /// Calls created in it.
    pub total: u64,
    /// Those calls by page status ([`DetailedState::ui_status`]).
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, u64>))]
    pub by_status: BTreeMap<UiStatus, u64>,
}

/// A widget's results over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct ResultsReport {
    /// Calls created in the period.
    pub total: u64,
    /// By page status ([`DetailedState::ui_status`]); every status, zeros included.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, u64>))]
    pub by_status: BTreeMap<UiStatus, u64>,
    /// By detailed state; every state, zeros included.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, u64>))]
    pub by_state: BTreeMap<DetailedState, u64>,
    /// The funnel, in order.
    pub funnel: Vec<FunnelStep>,
    /// Per target, by calls (most first), then name and number.
    pub targets: Vec<TargetResults>,
    /// One bucket per hour or day of the period, in order.
    pub series: Vec<SeriesBucket>,
}

impl ResultsReport {
    /// An empty report for `query` (every bucket, every count zero).
    pub fn empty(query: &ResultsQuery) -> Self {
        let zero_status = || all_statuses().into_iter().map(|s| (s, 0)).collect();
        Self {
            total: 0,
            by_status: zero_status(),
            by_state: DetailedState::ALL.into_iter().map(|s| (s, 0)).collect(),
            funnel: FunnelStage::ALL
                .into_iter()
                .map(|stage| FunnelStep { stage, calls: 0 })
                .collect(),
            targets: Vec::new(),
            series: query
                .buckets()
                .into_iter()
                .map(|start| SeriesBucket {
                    start,
                    total: 0,
                    by_status: zero_status(),
                })
                .collect(),
        }
    }

    /// Adds `calls` calls in `state` that reached `stage` (totals and funnel).
    pub fn add_counts(&mut self, state: DetailedState, stage: FunnelStage, calls: u64) {
        self.total += calls;
        *self.by_state.entry(state).or_default() += calls;
        *self.by_status.entry(state.ui_status()).or_default() += calls;
        for step in &mut self.funnel {
            if step.stage <= stage {
                step.calls += calls;
            }
        }
    }

    /// Adds `calls` calls in `state` to the bucket starting at `start`
    /// (ignored when the period has no such bucket).
    pub fn add_to_series(&mut self, start: NaiveDateTime, state: DetailedState, calls: u64) {
        if let Ok(i) = self.series.binary_search_by(|b| b.start.cmp(&start)) {
            let b = &mut self.series[i];
            b.total += calls;
            *b.by_status.entry(state.ui_status()).or_default() += calls;
        }
    }

    /// Sets the per-target rows, ordered as documented on [`Self::targets`].
    pub fn set_targets(&mut self, mut targets: Vec<TargetResults>) {
        targets.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.phone.cmp(&b.phone))
        });
        self.targets = targets;
    }

    /// The report of `calls` (those of the query's widget created in its
    /// period are counted; others are skipped): the reference every
    /// implementation of [`CampaignResults`] must agree with.
    pub fn from_calls<'a>(query: &ResultsQuery, calls: impl IntoIterator<Item = &'a Call>) -> Self {
        let mut report = Self::empty(query);
        let mut targets: BTreeMap<(String, String), (TargetResults, Vec<u32>)> = BTreeMap::new();
        for c in calls {
            if c.widget_id != query.widget_id
                || c.created_at < query.from
                || c.created_at >= query.to
            {
                continue;
            }
            let state = c.state();
            let stage = FunnelStage::of(&c.facts, state);
            report.add_counts(state, stage, 1);
            report.add_to_series(query.interval.bucket(c.created_at, query.tz), state, 1);
            let key = (
                c.target.name.as_str().to_owned(),
                c.target.phone.as_e164().to_owned(),
            );
            let (t, durations) = targets
                .entry(key.clone())
                .or_insert_with(|| (TargetResults::new(key.0.clone(), key.1.clone()), Vec::new()));
            t.calls += 1;
            if stage >= FunnelStage::Connected {
                t.connected += 1;
            }
            if state == DetailedState::Completed {
                t.completed += 1;
            }
            if let Some(d) = c.connected_secs() {
                t.talk_secs += u64::from(d);
                durations.push(d);
            }
        }
        report.set_targets(
            targets
                .into_values()
                .map(|(mut t, mut durations)| {
                    durations.sort_unstable();
                    t.set_talk_times(&durations);
                    t
                })
                .collect(),
        );
        report
    }
}

impl TargetResults {
    /// A target with no calls yet.
    pub fn new(name: String, phone: String) -> Self {
        Self {
            name,
            phone,
            calls: 0,
            connected: 0,
            completed: 0,
            talk_secs: 0,
            median_talk_secs: None,
            p90_talk_secs: None,
        }
    }

    /// Sets the median and p90 from the ascending talk times of completed calls.
    pub fn set_talk_times(&mut self, sorted: &[u32]) {
        self.median_talk_secs = percentile_nearest_rank(sorted, 50);
        self.p90_talk_secs = percentile_nearest_rank(sorted, 90);
    }

    /// Sets the median and p90 from a histogram of the talk times of
    /// completed calls ([`percentile_nearest_rank_counted`]).
    pub fn set_talk_time_counts(&mut self, counts: &[(u32, u64)]) {
        self.median_talk_secs = percentile_nearest_rank_counted(counts, 50);
        self.p90_talk_secs = percentile_nearest_rank_counted(counts, 90);
    }
}

fn all_statuses() -> [UiStatus; 8] {
    [
        UiStatus::Initiated,
        UiStatus::Ringing,
        UiStatus::InProgress,
        UiStatus::Completed,
        UiStatus::Busy,
        UiStatus::NoAnswer,
        UiStatus::Failed,
        UiStatus::Canceled,
    ]
}

// ------------------------------------------------------------------ port

/// Where a page of [`CampaignResults::list_calls`] resumes: after the call
/// created at `created_at` with id `id` (calls are listed by creation time,
/// then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallCursor {
    /// The last listed call's creation time.
    pub created_at: DateTime<Utc>,
    /// The last listed call's id.
    pub id: CallId,
}

impl CallCursor {
    /// The cursor after `call`.
    pub fn after(call: &Call) -> Self {
        Self {
            created_at: call.created_at,
            id: call.id,
        }
    }
}

/// Campaign results for organisers: statistics and exports.
///
/// # What implementations must guarantee
/// - [`CampaignResults::report`] counts exactly the calls of the query's
///   widget created in `[from, to)`, as last committed, and returns what
///   [`ResultsReport::from_calls`] returns for them: the same state, stage
///   ([`FunnelStage::of`]), buckets ([`Interval::bucket`] in the query's
///   time zone) and nearest-rank percentiles ([`percentile_nearest_rank`]).
/// - [`CampaignResults::list_calls`] lists the same calls, by creation time
///   then id, strictly after the cursor, at most `limit`: paging until a
///   short page visits each call once, even while new calls are created.
/// - [`CampaignResults::list_call_rows`] lists them the same way, but a
///   stored row that cannot be decoded is reported in its place
///   (`Err(UnreadableCall)`, naming the call when its id is readable)
///   instead of failing the page; `limit` counts the readable calls.
#[async_trait]
pub trait CampaignResults: Send + Sync + 'static {
    /// The report of one widget over one period.
    async fn report(&self, query: &ResultsQuery) -> Result<ResultsReport, StoreError>;

    /// A page of the widget's calls created in `[from, to)`.
    async fn list_calls(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError>;

    /// [`CampaignResults::list_calls`] where one damaged row is its call's
    /// problem only: it is reported in its place and the listing goes on
    /// past it. `limit` counts readable calls (damaged rows met on the way
    /// come in addition), so a page with fewer than `limit` readable calls
    /// is the last, and the next page resumes after the page's last
    /// readable call ([`CallCursor::after`]).
    ///
    /// The default implementation lists with [`CampaignResults::list_calls`]
    /// (so a damaged row fails the whole page); the SQLite and PostgreSQL
    /// stores decode row by row. **Wrappers must forward this method.**
    async fn list_call_rows(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        Ok(self
            .list_calls(widget_id, from, to, after, limit)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile_nearest_rank(&[], 50), None);
        assert_eq!(percentile_nearest_rank(&[7], 50), Some(7));
        assert_eq!(percentile_nearest_rank(&[7], 90), Some(7));
        // lower median for an even count
        assert_eq!(percentile_nearest_rank(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile_nearest_rank(&[1, 2, 3, 4, 5], 50), Some(3));
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile_nearest_rank(&ten, 90), Some(9));
        let eleven: Vec<u32> = (1..=11).collect();
        assert_eq!(percentile_nearest_rank(&eleven, 90), Some(10));
        assert_eq!(percentile_nearest_rank(&ten, 100), Some(10));
        assert_eq!(percentile_nearest_rank(&ten, 0), Some(1));
    }

    #[test]
    fn counted_percentiles_equal_the_expanded_list() {
        let mut seed = 7u64;
        for len in 0..60u64 {
            let mut counts = Vec::new();
            let mut value = 0u32;
            for _ in 0..len % 9 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                value += 1 + (seed >> 60) as u32;
                counts.push((value, (seed >> 33) % 4));
            }
            let sorted: Vec<u32> = counts
                .iter()
                .flat_map(|&(v, c)| std::iter::repeat_n(v, c as usize))
                .collect();
            for p in [0, 1, 50, 90, 99, 100] {
                assert_eq!(
                    percentile_nearest_rank_counted(&counts, p),
                    percentile_nearest_rank(&sorted, p),
                    "{counts:?} p{p}"
                );
            }
        }
    }

    #[test]
    fn buckets_cover_the_period_in_local_time() {
        let from = "2026-11-30T03:00:00Z".parse().unwrap(); // 00:00 in São Paulo
        let to = "2026-12-01T03:00:00Z".parse().unwrap();
        let q = ResultsQuery::new(
            WidgetId::new(1).unwrap(),
            from,
            to,
            chrono_tz::America::Sao_Paulo,
            Interval::Hour,
        );
        let b = q.buckets();
        assert_eq!(b.len(), 24);
        assert_eq!(b[0].to_string(), "2026-11-30 00:00:00");
        let q = ResultsQuery {
            interval: Interval::Day,
            ..q
        };
        assert_eq!(q.buckets().len(), 1);
        // A day with a DST change in Berlin has 23 local hours.
        let q = ResultsQuery::new(
            WidgetId::new(1).unwrap(),
            "2026-03-28T23:00:00Z".parse().unwrap(),
            "2026-03-29T22:00:00Z".parse().unwrap(),
            chrono_tz::Europe::Berlin,
            Interval::Hour,
        );
        // 00:00..23:00 local, with 02:00 skipped.
        let b = q.buckets();
        assert_eq!(b.len(), 23);
        assert!(!b.iter().any(|b| b.to_string() == "2026-03-29 02:00:00"));
    }

    #[test]
    fn stage_needs_every_previous_step() {
        let mut f = CallFacts::default();
        assert_eq!(
            FunnelStage::of(&f, DetailedState::Created),
            FunnelStage::Requested
        );
        // Dialled without an answer recorded (impossible in practice):
        // still only requested, the funnel is monotone.
        f.requested.dial_target = true;
        assert_eq!(
            FunnelStage::of(&f, DetailedState::Created),
            FunnelStage::Requested
        );
        f.activist.status = Some(crate::call::LegStatus::InProgress);
        f.confirmed = true;
        assert_eq!(
            FunnelStage::of(&f, DetailedState::Connecting),
            FunnelStage::TargetDialled
        );
        for s in FunnelStage::ALL {
            assert_eq!(FunnelStage::from_i16(s.as_i16()), Some(s));
        }
    }
}
