//! Hostile input to the gateway's pure parts: arbitrary bytes framed as MLLP, arbitrary text
//! after an MSH header, arbitrary JSON as FHIR resources, DMS events and CDRs, arbitrary
//! mapping paths. Nothing panics; every message gets an ACK that parses; refusals name a field.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use callback_integration_gateway::hl7::{self, Hl7Message};
use callback_integration_gateway::mapping::{JsonSource, Source};
use callback_integration_gateway::mllp::MllpCodec;
use callback_integration_gateway::settings::{FhirSettings, IntegrationSettings};
use callback_integration_gateway::{fhir, webhooks};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_489_600, 0).unwrap()
}

/// Text that looks enough like HL7 to get past the first checks: delimiters, segment names,
/// escapes, repetitions, CJK, control characters.
fn hl7ish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "|",
        "^",
        "~",
        "\\",
        "&",
        "\r",
        "\n",
        "PID",
        "PV1",
        "EVN",
        "SIU",
        "ADT^A03",
        "A03",
        "2.4",
        "\\F\\",
        "\\X0D\\",
        "\\",
        "\"\"",
        "张伟",
        "P0012345",
        "20261128163000",
        "",
        "\u{0}",
        "MSH|^~\\&|",
        "99999999999999",
        "-0800",
        "+",
        "[*]",
        "1",
    ]);
    prop::collection::vec(pieces, 0..80).prop_map(|parts| parts.concat())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "finished",
            "booked",
            "IMP",
            "Patient/1",
            "#p",
            "2026-11-28T16:30:00+08:00",
            "",
            "x",
            "ANSWERED",
            "Encounter",
            "Appointment",
            "Patient",
            "callback.dms.v1",
            "vehicle.sold",
            "2026-13-45",
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "resourceType",
            "status",
            "class",
            "code",
            "subject",
            "reference",
            "identifier",
            "value",
            "system",
            "contained",
            "id",
            "period",
            "end",
            "start",
            "participant",
            "actor",
            "name",
            "telecom",
            "schema",
            "event",
            "event_id",
            "customer",
            "occurred_at",
            "variables",
            "uuid",
            "uniqueid",
            "start_stamp",
            "end_stamp",
            "hangup_cause",
            "disposition",
            "billsec",
            "dst",
            "meta",
            "lastUpdated",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..8).prop_map(|map| {
                serde_json::Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_frame_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2000), max in 8usize..512) {
        let mut codec = MllpCodec::new(max);
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = codec.decode(&mut buffer) {
            prop_assert!(frame.len() <= max);
        }
    }

    #[test]
    fn any_message_gets_a_readable_ack(body in hl7ish()) {
        let text = format!("MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03|ID1|P|2.4\r{body}");
        for candidate in [text.as_str(), body.as_str()] {
            match Hl7Message::parse(candidate) {
                Ok(message) => {
                    let defaults = IntegrationSettings::default();
                    let outcome = message.check_header().and_then(|()| {
                        let mapping = defaults
                            .hl7_mapping(&message.header.message_type)
                            .ok_or_else(|| hl7::Refusal::reject(200, None, "no mapping"))?;
                        mapping
                            .apply(&message, chrono_tz::Asia::Shanghai)
                            .map(|_| ())
                            .map_err(|e| hl7::Refusal::reject(101, None, e.to_string()))
                    });
                    let ack = hl7::ack(&message.header, message.separators(), outcome.as_ref().map(|_| ()), "A1", now());
                    let parsed = Hl7Message::parse(&ack).unwrap();
                    let code = parsed.values("MSA-1.1").unwrap();
                    prop_assert!(code == vec!["AA"] || code == vec!["AR"] || code == vec!["AE"], "{ack:?}");
                }
                Err(refusal) => {
                    let ack = hl7::reject_unreadable(&refusal, "A1", now());
                    prop_assert!(Hl7Message::parse(&ack).is_ok());
                }
            }
        }
    }

    #[test]
    fn any_path_is_read_or_refused(path in "[A-Z0-9\\-\\.\\[\\]\\*]{0,16}", body in hl7ish()) {
        let text = format!("MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03|ID1|P|2.4\r{body}");
        if let Ok(message) = Hl7Message::parse(&text) {
            let _ = message.values(&path);
        }
    }

    #[test]
    fn any_json_is_translated_or_refused_with_a_field(value in json_value()) {
        let settings = FhirSettings::default();
        for result in [
            fhir::encounter(&value, &[], &settings, chrono_tz::Asia::Shanghai, now()),
            fhir::appointment(&value, std::slice::from_ref(&value), &settings, chrono_tz::Asia::Shanghai, now()),
        ] {
            if let Err(error) = result {
                prop_assert!(!error.field.is_empty());
            }
        }
        if let Err(error) = webhooks::envelope(&value) {
            prop_assert!(!error.field.is_empty());
        }
        if let Err(error) = webhooks::call_record(&value, chrono_tz::Asia::Shanghai) {
            prop_assert!(!error.field.is_empty());
        }
        for mapping in webhooks::default_mappings().values() {
            if let Err(error) = mapping.apply(&JsonSource(&value), chrono_tz::Asia::Shanghai) {
                prop_assert!(!error.field.is_empty());
            }
        }
        let _ = JsonSource(&value).values("/customer/phones/*");
    }
}
