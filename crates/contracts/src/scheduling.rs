//! Events of the scheduling service: tenants, policies, business facts and callbacks.
//!
//! Categories: `tenant` ([`TenantPublished`]), `policy` ([`PolicyPublished`]),
//! `business_event` ([`BusinessEventIngested`]), `callback` ([`CallbackEvent`]), `subject`
//! ([`SubjectErased`]).

use std::collections::BTreeMap;

use callback_calendar::CalendarSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{event_family, single_event, ContractError, EventContract, EventView};

pub const TENANT: &str = "tenant";
pub const POLICY: &str = "policy";
pub const BUSINESS_EVENT: &str = "business_event";
pub const CALLBACK: &str = "callback";
pub const SUBJECT: &str = "subject";
/// Every category scheduling owns and serves on its feed.
pub const CATEGORIES: &[&str] = &[TENANT, POLICY, CALLBACK, BUSINESS_EVENT, SUBJECT];

/// A subject's personal data erased (PIPL art. 47: its key deleted in the same transaction,
/// so nothing sealed with it opens again) or its processing restricted (the key kept,
/// nothing processed or opened). Carries no personal data: ids, the mode, who asked (the
/// authenticated principal) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErased {
    pub tenant_id: String,
    pub subject_id: String,
    pub mode: ErasureMode,
    /// Why, e.g. a request or ticket number: no personal data.
    pub reason: String,
    /// The authenticated principal who asked.
    pub by: String,
    pub at: DateTime<Utc>,
}
single_event!(SubjectErased, SUBJECT);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureMode {
    Erase,
    Restrict,
}

/// A new version of a tenant's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantPublished {
    pub tenant_id: String,
    pub settings: TenantSettings,
}
single_event!(TenantPublished, TENANT);

/// A tenant's settings as published: calendar, departments, agents and pools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub calendar: CalendarSpec,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// Do not harass: the most call attempts one person gets across all policies.
    #[serde(default)]
    pub frequency_caps: FrequencyCaps,
    /// The most callbacks one agent may hold under live leases at once (default 1: one
    /// phone, one call; up to 10,000, or 0 for no limit, for batch work such as written
    /// surveys). Absent in settings published before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leases_per_agent: Option<u32>,
    /// The region (ISO 3166, e.g. `CN`) phone numbers without a country code are read in
    /// when they are normalised to E.164; default `CN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_region: Option<String>,
}

impl TenantSettings {
    /// The lease cap in force ([`TenantSettings::max_leases_per_agent`], default 1; `None`
    /// when it is 0, no limit).
    pub fn lease_cap(&self) -> Option<u32> {
        match self.max_leases_per_agent.unwrap_or(1) {
            0 => None,
            cap => Some(cap),
        }
    }

    /// The region phone numbers are read in ([`TenantSettings::phone_region`], default `CN`).
    pub fn phone_region(&self) -> &str {
        self.phone_region.as_deref().unwrap_or("CN")
    }
}

impl TenantSettings {
    pub fn agent(&self, agent_id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.agent_id == agent_id)
    }
}

/// Rolling limits on call attempts per person (subject) across all policies of a tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCaps {
    /// At most this many attempts in any 24 hours.
    #[serde(default)]
    pub per_day: Option<u32>,
    /// At most this many attempts in any 7 days.
    #[serde(default)]
    pub per_week: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub agent_id: String,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
}

/// A new version of a callback policy. `policy` is the document as `PublishPolicy` accepted
/// and normalised it; its schema is scheduling's policy format (README, "Scheduling in five
/// calls"), which only scheduling reads. Scheduling's tests decode the golden document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyPublished {
    pub tenant_id: String,
    pub policy: Value,
}
single_event!(PolicyPublished, POLICY);

/// A business fact from a source system, with what it scheduled and cancelled: the answer a
/// retried ingest gets. The subject's name and phones are sealed (see [`SubjectContact`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusinessEventIngested {
    pub fact: BusinessFact,
    pub subject: SubjectContact,
    pub scheduled: Vec<ScheduledSummary>,
    pub cancelled: Vec<Uuid>,
}
single_event!(BusinessEventIngested, BUSINESS_EVENT);

/// A fact pushed by a source system (HIS, DMS, CRM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusinessFact {
    pub tenant_id: String,
    pub source: String,
    pub source_event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub subject_id: String,
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

/// Who a fact is about. Personal data: never in logs.
///
/// In the log (from schema 1's additive fields on), `name` and `phones` are empty: the name
/// and numbers are in `sealed` (JSON `{"name", "phones"}` sealed with the subject's key,
/// `callback-vault`), and `phone_keys` holds the keyed hash of each number for matching.
/// Events written before sealing carry them in clear; readers take either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectContact {
    pub subject_id: String,
    pub name: String,
    pub phones: Vec<String>,
    pub owner_agent_id: Option<String>,
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_keys: Vec<String>,
}

/// What `SubjectContact::sealed` holds, once opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearContact {
    pub name: String,
    pub phones: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledSummary {
    pub callback_id: Uuid,
    pub policy_id: String,
    pub policy_version: u64,
    pub step: String,
    pub occurrence: u32,
    pub due_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub status: CallbackStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    Scheduled,
    Claimed,
    Completed,
    Lost,
    Cancelled,
    Skipped,
}

impl CallbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackStatus::Scheduled => "scheduled",
            CallbackStatus::Claimed => "claimed",
            CallbackStatus::Completed => "completed",
            CallbackStatus::Lost => "lost",
            CallbackStatus::Cancelled => "cancelled",
            CallbackStatus::Skipped => "skipped",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, CallbackStatus::Scheduled | CallbackStatus::Claimed)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    #[default]
    Phone,
    Sms,
    Wechat,
    Email,
    Letter,
    OnSite,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Phone => "phone",
            Channel::Sms => "sms",
            Channel::Wechat => "wechat",
            Channel::Email => "email",
            Channel::Letter => "letter",
            Channel::OnSite => "on_site",
        }
    }
}

/// Retries after an unsuccessful attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub max_attempts: u32,
    /// Minutes to wait per disposition (`no_answer`, `busy`, `voicemail`, ...); the next
    /// attempt is at the first allowed time after that.
    #[serde(default)]
    pub spacing_minutes: BTreeMap<String, u32>,
    pub default_spacing_minutes: u32,
}

impl Default for RetryRule {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            spacing_minutes: BTreeMap::new(),
            default_spacing_minutes: 120,
        }
    }
}

/// A call's outcome as the agent reports it (machine-readable meaning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disposition {
    Reached,
    NoAnswer,
    Busy,
    Voicemail,
    WrongNumber,
    /// "Not convenient now": call again at the time the customer named.
    NotConvenient {
        named_time: DateTime<Utc>,
    },
    Refused,
    DoNotCall,
    /// E.g. the patient has died, or the number belongs to someone else entirely.
    InvalidSubject,
}

impl Disposition {
    /// The standard disposition names, in the order the API documents them.
    pub const NAMES: [&'static str; 9] = [
        "reached",
        "no_answer",
        "busy",
        "voicemail",
        "wrong_number",
        "not_convenient",
        "refused",
        "do_not_call",
        "invalid_subject",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Disposition::Reached => "reached",
            Disposition::NoAnswer => "no_answer",
            Disposition::Busy => "busy",
            Disposition::Voicemail => "voicemail",
            Disposition::WrongNumber => "wrong_number",
            Disposition::NotConvenient { .. } => "not_convenient",
            Disposition::Refused => "refused",
            Disposition::DoNotCall => "do_not_call",
            Disposition::InvalidSubject => "invalid_subject",
        }
    }
}

/// What scheduling planned: schema version 2 (version 1 had no `give_up_at`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    pub callback_id: Uuid,
    pub tenant_id: String,
    pub policy_id: String,
    pub policy_version: u64,
    pub step_index: usize,
    pub step: String,
    pub occurrence: u32,
    pub anchor_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// The end of the due window: a call reached by then is on time (及时).
    pub deadline: DateTime<Utc>,
    /// When an unreached callback is given up as lost (失访). Version 1 callbacks were lost
    /// at their deadline, so the upcaster sets it to `deadline`.
    pub give_up_at: DateTime<Utc>,
    pub priority: u8,
    pub channel: Channel,
    pub questionnaire_id: Option<String>,
    /// The subject's owner, who gets it first; `None` when it goes straight to the pool.
    pub owner_agent_id: Option<String>,
    pub pool: String,
    /// From then on, the pool may take it although the owner has not.
    pub pool_after: DateTime<Utc>,
    pub subject_id: String,
    pub department: Option<String>,
    pub retry: RetryRule,
    /// The business event stream (source fact) that led to it.
    pub fact_stream: String,
}

/// `CallbackScheduled` version 1: no give-up time, so a callback was lost at its deadline.
#[derive(Deserialize)]
struct ScheduledV1 {
    callback_id: Uuid,
    tenant_id: String,
    policy_id: String,
    policy_version: u64,
    step_index: usize,
    step: String,
    occurrence: u32,
    anchor_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    priority: u8,
    channel: Channel,
    questionnaire_id: Option<String>,
    owner_agent_id: Option<String>,
    pool: String,
    pool_after: DateTime<Utc>,
    subject_id: String,
    department: Option<String>,
    retry: RetryRule,
    fact_stream: String,
}

impl From<ScheduledV1> for Scheduled {
    fn from(v1: ScheduledV1) -> Scheduled {
        Scheduled {
            callback_id: v1.callback_id,
            tenant_id: v1.tenant_id,
            policy_id: v1.policy_id,
            policy_version: v1.policy_version,
            step_index: v1.step_index,
            step: v1.step,
            occurrence: v1.occurrence,
            anchor_at: v1.anchor_at,
            due_at: v1.due_at,
            deadline: v1.deadline,
            give_up_at: v1.deadline,
            priority: v1.priority,
            channel: v1.channel,
            questionnaire_id: v1.questionnaire_id,
            owner_agent_id: v1.owner_agent_id,
            pool: v1.pool,
            pool_after: v1.pool_after,
            subject_id: v1.subject_id,
            department: v1.department,
            retry: v1.retry,
            fact_stream: v1.fact_stream,
        }
    }
}

/// What a callback's stream records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CallbackEvent {
    CallbackScheduled(Box<Scheduled>),
    /// The due window had closed before the callback could be made (e.g. planned during a
    /// holiday); ends it without a call, with the reason.
    CallbackSkipped {
        reason: String,
        at: DateTime<Utc>,
    },
    CallbackClaimed {
        agent_id: String,
        lease_id: Uuid,
        lease_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    CallbackAttempted {
        attempt_id: String,
        agent_id: String,
        disposition: Disposition,
        at: DateTime<Utc>,
    },
    CallbackRescheduled {
        due_at: DateTime<Utc>,
        deadline: DateTime<Utc>,
        reason: String,
        at: DateTime<Utc>,
    },
    CallbackCompleted {
        at: DateTime<Utc>,
    },
    /// 失访: not reached; the reason is mandatory.
    CallbackLost {
        reason: String,
        attempts: u32,
        at: DateTime<Utc>,
    },
    CallbackCancelled {
        reason: String,
        at: DateTime<Utc>,
    },
}

event_family!(CallbackEvent {
    CallbackScheduled => SCHEDULED,
    CallbackSkipped => SKIPPED,
    CallbackClaimed => CLAIMED,
    CallbackAttempted => ATTEMPTED,
    CallbackRescheduled => RESCHEDULED,
    CallbackCompleted => COMPLETED,
    CallbackLost => LOST,
    CallbackCancelled => CANCELLED,
});

impl EventContract for CallbackEvent {
    const CATEGORY: &'static str = CALLBACK;
    const EVENT_TYPES: &'static [&'static str] = Self::ALL_TYPES;

    fn event_type(&self) -> &'static str {
        self.type_name()
    }

    fn schema_version(event_type: &str) -> i32 {
        if event_type == Self::SCHEDULED {
            2
        } else {
            1
        }
    }

    /// Version 1 `CallbackScheduled` events are read whenever a callback planned before
    /// version 2 is claimed or reported on: decoded directly, not through a JSON tree.
    fn decode_older(
        event_type: &str,
        version: i32,
        payload: &str,
    ) -> Option<Result<Self, ContractError>> {
        (event_type == Self::SCHEDULED && version == 1).then(|| {
            serde_json::from_str::<ScheduledV1>(payload)
                .map(|v1| CallbackEvent::CallbackScheduled(Box::new(v1.into())))
                .map_err(|e| ContractError::Payload {
                    event_type: event_type.to_owned(),
                    reason: e.to_string(),
                })
        })
    }

    fn upcast(event_type: &str, from: i32, mut payload: Value) -> Result<Value, ContractError> {
        match (event_type, from) {
            // v1 -> v2: a callback without a give-up time was lost at its deadline.
            ("CallbackScheduled", 1) => {
                let deadline =
                    payload
                        .get("deadline")
                        .cloned()
                        .ok_or_else(|| ContractError::Payload {
                            event_type: event_type.to_owned(),
                            reason: "version 1 payload without `deadline`".into(),
                        })?;
                if let Some(object) = payload.as_object_mut() {
                    object.entry("give_up_at").or_insert(deadline);
                }
                Ok(payload)
            }
            _ => Err(ContractError::NoUpcaster {
                event_type: event_type.to_owned(),
                from,
            }),
        }
    }
}

// ---- views: what consumers that fold many callbacks read ----

/// What analytics reads of a `CallbackScheduled` (every version).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ScheduledView {
    pub tenant_id: String,
    pub policy_id: String,
    pub step: String,
    pub department: Option<String>,
    pub channel: Channel,
    pub due_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
}

impl EventView for ScheduledView {
    type Of = CallbackEvent;
    const EVENT_TYPES: &'static [&'static str] = &[CallbackEvent::SCHEDULED];
}

/// Who made a `CallbackAttempted`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AttemptedView {
    pub agent_id: String,
}

impl EventView for AttemptedView {
    type Of = CallbackEvent;
    const EVENT_TYPES: &'static [&'static str] = &[CallbackEvent::ATTEMPTED];
}

/// The new deadline of a `CallbackRescheduled`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RescheduledView {
    pub deadline: DateTime<Utc>,
}

impl EventView for RescheduledView {
    type Of = CallbackEvent;
    const EVENT_TYPES: &'static [&'static str] = &[CallbackEvent::RESCHEDULED];
}

/// How and when a callback ended: completed, lost, skipped or cancelled (completions have no
/// reason).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EndedView {
    #[serde(default)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl EventView for EndedView {
    type Of = CallbackEvent;
    const EVENT_TYPES: &'static [&'static str] = &[
        CallbackEvent::COMPLETED,
        CallbackEvent::LOST,
        CallbackEvent::SKIPPED,
        CallbackEvent::CANCELLED,
    ];
}
