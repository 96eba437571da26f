//! The per-request deadline on the store.
//!
//! A database that is down, or a query hung on a connection it already
//! holds, must not keep a request (and the client, and Twilio) waiting:
//! the pool's acquire timeout covers the first case only. So every request
//! gets a budget of store time ([`crate::HttpOptions::request_timeout`], 5 s
//! by default):
//!
//! - the [`request_budget`] middleware gives each request its budget
//!   (a task-local, so it follows the handler through core's service);
//! - [`DeadlineStore`], wrapped around the store the service uses, bounds
//!   every store operation made for a request by what is left of its
//!   budget; one that runs out fails with [`StoreDeadlineExceeded`] (a
//!   [`StoreError::Backend`]), which the handlers answer like a store outage:
//!   503 with `Retry-After` on JSON routes and webhooks, fallback TwiML on
//!   TwiML routes;
//! - read-only requests (`GET`, `HEAD`) are also bounded as a whole by the
//!   budget (they only wait on the store), except the campaign results
//!   (`/v1/phone/widgets/…`: admin analytics over a whole campaign, read
//!   through their own port, bounded by the pool's acquire timeout only).
//!
//! Time spent waiting for the telephony is not counted (its client has its
//! own timeouts): a slow provider must not make the commit that records a
//! placed call fail. Store work outside requests (reconciliation, which
//! also flushes core's payload spool) has no budget; the pool's acquire
//! timeout still applies (a commit grouped on PostgreSQL may also wait for
//! a batch slot: as long as the statements ahead of it take, since a row
//! locked elsewhere is skipped, not waited for, by a grouped statement).
//! The [`crate::spool`] flusher gives each of its
//! attempts a budget of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bonde_pressure_core::do_not_call::{DoNotCallHash, DoNotCallList, DoNotCallSource};
use bonde_pressure_core::ports::{StoredEvent, UnreadableCall};
use bonde_pressure_core::{
    Admission, Call, CallId, CallStore, LimitKey, LimiterError, Quota, RateLimiter, RawEvent,
    StoreError,
};
use chrono::{DateTime, Utc};

use crate::error::AppError;
use crate::state::AppState;

/// What a store operation answers when the request's budget ran out.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request's store deadline ({0:?}) was exceeded")]
pub struct StoreDeadlineExceeded(pub Duration);

/// Whether a store error means "the store is unavailable right now" (as
/// opposed to a conflict, a missing call or a duplicate): a backend failure,
/// the deadline included.
pub fn is_unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(_))
}

/// The store time a request has left.
#[derive(Debug, Clone)]
pub struct Budget {
    total: Duration,
    left: Arc<Mutex<Duration>>,
}

impl Budget {
    /// A budget of `total`.
    pub fn new(total: Duration) -> Self {
        Self {
            total,
            left: Arc::new(Mutex::new(total)),
        }
    }

    fn left(&self) -> Duration {
        *self.left.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spend(&self, d: Duration) {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        *left = left.saturating_sub(d);
    }
}

tokio::task_local! {
    static BUDGET: Budget;
}

/// Runs `fut` with `budget` as the store budget of the store operations it makes.
pub async fn with_budget<F: std::future::Future>(budget: Budget, fut: F) -> F::Output {
    BUDGET.scope(budget, fut).await
}

/// The current request's store budget, if any (to carry it into a task
/// the request spawns: a task-local does not follow `tokio::spawn`).
pub fn current_budget() -> Option<Budget> {
    BUDGET.try_with(Budget::clone).ok()
}

/// Runs one store operation within the current request's budget (if any).
async fn bounded<T>(
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    within_budget(op, StoreError::backend).await
}

/// Runs `op` within the current request's budget (if any); when the
/// budget runs out, fails with `exceeded`'s error.
async fn within_budget<T, E>(
    op: impl std::future::Future<Output = Result<T, E>>,
    exceeded: impl FnOnce(StoreDeadlineExceeded) -> E,
) -> Result<T, E> {
    let Ok(budget) = BUDGET.try_with(Budget::clone) else {
        return op.await;
    };
    let left = budget.left();
    if left.is_zero() {
        return Err(exceeded(StoreDeadlineExceeded(budget.total)));
    }
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(left, op).await;
    budget.spend(started.elapsed());
    match result {
        Ok(r) => r,
        Err(_) => Err(exceeded(StoreDeadlineExceeded(budget.total))),
    }
}

/// A [`CallStore`] whose operations, when made for a request, are bounded by
/// that request's store budget (see the module's documentation). Outside a
/// request it forwards unchanged.
#[derive(Clone)]
pub struct DeadlineStore {
    inner: Arc<dyn CallStore>,
}

impl DeadlineStore {
    /// Bounds `inner`'s operations.
    pub fn new(inner: Arc<dyn CallStore>) -> Self {
        Self { inner }
    }
}

impl std::fmt::Debug for DeadlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl CallStore for DeadlineStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        bounded(self.inner.create(call)).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        bounded(self.inner.get(id)).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        bounded(self.inner.commit(call, events)).await
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        bounded(self.inner.append_events(call_id, events)).await
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        bounded(self.inner.events(call_id)).await
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        bounded(self.inner.list_unfinished(updated_before, limit)).await
    }
    async fn list_unfinished_rows(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        bounded(self.inner.list_unfinished_rows(updated_before, limit)).await
    }
    async fn count_recent_calls_to(
        &self,
        phone: &bonde_pressure_core::PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Option<bonde_pressure_core::RecentCalls>, StoreError> {
        bounded(self.inner.count_recent_calls_to(phone, since)).await
    }
}

/// A [`DoNotCallList`] on the same database, bounded like [`DeadlineStore`]
/// (the start of a call checks it).
#[derive(Clone)]
pub struct DeadlineDoNotCallList {
    inner: Arc<dyn DoNotCallList>,
}

impl DeadlineDoNotCallList {
    /// Bounds `inner`'s operations.
    pub fn new(inner: Arc<dyn DoNotCallList>) -> Self {
        Self { inner }
    }
}

impl std::fmt::Debug for DeadlineDoNotCallList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineDoNotCallList")
            .finish_non_exhaustive()
    }
}

/// A [`RateLimiter`] backed by the database (the shared limiter of a
/// PostgreSQL deployment) whose checks (`peek`, `charge`), when made for a
/// request, are bounded by that request's store budget like
/// [`DeadlineStore`]'s; one that runs out fails with
/// [`LimiterError::Unavailable`] (so a
/// [`LayeredRateLimiter`](bonde_pressure_core::LayeredRateLimiter) answers
/// from its in-process limiter). A charge cut off this way may still have
/// been counted in the database: the request is then counted twice (there
/// and in-process), erring on the side of limiting. Refunds are not
/// bounded (only by the pool's acquire timeout): they follow a failure,
/// often the very budget running out, and a refund dropped then would keep
/// a charge the request should not cost. Outside a request it forwards
/// unchanged.
pub struct DeadlineRateLimiter {
    inner: Arc<dyn RateLimiter>,
}

impl DeadlineRateLimiter {
    /// Bounds `inner`'s checks.
    pub fn new(inner: Arc<dyn RateLimiter>) -> Self {
        Self { inner }
    }
}

impl std::fmt::Debug for DeadlineRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineRateLimiter")
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RateLimiter for DeadlineRateLimiter {
    async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        within_budget(self.inner.peek(key, quota), LimiterError::unavailable).await
    }
    async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        within_budget(self.inner.charge(key, quota), LimiterError::unavailable).await
    }
    async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError> {
        self.inner.refund(key, quota).await
    }
}

#[async_trait]
impl DoNotCallList for DeadlineDoNotCallList {
    async fn contains(&self, hash: &DoNotCallHash) -> Result<bool, StoreError> {
        bounded(self.inner.contains(hash)).await
    }
    async fn add(
        &self,
        hash: &DoNotCallHash,
        source: DoNotCallSource,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        bounded(self.inner.add(hash, source, at)).await
    }
}

/// How long clients are asked to wait before retrying after a store outage.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The answer of a JSON route while the store is unavailable; `cause`
/// (an error, or a message) is logged with its chain of sources.
pub fn store_unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
    let cause = cause.into();
    AppError::Upstream {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        public: "Service temporarily unavailable. Try again later.",
        detail: format!(
            "store unavailable: {}",
            bonde_pressure_core::error_chain(&*cause)
        ),
        retry_after: Some(STORE_RETRY_AFTER),
    }
}

/// A store failure on a JSON route: 503 with `Retry-After` while the store
/// is unavailable ([`is_unavailable`]), otherwise the generic 500.
pub fn store_error(e: StoreError) -> AppError {
    if is_unavailable(&e) {
        store_unavailable(e)
    } else {
        AppError::internal(e)
    }
}

/// Routes under this prefix (campaign results) are not bounded as a whole.
const RESULTS_PREFIX: &str = "/v1/phone/widgets/";

/// Middleware: gives the request its store budget; read-only requests are
/// bounded as a whole (503 with `Retry-After` when it runs out).
pub async fn request_budget(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let total = state.options.request_timeout;
    if total.is_zero() {
        return next.run(req).await;
    }
    // Campaign results (admin analytics over a whole campaign) may take
    // longer than a page request: only their store operations are bounded.
    let analytics = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| p.as_str().starts_with(RESULTS_PREFIX));
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD) && !analytics;
    let run = with_budget(Budget::new(total), next.run(req));
    if !read_only {
        return run.await;
    }
    match tokio::time::timeout(total, run).await {
        Ok(r) => r,
        Err(_) => store_unavailable(StoreDeadlineExceeded(total)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bonde_pressure_core::InMemoryCallStore;

    struct Hanging;

    #[async_trait]
    impl CallStore for Hanging {
        async fn create(&self, _: &Call) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn get(&self, _: CallId) -> Result<Option<Call>, StoreError> {
            std::future::pending().await
        }
        async fn commit(&self, _: &Call, _: &[RawEvent]) -> Result<u64, StoreError> {
            std::future::pending().await
        }
        async fn append_events(&self, _: Option<CallId>, _: &[RawEvent]) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn events(&self, _: CallId) -> Result<Vec<StoredEvent>, StoreError> {
            std::future::pending().await
        }
        async fn list_unfinished(&self, _: DateTime<Utc>, _: u32) -> Result<Vec<Call>, StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_budget_bounds_all_the_store_work_of_a_request() {
        let store = DeadlineStore::new(Arc::new(Hanging));
        let started = tokio::time::Instant::now();
        let budget = Budget::new(Duration::from_millis(300));
        let (first, second) = with_budget(budget, async {
            (
                store.get(CallId::new()).await,
                store.get(CallId::new()).await,
            )
        })
        .await;
        let err = first.unwrap_err();
        assert!(is_unavailable(&err), "{err}");
        assert!(err.to_string().contains("store backend error"), "{err}");
        // The second operation has nothing left: it fails at once.
        assert!(second.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    struct HangingList;

    #[async_trait]
    impl DoNotCallList for HangingList {
        async fn contains(&self, _: &DoNotCallHash) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn add(
            &self,
            _: &DoNotCallHash,
            _: DoNotCallSource,
            _: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_do_not_call_list_is_bounded_too() {
        let list = DeadlineDoNotCallList::new(Arc::new(HangingList));
        let hash = bonde_pressure_core::do_not_call::DoNotCallHasher::default()
            .hash(&bonde_pressure_core::PhoneNumber::parse_e164("+5511912345678").unwrap());
        let started = tokio::time::Instant::now();
        let r = with_budget(
            Budget::new(Duration::from_millis(200)),
            list.contains(&hash),
        )
        .await;
        assert!(r.is_err_and(|e| is_unavailable(&e)));
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    struct HangingLimiter;

    #[async_trait]
    impl RateLimiter for HangingLimiter {
        async fn peek(&self, _: &LimitKey, _: Quota) -> Result<Admission, LimiterError> {
            std::future::pending().await
        }
        async fn charge(&self, _: &LimitKey, _: Quota) -> Result<Admission, LimiterError> {
            std::future::pending().await
        }
        async fn refund(&self, _: &LimitKey, _: Quota) -> Result<(), LimiterError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shared_limiter_checks_are_bounded_but_refunds_are_not() {
        let limiter = DeadlineRateLimiter::new(Arc::new(HangingLimiter));
        let key = LimitKey::new(
            bonde_pressure_core::LimitKind::ActivistCalls,
            "+5511912345678",
        );
        let quota = Quota::new(3, Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let (charged, refunded) = with_budget(Budget::new(Duration::from_millis(200)), async {
            let charged = limiter.charge(&key, quota).await;
            // The budget is spent; a refund is not cut off by it (here it
            // hangs until the test gives up on it a second later).
            let refunded =
                tokio::time::timeout(Duration::from_secs(1), limiter.refund(&key, quota)).await;
            (charged, refunded)
        })
        .await;
        let err = charged.unwrap_err();
        assert!(matches!(err, LimiterError::Unavailable(_)), "{err}");
        assert!(
            std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("deadline")),
            "{err}"
        );
        assert!(
            refunded.is_err(),
            "still waiting: not bounded by the budget"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(1200));
    }

    /// Within a budget, the layered limiter answers from its in-process
    /// limiter when the shared one runs out of time.
    #[tokio::test(start_paused = true)]
    async fn a_layered_limiter_answers_locally_when_the_shared_check_runs_out_of_time() {
        let clock: Arc<dyn bonde_pressure_core::Clock> = Arc::new(bonde_pressure_core::SystemClock);
        let layered = bonde_pressure_core::LayeredRateLimiter::new(
            Arc::new(bonde_pressure_core::InMemoryRateLimiter::new(clock)),
            Arc::new(DeadlineRateLimiter::new(Arc::new(HangingLimiter))),
        );
        let key = LimitKey::new(
            bonde_pressure_core::LimitKind::ActivistCalls,
            "+5511912345678",
        );
        let quota = Quota::new(1, Duration::from_secs(60));
        let (first, second) = with_budget(Budget::new(Duration::from_millis(200)), async {
            (
                layered.charge(&key, quota).await,
                layered.charge(&key, quota).await,
            )
        })
        .await;
        assert_eq!(first.unwrap(), Admission::Admitted);
        assert!(matches!(second.unwrap(), Admission::Exhausted { .. }));
    }

    /// The in-memory store, whose unfinished listing reports a damaged row.
    struct Damaged(InMemoryCallStore);

    #[async_trait]
    impl CallStore for Damaged {
        async fn create(&self, c: &Call) -> Result<(), StoreError> {
            self.0.create(c).await
        }
        async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
            self.0.get(id).await
        }
        async fn commit(&self, c: &Call, e: &[RawEvent]) -> Result<u64, StoreError> {
            self.0.commit(c, e).await
        }
        async fn append_events(
            &self,
            id: Option<CallId>,
            e: &[RawEvent],
        ) -> Result<(), StoreError> {
            self.0.append_events(id, e).await
        }
        async fn events(&self, id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.events(id).await
        }
        async fn list_unfinished(&self, b: DateTime<Utc>, l: u32) -> Result<Vec<Call>, StoreError> {
            self.0.list_unfinished(b, l).await
        }
        async fn list_unfinished_rows(
            &self,
            _: DateTime<Utc>,
            _: u32,
        ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
            Ok(vec![Err(UnreadableCall::new(None, "bad row"))])
        }
    }

    #[tokio::test]
    async fn damaged_rows_are_forwarded_not_hidden_by_a_default() {
        let store = DeadlineStore::new(Arc::new(Damaged(InMemoryCallStore::new())));
        let rows = store.list_unfinished_rows(Utc::now(), 10).await.unwrap();
        assert!(matches!(&rows[..], [Err(_)]), "{rows:?}");
    }

    #[tokio::test]
    async fn outside_a_request_operations_are_unbounded_and_forwarded() {
        let store = DeadlineStore::new(Arc::new(InMemoryCallStore::new()));
        assert!(store.get(CallId::new()).await.unwrap().is_none());
        let fast = with_budget(
            Budget::new(Duration::from_secs(5)),
            store.get(CallId::new()),
        );
        assert!(fast.await.unwrap().is_none());
    }
}
