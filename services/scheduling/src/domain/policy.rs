//! Callback policies (回访计划) as data.
//!
//! A policy says: when a business fact of a type happens (and its attributes pass the
//! filters), call the subject in a sequence of steps. Each step has a due window relative to
//! the trigger, to the previous step's end, or to a date in the fact's attributes; or repeats
//! (a cadence with phases, a growing interval, the tenant's holidays) until a stop. Per step:
//! channel, questionnaire, priority, owner rule, retry rule, sampling rate, and whether it
//! follows working days. Tenants publish policies as JSON; nothing here needs code changes for
//! a new kind of tenant.

use std::collections::HashSet;

use callback_calendar::{Calendar, TimeOfDay};
use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use callback_contracts::scheduling::{BusinessFact, Channel, RetryRule};

use super::sampling::in_sample;

/// The most occurrences a repeating step may produce (a runaway policy is a defect).
mod dates;
mod validate;

use dates::{attribute_instant, cadence_date, occurrence_window, resolve_offset, Bound};

const MAX_OCCURRENCES: u32 = 200;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub policy_id: String,
    pub name: String,
    pub trigger: Trigger,
    /// Correcting fact types (e.g. `discharge.cancelled`, `patient.deceased`) that cancel this
    /// policy's open callbacks for the same subject.
    #[serde(default)]
    pub cancel_on: Vec<String>,
    /// Correcting fact types that move this policy's callbacks (e.g. `appointment.rescheduled`):
    /// the subject's open callbacks are cancelled and the policy planned afresh from the new
    /// fact, whose attributes (a new `appointment_at`) the steps then use.
    #[serde(default)]
    pub reschedule_on: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub event_type: String,
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// A condition on one attribute of the fact, e.g. `{"attribute": "department", "in": ["ICU"]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub attribute: String,
    #[serde(flatten)]
    pub op: FilterOp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists(bool),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub timing: Timing,
    #[serde(default)]
    pub channel: Channel,
    #[serde(default)]
    pub questionnaire_id: Option<String>,
    /// 0 is the most urgent, 9 the least.
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub owner: OwnerRule,
    #[serde(default)]
    pub retry: RetryRule,
    /// Share of facts that get this step (e.g. 0.05 for a 5% outpatient sample).
    #[serde(default = "default_rate")]
    pub sample_rate: f64,
    #[serde(default)]
    pub calendar: StepCalendar,
    /// How long after its deadline an unreached callback stays open (overdue: still claimable,
    /// a completion then counts as reached but not on time) before it is given up as lost.
    /// Default: as long again as the step's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub give_up_after_hours: Option<u32>,
}

fn default_priority() -> u8 {
    5
}

fn default_rate() -> f64 {
    1.0
}

/// Which days the step's calls may be made on: the tenant's working days, or every day (in
/// the tenant's calling windows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCalendar {
    #[default]
    WorkingDays,
    EveryDay,
}

/// When a step's callbacks are due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Timing {
    /// One callback due between `earliest` and `latest` after the anchor, e.g. "within 7
    /// days" (`earliest` 0, `latest` 7 days), "1-3 days after", "the afternoon before the
    /// appointment" (`earliest` -1 day at 13:30, `latest` -1 day at 17:30).
    Window {
        anchor: Anchor,
        earliest: Offset,
        latest: Offset,
    },
    /// Repeating by phases, e.g. every 3 months until month 12, then every 6 months until month
    /// 24, then yearly until the warranty ends. Each callback may be made from its date until
    /// `window_days` later.
    Cadence {
        anchor: Anchor,
        phases: Vec<Phase>,
        #[serde(default)]
        window_days: u32,
    },
    /// Growing intervals: "day 2, then +4, then +7, and so on": the intervals in days, the
    /// last one repeated when `repeat_last`, at most `max_occurrences` callbacks.
    Growing {
        anchor: Anchor,
        intervals_days: Vec<u32>,
        #[serde(default)]
        repeat_last: bool,
        max_occurrences: u32,
        #[serde(default)]
        window_days: u32,
    },
    /// On the tenant's holidays after the anchor (e.g. real-estate class D visitors), at most
    /// `max_occurrences` of them.
    Holidays {
        anchor: Anchor,
        max_occurrences: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// When the triggering fact occurred.
    Trigger,
    /// When the previous step's last callback ended (completed or lost).
    PreviousStepEnd,
    /// A date or date-time in the fact's attributes, e.g. `appointment_at`.
    Attribute(String),
}

/// A point relative to an anchor: whole months and days (working days when `working_days`),
/// then hours, or a fixed local time `at` on the resulting day. With hours (and no `at`) the
/// bound is exact: the anchor's time on the resulting day plus the hours ("latest 24 hours"
/// is 24 hours after the anchor). Otherwise, without `at`, an earliest bound means the start
/// of that day (or the anchor itself at offset zero) and a latest bound the end of that day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offset {
    #[serde(default)]
    pub months: u32,
    #[serde(default)]
    pub days: i32,
    #[serde(default)]
    pub working_days: bool,
    #[serde(default)]
    pub hours: u32,
    /// Working hours on the tenant's calendar (its windows on working days), counted from
    /// the anchor itself when no months, days or `at` are given: "within 24 working hours".
    #[serde(default)]
    pub working_hours: u32,
    #[serde(default)]
    pub at: Option<TimeOfDay>,
}

/// One phase of a cadence: a period (days or months) and an end (months or days after the
/// anchor, or a date attribute such as `warranty_end`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    #[serde(default)]
    pub every_days: Option<u32>,
    #[serde(default)]
    pub every_months: Option<u32>,
    #[serde(default)]
    pub until_days: Option<u32>,
    #[serde(default)]
    pub until_months: Option<u32>,
    #[serde(default)]
    pub until_attribute: Option<String>,
}

/// Who takes the callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OwnerRule {
    /// The subject's owner (attending doctor, sales advisor); the pool takes over when the owner
    /// has not claimed it within `pool_after_hours`, or when the subject has no owner.
    SubjectOwner {
        fallback_pool: String,
        pool_after_hours: u32,
    },
    /// Anyone in the pool.
    Pool { pool: String },
}

/// When to try again after an attempt with `disposition` ended at `at`; `None` when the
/// attempts are used up.
pub fn next_attempt(
    retry: &RetryRule,
    disposition: &str,
    attempts_made: u32,
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if attempts_made >= retry.max_attempts {
        return None;
    }
    let minutes = retry
        .spacing_minutes
        .get(disposition)
        .copied()
        .unwrap_or(retry.default_spacing_minutes);
    at.checked_add_signed(Duration::minutes(i64::from(minutes)))
}

/// How a callback of the policy ended, to plan what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub step: usize,
    pub occurrence: u32,
    /// The anchor instant its step was planned from ([`PlannedCallback::anchor_at`]).
    pub anchor_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
}

/// A callback to schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCallback {
    pub step: usize,
    /// 1 for a single step; counts the repetitions of a repeating step.
    pub occurrence: u32,
    /// The instant the step is timed from; every occurrence of a repeating step keeps the one
    /// its first occurrence had (stored with the callback, so replays plan the same).
    pub anchor_at: DateTime<Utc>,
    /// The first allowed call time in the due window (its start when it has none), even when
    /// planned later than that: figures count a callback in the period its window opened.
    pub due_at: DateTime<Utc>,
    /// The end of the due window: reached by then, the callback is on time (及时).
    pub deadline: DateTime<Utc>,
    /// When an unreached callback is given up as lost (失访): the step's
    /// `give_up_after_hours` after the deadline, by default as long again as the window.
    pub give_up_at: DateTime<Utc>,
    /// False when deterministic sampling left this fact out of the step.
    pub sampled: bool,
    /// True when the window had already closed (or has no allowed call time) when planned;
    /// such a callback is recorded as skipped rather than scheduled.
    pub window_missed: bool,
}

/// A policy problem, naming the field (`steps[1].timing.phases`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    pub field: String,
    pub reason: String,
}

impl Policy {
    /// True when `fact` triggers this policy (as its trigger, or as a fact that moves it).
    pub fn matches(&self, fact: &BusinessFact) -> bool {
        (fact.event_type == self.trigger.event_type
            || self.reschedule_on.contains(&fact.event_type))
            && self
                .trigger
                .filters
                .iter()
                .all(|f| f.accepts(&fact.attributes))
    }

    /// The first callback for a fact that triggered the policy, planned no earlier than `now`.
    pub fn first_callback(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> Option<PlannedCallback> {
        self.plan(fact, calendar, 0, 1, None, now)
    }

    /// What follows a finished callback: the next occurrence of a repeating step, else the
    /// next step; `None` when the policy is done.
    pub fn next_callback(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        finished: Finished,
    ) -> Option<PlannedCallback> {
        let now = finished.ended_at;
        if self.is_repeating(finished.step) {
            let again = self.plan(
                fact,
                calendar,
                finished.step,
                finished.occurrence + 1,
                Some(finished),
                now,
            );
            if again.is_some() {
                return again;
            }
        }
        self.plan(fact, calendar, finished.step + 1, 1, Some(finished), now)
    }

    /// The callbacks to record for a fact that triggered the policy: the first, and, while the
    /// last one's window had already closed (it is recorded skipped), what follows it, exactly
    /// as a lost callback is followed. A fact that arrives late so plans every later
    /// occurrence and step whose window is still open, instead of ending its series.
    pub fn first_callbacks(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> Vec<PlannedCallback> {
        self.series(
            fact,
            calendar,
            self.first_callback(fact, calendar, now),
            now,
        )
    }

    /// What follows a finished callback ([`Policy::next_callback`]), continued past
    /// occurrences whose window had already closed, as [`Policy::first_callbacks`].
    pub fn next_callbacks(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        finished: Finished,
    ) -> Vec<PlannedCallback> {
        let next = self.next_callback(fact, calendar, finished);
        self.series(fact, calendar, next, finished.ended_at)
    }

    fn series(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        mut next: Option<PlannedCallback>,
        now: DateTime<Utc>,
    ) -> Vec<PlannedCallback> {
        let mut planned = Vec::new();
        // Bounded by the occurrences a policy may produce, whatever the policy says.
        let most = (MAX_OCCURRENCES as usize).saturating_mul(self.steps.len().max(1));
        while let Some(plan) = next.take() {
            let skipped = plan.window_missed && plan.sampled;
            let finished = Finished {
                step: plan.step,
                occurrence: plan.occurrence,
                anchor_at: plan.anchor_at,
                ended_at: now,
            };
            planned.push(plan);
            if skipped && planned.len() < most {
                next = self.next_callback(fact, calendar, finished);
            }
        }
        planned
    }

    fn is_repeating(&self, step: usize) -> bool {
        self.steps
            .get(step)
            .is_some_and(|s| !matches!(s.timing, Timing::Window { .. }))
    }

    /// Plans occurrence `occurrence` of step `step`, or `None` when there is no such
    /// occurrence (past the last step, a repeating step stopped, an anchor attribute missing).
    fn plan(
        &self,
        fact: &BusinessFact,
        calendar: &Calendar,
        step_index: usize,
        occurrence: u32,
        previous: Option<Finished>,
        now: DateTime<Utc>,
    ) -> Option<PlannedCallback> {
        let step = self.steps.get(step_index)?;
        let step_calendar = match step.calendar {
            StepCalendar::WorkingDays => calendar.clone(),
            StepCalendar::EveryDay => calendar.every_day(),
        };
        let anchor_at = |anchor: &Anchor| -> Option<DateTime<Utc>> {
            match (previous, anchor) {
                // A later occurrence of the same step keeps the step's anchor.
                (Some(p), _) if p.step == step_index => Some(p.anchor_at),
                (_, Anchor::Trigger) => Some(fact.occurred_at),
                (_, Anchor::PreviousStepEnd) => previous.map(|p| p.ended_at),
                (_, Anchor::Attribute(name)) => {
                    attribute_instant(fact.attributes.get(name)?, calendar)
                }
            }
        };
        let base = anchor_at(step.timing.anchor())?;
        let (earliest, latest) = match &step.timing {
            Timing::Window {
                earliest, latest, ..
            } => {
                if occurrence > 1 {
                    return None;
                }
                (
                    resolve_offset(calendar, base, earliest, Bound::Earliest)?,
                    resolve_offset(calendar, base, latest, Bound::Latest)?,
                )
            }
            Timing::Cadence {
                phases,
                window_days,
                ..
            } => {
                let date = cadence_date(calendar, fact, base, phases, occurrence)?;
                occurrence_window(calendar, date, *window_days)?
            }
            Timing::Growing {
                intervals_days,
                repeat_last,
                max_occurrences,
                window_days,
                ..
            } => {
                if occurrence > *max_occurrences {
                    return None;
                }
                let mut days = 0u32;
                for k in 0..occurrence as usize {
                    let interval = match intervals_days.get(k) {
                        Some(d) => *d,
                        None if *repeat_last => *intervals_days.last()?,
                        None => return None,
                    };
                    days = days.checked_add(interval)?;
                }
                let date = calendar
                    .local_date(base)
                    .checked_add_signed(Duration::days(i64::from(days)))?;
                occurrence_window(calendar, date, *window_days)?
            }
            Timing::Holidays {
                max_occurrences, ..
            } => {
                if occurrence > *max_occurrences {
                    return None;
                }
                let mut date = calendar.local_date(base);
                for _ in 0..occurrence {
                    date = calendar.next_holiday(date)?;
                }
                occurrence_window(calendar, date, 0)?
            }
        };
        // Due from the window's first allowed call time, however late the fact arrived: that
        // is the period figures count it in. It is missed when no allowed time is left in it.
        let opens = step_calendar
            .next_allowed(earliest)
            .filter(|due| *due < latest)
            .unwrap_or(earliest);
        let missed = step_calendar
            .next_allowed(earliest.max(now))
            .filter(|due| *due < latest)
            .is_none();
        let occurrence_key = occurrence.to_string();
        let sampled = in_sample(
            step.sample_rate,
            &[
                &fact.tenant_id,
                &self.policy_id,
                &step.name,
                &fact.source,
                &fact.source_event_id,
                &occurrence_key,
            ],
        );
        let grace = match step.give_up_after_hours {
            Some(hours) => Duration::hours(i64::from(hours)),
            None => (latest - earliest).max(Duration::zero()),
        };
        Some(PlannedCallback {
            step: step_index,
            occurrence,
            anchor_at: base,
            due_at: opens,
            deadline: latest,
            give_up_at: latest.checked_add_signed(grace).unwrap_or(latest),
            sampled,
            window_missed: missed,
        })
    }
}

impl Timing {
    pub fn anchor(&self) -> &Anchor {
        match self {
            Timing::Window { anchor, .. }
            | Timing::Cadence { anchor, .. }
            | Timing::Growing { anchor, .. }
            | Timing::Holidays { anchor, .. } => anchor,
        }
    }
}

impl Filter {
    fn accepts(&self, attributes: &serde_json::Map<String, Value>) -> bool {
        let value = attributes.get(&self.attribute);
        match &self.op {
            FilterOp::Equals(expected) => value == Some(expected),
            FilterOp::NotEquals(expected) => value != Some(expected),
            FilterOp::In(options) => value.is_some_and(|v| options.contains(v)),
            FilterOp::NotIn(options) => !value.is_some_and(|v| options.contains(v)),
            FilterOp::Exists(exists) => value.is_some() == *exists,
        }
    }
}
