//! Events of the complaint-routing service: routing rules, complaints and parked intakes.
//!
//! Categories: `routing_rules` ([`RoutingRulesPublished`]), `complaint` ([`ComplaintEvent`]),
//! `complaint_intake` ([`ComplaintParked`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{event_family, single_event, EventContract};

pub const ROUTING_RULES: &str = "routing_rules";
pub const COMPLAINT: &str = "complaint";
pub const COMPLAINT_INTAKE: &str = "complaint_intake";
/// Every category complaint routing owns and serves on its feed.
pub const CATEGORIES: &[&str] = &[COMPLAINT, ROUTING_RULES, COMPLAINT_INTAKE];

/// A new version of a tenant's routing rules. `rules` is the document as
/// `PublishRoutingRules` accepted it; only complaint routing reads it (its tests decode the
/// golden document).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingRulesPublished {
    pub tenant_id: String,
    pub rules: Value,
}
single_event!(RoutingRulesPublished, ROUTING_RULES);

/// A complaint that arrived before its tenant had routing rules: kept, and filed when rules
/// are published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComplaintParked {
    pub intake: Intake,
    pub reason: String,
    pub at: DateTime<Utc>,
}
single_event!(ComplaintParked, COMPLAINT_INTAKE);

/// A complaint as it arrives, before classification and routing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Intake {
    pub tenant_id: String,
    pub source: String,
    pub source_id: String,
    pub channel: String,
    pub customer: Customer,
    pub text: String,
    pub category: String,
    pub topic: String,
    pub severity_hints: Vec<String>,
    pub reply_by: Option<DateTime<Utc>>,
    pub callback_id: Option<Uuid>,
}

/// The complainant. Personal data (name, phones): never in logs.
///
/// In the log, `name` and `phones` are empty: they are in `sealed` (`{"name", "phones"}`
/// sealed with the key of the customer, or of `complaint:<id>` when anonymous;
/// `callback-vault`), with each number's keyed hash in `phone_keys`. The complaint `text`
/// beside it is sealed with the same key. Events written before sealing carry them in clear.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_keys: Vec<String>,
}

/// Complaint classes (property-management seed): A major, B group complaint, C general
/// complaint, D group opinion, E single opinion or inquiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    A,
    B,
    C,
    D,
    E,
}

impl Class {
    pub const ALL: [Class; 5] = [Class::A, Class::B, Class::C, Class::D, Class::E];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::A => "A",
            Class::B => "B",
            Class::C => "C",
            Class::D => "D",
            Class::E => "E",
        }
    }

    pub fn parse(text: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// Whose fault: our service, the product (developer, manufacturer), or the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    OurService,
    Product,
    Environment,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::OurService => "our_service",
            Origin::Product => "product",
            Origin::Environment => "environment",
        }
    }
}

/// A level of a department's escalation chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Handler,
    DepartmentHead,
    Manager,
    GeneralManager,
}

impl Level {
    pub fn next(self) -> Level {
        match self {
            Level::Handler => Level::DepartmentHead,
            Level::DepartmentHead => Level::Manager,
            Level::Manager | Level::GeneralManager => Level::GeneralManager,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Handler => "handler",
            Level::DepartmentHead => "department_head",
            Level::Manager => "manager",
            Level::GeneralManager => "general_manager",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockName {
    FirstResponse,
    Update,
    Resolution,
}

impl ClockName {
    pub const ALL: [ClockName; 3] = [
        ClockName::FirstResponse,
        ClockName::Update,
        ClockName::Resolution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClockName::FirstResponse => "first_response",
            ClockName::Update => "update",
            ClockName::Resolution => "resolution",
        }
    }
}

/// A complaint's SLA targets in working minutes, fixed when it is filed or reclassified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub first_response_minutes: i64,
    pub update_minutes: i64,
    pub resolution_minutes: i64,
    pub follow_up_every_minutes: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackPurpose {
    Verification,
    Explanation,
}

/// A complaint classified and routed. `customer` and `text` are personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filed {
    pub complaint_id: Uuid,
    pub tenant_id: String,
    pub source: String,
    pub source_id: String,
    pub channel: String,
    pub customer: Customer,
    pub text: String,
    pub category: String,
    pub topic: String,
    pub severity_hints: Vec<String>,
    pub reply_by: Option<DateTime<Utc>>,
    pub callback_id: Option<Uuid>,
    pub rules_version: u64,
    pub class: Class,
    pub origin: Origin,
    pub department: String,
    pub handler: String,
    pub matched_by: String,
    pub flags: Vec<String>,
    pub targets: Targets,
    pub at: DateTime<Utc>,
}

/// What a complaint's stream records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ComplaintEvent {
    ComplaintFiled(Box<Filed>),
    ComplaintEscalated {
        level: Level,
        to: String,
        reason: String,
        at: DateTime<Utc>,
    },
    ComplaintReclassified {
        from: Class,
        to: Class,
        department: String,
        handler: String,
        targets: Targets,
        reason: String,
        at: DateTime<Utc>,
    },
    ComplaintAcknowledged {
        actor: String,
        at: DateTime<Utc>,
    },
    ProgressAdded {
        actor: String,
        note: String,
        at: DateTime<Utc>,
    },
    InformationRequested {
        actor: String,
        question: String,
        at: DateTime<Utc>,
    },
    InformationReceived {
        actor: String,
        note: String,
        at: DateTime<Utc>,
    },
    ComplaintResolved {
        actor: String,
        resolution: String,
        at: DateTime<Utc>,
    },
    ComplaintRejected {
        actor: String,
        explanation: String,
        at: DateTime<Utc>,
    },
    ComplaintTransferred {
        actor: String,
        from: String,
        to: String,
        handler: String,
        reason: String,
        at: DateTime<Utc>,
    },
    ClockBreached {
        clock: ClockName,
        breach: u32,
        due_at: DateTime<Utc>,
        elapsed_minutes: i64,
        target_minutes: i64,
        at: DateTime<Utc>,
    },
    ReplyDeadlineMissed {
        reply_by: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    FollowUpReminded {
        number: u32,
        to: String,
        at: DateTime<Utc>,
    },
    CallbackRequested {
        purpose: CallbackPurpose,
        callback_ids: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    CallbackUnavailable {
        purpose: CallbackPurpose,
        reason: String,
        at: DateTime<Utc>,
    },
    VerificationAnswered {
        callback_id: Uuid,
        satisfied: bool,
        at: DateTime<Utc>,
    },
    ComplaintReopened {
        reason: String,
        at: DateTime<Utc>,
    },
    ComplaintClosed {
        outcome: String,
        detail: String,
        at: DateTime<Utc>,
    },
}

event_family!(ComplaintEvent {
    ComplaintFiled => FILED,
    ComplaintEscalated => ESCALATED,
    ComplaintReclassified => RECLASSIFIED,
    ComplaintAcknowledged => ACKNOWLEDGED,
    ProgressAdded => PROGRESS_ADDED,
    InformationRequested => INFORMATION_REQUESTED,
    InformationReceived => INFORMATION_RECEIVED,
    ComplaintResolved => RESOLVED,
    ComplaintRejected => REJECTED,
    ComplaintTransferred => TRANSFERRED,
    ClockBreached => CLOCK_BREACHED,
    ReplyDeadlineMissed => REPLY_DEADLINE_MISSED,
    FollowUpReminded => FOLLOW_UP_REMINDED,
    CallbackRequested => CALLBACK_REQUESTED,
    CallbackUnavailable => CALLBACK_UNAVAILABLE,
    VerificationAnswered => VERIFICATION_ANSWERED,
    ComplaintReopened => REOPENED,
    ComplaintClosed => CLOSED,
});

impl ComplaintEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            ComplaintEvent::ComplaintFiled(filed) => filed.at,
            ComplaintEvent::ComplaintEscalated { at, .. }
            | ComplaintEvent::ComplaintReclassified { at, .. }
            | ComplaintEvent::ComplaintAcknowledged { at, .. }
            | ComplaintEvent::ProgressAdded { at, .. }
            | ComplaintEvent::InformationRequested { at, .. }
            | ComplaintEvent::InformationReceived { at, .. }
            | ComplaintEvent::ComplaintResolved { at, .. }
            | ComplaintEvent::ComplaintRejected { at, .. }
            | ComplaintEvent::ComplaintTransferred { at, .. }
            | ComplaintEvent::ClockBreached { at, .. }
            | ComplaintEvent::ReplyDeadlineMissed { at, .. }
            | ComplaintEvent::FollowUpReminded { at, .. }
            | ComplaintEvent::CallbackRequested { at, .. }
            | ComplaintEvent::CallbackUnavailable { at, .. }
            | ComplaintEvent::VerificationAnswered { at, .. }
            | ComplaintEvent::ComplaintReopened { at, .. }
            | ComplaintEvent::ComplaintClosed { at, .. } => *at,
        }
    }
}

impl EventContract for ComplaintEvent {
    const CATEGORY: &'static str = COMPLAINT;
    const EVENT_TYPES: &'static [&'static str] = Self::ALL_TYPES;

    fn event_type(&self) -> &'static str {
        self.type_name()
    }
}
