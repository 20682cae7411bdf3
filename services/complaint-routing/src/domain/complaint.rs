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

    /// The next timer and when it falls, on the complaint's calendar.
    pub fn next_timer(&self, calendar: &Calendar) -> Option<(DateTime<Utc>, Timer)> {
        if !self.status.is_handling() {
            return None;
        }
        let mut candidates = Vec::new();
        for name in ClockName::ALL {
            let clock = self.clock(name);
            if clock.breaches < MAX_BREACHES_PER_CLOCK {
                if let Some(at) = clock.next_breach_at(calendar) {
                    candidates.push((at, Timer::Breach(name)));
                }
            }
        }
        if let (Some(reply_by), false, false) =
            (self.filed.reply_by, self.responded, self.reply_missed)
        {
            candidates.push((reply_by, Timer::ReplyDeadline));
        }
        if let (Some(since), Some(every)) = (self.major_since, self.targets.follow_up_every_minutes)
        {
            let n = i32::try_from(self.reminders + 1).unwrap_or(i32::MAX);
            candidates.push((since + Duration::minutes(every) * n, Timer::FollowUp));
        }
        // Earliest first; ties in the fixed order above, so a replay fires them alike.
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    /// Fires every timer due by `now`, in time order, each at the instant it fell. Returns
    /// the events (already applied to the returned state).
    pub fn fire_timers(
        mut self,
        rules: &RoutingRules,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> (ComplaintState, Vec<ComplaintEvent>) {
        let mut fired = Vec::new();
        while fired.len() < MAX_TIMER_EVENTS {
            let Some((due_at, timer)) = self.next_timer(calendar).filter(|(at, _)| *at <= now)
            else {
                break;
            };
            // Never before what is already recorded: events stay in time order.
            let at = due_at.max(self.last_at);
            let mut events = Vec::new();
            match timer {
                Timer::Breach(name) => {
                    let clock = self.clock(name);
                    events.push(ComplaintEvent::ClockBreached {
                        clock: name,
                        breach: clock.breaches + 1,
                        due_at,
                        elapsed_minutes: clock.elapsed(calendar, at).num_minutes(),
                        target_minutes: clock.target_minutes,
                        at,
                    });
                    events.extend(self.escalation(
                        rules,
                        format!("{} target breached", name.as_str()),
                        at,
                    ));
                }
                Timer::ReplyDeadline => {
                    events.push(ComplaintEvent::ReplyDeadlineMissed {
                        reply_by: due_at,
                        at,
                    });
                    events.extend(self.escalation(
                        rules,
                        "the customer's requested reply time passed".into(),
                        at,
                    ));
                }
                Timer::FollowUp => events.push(ComplaintEvent::FollowUpReminded {
                    number: self.reminders + 1,
                    to: holder(Level::Manager, rules, &self.department),
                    at,
                }),
            }
            for event in events {
                self = ComplaintState::evolve(Some(self), &event, calendar)
                    .expect("a filed complaint stays filed");
                fired.push(event);
            }
        }
        (self, fired)
    }

    /// One level up the chain, unless already at the top.
    fn escalation(
        &self,
        rules: &RoutingRules,
        reason: String,
        at: DateTime<Utc>,
    ) -> Option<ComplaintEvent> {
        (self.level < Level::GeneralManager).then(|| {
            let level = self.level.next();
            ComplaintEvent::ComplaintEscalated {
                level,
                to: holder(level, rules, &self.department),
                reason,
                at,
            }
        })
    }

    /// The events a department action produces, or why it cannot be taken now.
    pub fn decide(
        &self,
        action: &Action,
        actor: &str,
        rules: &RoutingRules,
        now: DateTime<Utc>,
    ) -> Result<Vec<ComplaintEvent>, ActionError> {
        if actor.trim().is_empty() {
            return Err(invalid("actor", "must not be empty"));
        }
        match self.status {
            Status::Closed | Status::Rejected => {
                return Err(ActionError::NotNow(format!(
                    "the complaint is {}; no further {} is possible",
                    self.status.as_str(),
                    action.name()
                )))
            }
            Status::Resolved => {
                return Err(ActionError::NotNow(
                    "the complaint is resolved and awaits its verification callback".into(),
                ))
            }
            _ => {}
        }
        let actor = actor.to_owned();
        let at = now;
        let event = match action {
            Action::Acknowledge => {
                if self.responded {
                    return Err(ActionError::NotNow(
                        "the complaint has already been acknowledged".into(),
                    ));
                }
                ComplaintEvent::ComplaintAcknowledged { actor, at }
            }
            Action::AddProgress { note } => {
                required_text("text", note)?;
                self.not_waiting(action)?;
                ComplaintEvent::ProgressAdded {
                    actor,
                    note: note.clone(),
                    at,
                }
            }
            Action::RequestInformation { question } => {
                required_text("text", question)?;
                self.not_waiting(action)?;
                ComplaintEvent::InformationRequested {
                    actor,
                    question: question.clone(),
                    at,
                }
            }
            Action::ReceiveInformation { note } => {
                if self.status != Status::WaitingOnCustomer {
                    return Err(ActionError::NotNow(
                        "no information has been requested from the customer".into(),
                    ));
                }
                ComplaintEvent::InformationReceived {
                    actor,
                    note: note.clone(),
                    at,
                }
            }
            Action::Resolve { resolution } => {
                required_text("text", resolution)?;
                ComplaintEvent::ComplaintResolved {
                    actor,
                    resolution: resolution.clone(),
                    at,
                }
            }
            Action::Reject { explanation } => {
                required_text("text", explanation)?;
                ComplaintEvent::ComplaintRejected {
                    actor,
                    explanation: explanation.clone(),
                    at,
                }
            }
            Action::Transfer { to, reason } => {
                let Some(department) = rules.department(to) else {
                    return Err(invalid(
                        "to_department",
                        format!("unknown department `{to}`"),
                    ));
                };
                if *to == self.department {
                    return Err(invalid(
                        "to_department",
                        "is the complaint's current department",
                    ));
                }
                ComplaintEvent::ComplaintTransferred {
                    actor,
                    from: self.department.clone(),
                    to: to.clone(),
                    handler: department.handler.clone(),
                    reason: reason.clone(),
                    at,
                }
            }
        };
        Ok(vec![event])
    }

    fn not_waiting(&self, action: &Action) -> Result<(), ActionError> {
        if self.status == Status::WaitingOnCustomer {
            return Err(ActionError::NotNow(format!(
                "the complaint waits on the customer; record the information received before {}",
                action.name()
            )));
        }
        Ok(())
    }

    /// Reclassification into a group (the fifth distinct customer on its topic).
    pub fn join_group(
        &self,
        rules: &RoutingRules,
        customers: u32,
        now: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        let to = self.class.as_group();
        if to == self.class || !self.status.is_handling() {
            return Vec::new();
        }
        let department = rules
            .group
            .department
            .clone()
            .unwrap_or_else(|| self.department.clone());
        let handler = holder(Level::Handler, rules, &department);
        let mut events = vec![ComplaintEvent::ComplaintReclassified {
            from: self.class,
            to,
            department: department.clone(),
            handler,
            targets: targets_for(rules, to),
            reason: format!(
                "{customers} distinct customers on topic `{}` within {} hours",
                self.filed.topic, rules.group.window_hours
            ),
            at: now,
        }];
        if to.is_major() {
            events.push(ComplaintEvent::ComplaintEscalated {
                level: Level::Manager.max(self.level),
                to: holder(Level::Manager, rules, &department),
                reason: format!("class {} reported at once", to.as_str()),
                at: now,
            });
        }
        events
    }

    /// The verification callback's answer: satisfied closes, unsatisfied reopens with new
    /// clocks. Answers for other callbacks or states change nothing (a replay is harmless).
    pub fn verification_answered(
        &self,
        callback_id: Uuid,
        satisfied: bool,
        at: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        if self.status != Status::Resolved || !self.verification_callbacks.contains(&callback_id) {
            return Vec::new();
        }
        let answered = ComplaintEvent::VerificationAnswered {
            callback_id,
            satisfied,
            at,
        };
        let next = if satisfied {
            ComplaintEvent::ComplaintClosed {
                outcome: "satisfied".into(),
                detail: format!("verification callback {callback_id}"),
                at,
            }
        } else {
            ComplaintEvent::ComplaintReopened {
                reason: format!("customer unsatisfied on verification callback {callback_id}"),
                at,
            }
        };
        vec![answered, next]
    }

    /// The verification callback ended without an answer (lost or cancelled): the complaint
    /// closes with that fact recorded.
    pub fn verification_ended(
        &self,
        callback_id: Uuid,
        outcome: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Vec<ComplaintEvent> {
        if self.status != Status::Resolved || !self.verification_callbacks.contains(&callback_id) {
            return Vec::new();
        }
        vec![ComplaintEvent::ComplaintClosed {
            outcome: format!("verification_{outcome}"),
            detail: format!("verification callback {callback_id}: {reason}"),
            at,
        }]
    }
}

mod decider;
mod filing;
#[cfg(test)]
mod tests;

pub use decider::{ComplaintCommand, ComplaintContext, ComplaintDecider};
pub use filing::{file, group_topic, holder, targets_for, Context};
