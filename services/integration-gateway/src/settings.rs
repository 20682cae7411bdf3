//! A tenant's integration settings (published as data, versioned in the log): which HL7
//! senders are its own and how each message type maps to a fact; which webhook senders may
//! post and how each DMS event maps; FHIR's choices; the notification subscriptions. Every
//! part has a documented default (`docs/INTEGRATIONS.md`). Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mapping::{check_json_path, FactMapping, MappingError};

/// What a tenant publishes; every field may be left out for its default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    /// The zone of local times without an offset (HL7 timestamps, bare dates).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default)]
    pub hl7: Hl7Settings,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub fhir: FhirSettings,
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Settings {
    /// The senders (`MSH-3` application, `MSH-4` facility) whose messages are this tenant's.
    #[serde(default)]
    pub senders: Vec<Hl7Sender>,
    /// Mappings by message type (`ADT^A03`), replacing the default of that type.
    #[serde(default)]
    pub messages: BTreeMap<String, FactMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Sender {
    pub application: String,
    /// Empty: any facility of the application.
    #[serde(default)]
    pub facility: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Who may post (DMS, CRM, PBX), each signing with the secret of its name in the secrets
    /// file.
    #[serde(default)]
    pub senders: Vec<WebhookSender>,
    /// How old a signed request's timestamp may be (and how far ahead), in seconds.
    #[serde(default = "default_replay_window")]
    pub replay_window_seconds: u32,
    /// Mappings by webhook event (`vehicle.sold`), replacing the default of that event.
    #[serde(default)]
    pub events: BTreeMap<String, FactMapping>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            senders: Vec::new(),
            replay_window_seconds: default_replay_window(),
            events: BTreeMap::new(),
        }
    }
}

fn default_replay_window() -> u32 {
    300
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSender {
    /// The sender's name (`X-Callback-Sender`), also its secret's name.
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSettings {
    /// The identifier system whose value is the subject id (e.g. the hospital's MRN system);
    /// empty: the first identifier, else the Patient's logical id.
    #[serde(default)]
    pub patient_identifier_system: String,
}

/// Where a tenant's notifications go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Unique within the tenant; part of every delivery's idempotency key.
    pub name: String,
    pub kind: SubscriptionKind,
    /// The receiver (http:// or https://): the webhook, or the robot's URL with its key; none
    /// for e-mail (the relay is `CALLBACK_SMTP_URL`).
    #[serde(default)]
    pub url: String,
    /// E-mail recipients (`email` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// The secrets file's name of the HMAC key a generic webhook is signed with (required for
    /// `webhook`); DingTalk's signing secret when given for `dingtalk`.
    #[serde(default)]
    pub secret: String,
    /// What to send: `complaint.escalated`, `complaint.sla_breached`, `callback.lost`,
    /// `attempt.honesty_flag`.
    pub topics: Vec<String>,
    /// Whether messages may name the customer (complaint texts, names are never sent
    /// otherwise).
    #[serde(default)]
    pub personal_data: bool,
    /// Attempts before a notification becomes a dead letter (1-20); retries back off 1 s,
    /// 2 s, 4 s ... up to an hour.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    8
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// JSON with `X-Callback-Signature: sha256=<hex HMAC>` over the body.
    Webhook,
    /// WeCom (企业微信) group robot, a `text` message.
    Wecom,
    /// DingTalk (钉钉) group robot, a `text` message.
    Dingtalk,
    /// A plain-text e-mail through the deployment's relay (`CALLBACK_SMTP_URL`).
    Email,
}

pub const TOPICS: &[&str] = &[
    "complaint.escalated",
    "complaint.sla_breached",
    "callback.lost",
    "attempt.honesty_flag",
];

impl IntegrationSettings {
    /// Reads and checks a published document, naming the first field at fault.
    pub fn parse(json: &str) -> Result<Self, MappingError> {
        let settings: IntegrationSettings =
            callback_rules::input::parse_document("settings_json", json)
                .map_err(|(field, reason)| MappingError::new(field, reason))?;
        settings
            .validate()
            .map_err(|e| MappingError::new(format!("settings_json.{}", e.field), e.reason))?;
        Ok(settings)
    }

    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Asia::Shanghai)
    }

    fn validate(&self) -> Result<(), MappingError> {
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(MappingError::new(
                "time_zone",
                "is not an IANA time zone such as Asia/Shanghai",
            ));
        }
        for (i, sender) in self.hl7.senders.iter().enumerate() {
            if !printable(&sender.application, 1, 180) || !printable(&sender.facility, 0, 180) {
                return Err(MappingError::new(
                    format!("hl7.senders[{i}]"),
                    "application is 1-180 and facility 0-180 printable characters",
                ));
            }
        }
        for (message_type, mapping) in &self.hl7.messages {
            if !crate::hl7::SUPPORTED.iter().any(|(t, _)| t == message_type) {
                return Err(MappingError::new(
                    format!("hl7.messages.{message_type}"),
                    "is not a supported message type (ADT^A03, ADT^A08, ADT^A13, SIU^S12, SIU^S13, SIU^S15, SIU^S26)",
                ));
            }
            mapping.validate(
                &format!("hl7.messages.{message_type}"),
                crate::hl7::check_path,
            )?;
        }
        for (i, sender) in self.webhooks.senders.iter().enumerate() {
            if !name_like(&sender.name) {
                return Err(MappingError::new(
                    format!("webhooks.senders[{i}].name"),
                    "is 1-64 letters, digits, `-` or `_`",
                ));
            }
        }
        if !(10..=86_400).contains(&self.webhooks.replay_window_seconds) {
            return Err(MappingError::new(
                "webhooks.replay_window_seconds",
                "is 10 to 86400",
            ));
        }
        for (event, mapping) in &self.webhooks.events {
            if !crate::mapping::valid_event_type(event) {
                return Err(MappingError::new(
                    format!("webhooks.events.{event}"),
                    "is not an event name",
                ));
            }
            mapping.validate(&format!("webhooks.events.{event}"), check_json_path)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, subscription) in self.subscriptions.iter().enumerate() {
            let at = format!("subscriptions[{i}]");
            if !name_like(&subscription.name) || !names.insert(subscription.name.as_str()) {
                return Err(MappingError::new(
                    format!("{at}.name"),
                    "is 1-64 letters, digits, `-` or `_`, unique",
                ));
            }
            if subscription.kind == SubscriptionKind::Email {
                if !subscription.url.is_empty() {
                    return Err(MappingError::new(
                        format!("{at}.url"),
                        "an e-mail goes through CALLBACK_SMTP_URL: leave it out",
                    ));
                }
                if subscription.to.is_empty() || subscription.to.len() > 20 {
                    return Err(MappingError::new(
                        format!("{at}.to"),
                        "needs 1 to 20 addresses",
                    ));
                }
                for (j, address) in subscription.to.iter().enumerate() {
                    if !valid_address(address) {
                        return Err(MappingError::new(
                            format!("{at}.to[{j}]"),
                            "is not an e-mail address",
                        ));
                    }
                }
            } else if !(subscription.url.starts_with("http://")
                || subscription.url.starts_with("https://"))
                || subscription.url.parse::<http::Uri>().is_err()
            {
                return Err(MappingError::new(
                    format!("{at}.url"),
                    "is not an http:// or https:// URL",
                ));
            }
            if subscription.kind == SubscriptionKind::Webhook && subscription.secret.is_empty() {
                return Err(MappingError::new(
                    format!("{at}.secret"),
                    "a webhook is signed: name its secret",
                ));
            }
            if !(1..=20).contains(&subscription.max_attempts) {
                return Err(MappingError::new(
                    format!("{at}.max_attempts"),
                    "is 1 to 20",
                ));
            }
            if subscription.topics.is_empty() {
                return Err(MappingError::new(
                    format!("{at}.topics"),
                    "needs at least one topic",
                ));
            }
            for (j, topic) in subscription.topics.iter().enumerate() {
                if !TOPICS.contains(&topic.as_str()) {
                    return Err(MappingError::new(
                        format!("{at}.topics[{j}]"),
                        format!("is not one of {}", TOPICS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The HL7 mapping of `message_type`: the tenant's, else the default.
    pub fn hl7_mapping(&self, message_type: &str) -> Option<&FactMapping> {
        self.hl7
            .messages
            .get(message_type)
            .or_else(|| crate::hl7::default_mappings().get(message_type))
    }

    /// The webhook mapping of `event`: the tenant's, else the default.
    pub fn webhook_mapping(&self, event: &str) -> Option<&FactMapping> {
        self.webhooks
            .events
            .get(event)
            .or_else(|| crate::webhooks::default_mappings().get(event))
    }

    /// The settings with every default written out (what `GetIntegrationSettings` shows).
    pub fn with_defaults(&self) -> Self {
        let mut full = self.clone();
        for (message_type, mapping) in crate::hl7::default_mappings() {
            full.hl7
                .messages
                .entry(message_type.clone())
                .or_insert_with(|| mapping.clone());
        }
        for (event, mapping) in crate::webhooks::default_mappings() {
            full.webhooks
                .events
                .entry(event.clone())
                .or_insert_with(|| mapping.clone());
        }
        full
    }
}

/// `local@domain`, at most 254 bytes, nothing that could break out of an SMTP command or a
/// header.
fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !address.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"')
        })
}

fn printable(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len()) && !text.chars().any(char::is_control)
}

fn name_like(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_is_the_defaults() {
        let settings = IntegrationSettings::parse("{}").unwrap();
        assert_eq!(settings.time_zone, "Asia/Shanghai");
        assert_eq!(settings.webhooks.replay_window_seconds, 300);
        assert_eq!(
            settings.hl7_mapping("ADT^A03").unwrap().event_type,
            "patient.discharged"
        );
        assert_eq!(
            settings.webhook_mapping("vehicle.sold").unwrap().event_type,
            "vehicle.sold"
        );
        assert!(settings.with_defaults().hl7.messages.len() >= 7);
    }

    #[test]
    fn faults_are_named() {
        let cases = [
            (r#"{"time_zone": "Mars/Base"}"#, "time_zone"),
            (
                r#"{"hl7": {"messages": {"ORU^R01": {"event_type": "x", "subject_id": ["PID-3.1"]}}}}"#,
                "hl7.messages.ORU^R01",
            ),
            (
                r#"{"hl7": {"messages": {"ADT^A03": {"event_type": "x", "subject_id": ["PID-0"]}}}}"#,
                "hl7.messages.ADT^A03.subject_id[0]",
            ),
            (
                r#"{"hl7": {"messages": {"ADT^A03": {"event_type": "Bad Type", "subject_id": ["PID-3"]}}}}"#,
                "hl7.messages.ADT^A03.event_type",
            ),
            (
                r#"{"webhooks": {"events": {"vehicle.sold": {"event_type": "vehicle.sold", "subject_id": ["customer"]}}}}"#,
                "webhooks.events.vehicle.sold.subject_id[0]",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "webhook", "url": "http://x/y", "topics": ["callback.lost"]}]}"#,
                "subscriptions[0].secret",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "wecom", "url": "ftp://x", "topics": ["callback.lost"]}]}"#,
                "subscriptions[0].url",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "wecom", "url": "http://x", "topics": ["everything"]}]}"#,
                "subscriptions[0].topics[0]",
            ),
            (
                r#"{"hl7": {"senders": [{"application": ""}]}}"#,
                "hl7.senders[0]",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "email", "topics": ["callback.lost"]}]}"#,
                "subscriptions[0].to",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "email", "to": ["x@y.cn\r\nRCPT TO:<z@w.cn>"], "topics": ["callback.lost"]}]}"#,
                "subscriptions[0].to[0]",
            ),
            (
                r#"{"subscriptions": [{"name": "a", "kind": "email", "to": ["q@h.cn"], "url": "http://x", "topics": ["callback.lost"]}]}"#,
                "subscriptions[0].url",
            ),
            (r#"{"unknown": 1}"#, ""),
        ];
        for (json, field) in cases {
            let error = IntegrationSettings::parse(json).unwrap_err();
            let expected = if field.is_empty() {
                "settings_json".to_owned()
            } else {
                format!("settings_json.{field}")
            };
            assert!(error.field.starts_with(&expected), "{json}: {error}");
        }
    }
}
