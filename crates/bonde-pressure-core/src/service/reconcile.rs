//! Reconciliation: stale calls checked against the telephony, expired,
//! recovered.

use std::sync::Arc;

use crate::chain::error_chain;
use tracing::{debug, info, warn};

use crate::lease::Lease;

use crate::call::{Call, CallEvent, DetailedState, Effect, Leg, LegError, LegStatus};
use crate::domain::CallId;
use crate::ports::TelephonyError;

use super::{PressureService, ServiceError};

/// Runs reconciliation for an embedder: one [`PressureService::reconcile`]
/// pass every [`Reconciler::interval`] over at most [`Reconciler::batch`]
/// stale calls, until told to stop.
///
/// The cadence is slept on the service's [`Clock`](crate::Clock) (its
/// `sleep`), so a [`ManualClock`](crate::ManualClock) drives it in tests.
/// Every replica sharing a store may run one: commits are version-checked,
/// so two replicas never commit twice on a call. Telephony commands are
/// not: two passes at once could each hang up the same leftover leg. With
/// [`Reconciler::with_lease`], a pass runs only while this reconciler holds
/// a shared [`Lease`], so one pass runs at a time across replicas.
///
/// ## The lease
/// Before each pass the reconciler takes or renews the lease
/// [`Reconciler::LEASE_NAME`] for [`Reconciler::lease_ttl`] (default
/// [`Reconciler::DEFAULT_LEASE_TTL`], 5 minutes); when another holder's
/// lease is valid the pass is skipped ([`ReconcileReport::skipped`]). The
/// holder keeps it between passes by renewing it, so one replica stays the
/// reconciler while it lives; it gives the lease up when [`Reconciler::run`]
/// stops. A holder that dies stops renewing: another replica takes over
/// within the ttl plus one interval. During a pass the lease is renewed
/// between calls, once a third of the ttl has passed since it was last
/// taken (no task is spawned, no transaction is held across telephony
/// calls); when it cannot be renewed (another replica took it after it
/// expired, or the backend failed) the pass stops before its next call
/// ([`ReconcileReport::lease_lost`]) and the rest waits for the next pass.
/// A call may start just before a renewal is due, so the ttl must exceed
/// 1.5 × what one call's reconciliation takes (its telephony requests,
/// bounded by their timeouts), not the whole pass.
/// Pick the ttl above the interval too, or the lease lapses between passes
/// and any replica may take the next one (still one at a time).
///
/// Pick the interval well under [`ServiceConfig::stale_after`](crate::ServiceConfig::stale_after)
/// (a stale call then waits at most `stale_after` plus one interval) and a
/// batch that one pass handles within the interval; the oldest stale calls
/// come first, so a backlog drains over a few passes.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use bonde_pressure_core::{Dependencies, InMemoryCallStore, PressureService, Reconciler,
/// #     Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony, StaticCampaignDirectory};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let deps = Dependencies::new(
/// #     Arc::new(InMemoryCallStore::new()),
/// #     Arc::new(SimulatedTelephony::new(ScenarioPicker::Always(Scenario::Success), Duration::ZERO)),
/// #     Arc::new(StaticCampaignDirectory::demo()),
/// # );
/// let service = Arc::new(PressureService::new(deps, ServiceConfig::default()));
/// let reconciler = Reconciler::new(service)
///     .with_interval(Duration::from_secs(30))
///     .with_batch(200);
///
/// // One pass now (what `run` does every interval).
/// let report = reconciler.run_once().await?;
/// assert_eq!(report.examined, 0);
///
/// // Passes every 30 s until the shutdown future resolves (here: at once).
/// reconciler.run(std::future::ready(())).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Reconciler {
    service: std::sync::Arc<PressureService>,
    interval: std::time::Duration,
    batch: u32,
    lease: Option<HeldLease>,
}

/// The lease a reconciler runs under.
#[derive(Clone)]
struct HeldLease {
    lease: Arc<dyn Lease>,
    holder: String,
    ttl: std::time::Duration,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// The default pause between passes: 30 s.
    pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
    /// The default batch: at most 200 calls per pass.
    pub const DEFAULT_BATCH: u32 = 200;
    /// The default lease ttl ([`Reconciler::with_lease`]): 5 minutes.
    pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(300);
    /// The name of the lease reconcilers share.
    pub const LEASE_NAME: &'static str = "reconciler";

    /// Reconciles `service` every [`Reconciler::DEFAULT_INTERVAL`], at most
    /// [`Reconciler::DEFAULT_BATCH`] calls per pass.
    pub fn new(service: std::sync::Arc<PressureService>) -> Self {
        Self {
            service,
            interval: Self::DEFAULT_INTERVAL,
            batch: Self::DEFAULT_BATCH,
            lease: None,
        }
    }

    /// Runs passes only while holding `lease` ([`Reconciler::LEASE_NAME`])
    /// as `holder`, a name unique to this replica (e.g. host name, process
    /// id and a random suffix), for [`Reconciler::DEFAULT_LEASE_TTL`]. See
    /// "The lease" above.
    pub fn with_lease(mut self, lease: Arc<dyn Lease>, holder: impl Into<String>) -> Self {
        self.lease = Some(HeldLease {
            lease,
            holder: holder.into(),
            ttl: self
                .lease
                .as_ref()
                .map_or(Self::DEFAULT_LEASE_TTL, |l| l.ttl),
        });
        self
    }

    /// With this lease ttl (used with [`Reconciler::with_lease`]).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        if let Some(l) = &mut self.lease {
            l.ttl = ttl;
        }
        self
    }

    /// The lease ttl, when running under a lease.
    pub fn lease_ttl(&self) -> Option<std::time::Duration> {
        self.lease.as_ref().map(|l| l.ttl)
    }

    /// Gives the lease up (when running under one and holding it), so
    /// another replica can take the next pass at once. [`Reconciler::run`]
    /// calls it when it stops. A failure is logged.
    pub async fn release_lease(&self) {
        if let Some(l) = &self.lease
            && let Err(error) = l.lease.release(Self::LEASE_NAME, &l.holder).await
        {
            warn!(error = %error_chain(&error), "releasing the reconciliation lease failed");
        }
    }

    /// With this pause between passes (slept on the service's clock).
    pub fn with_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = interval;
        self
    }

    /// With at most this many calls examined per pass.
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// The pause between passes.
    pub fn interval(&self) -> std::time::Duration {
        self.interval
    }

    /// The most calls examined per pass.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// One pass ([`PressureService::reconcile`] with the batch), logged: at
    /// info level when it examined calls, at warn level when it failed.
    ///
    /// Under a lease ([`Reconciler::with_lease`]), the pass runs only if
    /// the lease could be taken or renewed; otherwise (another holder, or
    /// the lease backend failed, logged) it returns a report with
    /// [`ReconcileReport::skipped`] set and nothing else done. The pass
    /// renews the lease between calls and stops when it cannot
    /// ([`ReconcileReport::lease_lost`]).
    pub async fn run_once(&self) -> Result<ReconcileReport, ServiceError> {
        let clock = &self.service.deps.clock;
        let started = clock.now();
        if let Some(l) = &self.lease {
            let held = match l
                .lease
                .try_acquire(Self::LEASE_NAME, &l.holder, l.ttl)
                .await
            {
                Ok(held) => held,
                Err(error) => {
                    warn!(error = %error_chain(&error), "reconciliation lease unavailable; pass skipped");
                    false
                }
            };
            if !held {
                debug!("another replica holds the reconciliation lease; pass skipped");
                return Ok(ReconcileReport {
                    skipped: true,
                    ..ReconcileReport::default()
                });
            }
        }
        let keeper = self.lease.as_ref().map(|held| LeaseKeeper {
            held,
            clock: clock.as_ref(),
            renewed_at: std::sync::Mutex::new(started),
        });
        let outcome = self
            .service
            .reconcile_pass(self.batch, keeper.as_ref())
            .await;
        match &outcome {
            Ok(r) if r.examined > 0 => info!(
                examined = r.examined,
                fetched = r.legs_fetched,
                expired = r.expired,
                hung_up = r.legs_hung_up,
                lost_dials = r.lost_dials,
                joins_recovered = r.joins_recovered,
                unreadable = r.unreadable,
                errors = r.errors,
                "reconciliation pass"
            ),
            Ok(_) => {}
            Err(error) => warn!(error = %error_chain(&error), "reconciliation pass failed"),
        }
        outcome
    }

    /// Waits one interval, runs a pass ([`Reconciler::run_once`]), and
    /// again, until `shutdown` resolves; returns then. A pass under way
    /// when `shutdown` resolves is finished first. A failed pass is logged
    /// and the loop goes on.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        self.run_with(shutdown, |_| {}).await;
    }

    /// [`Reconciler::run`], handing each pass's outcome to `on_pass` (for
    /// metrics).
    pub async fn run_with(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
        mut on_pass: impl FnMut(&Result<ReconcileReport, ServiceError>),
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let mut pause = self.service.deps.clock.sleep(self.interval);
            let stopped = std::future::poll_fn(|cx| {
                if shutdown.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
                pause.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if stopped {
                self.release_lease().await;
                return;
            }
            let outcome = self.run_once().await;
            on_pass(&outcome);
        }
    }
}

/// What a reconciliation pass did.
///
/// Starts from [`ReconcileReport::default`] (all zero); its fields are
/// counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Unfinished stale calls looked at.
    pub examined: usize,
    /// Legs whose status was fetched.
    pub legs_fetched: usize,
    /// Calls declared expired.
    pub expired: usize,
    /// Legs hung up directly because their call's state was terminal.
    pub legs_hung_up: usize,
    /// Target dials that never reported back, recorded as failed.
    pub lost_dials: usize,
    /// Conferences whose participants were listed (calls waiting for the
    /// activist's join); a listing that found no conference (or a
    /// telephony without the listing) is not counted.
    pub conferences_fetched: usize,
    /// Calls whose activist was found in the conference by that listing,
    /// so the target was dialled (the join's callbacks were lost).
    pub joins_recovered: usize,
    /// Listed rows that could not be decoded (damaged), skipped: counted
    /// every pass while they stay damaged.
    pub unreadable: usize,
    /// Of those, the calls reported for the first time (logged once per
    /// call, not every pass), plus the damaged calls first met since the
    /// last pass by [`PressureService::call`] or [`PressureService::handle`]
    /// (each call is in one report only).
    pub unreadable_new: Vec<Option<CallId>>,
    /// Opted-out activists' numbers put on the do-not-call list by this
    /// pass (their first listing had failed).
    pub opt_outs_listed: usize,
    /// Payloads waiting in the spool that this pass stored first
    /// ([`PressureService::flush_spool`]).
    pub payloads_flushed: usize,
    /// Errors met (logged).
    pub errors: usize,
    /// The pass did not run: the reconciler runs under a lease
    /// ([`Reconciler::with_lease`]) that another replica holds (or that
    /// could not be checked). Every counter is then zero.
    pub skipped: bool,
    /// The pass stopped before the end of its batch because its lease
    /// could not be renewed (another replica took it after it expired, or
    /// the backend failed): the calls left wait for the next pass.
    pub lease_lost: bool,
}

/// Renews a reconciler's lease during its pass.
struct LeaseKeeper<'a> {
    held: &'a HeldLease,
    clock: &'a dyn crate::ports::Clock,
    /// When the lease was last taken or renewed.
    renewed_at: std::sync::Mutex<chrono::DateTime<chrono::Utc>>,
}

impl LeaseKeeper<'_> {
    /// Whether the pass may go on: `true` while less than a third of the
    /// ttl has passed since the lease was last taken, else after renewing
    /// it; `false` (logged) when it could not be renewed.
    async fn still_held(&self) -> bool {
        let now = self.clock.now();
        let since = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
        if (now - since).to_std().unwrap_or_default() < self.held.ttl / 3 {
            return true;
        }
        match self
            .held
            .lease
            .try_acquire(Reconciler::LEASE_NAME, &self.held.holder, self.held.ttl)
            .await
        {
            Ok(true) => {
                *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = now;
                true
            }
            Ok(false) => {
                warn!("reconciliation lease taken over by another replica; pass stopped");
                false
            }
            Err(error) => {
                warn!(error = %error_chain(&error), "reconciliation lease could not be renewed; pass stopped");
                false
            }
        }
    }
}

impl PressureService {
    /// One reconciliation pass: first the payloads waiting in the spool are
    /// stored ([`PressureService::flush_spool`]; a failure is counted in
    /// `errors` and the pass goes on), then the calls that are not settled
    /// ([`Call::is_settled`]) and had no news for `stale_after` are
    /// looked at:
    /// - their live legs' status is fetched from the telephony (a leg the
    ///   provider does not know is recorded as ended);
    /// - a target dial that was already requested, without leg id or refusal,
    ///   when the call was listed is recorded as failed (lost dial);
    /// - if the call's state is terminal but a leg is still live (an effect
    ///   that should have ended it failed), that leg is hung up directly
    ///   (completed if answered, else canceled; idempotent at the provider;
    ///   a failure is logged and retried by the next pass);
    /// - those created more than `expire_after` ago that are still not
    ///   terminal are declared expired (state `error` unless completed,
    ///   live legs hung up).
    pub async fn reconcile(&self, limit: u32) -> Result<ReconcileReport, ServiceError> {
        self.reconcile_pass(limit, None).await
    }

    /// [`PressureService::reconcile`], renewing `lease` before each call
    /// and stopping when it cannot.
    async fn reconcile_pass(
        &self,
        limit: u32,
        lease: Option<&LeaseKeeper<'_>>,
    ) -> Result<ReconcileReport, ServiceError> {
        let now = self.deps.clock.now();
        let stale_before =
            now - chrono::Duration::from_std(self.config.stale_after).unwrap_or_default();
        let expire_before =
            now - chrono::Duration::from_std(self.config.expire_after).unwrap_or_default();
        let mut report = ReconcileReport::default();
        match self.flush_spool().await {
            Ok(n) => report.payloads_flushed = n,
            Err(error) => {
                report.errors += 1;
                warn!(error = %error_chain(&error), waiting = self.spool_stats().waiting, "reconciliation: the payload spool could not be flushed");
            }
        }
        let rows = self
            .deps
            .store
            .list_unfinished_rows(stale_before, limit)
            .await?;
        let calls = self.skip_unreadable(rows, &mut report);
        for call in calls {
            if let Some(keeper) = lease
                && !keeper.still_held().await
            {
                report.lease_lost = true;
                break;
            }
            report.examined += 1;
            if call.opt_out_pending() {
                match self.list_opt_out(&call).await {
                    Some(_) => report.opt_outs_listed += 1,
                    None => report.errors += 1,
                }
            }
            for leg in [Leg::Activist, Leg::Target] {
                let facts = call.facts.leg(leg);
                let Some(leg_id) = facts.leg_id.clone() else {
                    continue;
                };
                if facts.is_terminal() {
                    continue;
                }
                match self.deps.telephony.fetch_leg(&leg_id).await {
                    Ok(snap) => {
                        report.legs_fetched += 1;
                        let mut events = vec![CallEvent::LegStatus {
                            leg,
                            leg_id: Some(snap.leg_id.clone()),
                            status: snap.status,
                            duration_secs: snap.duration_secs,
                            sip_response_code: None,
                            // The provider's end time; otherwise stamped on receipt.
                            at: snap.ended_at.filter(|_| snap.status.is_terminal()),
                        }];
                        if let Some(answered_by) = snap.answered_by {
                            events.push(CallEvent::AnsweredBy {
                                leg,
                                leg_id: Some(snap.leg_id),
                                answered_by,
                            });
                        }
                        for e in events {
                            if let Err(error) = self.handle(call.id, e, None).await {
                                report.errors += 1;
                                warn!(call_id = %call.id, error = %error_chain(&error), "reconciliation update failed");
                            }
                        }
                    }
                    // The provider has no such call (a simulated telephony
                    // that restarted, another account): it is not up. Record
                    // it as ended, or the call would be listed forever.
                    Err(TelephonyError::NotFound { .. }) => {
                        report.legs_fetched += 1;
                        let status = if call.facts.leg_answered(leg) {
                            LegStatus::Completed
                        } else {
                            LegStatus::Canceled
                        };
                        warn!(call_id = %call.id, leg = leg.as_str(), status = status.as_str(), "leg unknown to the telephony; recorded as ended");
                        let ended = CallEvent::LegStatus {
                            leg,
                            leg_id: Some(leg_id),
                            status,
                            duration_secs: None,
                            sip_response_code: None,
                            at: None,
                        };
                        if let Err(error) = self.handle(call.id, ended, None).await {
                            report.errors += 1;
                            warn!(call_id = %call.id, error = %error_chain(&error), "reconciliation update failed");
                        }
                    }
                    Err(error) => {
                        report.errors += 1;
                        warn!(call_id = %call.id, leg = leg.as_str(), error = %error_chain(&error), "reconciliation fetch failed");
                    }
                }
            }
            if awaits_join(&call) {
                self.recover_join(call.id, &mut report).await;
            }
            if dial_was_lost(&call) {
                self.fail_lost_dial(call.id, &mut report).await;
            }
            let Some(call) = self.hang_up_leftover_legs(call.id, &mut report).await else {
                continue;
            };
            // Only a call that is still unfinished after what this pass
            // learnt is expired: an outcome just fetched is kept.
            if call.created_at < expire_before && !call.is_terminal() {
                match self.handle(call.id, CallEvent::Expired, None).await {
                    Ok(o) if o.call.state() == DetailedState::Error => report.expired += 1,
                    Ok(_) => {}
                    Err(error) => {
                        report.errors += 1;
                        warn!(call_id = %call.id, error = %error_chain(&error), "expiring call failed");
                    }
                }
            }
        }
        Ok(report)
    }
}

impl PressureService {
    /// Keeps the readable calls of a listing; a damaged row is counted,
    /// and logged the first time its call is met (not every pass).
    fn skip_unreadable(
        &self,
        rows: Vec<Result<Call, crate::ports::UnreadableCall>>,
        report: &mut ReconcileReport,
    ) -> Vec<Call> {
        report.unreadable_new.append(
            &mut self
                .unreadable_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut seen = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        let mut calls = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(call) => {
                    // Repaired since: report it again should it break again.
                    if !seen.is_empty() {
                        seen.remove(&Some(call.id));
                    }
                    calls.push(call);
                }
                Err(damaged) => {
                    report.unreadable += 1;
                    if seen.insert(damaged.call_id) {
                        tracing::error!(call_id = ?damaged.call_id, reason = %damaged.reason, "stored call cannot be read; skipped by reconciliation until repaired");
                        report.unreadable_new.push(damaged.call_id);
                    }
                }
            }
        }
        calls
    }

    /// The call waits for the activist's join (see [`awaits_join`]): asks
    /// the telephony who is in the call's conference, and records every
    /// participant in it as joined. Before the target is dialled the
    /// activist is the only possible participant, so this is the join, and
    /// the usual rules dial the target (once: the commit that requests it
    /// wins). Reloads the call first: the pass's fetches may have ended it.
    async fn recover_join(&self, call_id: CallId, report: &mut ReconcileReport) {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return;
            }
        };
        if !awaits_join(&call) {
            return;
        }
        let conference = match self
            .deps
            .telephony
            .conference_participants(call_id, call.facts.conference_id.clone())
            .await
        {
            Ok(Some(conference)) => conference,
            // Nothing known (no such conference, or a telephony without
            // the listing): nothing was fetched.
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation: listing the conference failed");
                return;
            }
        };
        report.conferences_fetched += 1;
        let mut dialled = false;
        for p in conference
            .participants
            .into_iter()
            .filter(|p| p.in_conference)
        {
            let joined = CallEvent::ParticipantJoined {
                conference_id: conference.conference_id.clone(),
                leg_id: p.leg_id,
                leg: p.leg,
            };
            match self.handle(call_id, joined, None).await {
                Ok(o) => dialled |= o.effects.contains(&Effect::DialTarget),
                Err(error) => {
                    report.errors += 1;
                    warn!(%call_id, error = %error_chain(&error), "reconciliation update failed");
                }
            }
        }
        if dialled {
            warn!(%call_id, "the activist's join was never reported; found in the conference, target dialled");
            report.joins_recovered += 1;
        }
    }

    /// Records a lost target dial (see [`dial_was_lost`], checked on the
    /// call as listed, i.e. silent for `stale_after`) as failed, so the
    /// usual effects follow (the conference ends, the activist hears the
    /// closing message) instead of the activist waiting until expiry. The
    /// reloaded call is checked again: a dial reported meanwhile wins.
    async fn fail_lost_dial(&self, call_id: CallId, report: &mut ReconcileReport) {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return;
            }
        };
        if !dial_was_lost(&call) {
            return;
        }
        warn!(%call_id, "the target's dial never reported back; recording it as failed");
        let lost = CallEvent::DialFailed {
            leg: Leg::Target,
            error: LegError {
                code: None,
                message: "the request to dial the target never reported back".into(),
            },
        };
        match self.handle(call_id, lost, None).await {
            Ok(_) => report.lost_dials += 1,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "recording a lost dial failed");
            }
        }
    }

    /// A call whose state is terminal must not keep a leg up: hangs up the
    /// legs that are still live after the fetch (the effect that should have
    /// ended them failed, e.g. ending the conference after a busy target).
    ///
    /// Returns the call as reloaded before the hang-ups (`None` if it could
    /// not be read).
    async fn hang_up_leftover_legs(
        &self,
        call_id: CallId,
        report: &mut ReconcileReport,
    ) -> Option<Call> {
        let call = match self.deps.store.get(call_id).await {
            Ok(Some(call)) => call,
            Ok(None) => return None,
            Err(error) => {
                report.errors += 1;
                warn!(%call_id, error = %error_chain(&error), "reconciliation reload failed");
                return None;
            }
        };
        if !call.is_terminal() {
            return Some(call);
        }
        for leg in call.live_legs() {
            let Some(leg_id) = call.facts.leg(leg).leg_id.clone() else {
                continue; // dial requested, leg id never came back: `fail_lost_dial` settles it
            };
            let how = call.hang_up_mode(leg);
            info!(%call_id, leg = leg.as_str(), state = call.state().as_str(), ?how, "hanging up a leg left live by a terminal call");
            match self.deps.telephony.hang_up(call_id, &leg_id, how).await {
                Ok(()) | Err(TelephonyError::NotFound { .. }) => report.legs_hung_up += 1,
                Err(error) => {
                    report.errors += 1;
                    warn!(%call_id, leg = leg.as_str(), error = %error_chain(&error), "hanging up a leftover leg failed; the next pass retries");
                }
            }
        }
        Some(call)
    }
}

/// The activist confirmed (was sent to the conference) but no evidence of
/// the join arrived, so the target was never dialled: the activist's
/// `participant-join` and the conference's start were both lost. Checked on
/// a call silent for `stale_after`, far longer than joining takes.
fn awaits_join(call: &Call) -> bool {
    let f = &call.facts;
    f.confirmed
        && !f.requested.dial_target
        && !f.activist_left_before_dial()
        && !f.conference_ended
        && !f.expired
}

/// The target was to be dialled, but neither the dialled leg nor a refusal
/// was recorded, and no participant other than the activist was seen (a
/// target whose `LegDialed` and callbacks were lost but who joined is not
/// lost). Checked on a call listed as silent for `stale_after`, this means
/// the replica that won the `DialTarget` commit died before the request or
/// before recording its answer: a dialled target reports `initiated` within
/// seconds, and a dial in progress takes at most the Twilio client's worst
/// case (about 10 s), far less than `stale_after` (2 min).
fn dial_was_lost(call: &Call) -> bool {
    let f = &call.facts;
    let activist = f.activist.leg_id.as_ref();
    f.requested.dial_target
        && !f.target_limited
        && f.target.leg_id.is_none()
        && f.target.status.is_none()
        && f.participants.keys().all(|leg_id| Some(leg_id) == activist)
}
