//! One complaint's life as events: filed (classified and routed) -> acknowledged -> progress ->
//! resolved -> verified (closed) or reopened; or rejected as invalid; with clocks that breach
//! and escalate, and follow-ups for major complaints.
//!
//! State is a fold of events ([`ComplaintState::evolve`]) on the calendar of the rules
//! version the complaint was filed under, so a replay always gives the same clocks. Decisions
//! ([`ComplaintState::decide`], [`ComplaintState::fire_timers`]) are pure functions of the
//! state, the rules and the time.

use callback_calendar::Calendar;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::clock::SlaClock;
use super::rules::{Class, ClassRules, RoutingRules};

/// A clock breaches at most this many times: by then the escalation chain (handler -> head ->
/// manager -> general manager) has been climbed and further breaches would only add noise.
pub const MAX_BREACHES_PER_CLOCK: u32 = 3;

/// How many timer events one evaluation fires at most; the rest wait for the next sweep.
const MAX_TIMER_EVENTS: usize = 100;

pub use callback_contracts::complaint_routing::{
    CallbackPurpose, ClockName, ComplaintEvent, Customer, Filed, Intake, Level, Targets,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Filed, no response yet.
    Open,
    InProgress,
    /// Information requested from the customer: clocks paused.
    WaitingOnCustomer,
    /// Resolved; closes on the verification callback's outcome.
    Resolved,
    Closed,
    /// Rejected as invalid; an explanation callback follows.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::InProgress => "in_progress",
            Status::WaitingOnCustomer => "waiting_on_customer",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
        }
    }

    /// Still with the department (clocks may run).
    pub fn is_handling(self) -> bool {
        matches!(
            self,
            Status::Open | Status::InProgress | Status::WaitingOnCustomer
        )
    }
}

/// The target of one clock.
fn target_of(targets: &Targets, clock: ClockName) -> Duration {
    Duration::minutes(match clock {
        ClockName::FirstResponse => targets.first_response_minutes,
        ClockName::Update => targets.update_minutes,
        ClockName::Resolution => targets.resolution_minutes,
    })
}

/// A department's action on a complaint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    AddProgress { note: String },
    RequestInformation { question: String },
    ReceiveInformation { note: String },
    Resolve { resolution: String },
    Reject { explanation: String },
    Transfer { to: String, reason: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::AddProgress { .. } => "add_progress",
            Action::RequestInformation { .. } => "request_information",
            Action::ReceiveInformation { .. } => "receive_information",
            Action::Resolve { .. } => "resolve",
            Action::Reject { .. } => "reject",
            Action::Transfer { .. } => "transfer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The action does not fit the complaint's state (closed, resolved, not waiting ...).
    #[error("{0}")]
    NotNow(String),
}

fn invalid(field: &str, reason: impl Into<String>) -> ActionError {
    ActionError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Free text of an action (a note, a question, a resolution) is personal data; bounded.
pub const MAX_TEXT_CHARS: usize = 4000;

fn required_text(field: &str, text: &str) -> Result<(), ActionError> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// What comes due next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Breach(ClockName),
    ReplyDeadline,
    FollowUp,
}

/// Serialisable so the read model can keep it as a snapshot (always rebuilt from the log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComplaintState {
    pub filed: Filed,
    pub class: Class,
    pub department: String,
    pub handler: String,
    pub targets: Targets,
    pub status: Status,
    pub level: Level,
    pub escalated_to: String,
    pub first_response: SlaClock,
    pub update: SlaClock,
    pub resolution: SlaClock,
    /// Clocks paused while waiting on the customer, resumed when the information arrives.
    pub paused: Vec<ClockName>,
    pub responded: bool,
    pub reply_missed: bool,
    /// Since when it has been major (A/B): the follow-up reminders count from then.
    pub major_since: Option<DateTime<Utc>>,
    pub reminders: u32,
    pub breaches: u32,
    pub reopenings: u32,
    /// Whether scheduling has been asked (or answered "unavailable") for the callback the
    /// current resolution or rejection needs.
    pub callback_requested: bool,
    pub callback_unavailable: Option<String>,
    /// The current round's verification callbacks.
    pub verification_callbacks: Vec<Uuid>,
    pub outcome: Option<String>,
    /// The latest event's time.
    pub last_at: DateTime<Utc>,
}

impl ComplaintState {
    pub fn complaint_id(&self) -> Uuid {
        self.filed.complaint_id
    }

    pub fn clock(&self, name: ClockName) -> &SlaClock {
        match name {
            ClockName::FirstResponse => &self.first_response,
            ClockName::Update => &self.update,
            ClockName::Resolution => &self.resolution,
        }
    }

    fn clock_mut(&mut self, name: ClockName) -> &mut SlaClock {
        match name {
            ClockName::FirstResponse => &mut self.first_response,
            ClockName::Update => &mut self.update,
            ClockName::Resolution => &mut self.resolution,
        }
    }

    /// Whether any clock or the customer's reply time has been breached.
    pub fn is_breached(&self) -> bool {
        self.breaches > 0 || self.reply_missed
    }

    /// Waiting for scheduling to be asked for a verification or explanation callback.
    pub fn needs_callback_request(&self) -> bool {
        matches!(self.status, Status::Resolved | Status::Rejected) && !self.callback_requested
    }

    /// Applies one event on the complaint's calendar. `None` state accepts only the filing.
    pub fn evolve(
        state: Option<ComplaintState>,
        event: &ComplaintEvent,
        calendar: &Calendar,
    ) -> Option<ComplaintState> {
        let mut s = match (state, event) {
            (None, ComplaintEvent::ComplaintFiled(filed)) => {
                return Some(ComplaintState::filed(filed));
            }
            (None, _) => return None,
            (Some(s), _) => s,
        };
        s.last_at = s.last_at.max(event.at());
        match event {
            ComplaintEvent::ComplaintFiled(_) => {}
            ComplaintEvent::ComplaintEscalated { level, to, .. } => {
                if *level >= s.level {
                    s.level = *level;
                    s.escalated_to = to.clone();
                }
            }
            ComplaintEvent::ComplaintReclassified {
                to,
                department,
                handler,
                targets,
                at,
                ..
            } => {
                s.class = *to;
                s.department = department.clone();
                s.handler = handler.clone();
                s.targets = *targets;
                for name in ClockName::ALL {
                    s.clock_mut(name).retarget(target_of(targets, name));
                }
                if to.is_major() && s.major_since.is_none() {
                    s.major_since = Some(*at);
                    s.reminders = 0;
                }
            }
            ComplaintEvent::ComplaintAcknowledged { at, .. } => {
                s.respond(calendar, *at);
            }
            ComplaintEvent::ProgressAdded { at, .. } => {
                if s.responded {
                    s.update.restart(*at);
                } else {
                    s.respond(calendar, *at);
                }
            }
            ComplaintEvent::InformationRequested { at, .. } => {
                s.respond(calendar, *at);
                s.paused = ClockName::ALL
                    .into_iter()
                    .filter(|name| s.clock(*name).is_running())
                    .collect();
                for name in s.paused.clone() {
                    s.clock_mut(name).pause(calendar, *at);
                }
                s.status = Status::WaitingOnCustomer;
            }
            ComplaintEvent::InformationReceived { at, .. } => {
                for name in std::mem::take(&mut s.paused) {
                    s.clock_mut(name).resume(*at);
                }
                s.status = Status::InProgress;
            }
            ComplaintEvent::ComplaintResolved { at, .. } => {
                s.finish_handling(calendar, *at);
                s.status = Status::Resolved;
            }
            ComplaintEvent::ComplaintRejected { at, .. } => {
                s.finish_handling(calendar, *at);
                s.status = Status::Rejected;
            }
            ComplaintEvent::ComplaintTransferred { to, handler, .. } => {
                s.department = to.clone();
                s.handler = handler.clone();
            }
            ComplaintEvent::ClockBreached { clock, breach, .. } => {
                s.clock_mut(*clock).breaches = *breach;
                s.breaches += 1;
            }
            ComplaintEvent::ReplyDeadlineMissed { .. } => s.reply_missed = true,
            ComplaintEvent::FollowUpReminded { number, .. } => s.reminders = *number,
            ComplaintEvent::CallbackRequested {
                purpose,
                callback_ids,
                ..
            } => {
                s.callback_requested = true;
                if *purpose == CallbackPurpose::Verification {
                    s.verification_callbacks.extend(callback_ids);
                }
            }
            ComplaintEvent::CallbackUnavailable { reason, .. } => {
                s.callback_requested = true;
                s.callback_unavailable = Some(reason.clone());
            }
            ComplaintEvent::VerificationAnswered { .. } => {}
            ComplaintEvent::ComplaintReopened { at, .. } => {
                s.status = Status::InProgress;
                s.reopenings += 1;
                s.resolution = SlaClock::started(target_of(&s.targets, ClockName::Resolution), *at);
                s.update = SlaClock::started(target_of(&s.targets, ClockName::Update), *at);
                s.verification_callbacks.clear();
                s.callback_requested = false;
                s.callback_unavailable = None;
            }
            ComplaintEvent::ComplaintClosed { outcome, .. } => {
                s.status = Status::Closed;
                s.outcome = Some(outcome.clone());
            }
        }
        Some(s)
    }

    fn filed(filed: &Filed) -> ComplaintState {
        let t = &filed.targets;
        ComplaintState {
            class: filed.class,
            department: filed.department.clone(),
            handler: filed.handler.clone(),
            targets: *t,
            status: Status::Open,
            level: Level::Handler,
            escalated_to: filed.handler.clone(),
            first_response: SlaClock::started(target_of(t, ClockName::FirstResponse), filed.at),
            update: SlaClock::idle(target_of(t, ClockName::Update)),
            resolution: SlaClock::started(target_of(t, ClockName::Resolution), filed.at),
            paused: Vec::new(),
            responded: false,
            reply_missed: false,
            major_since: filed.class.is_major().then_some(filed.at),
            reminders: 0,
            breaches: 0,
            reopenings: 0,
            callback_requested: false,
            callback_unavailable: None,
            verification_callbacks: Vec::new(),
            outcome: None,
            last_at: filed.at,
            filed: filed.clone(),
        }
    }

    /// The department's first response: the first-response clock stops (its reply meets the
    /// customer's reply time) and the update clock starts.
    fn respond(&mut self, calendar: &Calendar, at: DateTime<Utc>) {
        if !self.responded {
            self.responded = true;
            self.first_response.stop(calendar, at);
            self.update = SlaClock::started(target_of(&self.targets, ClockName::Update), at);
        }
        if self.status == Status::Open {
            self.status = Status::InProgress;
        }
    }

    fn finish_handling(&mut self, calendar: &Calendar, at: DateTime<Utc>) {
        self.respond(calendar, at);
        for name in ClockName::ALL {
            self.clock_mut(name).stop(calendar, at);
        }
        self.paused.clear();
        self.callback_requested = false;
        self.callback_unavailable = None;
    }
}

mod decider;
mod decisions;
mod filing;
#[cfg(test)]
mod tests;

pub use decider::{ComplaintCommand, ComplaintContext, ComplaintDecider};
pub use filing::{file, group_topic, holder, targets_for, Context};
