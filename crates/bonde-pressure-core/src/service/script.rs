//! Voice scripts: what to play at each moment of a call.

use crate::chain::error_chain;
use std::time::Duration;

use tracing::warn;

use crate::call::CallEvent;
use crate::domain::{CallId, WidgetId};
use crate::ports::{Clock, RawEvent};
use crate::script::{CampaignSettings, ScriptMoment, VoiceScript, script_with_key};

use super::{PressureService, ServiceError};

impl PressureService {
    /// What to play at a script moment of `call_id` when its script cannot
    /// be had because the store is unavailable (see
    /// [`crate::script::unavailable_script`]): an apology in the call's
    /// campaign voice and language, then hang up. The campaign is known if
    /// this process created or loaded the call recently; otherwise (another
    /// replica's call) the default settings' voice is used. The campaign
    /// directory is given one second at most.
    pub async fn fallback_script(&self, call_id: CallId) -> VoiceScript {
        let settings = match self.recent.get(call_id) {
            Some(widget_id) => within(
                self.deps.clock.as_ref(),
                Duration::from_secs(1),
                self.settings(widget_id),
            )
            .await
            .unwrap_or_default(),
            None => CampaignSettings::default(),
        };
        crate::script::unavailable_script(&settings, call_id)
    }

    pub(super) async fn settings(&self, widget_id: WidgetId) -> CampaignSettings {
        match self.deps.directory.widget(widget_id).await {
            Ok(Some(w)) => w.settings,
            Ok(None) => CampaignSettings::default(),
            Err(error) => {
                warn!(%widget_id, error = %error_chain(&error), "campaign settings unavailable; using defaults");
                CampaignSettings::default()
            }
        }
    }

    /// Records a voice moment (with its event and raw payload) and returns
    /// what to play. `event` is what the moment's request says (`Prompted`,
    /// `Confirmed`, or the dial's outcome as `Ignored`).
    pub async fn script(
        &self,
        call_id: CallId,
        moment: ScriptMoment,
        event: CallEvent,
        raw: Option<RawEvent>,
    ) -> Result<VoiceScript, ServiceError> {
        let outcome = self.handle(call_id, event, raw).await?;
        let settings = self.settings(outcome.call.widget_id).await;
        Ok(script_with_key(
            &settings,
            &outcome.call,
            moment,
            self.config.do_not_call_digit,
        ))
    }
}

/// `work`'s output if it completes before `limit` has passed on `clock`
/// (its [`Clock::sleep`]), else `None` (`work` is dropped).
async fn within<T>(
    clock: &dyn Clock,
    limit: Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut timer = clock.sleep(limit);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = work.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}
