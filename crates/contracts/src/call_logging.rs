//! Events of the call-logging service: questionnaires, dispositions, call attempts and what
//! they found, telephony records, honesty flags, shared contacts.
//!
//! Categories: `questionnaire`, `disposition_map`, `call_attempt` (an attempt's stream holds
//! [`CallAttemptLogged`] first, then what the call found and who viewed it), `telephony`,
//! `shared_contact`. Payloads of the `call_attempt` stream are not tagged with their type.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::scheduling::Disposition;
use crate::single_event;

pub const QUESTIONNAIRE: &str = "questionnaire";
pub const DISPOSITION_MAP: &str = "disposition_map";
pub const CALL_ATTEMPT: &str = "call_attempt";
pub const TELEPHONY: &str = "telephony";
pub const SHARED_CONTACT: &str = "shared_contact";
/// Every category call-logging owns and serves on its feed.
pub const CATEGORIES: &[&str] = &[
    QUESTIONNAIRE,
    DISPOSITION_MAP,
    CALL_ATTEMPT,
    TELEPHONY,
    SHARED_CONTACT,
];

/// A new version of a questionnaire (script). A published version never changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionnairePublished {
    pub tenant_id: String,
    pub questionnaire: Questionnaire,
}
single_event!(QuestionnairePublished, QUESTIONNAIRE);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Questionnaire {
    pub questionnaire_id: String,
    pub title: String,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Stable across versions, so answers of different versions compare.
    pub id: String,
    pub text: String,
    pub kind: ItemKind,
    #[serde(default)]
    pub required: bool,
    /// Ask only if an earlier item was answered with this value.
    #[serde(default)]
    pub ask_if: Option<Condition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ItemKind {
    /// Satisfaction 1 (very unsatisfied) to 5 (very satisfied).
    Rating,
    /// Likelihood to recommend, 0 to 10 (NPS).
    Recommend,
    YesNo,
    SingleChoice {
        options: Vec<String>,
    },
    MultipleChoice {
        options: Vec<String>,
    },
    FreeText {
        max_chars: usize,
    },
}

impl ItemKind {
    /// The kind's name as written in `type`.
    pub fn name(&self) -> &'static str {
        match self {
            ItemKind::Rating => "rating",
            ItemKind::Recommend => "recommend",
            ItemKind::YesNo => "yes_no",
            ItemKind::SingleChoice { .. } => "single_choice",
            ItemKind::MultipleChoice { .. } => "multiple_choice",
            ItemKind::FreeText { .. } => "free_text",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub item: String,
    pub equals: Value,
}

/// A tenant's own disposition names, each mapped onto a standard one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispositionsPublished {
    pub tenant_id: String,
    pub mapping: BTreeMap<String, String>,
}
single_event!(DispositionsPublished, DISPOSITION_MAP);

/// One call attempt, accepted under the caller's lease. Scheduling applies its disposition
/// to the callback. `notes` is personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallAttemptLogged {
    pub tenant_id: String,
    pub callback_id: Uuid,
    pub attempt_id: String,
    pub agent_id: String,
    pub lease_id: Uuid,
    pub channel: String,
    pub disposition: AttemptDisposition,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub telephony_call_id: String,
    pub recording_ref: String,
    pub notes: String,
    /// Why a reached call has no survey (the customer declined ...). Absent in attempts logged
    /// before it existed, and when the survey was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey_declined: Option<String>,
    /// The vault subject whose key seals this attempt's `notes`, the free-text answers of its
    /// `SurveyAnswered` and the text of its `ComplaintRaised` (the callback's subject, or
    /// `callback:<id>` when scheduling did not name one). Absent before sealing: clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_for: Option<String>,
}
single_event!(CallAttemptLogged, CALL_ATTEMPT);

/// The standard disposition (`kind`, and `named_time` for not convenient), and the tenant's
/// own name for it when the agent reported one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptDisposition {
    #[serde(flatten)]
    pub standard: Disposition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_kind: Option<String>,
}

/// The answers of an attempt, to the exact questionnaire version it used. Free-text answers
/// are personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurveyAnswered {
    pub tenant_id: String,
    pub callback_id: Uuid,
    pub attempt_id: String,
    pub questionnaire_id: String,
    pub questionnaire_version: u64,
    pub answers: BTreeMap<String, Value>,
}
single_event!(SurveyAnswered, CALL_ATTEMPT);

/// A complaint the customer raised during a call; complaint routing files it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComplaintRaised {
    pub tenant_id: String,
    pub callback_id: Uuid,
    pub attempt_id: String,
    pub agent_id: String,
    pub subject_id: String,
    /// The callback's department; empty when it has none.
    pub department: String,
    pub raised_at: DateTime<Utc>,
    pub complaint: RaisedComplaint,
}
single_event!(ComplaintRaised, CALL_ATTEMPT);

/// What the customer complained about. `text` is personal data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RaisedComplaint {
    pub text: String,
    pub category: String,
    /// What the complaint is about (a location, product or topic); complaints on one topic
    /// from several customers form a group.
    #[serde(default)]
    pub topic: String,
    pub severity_hint: String,
    pub reply_by: Option<DateTime<Utc>>,
}

/// The customer asked not to be called again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoNotCallRequested {
    pub tenant_id: String,
    pub callback_id: Uuid,
    pub attempt_id: String,
}
single_event!(DoNotCallRequested, CALL_ATTEMPT);

/// A reason to doubt an attempt (弄虚作假 checks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HonestyFlagRaised {
    pub tenant_id: String,
    pub attempt_id: String,
    pub agent_id: String,
    /// When the flagged call was made (flags recorded before this field existed lack it).
    #[serde(default)]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// The flag's `kind` and its `evidence`, beside the fields above.
    #[serde(flatten)]
    pub flag: HonestyFlag,
}
single_event!(HonestyFlagRaised, CALL_ATTEMPT);

/// What makes an attempt suspect, with the evidence a supervisor checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "evidence", rename_all = "snake_case")]
pub enum HonestyFlag {
    /// "Reached" with too little talk (by the agent's times, or the billed seconds once the
    /// telephony record is known).
    ShortReached {
        talk_seconds: i64,
        threshold_seconds: i64,
        billable_seconds: Option<i64>,
    },
    /// "Reached", but the network says the call was not answered.
    NetworkContradiction {
        call_id: String,
        network_result: String,
        disposition: String,
    },
    /// A "reached" phone call without a telephony record, although later calls' records came.
    NoTelephonyRecord {
        telephony_call_id: String,
        records_until: DateTime<Utc>,
        tolerance_minutes: i64,
    },
    /// A phone call started outside the tenant's calling windows.
    OutsideCallingWindow {
        started_at: DateTime<Utc>,
        next_allowed: Option<DateTime<Utc>>,
    },
    /// The agent's attempt overlaps another of their own.
    OverlappingCalls {
        other_attempt_id: String,
        other_started_at: DateTime<Utc>,
        other_ended_at: DateTime<Utc>,
    },
    /// Reported for a callback that had already ended (completed, lost, cancelled, skipped):
    /// kept on record, not applied to the callback.
    CallbackEnded { status: String },
}

impl HonestyFlag {
    /// The kind's name, as stored in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            HonestyFlag::ShortReached { .. } => "short_reached",
            HonestyFlag::NetworkContradiction { .. } => "network_contradiction",
            HonestyFlag::NoTelephonyRecord { .. } => "no_telephony_record",
            HonestyFlag::OutsideCallingWindow { .. } => "outside_calling_window",
            HonestyFlag::OverlappingCalls { .. } => "overlapping_calls",
            HonestyFlag::CallbackEnded { .. } => "callback_ended",
        }
    }

    /// The evidence as JSON, as stored in `evidence`.
    pub fn evidence(&self) -> Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("evidence").map(Value::take))
            .unwrap_or(Value::Null)
    }
}

/// Someone read a call record in full (personal data unmasked), with their reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecordViewed {
    pub tenant_id: String,
    pub attempt_id: String,
    pub reader: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}
single_event!(CallRecordViewed, CALL_ATTEMPT);

/// A call detail record from the telephony middleware. `number_dialed` is personal data: in
/// the log it is sealed with the key of vault subject `telephony:<call_id>`, and
/// `number_key` holds its keyed hash (absent before sealing: the number in clear).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelephonyRecordIngested {
    pub tenant_id: String,
    pub call_id: String,
    pub number_dialed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_key: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub billable_seconds: u32,
    /// `ANSWER`, `BUSY`, `NOANSWER` or `FAILED`.
    pub network_result: String,
}
single_event!(TelephonyRecordIngested, TELEPHONY);

/// The same phone number on two different subjects (the insurer rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContactFlagged {
    pub tenant_id: String,
    pub subject_id: String,
    pub other_subject_id: String,
    /// Masked: the reader of the flag has no need for the number.
    pub phone_masked: String,
}
single_event!(SharedContactFlagged, SHARED_CONTACT);
