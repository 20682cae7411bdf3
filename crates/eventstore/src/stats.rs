//! Counts of events this process appended, by category and type, for the metrics endpoint
//! (`callback_events_appended_total`). Counted when the insert succeeds, before the caller
//! commits: a rolled-back transaction's events are counted too (rare: a batch that fails as a
//! whole is retried event by event).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

static APPENDED: LazyLock<Mutex<HashMap<(String, String), u64>>> = LazyLock::new(Mutex::default);

pub(crate) fn record<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) {
    if let Ok(mut counts) = APPENDED.lock() {
        for (category, event_type) in events {
            match counts.get_mut(&(category.to_owned(), event_type.to_owned())) {
                Some(n) => *n += 1,
                None => {
                    counts.insert((category.to_owned(), event_type.to_owned()), 1);
                }
            }
        }
    }
}

/// Every (category, event type) appended so far with its count.
pub fn appended() -> Vec<(String, String, u64)> {
    APPENDED
        .lock()
        .map(|counts| {
            counts
                .iter()
                .map(|((category, event_type), n)| (category.clone(), event_type.clone(), *n))
                .collect()
        })
        .unwrap_or_default()
}
