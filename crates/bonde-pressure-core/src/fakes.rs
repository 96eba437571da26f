//! Campaign directory and action recorder fakes that ship with the crate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::domain::{NumberPolicy, Region, WidgetId, mask_phone};
use crate::ports::{
    ActionRecorder, CampaignDirectory, DirectoryError, RecorderError, Widget, WidgetAction,
    WidgetTarget,
};

/// A [`CampaignDirectory`] over a fixed set of widgets (a campaigns file, tests).
#[derive(Debug, Clone, Default)]
pub struct StaticCampaignDirectory {
    widgets: HashMap<WidgetId, Widget>,
}

impl StaticCampaignDirectory {
    /// A directory of these widgets.
    pub fn new(widgets: impl IntoIterator<Item = Widget>) -> Self {
        Self {
            widgets: widgets.into_iter().map(|w| (w.id, w)).collect(),
        }
    }

    /// The demo campaign: widget `1`, a phone-pressure widget, target "Demo
    /// Target" `+5561999990000`.
    pub fn demo() -> Self {
        Self::new([demo_widget()])
    }

    /// The widgets, by id.
    pub fn widgets(&self) -> &HashMap<WidgetId, Widget> {
        &self.widgets
    }

    /// Drops every target whose number does not parse (read in `region`)
    /// or fails `policy`, logging each (number masked); returns how many
    /// were dropped. Such a target is never called: requests naming it are
    /// refused as for any target not in the widget.
    pub fn retain_callable(&mut self, region: Region, policy: &NumberPolicy) -> usize {
        let mut dropped = 0;
        for widget in self.widgets.values_mut() {
            widget.targets.retain(|t| {
                let verdict = policy
                    .parse(&t.phone, region)
                    .map(drop)
                    .map_err(|e| (e.to_string(), e.kind()));
                match verdict {
                    Ok(()) => true,
                    Err((reason, kind)) => {
                        tracing::warn!(widget_id = %widget.id, target = %mask_phone(&t.phone), kind, %reason, "campaign target dropped: its number may not be called");
                        dropped += 1;
                        false
                    }
                }
            });
        }
        dropped
    }
}

/// The demo widget (see [`StaticCampaignDirectory::demo`]).
pub fn demo_widget() -> Widget {
    Widget::new(
        WidgetId::new(1).expect("1 is a valid widget id"),
        vec![WidgetTarget::new("Demo Target", "+5561999990000")],
    )
}

#[async_trait]
impl CampaignDirectory for StaticCampaignDirectory {
    async fn widget(&self, id: WidgetId) -> Result<Option<Widget>, DirectoryError> {
        Ok(self.widgets.get(&id).cloned())
    }
}

/// An [`ActionRecorder`] that does nothing (no campaign platform configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopActionRecorder;

#[async_trait]
impl ActionRecorder for NoopActionRecorder {
    async fn record(&self, _action: &WidgetAction) -> Result<(), RecorderError> {
        Ok(())
    }
}

/// An [`ActionRecorder`] that keeps what it is given and can be told to fail.
#[derive(Debug, Default)]
pub struct StubActionRecorder {
    recorded: Mutex<Vec<WidgetAction>>,
    fail: AtomicBool,
}

impl StubActionRecorder {
    /// A recorder that succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `record` fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// What was recorded successfully.
    pub fn recorded(&self) -> Vec<WidgetAction> {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl ActionRecorder for StubActionRecorder {
    async fn record(&self, action: &WidgetAction) -> Result<(), RecorderError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(RecorderError::failed("stub told to fail"));
        }
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(action.clone());
        Ok(())
    }
}

/// A [`crate::Clock`] that only moves when told to.
///
/// Deterministic: [`Clock::sleep`](crate::Clock::sleep) moves the clock
/// forward by the duration asked, records it ([`ManualClock::sleeps`]) and
/// yields once to the executor instead of waiting; [`Clock::jitter`](crate::Clock::jitter)
/// returns a fixed value ([`ManualClock::with_jitter`], default `0.5`).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<chrono::DateTime<chrono::Utc>>,
    jitter: f64,
    sleeps: Mutex<Vec<std::time::Duration>>,
}

impl ManualClock {
    /// A clock showing `now`, with jitter `0.5`.
    pub fn new(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            now: Mutex::new(now),
            jitter: 0.5,
            sleeps: Mutex::new(Vec::new()),
        }
    }

    /// With this fixed jitter (clamped to `[0, 1)`).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0 - f64::EPSILON);
        self
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or_default();
    }

    /// Every duration slept on this clock so far, in order.
    pub fn sleeps(&self) -> Vec<std::time::Duration> {
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl crate::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep(&self, duration: std::time::Duration) {
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(duration);
        self.advance(duration);
        yield_once().await;
    }

    fn jitter(&self) -> f64 {
        self.jitter
    }
}

/// Returns `Pending` once (waking itself at once), then `Ready`: lets the
/// executor run other tasks, on any runtime.
pub(crate) async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn targets_failing_the_policy_are_dropped_at_load() {
        let mut widget = demo_widget();
        for (name, phone) in [
            ("Premium", "0500 123 4567"),
            ("Satellite", "+881 612345678"),
            ("Junk", "11 9123A-5678"),
        ] {
            widget.targets.push(WidgetTarget {
                name: name.into(),
                phone: phone.into(),
            });
        }
        let mut dir = StaticCampaignDirectory::new([widget]);
        assert_eq!(
            dir.retain_callable(Region::BRAZIL, &NumberPolicy::default()),
            3
        );
        let kept: Vec<_> = dir.widgets().values().flat_map(|w| &w.targets).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name, "Demo Target");
    }
}
