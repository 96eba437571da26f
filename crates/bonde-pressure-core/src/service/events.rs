//! Event handling: apply and commit an event (retrying on conflict), keep its
//! payload, run the effects.

use crate::chain::error_chain;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info, warn};

use crate::call::{Call, CallEvent, Confirmation, Effect, Leg, LegError};
use crate::do_not_call::DoNotCallSource;
use crate::domain::CallId;
use crate::limits::{Admission, LimitKey, LimitKind};
use crate::ports::{Clock, EventSink, RawEvent, StoreError, TargetCallRequest, TelephonyError};
use crate::spool::{SpoolFull, SpoolStats, store_once};

use super::{PressureService, ServiceError};

/// What handling one event led to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleOutcome {
    /// The call as committed. For an event that changed nothing (no
    /// commit), the call as this service last knew it: read from the store,
    /// or from the call cache within its age limit (what
    /// [`PressureService::cached_summary`] would serve).
    pub call: Call,
    /// The effects this event's transition requested (already performed).
    pub effects: Vec<Effect>,
}

impl HandleOutcome {
    /// `call` as committed, after `effects`.
    pub fn new(call: Call, effects: Vec<Effect>) -> Self {
        Self { call, effects }
    }
}

impl PressureService {
    /// The do-not-call key turns a "confirmation" into an opt-out: it never confirms.
    fn opt_out_or(&self, event: CallEvent) -> CallEvent {
        match (&event, self.config.do_not_call_digit) {
            (CallEvent::Confirmed(Confirmation::Digits(d)), Some(key))
                if d.trim().len() == key.len_utf8() && d.trim().starts_with(key) =>
            {
                CallEvent::OptedOut
            }
            _ => event,
        }
    }
}

impl PressureService {
    /// Applies an event to a call: load, apply, commit if the version is
    /// unchanged (retrying on conflict), then performs the effects the
    /// committed transition requested, feeding their results back as events.
    /// With a call cache ([`PressureService::with_call_cache`]) the first
    /// attempt applies the event to the cached call instead of reading it;
    /// the version check catches a stale copy and the next attempt reads.
    /// Within one service, the load–apply–commit of events to the same call
    /// runs one at a time (events for one call arriving together queue
    /// instead of retrying); services in other processes meet on the
    /// version check.
    ///
    /// The raw payload (the provider's delivery, if any) is stored exactly
    /// once, whatever fails:
    /// - with the event's commit;
    /// - alone, with no commit and no version bump, when the event changes
    ///   nothing (a duplicate or retry of a known fact): duplicates never
    ///   contend for the call's version;
    /// - alone ([`CallStore::append_events`](crate::ports::CallStore::append_events)) when there is no such commit:
    ///   the call is unknown ([`ServiceError::CallNotFound`]: stored without
    ///   a call) or unreadable, the commit failed, contention gave up — not
    ///   if the call's event log already holds the same delivery (a commit
    ///   whose answer was lost);
    /// - when the store cannot take it now, it waits in the service's spool
    ///   until [`PressureService::flush_spool`] stores it (the error is the
    ///   one that stopped the event); a full spool refuses it
    ///   ([`ServiceError::SpoolFull`], the only error after which the
    ///   payload is not kept).
    ///
    /// A follow-up commit (an effect's result) that fails returns its error;
    /// the payload was stored with the first commit.
    pub async fn handle(
        &self,
        call_id: CallId,
        event: CallEvent,
        raw: Option<RawEvent>,
    ) -> Result<HandleOutcome, ServiceError> {
        let event = self.opt_out_or(event);
        let committed = self
            .commit_event(call_id, &event, raw.as_slice())
            .await
            .inspect_err(|error| {
                if let ServiceError::Store(error) = error {
                    self.note_unreadable(error);
                }
            });
        let mut first = match (committed, raw) {
            (Ok(first), _) => first,
            (Err(error), None) => return Err(error),
            (Err(error), Some(raw)) => {
                // No commit took the payload: it is stored alone.
                let owner = match error {
                    ServiceError::CallNotFound(_) => None,
                    _ => Some(call_id),
                };
                self.keep_payload(owner, raw).await?;
                return Err(error);
            }
        };
        if first.call.opt_out_pending() {
            // The opt-out (this event's, or an earlier one whose listing
            // failed) goes on the list before anything else happens.
            if let Some(listed) = self.list_opt_out(&first.call).await {
                first.call = listed;
            }
        }
        let mut pending: VecDeque<(Call, Effect)> = first
            .effects
            .iter()
            .map(|e| (first.call.clone(), e.clone()))
            .collect();
        let mut last = first.call.clone();
        while let Some((call, effect)) = pending.pop_front() {
            if let Some(follow_up) = self.perform(&call, &effect).await {
                let next = self.commit_event(call_id, &follow_up, &[]).await?;
                pending.extend(next.effects.iter().map(|e| (next.call.clone(), e.clone())));
                last = next.call;
            }
        }
        if last.version > first.call.version {
            Ok(HandleOutcome {
                call: last,
                effects: first.effects,
            })
        } else {
            Ok(first)
        }
    }

    /// Puts an opted-out call's activist number on the do-not-call list
    /// and records it in the call's facts (`CallEvent::OptOutListed`);
    /// returns the call as committed. On failure (logged) the call keeps
    /// `opt_out_pending`, stays unsettled, and the next handling of the
    /// call or reconciliation tries again.
    pub(super) async fn list_opt_out(&self, call: &Call) -> Option<Call> {
        let phone = &call.activist.phone;
        if let Err(error) = self
            .add_to_do_not_call_list(std::slice::from_ref(phone), DoNotCallSource::Keypress)
            .await
        {
            warn!(call_id = %call.id, activist = %phone, error = %error_chain(&error), "do-not-call entry not stored; retried later");
            return None;
        }
        info!(call_id = %call.id, activist = %phone, "activist asked not to be called again");
        match self
            .commit_event(call.id, &CallEvent::OptOutListed, &[])
            .await
        {
            Ok(outcome) => Some(outcome.call),
            Err(error) => {
                // Listed; only the fact is missing: the next pass adds it again (idempotent).
                warn!(call_id = %call.id, error = %error_chain(&error), "do-not-call entry stored but not recorded in the call");
                None
            }
        }
    }

    /// Records a provider payload the adapter could not parse or route (a
    /// malformed call id or form): stored alone, once, with its call if
    /// `call_id` names a known one, else without a call; if the store cannot
    /// take it now, kept in the spool like [`PressureService::handle`]'s.
    /// Fails only when the spool is full ([`SpoolFull`]: not kept).
    pub async fn record_unparsed(
        &self,
        call_id: Option<CallId>,
        raw: RawEvent,
    ) -> Result<(), SpoolFull> {
        debug!(?call_id, kind = %raw.kind, "recording a payload that was not parsed");
        self.keep_payload(call_id, raw).await
    }

    /// Stores the payloads waiting in the spool (the store could not take
    /// them when they arrived), in arrival order, each once, and returns
    /// how many it stored. Stops at the first store failure (the rest keep
    /// waiting for the next flush). Reconciliation calls it at the start of
    /// every pass; adapters may call it sooner (for example, with a
    /// backoff, as soon as [`PressureService::spool_stats`] shows a payload
    /// waiting). While another flush runs, returns `Ok(0)` at once. Never
    /// sleeps: the caller owns the cadence.
    pub async fn flush_spool(&self) -> Result<usize, StoreError> {
        let clock = &self.deps.clock;
        self.spool
            .flush(self.deps.store.as_ref(), || clock.now())
            .await
    }

    /// What the spool holds and has done (waiting payloads, totals).
    pub fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Stores a payload no commit took, once; queues it when the store
    /// cannot take it now.
    async fn keep_payload(&self, call_id: Option<CallId>, raw: RawEvent) -> Result<(), SpoolFull> {
        match store_once(self.deps.store.as_ref(), call_id, &raw).await {
            Ok(()) => Ok(()),
            Err(cause) => self.spool.push(call_id, raw, self.deps.clock.now(), cause),
        }
    }

    async fn commit_event(
        &self,
        call_id: CallId,
        event: &CallEvent,
        raws: &[RawEvent],
    ) -> Result<HandleOutcome, ServiceError> {
        let store = &self.deps.store;
        // One read–apply–commit per call at a time in this process.
        let lock = self.commit_locks.of(call_id);
        let _serialised = match lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another event for this call is being applied here. A
                // duplicate changes nothing and needs no turn: it is
                // stored at once. Anything else waits, then reads again.
                let call = match self.cached_call(call_id) {
                    Some(Cached::Fresh(call)) => call,
                    _ => self.load(call_id).await?,
                };
                let (next, effects) = call.apply(event, self.deps.clock.now());
                if changes_nothing(&call, &next, &effects) {
                    return self.append_unchanged(call, event, raws).await;
                }
                lock.lock().await
            }
        };
        // The first attempt starts from the cached call when there is one
        // (no read): a commit from a stale copy fails on the version check,
        // and the call is read for the next attempt. That refusal is a
        // stale guess, not contention: it costs no attempt and no backoff.
        let mut cached = self.cached_call(call_id);
        let mut attempt = 0;
        while attempt < self.config.max_commit_attempts {
            let guess = cached.take();
            let from_cache = guess.is_some();
            let (call, fresh) = match guess {
                Some(Cached::Fresh(call)) => (call, true),
                Some(Cached::Old(call)) => (call, false),
                None => (self.load(call_id).await?, true),
            };
            let (mut next, effects) = call.apply(event, self.deps.clock.now());
            if changes_nothing(&call, &next, &effects) {
                if !fresh {
                    // Facts only grow (a join), so the event changes
                    // nothing in the current call either; but the call
                    // returned must be one a reader may be served (within
                    // the cache's age limit): read it.
                    continue;
                }
                return self.append_unchanged(call, event, raws).await;
            }
            let ticket = self.usable_cache().map(|cache| cache.ticket());
            match store.commit(&next, raws).await {
                Ok(version) => {
                    next.version = version;
                    self.live.publish(crate::live::CallUpdate::of(&next));
                    if let (Some(cache), Some(ticket)) = (self.usable_cache(), ticket) {
                        cache.fill(ticket, next.clone());
                    }
                    if let CallEvent::Ignored { what } = event {
                        debug!(%call_id, what, "event stored and ignored");
                    }
                    if call.state() != next.state() {
                        info!(%call_id, from = call.state().as_str(), to = next.state().as_str(), event = event.kind(), "call state changed");
                    }
                    return Ok(HandleOutcome {
                        call: next,
                        effects,
                    });
                }
                Err(StoreError::Conflict) if from_cache => {
                    debug!(%call_id, "cached call was stale: reading it");
                }
                Err(StoreError::Conflict) => {
                    backoff(self.deps.clock.as_ref(), attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        warn!(%call_id, event = event.kind(), "commit contention: giving up");
        Err(ServiceError::Contention(self.config.max_commit_attempts))
    }

    /// The call as this process last committed or read it, when the call
    /// cache is usable and holds it: a start for an optimistic commit,
    /// which the version check guards, so even a copy older than the
    /// cache's age limit ([`Cached::Old`]) will do for a commit — but not
    /// as an answer.
    fn cached_call(&self, call_id: CallId) -> Option<Cached> {
        let cache = self.usable_cache()?;
        let cached = match cache.get(call_id) {
            Some(call) => Cached::Fresh(call),
            None => Cached::Old(cache.last_known(call_id)?),
        };
        let call = match &cached {
            Cached::Fresh(call) | Cached::Old(call) => call,
        };
        self.recent.remember(call.id, call.widget_id);
        Some(cached)
    }

    /// The call read from the store (and cached when the cache is usable),
    /// or [`ServiceError::CallNotFound`].
    async fn load(&self, call_id: CallId) -> Result<Arc<Call>, ServiceError> {
        let cache = self.usable_cache();
        let ticket = cache.map(|cache| cache.ticket());
        let call = self
            .deps
            .store
            .get(call_id)
            .await?
            .ok_or(ServiceError::CallNotFound(call_id))?;
        self.recent.remember(call.id, call.widget_id);
        Ok(match (cache, ticket) {
            (Some(cache), Some(ticket)) => cache.fill(ticket, call),
            _ => Arc::new(call),
        })
    }

    /// For an event that changes nothing in `call` (a duplicate, a retry,
    /// a fact already known): appends the payloads and returns the call as
    /// it is — no commit, no version bump, so nothing to conflict over.
    async fn append_unchanged(
        &self,
        call: Arc<Call>,
        event: &CallEvent,
        raws: &[RawEvent],
    ) -> Result<HandleOutcome, ServiceError> {
        if !raws.is_empty() {
            self.deps.store.append_events(Some(call.id), raws).await?;
        }
        debug!(call_id = %call.id, event = event.kind(), "event changes nothing: payload stored, call unchanged");
        Ok(HandleOutcome {
            call: Arc::unwrap_or_clone(call),
            effects: Vec::new(),
        })
    }

    /// Carries out one effect; returns the event that reports its result, if any.
    async fn perform(&self, call: &Call, effect: &Effect) -> Option<CallEvent> {
        let t = &self.deps.telephony;
        let result = match effect {
            Effect::DialTarget => {
                let target_key = LimitKey::new(LimitKind::TargetDials, call.target.phone.as_e164());
                if let Some(quota) = self.config.target_dials {
                    if let Admission::Exhausted { .. } = self.charge(&target_key, quota).await {
                        info!(call_id = %call.id, target = %call.target.phone, "target's dial budget used up: not dialled");
                        return Some(CallEvent::TargetLimited);
                    }
                }
                let settings = self.settings(call.widget_id).await;
                let req = TargetCallRequest {
                    call_id: call.id,
                    to: call.target.phone.clone(),
                    caller_id: call.target_caller_id.clone(),
                    timeout_secs: settings.target_timeout_secs,
                    detect_machine: call
                        .facts
                        .machine_detection
                        .unwrap_or(settings.detect_machines),
                };
                info!(call_id = %call.id, target = %call.target.phone, "dialling target");
                return Some(match t.add_target(&req).await {
                    Ok(leg) => CallEvent::LegDialed {
                        leg: Leg::Target,
                        leg_id: leg.leg_id,
                        status: leg.status,
                    },
                    Err(e) => {
                        warn!(call_id = %call.id, error = %error_chain(&e), "target dial refused");
                        if let Some(quota) = self.config.target_dials {
                            if !e.counts_against_limits() {
                                self.refund(&target_key, quota).await;
                            }
                        }
                        CallEvent::DialFailed {
                            leg: Leg::Target,
                            error: LegError {
                                code: e.code(),
                                message: e.to_string(),
                            },
                        }
                    }
                });
            }
            Effect::HangUpActivist { leg_id, how } | Effect::HangUpTarget { leg_id, how } => {
                t.hang_up(call.id, leg_id, *how).await
            }
            Effect::EndConference { conference_id } => {
                t.end_conference(call.id, conference_id).await
            }
        };
        match result {
            Ok(()) | Err(TelephonyError::NotFound { .. }) => {}
            Err(error) => {
                warn!(call_id = %call.id, ?effect, error = %error_chain(&error), "effect failed; reconciliation will follow up")
            }
        }
        None
    }
}

/// A call from the call cache.
enum Cached {
    /// Cached within the cache's age limit: may be served as an answer.
    Fresh(Arc<Call>),
    /// Cached longer ago: only a start for a version-checked commit.
    Old(Arc<Call>),
}

/// Whether applying an event turned `call` into `next` with `effects`
/// without changing anything: no effect, the same facts.
fn changes_nothing(call: &Call, next: &Call, effects: &[Effect]) -> bool {
    effects.is_empty() && next.facts == call.facts
}

/// Waits before commit attempt `attempt + 1` after a conflict: the first
/// three retries only yield; later ones sleep on the service's clock for
/// [`backoff_delay`].
async fn backoff(clock: &dyn Clock, attempt: u32) {
    match backoff_delay(attempt, clock.jitter()) {
        None => tokio::task::yield_now().await,
        Some(delay) => clock.sleep(delay).await,
    }
}

/// The sleep after conflicting commit `attempt` (counted from 0) with
/// `jitter` in `[0, 1)`: none for the first three (a yield is enough), then
/// 50 µs plus up to `200 µs × attempt` (capped at 20), spread by the jitter
/// to de-synchronise contenders.
fn backoff_delay(attempt: u32, jitter: f64) -> Option<Duration> {
    if attempt < 3 {
        return None;
    }
    let cap_us = 200 * u64::from(attempt.min(20));
    let spread = (jitter.clamp(0.0, 1.0) * cap_us as f64) as u64;
    Some(Duration::from_micros(spread.min(cap_us - 1) + 50))
}

#[async_trait]
impl EventSink for PressureService {
    async fn deliver(&self, call_id: CallId, event: CallEvent, raw: Option<RawEvent>) {
        if let Err(error) = self.handle(call_id, event, raw).await {
            warn!(%call_id, error = %error_chain(&error), "simulated event not applied");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_delay;
    use std::time::Duration;

    #[test]
    fn the_first_retries_only_yield_then_the_jitter_spreads_the_sleep() {
        for attempt in 0..3 {
            assert_eq!(backoff_delay(attempt, 0.9), None);
        }
        assert_eq!(backoff_delay(3, 0.0), Some(Duration::from_micros(50)));
        assert_eq!(backoff_delay(3, 0.5), Some(Duration::from_micros(350)));
        // Never reaches the cap: 0 ≤ spread < 200 µs × attempt.
        assert_eq!(backoff_delay(3, 1.0), Some(Duration::from_micros(649)));
        // The cap stops growing at attempt 20.
        assert_eq!(backoff_delay(40, 0.5), backoff_delay(20, 0.5));
        assert_eq!(backoff_delay(20, 0.5), Some(Duration::from_micros(2_050)));
    }
}
