//! Which campaign recent calls belong to, kept in memory so that a call's
//! fallback script can speak in its campaign's voice while the store that
//! says so is unavailable.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::domain::{CallId, WidgetId};

/// The widgets of the last `capacity` calls this process created or loaded.
#[derive(Debug)]
pub(crate) struct RecentWidgets {
    capacity: usize,
    inner: Mutex<(HashMap<CallId, WidgetId>, VecDeque<CallId>)>,
}

impl RecentWidgets {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub(crate) fn remember(&self, call_id: CallId, widget_id: WidgetId) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(call_id, widget_id).is_none() {
            order.push_back(call_id);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    pub(crate) fn get(&self, call_id: CallId) -> Option<WidgetId> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(&call_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_calls_only() {
        let recent = RecentWidgets::new(2);
        let (a, b, c) = (CallId::new(), CallId::new(), CallId::new());
        let w = |n| WidgetId::new(n).unwrap();
        recent.remember(a, w(1));
        recent.remember(b, w(2));
        recent.remember(a, w(1));
        recent.remember(c, w(3));
        assert_eq!(recent.get(a), None);
        assert_eq!(recent.get(b), Some(w(2)));
        assert_eq!(recent.get(c), Some(w(3)));
    }
}
