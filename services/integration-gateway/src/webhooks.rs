//! Dealer DMS / CRM webhooks and telephony CDR webhooks: the signature check (HMAC-SHA256 over
//! `<timestamp>.<raw body>`, the timestamp within a replay window), the documented event
//! schema `callback.dms.v1` with a default mapping per event, and the call detail records of
//! Asterisk and FreeSWITCH turned into a telephony record. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::mapping::{parse_time, FactMapping, MappingError};

/// The header naming the sender (its secret's name).
pub const SENDER_HEADER: &str = "x-callback-sender";
/// Unix seconds when the sender signed.
pub const TIMESTAMP_HEADER: &str = "x-callback-timestamp";
/// `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`).
pub const SIGNATURE_HEADER: &str = "x-callback-signature";

/// The schema of DMS / CRM events this version reads.
pub const DMS_SCHEMA: &str = "callback.dms.v1";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0} header is missing")]
    Missing(&'static str),
    #[error("x-callback-timestamp is not unix seconds")]
    BadTimestamp,
    #[error("x-callback-timestamp is outside the replay window of {0} s")]
    Stale(u32),
    #[error("x-callback-signature does not match")]
    Mismatch,
}

/// The signature of `body` at `timestamp` with `secret`, as the header carries it.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Checks a signed request: the timestamp within `window_seconds` of `now` (either side),
/// the signature in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    window_seconds: u32,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now.timestamp() - at).abs() > i64::from(window_seconds) {
        return Err(SignatureError::Stale(window_seconds));
    }
    let expected = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(unhex)
        .ok_or(SignatureError::Mismatch)?;
    let mut mac = hmac(secret);
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn hmac(secret: &[u8]) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The envelope of a DMS / CRM event: what identifies it, beside the fields its mapping reads.
#[derive(Debug, PartialEq)]
pub struct DmsEnvelope {
    pub event: String,
    pub event_id: String,
}

/// Reads the envelope of `callback.dms.v1`: `schema`, `event`, `event_id`.
pub fn envelope(body: &Value) -> Result<DmsEnvelope, MappingError> {
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    match text("schema") {
        DMS_SCHEMA => {}
        "" => {
            return Err(MappingError::new(
                "schema",
                format!("is missing; this version reads {DMS_SCHEMA}"),
            ))
        }
        other => {
            return Err(MappingError::new(
                "schema",
                format!(
                    "`{}` is not supported; this version reads {DMS_SCHEMA}",
                    callback_rules::input::excerpt(other)
                ),
            ))
        }
    }
    let event = text("event");
    if !crate::mapping::valid_event_type(event) {
        return Err(MappingError::new(
            "event",
            "is missing or not an event name such as vehicle.sold",
        ));
    }
    let event_id = text("event_id");
    if event_id.is_empty() || event_id.len() > 200 || event_id.chars().any(char::is_control) {
        return Err(MappingError::new(
            "event_id",
            "is missing or not 1-200 printable characters",
        ));
    }
    Ok(DmsEnvelope {
        event: event.to_owned(),
        event_id: event_id.to_owned(),
    })
}

/// The default mapping of each documented DMS / CRM event.
pub fn default_mappings() -> &'static BTreeMap<String, FactMapping> {
    // Built once: every message looks its mapping up here.
    static DEFAULTS: std::sync::LazyLock<BTreeMap<String, FactMapping>> =
        std::sync::LazyLock::new(build_default_mappings);
    &DEFAULTS
}

fn build_default_mappings() -> BTreeMap<String, FactMapping> {
    let customer = |event_type: &str, owner: &[&str], attributes: Value| {
        serde_json::from_value::<FactMapping>(json!({
            "event_type": event_type,
            "subject_id": ["/customer/id"],
            "name": ["/customer/name"],
            "phones": ["/customer/phones/*", "/customer/mobile"],
            "owner": owner,
            "department": ["/department"],
            "occurred_at": ["/occurred_at"],
            "attributes": attributes,
        }))
    };
    let built = [
        (
            "vehicle.sold",
            customer(
                "vehicle.sold",
                &["/sales_advisor/id"],
                json!({
                    "vehicle_model": {"paths": ["/vehicle/model"]},
                    "vehicle_vin": {"paths": ["/vehicle/vin"]},
                    "delivered_on": {"paths": ["/vehicle/delivered_on"]},
                    "customer_class": {"paths": ["/customer/class"]}
                }),
            ),
        ),
        (
            "repair_order.closed",
            customer(
                "repair_order.closed",
                &["/service_advisor/id"],
                json!({
                    "repair_order_id": {"paths": ["/repair_order/id"], "required": true},
                    "repair_type": {"paths": ["/repair_order/type"]},
                    "vehicle_vin": {"paths": ["/vehicle/vin"]},
                    "customer_class": {"paths": ["/customer/class"]}
                }),
            ),
        ),
        (
            "insurance.renewal_due",
            customer(
                "insurance.renewal_due",
                &["/insurance_advisor/id"],
                json!({
                    "policy_number": {"paths": ["/insurance/policy_number"], "required": true},
                    "expires_on": {"paths": ["/insurance/expires_on"], "required": true},
                    "vehicle_vin": {"paths": ["/vehicle/vin"]}
                }),
            ),
        ),
    ];
    let mut mappings = BTreeMap::new();
    for (event, mapping) in built {
        #[allow(clippy::expect_used)]
        let mapping = mapping.expect("the default DMS mappings are valid");
        mappings.insert(event.to_owned(), mapping);
    }
    mappings
}

/// A call detail record, as call logging takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
    pub number_dialed: String,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub billable_seconds: u32,
    /// ANSWER, BUSY, NOANSWER or FAILED.
    pub network_result: String,
}

/// An Asterisk CDR (`cdr_custom`/`cdr_manager` fields as JSON: `uniqueid`, `dst`, `start`,
/// `answer`, `end`, `billsec`, `disposition`) or a FreeSWITCH JSON CDR (`variables.uuid`,
/// `destination_number`, `start_stamp`, `answer_stamp`, `end_stamp`, `billsec`,
/// `hangup_cause`); local times are in `time_zone`.
pub fn call_record(body: &Value, time_zone: chrono_tz::Tz) -> Result<CallRecord, MappingError> {
    if let Some(variables) = body.get("variables") {
        freeswitch(variables, time_zone)
    } else {
        asterisk(body, time_zone)
    }
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("")
}

fn number(body: &Value, name: &str) -> Result<u32, MappingError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| MappingError::new(name, "is not a whole number of seconds")),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(0),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| MappingError::new(name, "is not a whole number of seconds")),
        Some(_) => Err(MappingError::new(name, "is not a whole number of seconds")),
    }
}

fn time(
    body: &Value,
    name: &str,
    time_zone: chrono_tz::Tz,
) -> Result<Option<DateTime<Utc>>, MappingError> {
    let text = field(body, name);
    // Asterisk writes an empty answer time (or zeros) for an unanswered call.
    if text.is_empty() || text.starts_with("0000") {
        return Ok(None);
    }
    parse_time(text, time_zone).map(Some).ok_or_else(|| {
        MappingError::new(
            name,
            format!("`{}` is not a time", callback_rules::input::excerpt(text)),
        )
    })
}

fn required(value: Option<DateTime<Utc>>, name: &str) -> Result<DateTime<Utc>, MappingError> {
    value.ok_or_else(|| MappingError::new(name, "is missing"))
}

fn call_id(text: &str, name: &str) -> Result<String, MappingError> {
    if text.is_empty() || text.len() > 128 || text.chars().any(char::is_control) {
        return Err(MappingError::new(
            name,
            "is missing or not 1-128 printable characters",
        ));
    }
    Ok(text.to_owned())
}

fn asterisk(body: &Value, time_zone: chrono_tz::Tz) -> Result<CallRecord, MappingError> {
    let network_result = match field(body, "disposition").to_ascii_uppercase().as_str() {
        "ANSWERED" | "ANSWER" => "ANSWER",
        "BUSY" | "CONGESTION" => "BUSY",
        "NO ANSWER" | "NOANSWER" => "NOANSWER",
        "FAILED" => "FAILED",
        _ => {
            return Err(MappingError::new(
                "disposition",
                "is not ANSWERED, NO ANSWER, BUSY, CONGESTION or FAILED",
            ))
        }
    };
    Ok(CallRecord {
        call_id: call_id(field(body, "uniqueid"), "uniqueid")?,
        number_dialed: field(body, "dst").to_owned(),
        started_at: required(time(body, "start", time_zone)?, "start")?,
        answered_at: time(body, "answer", time_zone)?,
        ended_at: required(time(body, "end", time_zone)?, "end")?,
        billable_seconds: number(body, "billsec")?,
        network_result: network_result.into(),
    })
}

fn freeswitch(variables: &Value, time_zone: chrono_tz::Tz) -> Result<CallRecord, MappingError> {
    let cause = field(variables, "hangup_cause").to_ascii_uppercase();
    let billsec = number(variables, "billsec")?;
    let network_result = match cause.as_str() {
        "USER_BUSY" | "NORMAL_CIRCUIT_CONGESTION" => "BUSY",
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ORIGINATOR_CANCEL" | "ALLOTTED_TIMEOUT" => "NOANSWER",
        "NORMAL_CLEARING" if billsec > 0 || !field(variables, "answer_stamp").is_empty() => {
            "ANSWER"
        }
        "NORMAL_CLEARING" => "NOANSWER",
        "" => return Err(MappingError::new("variables.hangup_cause", "is missing")),
        _ => "FAILED",
    };
    let at = |name: &str| {
        time(variables, name, time_zone)
            .map_err(|e| MappingError::new(format!("variables.{}", e.field), e.reason))
    };
    Ok(CallRecord {
        call_id: call_id(field(variables, "uuid"), "variables.uuid")?,
        number_dialed: field(variables, "destination_number").to_owned(),
        started_at: required(at("start_stamp")?, "variables.start_stamp")?,
        answered_at: at("answer_stamp")?,
        ended_at: required(at("end_stamp")?, "variables.end_stamp")?,
        billable_seconds: billsec,
        network_result: network_result.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::JsonSource;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_489_600, 0).unwrap()
    }

    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        let body = br#"{"a":1}"#;
        let at = now().timestamp();
        let signature = sign(b"secret", at, body);
        let ts = at.to_string();
        assert_eq!(
            verify(b"secret", Some(&ts), Some(&signature), body, now(), 300),
            Ok(())
        );
        assert_eq!(
            verify(b"other", Some(&ts), Some(&signature), body, now(), 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"secret",
                Some(&ts),
                Some(&signature),
                br#"{"a":2}"#,
                now(),
                300
            ),
            Err(SignatureError::Mismatch)
        );
        // A replayed request with a fresh timestamp does not match the old signature.
        let later = (at + 10).to_string();
        assert_eq!(
            verify(b"secret", Some(&later), Some(&signature), body, now(), 300),
            Err(SignatureError::Mismatch)
        );
        let stale = (at - 301).to_string();
        let stale_signature = sign(b"secret", at - 301, body);
        assert_eq!(
            verify(
                b"secret",
                Some(&stale),
                Some(&stale_signature),
                body,
                now(),
                300
            ),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"secret", None, Some(&signature), body, now(), 300),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(b"secret", Some("soon"), Some(&signature), body, now(), 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"secret", Some(&ts), Some("sha256=zz"), body, now(), 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_dms_sale_maps_to_a_fact() {
        let body = json!({
            "schema": "callback.dms.v1", "event": "vehicle.sold", "event_id": "SO-2026-0042",
            "occurred_at": "2026-11-30T15:20:00+08:00",
            "customer": {"id": "CUS-9", "name": "李雷", "phones": ["13700000009"]},
            "sales_advisor": {"id": "advisor-1"}, "vehicle": {"model": "Model Y", "vin": "LRW3E7FS1PC000001"}
        });
        let envelope = envelope(&body).unwrap();
        assert_eq!(envelope.event, "vehicle.sold");
        let fact = default_mappings()["vehicle.sold"]
            .apply(&JsonSource(&body), chrono_tz::Asia::Shanghai)
            .unwrap();
        assert_eq!(
            (fact.subject_id.as_str(), fact.owner.as_str()),
            ("CUS-9", "advisor-1")
        );
        assert_eq!(fact.attributes["vehicle_model"], "Model Y");
        let wrong = json!({"schema": "callback.dms.v2", "event": "vehicle.sold", "event_id": "1"});
        assert_eq!(super::envelope(&wrong).unwrap_err().field, "schema");
        let missing = json!({"schema": "callback.dms.v1", "event": "repair_order.closed", "event_id": "RO-1",
                             "occurred_at": "2026-11-30", "customer": {"id": "C"}});
        let error = default_mappings()["repair_order.closed"]
            .apply(&JsonSource(&missing), chrono_tz::Asia::Shanghai)
            .unwrap_err();
        assert_eq!(error.field, "attributes.repair_order_id (/repair_order/id)");
    }

    #[test]
    fn asterisk_and_freeswitch_records_are_read() {
        let asterisk = json!({"uniqueid": "1764489600.42", "src": "8001", "dst": "13912345678",
            "start": "2026-11-30 16:00:00", "answer": "2026-11-30 16:00:09", "end": "2026-11-30 16:03:09",
            "duration": 189, "billsec": "180", "disposition": "ANSWERED", "recordingfile": "r.wav"});
        let record = call_record(&asterisk, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(record.call_id, "1764489600.42");
        assert_eq!(record.network_result, "ANSWER");
        assert_eq!(record.billable_seconds, 180);
        assert_eq!(record.started_at.to_rfc3339(), "2026-11-30T08:00:00+00:00");
        let unanswered = json!({"uniqueid": "1.43", "dst": "139", "start": "2026-11-30 16:00:00", "answer": "",
            "end": "2026-11-30 16:00:30", "billsec": 0, "disposition": "NO ANSWER"});
        let record = call_record(&unanswered, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(
            (record.network_result.as_str(), record.answered_at),
            ("NOANSWER", None)
        );
        let freeswitch = json!({"variables": {"uuid": "a1b2", "destination_number": "13912345678",
            "start_stamp": "2026-11-30 16:00:00", "answer_stamp": "", "end_stamp": "2026-11-30 16:00:20",
            "billsec": "0", "hangup_cause": "USER_BUSY"}});
        let record = call_record(&freeswitch, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(
            (record.call_id.as_str(), record.network_result.as_str()),
            ("a1b2", "BUSY")
        );
        let broken = json!({"uniqueid": "1", "disposition": "ANSWERED", "start": "never"});
        assert_eq!(
            call_record(&broken, chrono_tz::Asia::Shanghai)
                .unwrap_err()
                .field,
            "start"
        );
    }
}
