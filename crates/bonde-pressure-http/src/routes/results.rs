//! Campaign results for organisers (admin token): the stats report, the CSV
//! export and the widget's live counters (SSE). See docs/http-api.md,
//! "Campaign results".

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::live::Subscription;
use bonde_pressure_core::ports::UnreadableCall;
use bonde_pressure_core::results::{CallCursor, FunnelStep};
use bonde_pressure_core::{
    CampaignResults, DetailedState, Interval, ResultsQuery, ResultsReport, Tz, UiStatus, WidgetId,
};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::{AppError, MessageBody, ValidationBody, ValidationItem};
use crate::state::AppState;

/// The time zone used when `tz` is absent.
pub const DEFAULT_TZ: Tz = Tz::America__Sao_Paulo;
/// The longest period a report or an export may cover.
pub const MAX_PERIOD_DAYS: i64 = 366;
/// The longest period an hourly series may cover.
pub const MAX_HOURLY_DAYS: i64 = 31;
/// Calls per page read by the CSV export.
const CSV_PAGE: u32 = 500;

// ------------------------------------------------------------------ auth

/// Requires `Authorization: Bearer <ADMIN_TOKEN>` (scheme case-insensitive,
/// compared in constant time). 401 otherwise, also when no token is set.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let Some(presented) = presented else {
        return Err(AppError::client(
            StatusCode::UNAUTHORIZED,
            "Not authenticated.",
        ));
    };
    match &state.options.admin_token {
        Some(token) if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) => Ok(()),
        _ => Err(AppError::client(StatusCode::UNAUTHORIZED, "Invalid token.")),
    }
}

fn results(state: &AppState) -> Result<&dyn CampaignResults, AppError> {
    state
        .results
        .as_deref()
        .ok_or_else(|| AppError::not_found("Not Found"))
}

// ---------------------------------------------------------------- params

fn query_error(field: &str, msg: impl Into<String>, kind: &str) -> ValidationItem {
    ValidationItem::new(
        vec![Value::from("query"), Value::from(field)],
        msg,
        kind.to_owned(),
    )
}

/// Parses the `{widget_id}` segment: a positive integer.
pub fn widget_path(raw: &str) -> Result<WidgetId, AppError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| WidgetId::new(n).ok())
        .ok_or_else(|| {
            AppError::Validation(vec![ValidationItem::new(
                vec![Value::from("path"), Value::from("widget_id")],
                "Input should be a positive integer",
                "int_parsing",
            )])
        })
}

/// Which end of the period a date names.
#[derive(Clone, Copy)]
enum End {
    From,
    To,
}

/// An RFC 3339 instant, or a `YYYY-MM-DD` local date: the start of that
/// day for `from`, the start of the next day for `to` (so `to` includes it).
fn instant(raw: &str, tz: Tz, end: End) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    let date = match end {
        End::From => date,
        End::To => date.succ_opt()?,
    };
    local_midnight(date, tz)
}

/// The first instant of a local day (midnight, or the first hour after a
/// DST gap at midnight).
fn local_midnight(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    (0..3).find_map(|h| {
        tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `from`, `to`, `tz` and `interval` of a results request, validated: a
/// 422 lists every bad parameter.
///
/// Defaults: `tz` America/Sao_Paulo; `to` now; `from` `default_span` before
/// `to`; `interval` hours up to three days, days beyond.
pub fn parse_period(
    widget_id: WidgetId,
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
    default_span: TimeDelta,
) -> Result<ResultsQuery, AppError> {
    let mut errors = Vec::new();
    let tz = match params.get("tz").map(|s| s.trim()) {
        None | Some("") => DEFAULT_TZ,
        Some(s) => s.parse::<Tz>().unwrap_or_else(|_| {
            errors.push(query_error(
                "tz",
                "Unknown time zone (expected an IANA name such as America/Sao_Paulo)",
                "value_error.tz",
            ));
            DEFAULT_TZ
        }),
    };
    let mut bound = |name: &str, end: End| -> Option<DateTime<Utc>> {
        let raw = params
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())?;
        let t = instant(raw, tz, end);
        if t.is_none() {
            errors.push(query_error(
                name,
                "Input should be an RFC 3339 date-time or a YYYY-MM-DD date",
                "value_error.datetime",
            ));
        }
        t
    };
    let to_given = bound("to", End::To);
    let from_given = bound("from", End::From);
    let to = to_given.unwrap_or(now);
    let from = from_given.unwrap_or(to - default_span);
    if errors.is_empty() {
        if from >= to {
            errors.push(query_error(
                "from",
                "from must be before to",
                "value_error.period",
            ));
        } else if to - from > TimeDelta::days(MAX_PERIOD_DAYS) {
            errors.push(query_error(
                "to",
                format!("The period is at most {MAX_PERIOD_DAYS} days"),
                "value_error.period",
            ));
        }
    }
    let interval = match params.get("interval").map(|s| s.trim()) {
        None | Some("") => ResultsQuery::default_interval(from, to),
        Some("hour") => Interval::Hour,
        Some("day") => Interval::Day,
        Some(_) => {
            errors.push(query_error(
                "interval",
                "Input should be 'hour' or 'day'",
                "enum",
            ));
            Interval::Day
        }
    };
    if errors.is_empty()
        && interval == Interval::Hour
        && to - from > TimeDelta::days(MAX_HOURLY_DAYS)
    {
        errors.push(query_error(
            "interval",
            format!("An hourly series covers at most {MAX_HOURLY_DAYS} days"),
            "value_error.period",
        ));
    }
    if errors.is_empty() {
        Ok(ResultsQuery::new(widget_id, from, to, tz, interval))
    } else {
        Err(AppError::Validation(errors))
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ----------------------------------------------------------------- stats

/// `GET /v1/phone/widgets/{widget_id}/stats`'s answer: the query echoed, then
/// the report.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// The widget.
    pub widget_id: i64,
    /// Start of the period (inclusive), UTC.
    pub from: String,
    /// End of the period (exclusive), UTC.
    pub to: String,
    /// The series' time zone.
    pub tz: String,
    /// `hour` or `day`.
    #[schema(value_type = String, example = "day")]
    pub interval: &'static str,
    /// How percentiles are computed: `nearest-rank`.
    #[schema(value_type = String, example = "nearest-rank")]
    pub percentile_method: &'static str,
    /// The report.
    #[serde(flatten)]
    pub report: ResultsReport,
}

impl StatsResponse {
    fn new(query: &ResultsQuery, report: ResultsReport) -> Self {
        Self {
            widget_id: query.widget_id.get(),
            from: rfc3339(query.from),
            to: rfc3339(query.to),
            tz: query.tz.name().to_owned(),
            interval: query.interval.as_str(),
            percentile_method: "nearest-rank",
            report,
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The widget's results over a period (admin token): totals per page status
/// and per detailed state, the funnel, per-target counts with median and
/// p90 talk time (nearest rank), and an hourly or daily series in `tz`.
#[utoipa::path(
    get, path = "/v1/phone/widgets/{widget_id}/stats", tag = "results",
    params(
        ("widget_id" = i64, Path, description = "The widget (a positive integer)"),
        ("from" = Option<String>, Query, description = "Start (inclusive): an RFC 3339 instant, or a YYYY-MM-DD date (its midnight in `tz`). Default: seven days before `to`"),
        ("to" = Option<String>, Query, description = "End (exclusive): an RFC 3339 instant, or a YYYY-MM-DD date (that whole day included). Default: now"),
        ("tz" = Option<String>, Query, description = "IANA time zone of dates and series buckets. Default: America/Sao_Paulo"),
        ("interval" = Option<String>, Query, description = "Series bucket: `hour` (periods up to 31 days) or `day`. Default: `hour` up to three days, `day` beyond"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = StatsResponse),
        (status = 401, description = "No or a wrong admin token", body = MessageBody),
        (status = 404, description = "This server keeps no results (no store implementing them)", body = MessageBody),
        (status = 422, description = "A bad widget id or query parameter, per field", body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn widget_stats(
    State(state): State<AppState>,
    Path(widget): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_admin(&state, &headers)?;
    let widget_id = widget_path(&widget)?;
    let query = parse_period(widget_id, &params, Utc::now(), TimeDelta::days(7))?;
    let report = results(&state)?
        .report(&query)
        .await
        .map_err(crate::deadline::store_error)?;
    Ok(no_store(
        Json(StatsResponse::new(&query, report)).into_response(),
    ))
}

// ------------------------------------------------------------------- CSV

/// The CSV export's columns.
pub const CSV_COLUMNS: [&str; 14] = [
    "call_id",
    "created_at",
    "updated_at",
    "widget_id",
    "status",
    "state",
    "funnel_stage",
    "activist_name",
    "activist_email",
    "activist_phone",
    "target_name",
    "target_phone",
    "talk_secs",
    "target_duration_secs",
];

/// A cell a spreadsheet could read as a formula — it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return — gets a leading `'`, so it is
/// shown as text (OWASP's advice for CSV injection). Phone numbers in E.164
/// (`+55…`) are escaped too: they then stay text with their `+`.
pub fn escape_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// One CSV field: formula-escaped, then quoted (RFC 4180) when it holds a
/// comma, a quote or a line break.
pub fn csv_field(cell: &str) -> String {
    let cell = escape_formula(cell);
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.into_owned()
    }
}

fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn csv_row(call: &bonde_pressure_core::Call, tz: Tz) -> String {
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let opt = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    csv_line(&[
        call.id.to_string(),
        local(call.created_at),
        local(call.updated_at),
        call.widget_id.get().to_string(),
        call.ui_status().as_str().to_owned(),
        call.state().as_str().to_owned(),
        call.funnel_stage().as_str().to_owned(),
        call.activist.name.as_str().to_owned(),
        call.activist.email.as_str().to_owned(),
        call.activist.phone.as_e164().to_owned(),
        call.target.name.as_str().to_owned(),
        call.target.phone.as_e164().to_owned(),
        opt(call.connected_secs()),
        opt(call.facts.target.duration_secs),
    ])
}

/// The row standing for a stored call that cannot be read: its id (empty
/// when even that is unreadable), `status` [`UNREADABLE_STATUS`], every
/// other cell empty — nothing of its content, which may be personal data.
fn csv_damaged_row(u: &UnreadableCall) -> String {
    let mut cells = vec![String::new(); CSV_COLUMNS.len()];
    cells[0] = u.call_id.map(|id| id.to_string()).unwrap_or_default();
    cells[4] = UNREADABLE_STATUS.to_owned();
    csv_line(&cells)
}

/// The `status` cell of a damaged row in the CSV export.
pub const UNREADABLE_STATUS: &str = "unreadable";

/// The widget's calls as CSV (admin token), streamed page by page: one row
/// per call created in the period, by creation time, with the columns of
/// [`CSV_COLUMNS`] (docs/http-api.md); cells a spreadsheet would read as
/// formulas are escaped. A stored call that cannot be read gets a row with
/// its id and the status `unreadable` (nothing else), is logged once, and
/// the export goes on.
#[utoipa::path(
    get, path = "/v1/phone/widgets/{widget_id}/calls.csv", tag = "results",
    params(
        ("widget_id" = i64, Path, description = "The widget (a positive integer)"),
        ("from" = Option<String>, Query, description = "Start (inclusive): an RFC 3339 instant, or a YYYY-MM-DD date (its midnight in `tz`). Default: 366 days before `to`"),
        ("to" = Option<String>, Query, description = "End (exclusive): an RFC 3339 instant, or a YYYY-MM-DD date (that whole day included). Default: now"),
        ("tz" = Option<String>, Query, description = "IANA time zone of dates and series buckets. Default: America/Sao_Paulo"),
        ("interval" = Option<String>, Query, description = "Series bucket: `hour` (periods up to 31 days) or `day`. Default: `hour` up to three days, `day` beyond"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`text/csv; charset=utf-8` (RFC 4180, CRLF line ends): a header line, then one line per call; sent as an attachment. A stored call that cannot be read is a line with its `call_id`, `status` `unreadable` and every other cell empty", body = String, content_type = "text/csv"),
        (status = 401, description = "No or a wrong admin token", body = MessageBody),
        (status = 404, description = "This server keeps no results (no store implementing them)", body = MessageBody),
        (status = 422, description = "A bad widget id or query parameter, per field", body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn widget_calls_csv(
    State(state): State<AppState>,
    Path(widget): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_admin(&state, &headers)?;
    let widget_id = widget_path(&widget)?;
    let query = parse_period(
        widget_id,
        &params,
        Utc::now(),
        TimeDelta::days(MAX_PERIOD_DAYS),
    )?;
    let store = state
        .results
        .clone()
        .ok_or_else(|| AppError::not_found("Not Found"))?;
    // Names, e-mails and numbers, unmasked: in the audit log first.
    if let Some(actor) = crate::routes::phone::admin(&state, &headers)? {
        crate::routes::phone::privacy(&state)?
            .record_unmasked_export(
                &actor,
                format!(
                    "GET /v1/phone/widgets/{{widget_id}}/calls.csv widget {} from {} to {}",
                    query.widget_id,
                    query.from.to_rfc3339(),
                    query.to.to_rfc3339()
                ),
            )
            .await
            .map_err(AppError::internal)?;
    }
    let header_line = csv_line(&CSV_COLUMNS.map(String::from));
    // (cursor, finished)
    let pages = futures::stream::unfold((None::<CallCursor>, false), move |(after, done)| {
        let store = store.clone();
        let query = query.clone();
        async move {
            if done {
                return None;
            }
            match store
                .list_call_rows(query.widget_id, query.from, query.to, after, CSV_PAGE)
                .await
            {
                Ok(page) => {
                    // `CSV_PAGE` counts readable calls; the next page
                    // resumes after the last one (damaged rows never end a
                    // full page: the store pages past them).
                    let readable: Vec<&bonde_pressure_core::Call> =
                        page.iter().filter_map(|r| r.as_ref().ok()).collect();
                    let next = readable.last().map(|c| CallCursor::after(c)).or(after);
                    let finished = readable.len() < CSV_PAGE as usize;
                    if page.is_empty() {
                        return None;
                    }
                    let mut chunk = String::new();
                    for row in &page {
                        match row {
                            Ok(c) => chunk.push_str(&csv_row(c, query.tz)),
                            Err(u) => {
                                // The reason names the column, never the value.
                                tracing::error!(
                                    call_id = ?u.call_id,
                                    reason = %u.reason,
                                    "CSV export: a stored call cannot be read; exported as `unreadable`"
                                );
                                chunk.push_str(&csv_damaged_row(u));
                            }
                        }
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(chunk)),
                        (next, finished),
                    ))
                }
                Err(error) => {
                    tracing::error!(%error, "CSV export: store read failed");
                    Some((
                        Err(std::io::Error::other("store read failed")),
                        (None, true),
                    ))
                }
            }
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok(Bytes::from(header_line)) }),
        pages,
    );
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"widget-{}-calls.csv\"",
        widget_id.get()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

// ---------------------------------------------------------- live counters

/// One `counters` event's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CountersEvent {
    /// The widget.
    pub widget_id: i64,
    /// Calls in the period.
    pub total: u64,
    /// By page status.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub by_status: BTreeMap<UiStatus, u64>,
    /// Calls in progress now (not in a terminal state).
    pub live: u64,
    /// The funnel.
    pub funnel: Vec<FunnelStep>,
}

impl CountersEvent {
    fn of(widget_id: WidgetId, r: ResultsReport) -> Self {
        let live = r
            .by_state
            .iter()
            .filter(|(s, _)| !DetailedState::is_terminal(s))
            .map(|(_, n)| n)
            .sum();
        Self {
            widget_id: widget_id.get(),
            total: r.total,
            by_status: r.by_status,
            live,
            funnel: r.funnel,
        }
    }
}

struct Counters {
    state: AppState,
    query: ResultsQuery,
    /// Whether `to` follows the clock (no `to` given).
    open_ended: bool,
    live: Subscription,
    last: Option<CountersEvent>,
    first: bool,
    seq: u64,
}

/// Live counters never refresh more often than this.
const COUNTERS_MIN_GAP: Duration = Duration::from_millis(250);

impl Counters {
    async fn wait(&mut self) {
        tokio::time::sleep(COUNTERS_MIN_GAP).await;
        let poll = self.state.options.sse_poll_interval.max(COUNTERS_MIN_GAP);
        let sleep = tokio::time::sleep(poll);
        tokio::pin!(sleep);
        // Core's live updates wake us for this widget's commits (a lag,
        // too: re-read); the poll catches other replicas' commits.
        tokio::select! {
            _ = sleep.as_mut() => {}
            notice = self.live.next() => {
                if notice.is_none() {
                    // The service is gone: only the poll remains.
                    sleep.as_mut().await;
                }
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if !self.first {
                self.wait().await;
            }
            self.first = false;
            if self.open_ended {
                // New calls keep counting: the period ends a little after now.
                self.query.to = Utc::now() + TimeDelta::seconds(1);
            }
            let results = self.state.results.clone()?;
            let report = match results.report(&self.query).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, "widget counters: store read failed");
                    continue;
                }
            };
            let counters = CountersEvent::of(self.query.widget_id, report);
            if self.last.as_ref() == Some(&counters) {
                continue;
            }
            self.last = Some(counters.clone());
            self.seq += 1;
            return Some(
                Event::default()
                    .event("counters")
                    .id(self.seq.to_string())
                    .json_data(&counters)
                    .unwrap_or_default(),
            );
        }
    }
}

/// Live counters of a widget (admin token): a `counters` event now and one
/// whenever they change — woken by this process's commits for the widget,
/// and by a timer for other replicas'. The period defaults to today in `tz`
/// and, without `to`, follows the clock.
#[utoipa::path(
    get, path = "/v1/phone/widgets/{widget_id}/events", tag = "results",
    params(
        ("widget_id" = i64, Path, description = "The widget (a positive integer)"),
        ("from" = Option<String>, Query, description = "Start (inclusive): an RFC 3339 instant, or a YYYY-MM-DD date (its midnight in `tz`). Default: today's midnight in `tz`"),
        ("to" = Option<String>, Query, description = "End (exclusive): an RFC 3339 instant, or a YYYY-MM-DD date (that whole day included). Default: none: the period follows the clock"),
        ("tz" = Option<String>, Query, description = "IANA time zone of dates and series buckets. Default: America/Sao_Paulo"),
        ("interval" = Option<String>, Query, description = "Series bucket: `hour` (periods up to 31 days) or `day`. Default: `hour` up to three days, `day` beyond"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `counters` events: each has `event: counters`, `id:` a sequence number, and `data:` a `CountersEvent` as JSON", body = CountersEvent, content_type = "text/event-stream"),
        (status = 401, description = "No or a wrong admin token", body = MessageBody),
        (status = 404, description = "This server keeps no results (no store implementing them)", body = MessageBody),
        (status = 422, description = "A bad widget id or query parameter, per field", body = ValidationBody),
        (status = 503, description = "Store unavailable; see Retry-After", body = MessageBody),
    )
)]
pub async fn widget_events(
    State(state): State<AppState>,
    Path(widget): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_admin(&state, &headers)?;
    let widget_id = widget_path(&widget)?;
    results(&state)?;
    let now = Utc::now();
    let mut params = params;
    let open_ended = params.get("to").is_none_or(|s| s.trim().is_empty());
    if params.get("from").is_none_or(|s| s.trim().is_empty()) {
        // Today, in the requested zone.
        let tz = params
            .get("tz")
            .and_then(|s| s.trim().parse::<Tz>().ok())
            .unwrap_or(DEFAULT_TZ);
        let today = now.with_timezone(&tz).date_naive();
        params.insert("from".into(), today.format("%Y-%m-%d").to_string());
    }
    let query = parse_period(
        widget_id,
        &params,
        now + TimeDelta::seconds(1),
        TimeDelta::days(1),
    )?;
    let state_metrics = state.metrics.clone();
    let sub = Counters {
        live: state.service.live_updates().subscribe_widget(widget_id),
        state,
        query,
        open_ended,
        last: None,
        first: true,
        seq: 0,
    };
    // Counted open until the stream ends or the client goes.
    let open = state_metrics.open_stream("widget");
    let stream = futures::stream::unfold((sub, open), |(mut sub, open)| async move {
        let e = sub.next_event().await?;
        Some((Ok::<_, Infallible>(e), (sub, open)))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn errors(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let w = WidgetId::new(1).unwrap();
        match parse_period(w, &params(pairs), Utc::now(), TimeDelta::days(7)) {
            Err(AppError::Validation(v)) => v
                .into_iter()
                .map(|i| (i.loc[1].as_str().unwrap().to_owned(), i.kind))
                .collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn formulas_are_escaped_and_fields_quoted() {
        for bad in ["=1+1", "+5511912345678", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(escape_formula(bad), format!("'{bad}"), "{bad:?}");
        }
        assert_eq!(escape_formula("Ana"), "Ana");
        assert_eq!(escape_formula(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
    }

    #[test]
    fn periods_parse_dates_in_the_zone() {
        let w = WidgetId::new(1).unwrap();
        let q = parse_period(
            w,
            &params(&[("from", "2026-11-01"), ("to", "2026-11-30")]),
            Utc::now(),
            TimeDelta::days(7),
        )
        .unwrap();
        assert_eq!(q.from.to_rfc3339(), "2026-11-01T03:00:00+00:00");
        assert_eq!(q.to.to_rfc3339(), "2026-12-01T03:00:00+00:00");
        assert_eq!(q.tz, DEFAULT_TZ);
        assert_eq!(q.interval, Interval::Day);
        let q = parse_period(
            w,
            &params(&[
                ("from", "2026-11-30T10:00:00Z"),
                ("to", "2026-11-30T12:00:00-03:00"),
                ("tz", "Europe/Berlin"),
            ]),
            Utc::now(),
            TimeDelta::days(7),
        )
        .unwrap();
        assert_eq!(q.interval, Interval::Hour);
        assert_eq!(q.tz.name(), "Europe/Berlin");
        assert_eq!(q.to.to_rfc3339(), "2026-11-30T15:00:00+00:00");
    }

    #[test]
    fn bad_parameters_are_field_errors() {
        assert_eq!(
            errors(&[("tz", "Mars/Olympus")]),
            [("tz".into(), "value_error.tz".into())]
        );
        let e = errors(&[("from", "yesterday"), ("to", "2026-13-01")]);
        assert!(e.contains(&("from".into(), "value_error.datetime".into())));
        assert!(e.contains(&("to".into(), "value_error.datetime".into())));
        assert_eq!(
            errors(&[("from", "2026-11-30"), ("to", "2026-11-01")]),
            [("from".into(), "value_error.period".into())]
        );
        assert_eq!(
            errors(&[("from", "2020-01-01"), ("to", "2026-01-01")]),
            [("to".into(), "value_error.period".into())]
        );
        assert_eq!(
            errors(&[
                ("from", "2026-01-01"),
                ("to", "2026-03-01"),
                ("interval", "hour")
            ]),
            [("interval".into(), "value_error.period".into())]
        );
        assert_eq!(
            errors(&[("interval", "week")]),
            [("interval".into(), "enum".into())]
        );
        assert!(matches!(widget_path("0"), Err(AppError::Validation(_))));
        assert!(matches!(widget_path("x"), Err(AppError::Validation(_))));
        assert_eq!(widget_path("12").unwrap().get(), 12);
    }
}
