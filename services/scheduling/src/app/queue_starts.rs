//! Where a claim's walk of the waiting queue starts.
//!
//! The queue is a partial index over waiting callbacks in urgency order (`priority, deadline,
//! due_at, callback_id`), walked from its most urgent end. A claim moves its row out of the
//! queue, but the row's index entry stays (dead) until a vacuum, so every later claim steps
//! over the entries of all the claims before it: 1.4-4.8 ms and 1,200 buffers after 141,000
//! claims, against 0.15 ms and 25 buffers when the walk starts at the first waiting row.
//!
//! So each claim query also finds the first waiting row (the *start*) of its tenant and
//! departments, and the next claim's walk begins there. This is only a hint, kept in memory:
//! a wrong start could hide a waiting callback from claims, so it must never be past a row
//! that is waiting. Three rules keep it so:
//! - every write that puts a row into the queue (a new callback, a retry, a reschedule)
//!   lowers the starts of its tenant at once ([`QueueStarts::queued`]);
//! - a claim query cannot see a row whose transaction commits after the query began, so a
//!   start it found is lowered to every row queued since [`COMMIT_GRACE`] before it began
//!   (a scheduling transaction commits well within that), and a query older than that is
//!   not used at all;
//! - a start is forgotten [`RESCAN_AFTER`] after the walk from the queue's head that found it,
//!   which bounds what no rule above can see (rows queued by another scheduling instance, or
//!   a transaction slower than the grace) to that delay. Tenant settings are cached for the
//!   same time.
//!
//! Times here are the process's monotonic clock, passed in, so the rules are tested without
//! waiting; business time (the service's clock) plays no part.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::CallbackState;

/// A row written into the queue is assumed committed (or rolled back) within this time.
const COMMIT_GRACE: Duration = Duration::from_millis(500);
/// A start found by walking from the head is trusted this long, then the head is walked again.
const RESCAN_AFTER: Duration = Duration::from_secs(2);
/// Starts kept per tenant at most (one per department filter that claims used lately): a
/// client naming ever new department lists must not grow the map without bound.
const MAX_STARTS_PER_TENANT: usize = 256;

/// A row's place in the queue index, compared as PostgreSQL compares the index columns
/// (field order matters: the derived ordering is lexicographic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QueueKey {
    pub priority: i16,
    pub deadline: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub callback_id: Uuid,
}

impl QueueKey {
    /// The key of a callback's row in the queue index.
    pub(crate) fn of(state: &CallbackState) -> QueueKey {
        QueueKey {
            priority: i16::from(state.scheduled.priority),
            deadline: state.deadline,
            due_at: state.due_at,
            callback_id: state.scheduled.callback_id,
        }
    }

    /// Before every row (priorities are 0-255), for a walk from the head.
    pub(crate) fn head() -> QueueKey {
        QueueKey {
            priority: i16::MIN,
            deadline: DateTime::<Utc>::UNIX_EPOCH,
            due_at: DateTime::<Utc>::UNIX_EPOCH,
            callback_id: Uuid::nil(),
        }
    }
}

/// A claim query's view of where to start, handed back with what the query found.
#[derive(Clone, Debug)]
pub(crate) struct ScanPlan {
    tenant_id: String,
    departments: Vec<String>,
    /// `None`: walk from the head.
    pub from: Option<QueueKey>,
    asked_at: Instant,
    generation: u64,
}

impl ScanPlan {
    /// The key the walk starts at.
    pub(crate) fn start_key(&self) -> QueueKey {
        self.from.unwrap_or_else(QueueKey::head)
    }
}

#[derive(Clone, Copy, Debug)]
struct Start {
    key: QueueKey,
    /// When the walk from the head that this start descends from began.
    head_walk_at: Instant,
}

#[derive(Default)]
struct TenantQueue {
    /// Per department filter of the claims (empty: all departments).
    starts: HashMap<Vec<String>, Start>,
    /// Rows written into the queue lately, oldest first, whose transactions may be open.
    recent: VecDeque<(Instant, QueueKey)>,
}

impl TenantQueue {
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.recent.front() {
            if now.saturating_duration_since(*at) > 2 * COMMIT_GRACE {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, TenantQueue>,
    /// Bumped by [`QueueStarts::clear`]; plans made before are not used.
    generation: u64,
}

/// The starts of every tenant's queue walks, shared by the handles of one service instance.
#[derive(Clone, Default)]
pub(crate) struct QueueStarts {
    inner: Arc<Mutex<Inner>>,
}

impl QueueStarts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a claim query for these departments should start its walk.
    pub(crate) fn plan(&self, tenant_id: &str, departments: &[String], now: Instant) -> ScanPlan {
        let inner = self.lock();
        let from = inner
            .tenants
            .get(tenant_id)
            .and_then(|t| t.starts.get(departments))
            .filter(|s| now.saturating_duration_since(s.head_walk_at) < RESCAN_AFTER)
            .map(|s| s.key);
        ScanPlan {
            tenant_id: tenant_id.to_owned(),
            departments: departments.to_vec(),
            from,
            asked_at: now,
            generation: inner.generation,
        }
    }

    /// Records the first waiting row a committed claim query found at or after its start
    /// (`None`: nothing waits there).
    pub(crate) fn advance(&self, plan: &ScanPlan, first_waiting: Option<QueueKey>, now: Instant) {
        if now.saturating_duration_since(plan.asked_at) > COMMIT_GRACE {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != plan.generation {
            return;
        }
        let tenant = inner.tenants.entry(plan.tenant_id.clone()).or_default();
        tenant.forget_before(now);
        let Some(found) = first_waiting else {
            return;
        };
        // Rows queued by transactions the query may not have seen.
        let unseen = tenant
            .recent
            .iter()
            .filter(|(at, _)| *at + COMMIT_GRACE > plan.asked_at)
            .map(|(_, key)| *key)
            .min();
        let key = unseen.map_or(found, |k| k.min(found));
        let head_walk_at = match plan.from {
            None => plan.asked_at,
            Some(_) => match tenant.starts.get(&plan.departments) {
                Some(start) => start.head_walk_at,
                // Forgotten meanwhile: the next walk starts from the head.
                None => return,
            },
        };
        // Starts past their time are of no use; beyond the bound, new filters walk from the head.
        tenant
            .starts
            .retain(|_, s| now.saturating_duration_since(s.head_walk_at) < RESCAN_AFTER);
        if tenant.starts.len() >= MAX_STARTS_PER_TENANT
            && !tenant.starts.contains_key(&plan.departments)
        {
            return;
        }
        tenant
            .starts
            .insert(plan.departments.clone(), Start { key, head_walk_at });
    }

    /// A row of this tenant was written into the queue (its transaction may still be open).
    pub(crate) fn queued(&self, tenant_id: &str, key: QueueKey, now: Instant) {
        let mut inner = self.lock();
        let tenant = inner.tenants.entry(tenant_id.to_owned()).or_default();
        tenant.forget_before(now);
        tenant.recent.push_back((now, key));
        for start in tenant.starts.values_mut() {
            start.key = start.key.min(key);
        }
    }

    /// Forgets every start (the queue was rebuilt).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.tenants.clear();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key(priority: i16, n: u128) -> QueueKey {
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        QueueKey {
            priority,
            deadline: t,
            due_at: t,
            callback_id: Uuid::from_u128(n),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_walk_starts_at_the_head_until_a_query_found_the_first_waiting_row() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        let plan = starts.plan("t", &[], t0);
        assert_eq!(plan.from, None);
        assert_eq!(plan.start_key(), QueueKey::head());
        assert!(QueueKey::head() < key(0, 0));
        starts.advance(&plan, Some(key(1, 5)), t0 + MS);
        assert_eq!(starts.plan("t", &[], t0 + 2 * MS).from, Some(key(1, 5)));
        // Other tenants and other department filters keep their own.
        assert_eq!(starts.plan("u", &[], t0 + 2 * MS).from, None);
        assert_eq!(starts.plan("t", &["ward-3".into()], t0 + 2 * MS).from, None);
    }

    #[test]
    fn a_row_queued_later_lowers_the_start_at_once() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        starts.advance(&starts.plan("t", &[], t0), Some(key(3, 1)), t0 + MS);
        starts.queued("t", key(2, 9), t0 + 2 * MS);
        assert_eq!(starts.plan("t", &[], t0 + 3 * MS).from, Some(key(2, 9)));
        // A row queued behind the start changes nothing.
        starts.queued("t", key(7, 9), t0 + 4 * MS);
        assert_eq!(starts.plan("t", &[], t0 + 5 * MS).from, Some(key(2, 9)));
    }

    #[test]
    fn a_query_that_may_have_missed_a_queued_row_does_not_move_past_it() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        // Queued (not yet committed) just before the query began: the query cannot see it.
        starts.queued("t", key(1, 1), t0);
        let plan = starts.plan("t", &[], t0 + 10 * MS);
        starts.advance(&plan, Some(key(4, 4)), t0 + 20 * MS);
        assert_eq!(starts.plan("t", &[], t0 + 30 * MS).from, Some(key(1, 1)));
        // Queued long enough before the query to be committed: the query's answer stands.
        let later = t0 + COMMIT_GRACE + 50 * MS;
        let plan = starts.plan("t", &[], later);
        starts.advance(&plan, Some(key(4, 4)), later + MS);
        assert_eq!(starts.plan("t", &[], later + 2 * MS).from, Some(key(4, 4)));
    }

    #[test]
    fn a_row_queued_while_a_query_ran_is_not_overtaken_by_its_answer() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        let plan = starts.plan("t", &[], t0);
        starts.queued("t", key(0, 1), t0 + MS);
        starts.advance(&plan, Some(key(5, 5)), t0 + 2 * MS);
        assert_eq!(starts.plan("t", &[], t0 + 3 * MS).from, Some(key(0, 1)));
    }

    #[test]
    fn a_slow_query_or_one_made_before_a_clear_is_not_used() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        let plan = starts.plan("t", &[], t0);
        starts.advance(&plan, Some(key(5, 5)), t0 + COMMIT_GRACE + MS);
        assert_eq!(starts.plan("t", &[], t0 + COMMIT_GRACE + 2 * MS).from, None);

        let plan = starts.plan("t", &[], t0);
        starts.clear();
        starts.advance(&plan, Some(key(5, 5)), t0 + MS);
        assert_eq!(starts.plan("t", &[], t0 + 2 * MS).from, None);
    }

    #[test]
    fn the_head_is_walked_again_after_a_while() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        starts.advance(&starts.plan("t", &[], t0), Some(key(2, 2)), t0 + MS);
        // Walks from the start keep the time of the head walk they descend from.
        let t1 = t0 + RESCAN_AFTER / 2;
        let plan = starts.plan("t", &[], t1);
        assert_eq!(plan.from, Some(key(2, 2)));
        starts.advance(&plan, Some(key(3, 3)), t1 + MS);
        assert_eq!(starts.plan("t", &[], t0 + RESCAN_AFTER).from, None);
    }

    #[test]
    fn starts_are_kept_for_a_bounded_number_of_department_filters() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        for n in 0..MAX_STARTS_PER_TENANT + 10 {
            let departments = vec![format!("d{n}")];
            starts.advance(&starts.plan("t", &departments, t0), Some(key(1, 1)), t0);
        }
        let kept = (0..MAX_STARTS_PER_TENANT + 10)
            .filter(|n| starts.plan("t", &[format!("d{n}")], t0).from.is_some())
            .count();
        assert_eq!(kept, MAX_STARTS_PER_TENANT);
        // Once they are out of date they make room.
        let later = t0 + RESCAN_AFTER;
        let fresh = vec!["fresh".to_owned()];
        starts.advance(&starts.plan("t", &fresh, later), Some(key(1, 1)), later);
        assert_eq!(starts.plan("t", &fresh, later).from, Some(key(1, 1)));
    }

    #[test]
    fn nothing_waiting_leaves_the_start_where_it_was() {
        let starts = QueueStarts::default();
        let t0 = Instant::now();
        starts.advance(&starts.plan("t", &[], t0), Some(key(2, 2)), t0 + MS);
        starts.advance(&starts.plan("t", &[], t0 + 2 * MS), None, t0 + 3 * MS);
        assert_eq!(starts.plan("t", &[], t0 + 4 * MS).from, Some(key(2, 2)));
    }
}
