//! HL7 v2 messages: parsed with `hl7-parser`, read by field path for the mappings, answered
//! with the acknowledgements integration engines expect (Mirth / NextGen Connect
//! conventions: `MSA-1` AA once the fact is committed, AE for a transient fault the sender
//! should resend, AR for a message that can never be accepted; `MSA-2` the inbound control id;
//! the inbound version kept; the reason in `MSA-3` and `ERR`). Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hl7_parser::message::Separators;
use hl7_parser::Message;
use serde_json::json;

use crate::mapping::{FactMapping, Source};

/// The message types the gateway accepts, with the fact each becomes by default.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("ADT^A03", "patient.discharged"),
    ("ADT^A13", "patient.discharge_cancelled"),
    ("ADT^A08", "patient.updated"),
    ("SIU^S12", "appointment.booked"),
    ("SIU^S13", "appointment.rescheduled"),
    ("SIU^S15", "appointment.cancelled"),
    ("SIU^S26", "appointment.no_show"),
];

/// Versions accepted (`MSH-12`).
pub const VERSIONS: &[&str] = &["2.3", "2.3.1", "2.4", "2.5", "2.5.1"];

/// The header fields the gateway routes and answers by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// `MSH-9.1^MSH-9.2`, e.g. `ADT^A03`.
    pub message_type: String,
    pub trigger: String,
    pub control_id: String,
    pub processing_id: String,
    pub version: String,
}

/// Why a message is not accepted: an AR (never acceptable) or an AE (try again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: AckCode,
    /// HL7 table 0357 error code, e.g. 101 (required field missing).
    pub error_code: u16,
    /// The segment and field at fault, e.g. `PID-3`, when known.
    pub location: Option<String>,
    /// What went wrong, naming the field; never personal data.
    pub text: String,
}

impl Refusal {
    pub fn reject(error_code: u16, location: Option<&str>, text: impl Into<String>) -> Self {
        Self {
            code: AckCode::Reject,
            error_code,
            location: location.map(str::to_owned),
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            code: AckCode::Error,
            error_code: 207,
            location: None,
            text: text.into(),
        }
    }
}

/// `MSA-1` (original acknowledgement mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    Accept,
    Error,
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// A parsed inbound message.
pub struct Hl7Message<'m> {
    message: Message<'m>,
    pub header: Header,
}

impl<'m> Hl7Message<'m> {
    /// Parses `text` (segments ended by CR; LF and CRLF are tolerated) and reads its header.
    pub fn parse(text: &'m str) -> Result<Self, Refusal> {
        if !text.starts_with("MSH") {
            return Err(Refusal::reject(
                100,
                Some("MSH"),
                "the message does not start with an MSH segment",
            ));
        }
        let message =
            Message::parse_with_lenient_newlines(text.trim_end_matches(['\r', '\n']), true)
                .map_err(|e| {
                    Refusal::reject(
                        102,
                        None,
                        format!(
                            "not an HL7 v2 message: {}",
                            callback_rules::input::excerpt(&e.to_string())
                        ),
                    )
                })?;
        let read = |field: usize, component: usize| -> String {
            message
                .segment("MSH")
                .and_then(|s| s.field(field))
                .and_then(|f| f.component(component))
                .map(|c| decode(c.raw_value(), &message.separators))
                .unwrap_or_default()
        };
        let header = Header {
            sending_application: read(3, 1),
            sending_facility: read(4, 1),
            receiving_application: read(5, 1),
            receiving_facility: read(6, 1),
            message_type: format!("{}^{}", read(9, 1), read(9, 2)),
            trigger: read(9, 2),
            control_id: read(10, 1),
            processing_id: read(11, 1),
            version: read(12, 1),
        };
        Ok(Self { message, header })
    }

    /// The checks every accepted message passes before its mapping runs.
    pub fn check_header(&self) -> Result<(), Refusal> {
        let h = &self.header;
        if h.control_id.is_empty() || h.control_id.len() > 199 {
            return Err(Refusal::reject(
                101,
                Some("MSH-10"),
                "MSH-10 (message control id) is missing or longer than 199",
            ));
        }
        if h.sending_application.is_empty() {
            return Err(Refusal::reject(
                101,
                Some("MSH-3"),
                "MSH-3 (sending application) is missing",
            ));
        }
        if !VERSIONS.contains(&h.version.as_str()) {
            return Err(Refusal::reject(
                203,
                Some("MSH-12"),
                format!(
                    "MSH-12 version `{}` is not supported (2.3 to 2.5.1)",
                    callback_rules::input::excerpt(&h.version)
                ),
            ));
        }
        if !SUPPORTED.iter().any(|(t, _)| *t == h.message_type) {
            let code = if SUPPORTED.iter().any(|(t, _)| {
                t.starts_with(&format!(
                    "{}^",
                    h.message_type.split('^').next().unwrap_or("")
                ))
            }) {
                201
            } else {
                200
            };
            return Err(Refusal::reject(
                code,
                Some("MSH-9"),
                format!(
                    "MSH-9 message type `{}` is not accepted (ADT^A03, ADT^A08, ADT^A13, SIU^S12, SIU^S13, SIU^S15, SIU^S26)",
                    callback_rules::input::excerpt(&h.message_type)
                ),
            ));
        }
        Ok(())
    }

    pub fn separators(&self) -> &Separators {
        &self.message.separators
    }
}

impl Source for Hl7Message<'_> {
    fn values(&self, path: &str) -> Result<Vec<String>, String> {
        let path = Hl7Path::parse(path)?;
        let Some(segment) = self.message.segment(&path.segment) else {
            return Ok(Vec::new());
        };
        // MSH-1 and MSH-2 are the separators themselves: not data.
        let Some(field) = segment.field(path.field) else {
            return Ok(Vec::new());
        };
        let separators = &self.message.separators;
        let repeats: Vec<_> = match path.repeat {
            Repeat::All => field.repeats().collect(),
            Repeat::Nth(n) => field.repeat(n).into_iter().collect(),
        };
        let mut values = Vec::new();
        for repeat in repeats {
            let value = match (path.component, path.subcomponent) {
                (None, _) => decode(repeat.raw_value(), separators),
                (Some(c), None) => repeat
                    .component(c)
                    .map(|c| decode(c.raw_value(), separators))
                    .unwrap_or_default(),
                (Some(c), Some(s)) => repeat
                    .component(c)
                    .and_then(|c| c.subcomponent(s))
                    .map(|s| decode(s.raw_value(), separators))
                    .unwrap_or_default(),
            };
            let value = value.trim();
            // `""` is HL7's explicit null.
            if !value.is_empty() && value != "\"\"" {
                values.push(value.to_owned());
            }
        }
        Ok(values)
    }
}

/// A value with its HL7 escape sequences decoded: `\F\ \S\ \T\ \R\ \E\` the separators,
/// `\Xhh..\` bytes (UTF-8), `\.br\` a line break, highlighting (`\H\`, `\N\`) dropped, an
/// unknown sequence kept as written, an unclosed escape kept literally.
///
/// Our own rather than `hl7-parser`'s display: 0.3.0 slices the value at character counts as
/// byte offsets, and panics on Chinese text with an escape in it (found by the hostile-input
/// property test).
pub fn decode(value: &str, separators: &Separators) -> String {
    let escape = separators.escape;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + escape.len_utf8()..];
        let Some(end) = after.find(escape) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let sequence = &after[..end];
        match sequence {
            "F" => out.push(separators.field),
            "S" => out.push(separators.component),
            "T" => out.push(separators.subcomponent),
            "R" => out.push(separators.repetition),
            "E" => out.push(escape),
            ".br" => out.push_str("\r\n"),
            "H" | "N" => {}
            hex if hex.len() > 1 && hex.starts_with('X') && hex.len() % 2 == 1 => {
                let bytes: Option<Vec<u8>> = (1..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect();
                match bytes {
                    Some(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                    None => {
                        out.push(escape);
                        out.push_str(sequence);
                        out.push(escape);
                    }
                }
            }
            other => {
                out.push(escape);
                out.push_str(other);
                out.push(escape);
            }
        }
        rest = &after[end + escape.len_utf8()..];
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    All,
    Nth(usize),
}

/// `SEG-F[.C[.S]]`, the field optionally followed by `[*]` (every repetition) or `[n]`.
#[derive(Debug, PartialEq, Eq)]
struct Hl7Path {
    segment: String,
    field: usize,
    repeat: Repeat,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl Hl7Path {
    fn parse(path: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not an HL7 path such as PID-3.1 or PID-13[*].1",
                callback_rules::input::excerpt(path)
            )
        };
        let (segment, rest) = path.split_once('-').ok_or_else(bad)?;
        if segment.len() != 3
            || !segment
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut parts = rest.split('.');
        let field_part = parts.next().ok_or_else(bad)?;
        let (field_text, repeat) = match field_part.split_once('[') {
            None => (field_part, Repeat::Nth(1)),
            Some((field, "*]")) => (field, Repeat::All),
            Some((field, n)) => (
                field,
                Repeat::Nth(
                    n.strip_suffix(']')
                        .and_then(|n| n.parse().ok())
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(bad)?,
                ),
            ),
        };
        let number = |text: &str| {
            text.parse::<usize>()
                .ok()
                .filter(|n| (1..=999).contains(n))
                .ok_or_else(bad)
        };
        let field = number(field_text)?;
        if segment == "MSH" && field < 3 {
            return Err(bad());
        }
        let component = parts.next().map(number).transpose()?;
        let subcomponent = parts.next().map(number).transpose()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            segment: segment.to_owned(),
            field,
            repeat,
            component,
            subcomponent,
        })
    }
}

/// Checks an HL7 path's syntax (for publishing mappings).
pub fn check_path(path: &str) -> Result<(), String> {
    Hl7Path::parse(path).map(|_| ())
}

/// The default mapping of each supported message type, as documented in
/// `docs/INTEGRATIONS.md`. A tenant's settings replace a type's mapping as a whole.
pub fn default_mappings() -> &'static BTreeMap<String, FactMapping> {
    // Built once: every message looks its mapping up here.
    static DEFAULTS: std::sync::LazyLock<BTreeMap<String, FactMapping>> =
        std::sync::LazyLock::new(build_default_mappings);
    &DEFAULTS
}

fn build_default_mappings() -> BTreeMap<String, FactMapping> {
    let patient = |event_type: &str, occurred_at: &[&str], attributes: serde_json::Value| {
        serde_json::from_value::<FactMapping>(json!({
            "event_type": event_type,
            "subject_id": ["PID-3.1"],
            "name": ["PID-5.1", "PID-5.2"],
            "phones": ["PID-13[*].1", "PID-14[*].1"],
            "owner": ["PV1-7.1", "PV1-17.1"],
            "department": ["PV1-10.1", "PV1-3.1"],
            "occurred_at": occurred_at,
            "attributes": attributes,
        }))
    };
    let visit = json!({
        "visit_type": {"paths": ["PV1-2.1"], "values": {"I": "inpatient", "O": "outpatient", "E": "emergency", "P": "preadmit", "R": "recurring", "B": "obstetrics"}},
        "visit_number": {"paths": ["PV1-19.1"]},
        "ward": {"paths": ["PV1-3.1"]},
        "admitted_at": {"paths": ["PV1-44.1"]},
        "diagnosis_code": {"paths": ["DG1-3.1"]}
    });
    let appointment = |event_type: &str| {
        serde_json::from_value::<FactMapping>(json!({
            "event_type": event_type,
            "subject_id": ["PID-3.1"],
            "name": ["PID-5.1", "PID-5.2"],
            "phones": ["PID-13[*].1", "PID-14[*].1"],
            "owner": ["AIP-3.1", "SCH-16.1", "SCH-12.1"],
            "department": ["AIL-3.1", "PV1-10.1"],
            "occurred_at": ["MSH-7.1"],
            "attributes": {
                "appointment_id": {"paths": ["SCH-2.1", "SCH-1.1"], "required": true},
                "appointment_start": {"paths": ["SCH-11.4", "AIS-4.1"]},
                "appointment_reason": {"paths": ["SCH-7.1"]},
                "appointment_type": {"paths": ["SCH-8.1"]},
                "service": {"paths": ["AIS-3.1"]}
            }
        }))
    };
    let mut mappings = BTreeMap::new();
    let built = [
        (
            "ADT^A03",
            patient(
                "patient.discharged",
                &["PV1-45.1", "EVN-2.1", "MSH-7.1"],
                visit.clone(),
            ),
        ),
        (
            "ADT^A13",
            patient(
                "patient.discharge_cancelled",
                &["EVN-2.1", "MSH-7.1"],
                visit.clone(),
            ),
        ),
        (
            "ADT^A08",
            patient("patient.updated", &["EVN-2.1", "MSH-7.1"], visit),
        ),
        ("SIU^S12", appointment("appointment.booked")),
        ("SIU^S13", appointment("appointment.rescheduled")),
        ("SIU^S15", appointment("appointment.cancelled")),
        ("SIU^S26", appointment("appointment.no_show")),
    ];
    for (message_type, mapping) in built {
        #[allow(clippy::expect_used)]
        let mapping = mapping.expect("the default HL7 mappings are valid");
        mappings.insert(message_type.to_owned(), mapping);
    }
    mappings
}

/// The acknowledgement of a message whose header could be read, in its version and
/// separators. `control_id` is the ACK's own `MSH-10`.
pub fn ack(
    inbound: &Header,
    separators: &Separators,
    outcome: Result<(), &Refusal>,
    control_id: &str,
    now: DateTime<Utc>,
) -> String {
    let e = |value: &str| separators.encode(value).to_string();
    let f = separators.field;
    let c = separators.component;
    let version = if inbound.version.is_empty() {
        "2.4"
    } else {
        inbound.version.as_str()
    };
    let message_type = if version.starts_with("2.3") {
        format!("ACK{c}{}", e(&inbound.trigger))
    } else {
        format!("ACK{c}{}{c}ACK", e(&inbound.trigger))
    };
    let encoding = format!(
        "{}{}{}{}",
        separators.component, separators.repetition, separators.escape, separators.subcomponent
    );
    let mut out = format!(
        "MSH{f}{encoding}{f}{}{f}{}{f}{}{f}{}{f}{}{f}{f}{message_type}{f}{}{f}{}{f}{version}\r",
        e(&inbound.receiving_application),
        e(&inbound.receiving_facility),
        e(&inbound.sending_application),
        e(&inbound.sending_facility),
        now.format("%Y%m%d%H%M%S"),
        e(control_id),
        if inbound.processing_id.is_empty() {
            "P".to_owned()
        } else {
            e(&inbound.processing_id)
        },
    );
    match outcome {
        Ok(()) => out.push_str(&format!("MSA{f}AA{f}{}\r", e(&inbound.control_id))),
        Err(refusal) => {
            out.push_str(&format!(
                "MSA{f}{}{f}{}{f}{}\r",
                refusal.code.as_str(),
                e(&inbound.control_id),
                e(&refusal.text)
            ));
            out.push_str(&err_segment(version, separators, refusal));
        }
    }
    out
}

/// An acknowledgement for bytes that are not a readable message (no header to answer in).
pub fn reject_unreadable(refusal: &Refusal, control_id: &str, now: DateTime<Utc>) -> String {
    let header = Header {
        sending_application: String::new(),
        sending_facility: String::new(),
        receiving_application: "CALLBACK".into(),
        receiving_facility: String::new(),
        message_type: String::new(),
        trigger: String::new(),
        control_id: String::new(),
        processing_id: "P".into(),
        version: "2.4".into(),
    };
    ack(
        &header,
        &Separators::default(),
        Err(refusal),
        control_id,
        now,
    )
}

/// `ERR`: from 2.5 the coded error (ERR-3), its severity (ERR-4) and location (ERR-2);
/// before, the location and code in ERR-1.
fn err_segment(version: &str, separators: &Separators, refusal: &Refusal) -> String {
    let e = |value: &str| separators.encode(value).to_string();
    let f = separators.field;
    let c = separators.component;
    let s = separators.subcomponent;
    let (segment, field) = refusal
        .location
        .as_deref()
        .and_then(|l| l.split_once('-'))
        .map(|(segment, field)| {
            (
                segment.to_owned(),
                field.split('.').next().unwrap_or("").to_owned(),
            )
        })
        .unwrap_or_default();
    let code = refusal.error_code;
    let name = error_name(code);
    if version.starts_with("2.5") {
        let location = if segment.is_empty() {
            String::new()
        } else {
            format!("{segment}{c}1{c}{field}")
        };
        format!("ERR{f}{f}{location}{f}{code}{c}{name}{c}HL70357{f}E\r")
    } else {
        // ERR-1 (ELD): segment^sequence^field^code, the code's parts by subcomponent.
        let sequence = if segment.is_empty() { "" } else { "1" };
        format!(
            "ERR{f}{segment}{c}{sequence}{c}{field}{c}{code}{s}{}{s}HL70357\r",
            e(name)
        )
    }
}

fn error_name(code: u16) -> &'static str {
    match code {
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        207 => "Application internal error",
        _ => "Application error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Source;

    const A03: &str = include_str!("../samples/hl7/adt-a03-discharge.hl7");
    const A03_V23: &str = include_str!("../samples/hl7/adt-a03-minimal-v23.hl7");
    const S12: &str = include_str!("../samples/hl7/siu-s12-appointment.hl7");

    fn wire(text: &str) -> String {
        text.trim_end().replace('\n', "\r")
    }

    #[test]
    fn the_samples_map_to_facts() {
        let shanghai = chrono_tz::Asia::Shanghai;
        let text = wire(A03);
        let message = Hl7Message::parse(&text).unwrap();
        message.check_header().unwrap();
        assert_eq!(message.header.message_type, "ADT^A03");
        assert_eq!(message.header.control_id, "MSG20261128163512001");
        let fact = default_mappings()["ADT^A03"]
            .apply(&message, shanghai)
            .unwrap();
        assert_eq!(fact.event_type, "patient.discharged");
        assert_eq!(fact.subject_id, "P0012345");
        assert_eq!(fact.name, "张伟");
        assert_eq!(fact.phones, vec!["13912345678", "0755-83361234"]);
        assert_eq!(fact.owner, "D0417");
        assert_eq!(fact.department, "CARD");
        // PV1-45, the discharge time, local to Shanghai.
        assert_eq!(fact.occurred_at.to_rfc3339(), "2026-11-28T08:30:00+00:00");
        assert_eq!(fact.attributes["visit_type"], "inpatient");
        assert_eq!(fact.attributes["diagnosis_code"], "I21.9");

        let text = wire(A03_V23);
        let message = Hl7Message::parse(&text).unwrap();
        message.check_header().unwrap();
        let fact = default_mappings()["ADT^A03"]
            .apply(&message, shanghai)
            .unwrap();
        assert_eq!(fact.subject_id, "ZY2026-004417");
        assert_eq!(fact.department, "GYN");
        assert_eq!(fact.phones, vec!["13600001111"]);
        // No PV1-45: EVN-2.
        assert_eq!(fact.occurred_at.to_rfc3339(), "2026-11-29T00:14:55+00:00");

        let text = wire(S12);
        let message = Hl7Message::parse(&text).unwrap();
        message.check_header().unwrap();
        let fact = default_mappings()["SIU^S12"]
            .apply(&message, shanghai)
            .unwrap();
        assert_eq!(fact.event_type, "appointment.booked");
        assert_eq!(fact.subject_id, "C0098876");
        assert_eq!(fact.owner, "L022");
        assert_eq!(fact.attributes["appointment_id"], "APT-77812");
        assert_eq!(fact.attributes["appointment_start"], "20261207143000");
    }

    #[test]
    fn escapes_are_decoded() {
        let text = "MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03|1|P|2.4\rEVN|A03|20261128\rPID|||P1||O\\T\\Brien^Anne";
        let message = Hl7Message::parse(text).unwrap();
        assert_eq!(message.values("PID-5.1").unwrap(), vec!["O&Brien"]);
    }

    #[test]
    fn escapes_next_to_chinese_text_decode_without_panicking() {
        let separators = Separators::default();
        assert_eq!(decode("张伟\\T\\EVN张伟", &separators), "张伟&EVN张伟");
        assert_eq!(decode("深圳\\F\\福田\\S\\区", &separators), "深圳|福田^区");
        assert_eq!(decode("a\\X0D0A\\b", &separators), "a\r\nb");
        assert_eq!(decode("a\\Xzz\\b", &separators), "a\\Xzz\\b");
        assert_eq!(decode("open \\T", &separators), "open \\T");
        assert_eq!(decode("\\H\\bold\\N\\", &separators), "bold");
        let text = "MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03|1|P|2.4\rPID|||P1||张\\T\\伟";
        let message = Hl7Message::parse(text).unwrap();
        assert_eq!(message.values("PID-5.1").unwrap(), vec!["张&伟"]);
    }

    #[test]
    fn paths_are_checked() {
        for good in ["PID-3.1", "PID-13[*].1", "PID-3[2].1.2", "ZPI-1", "MSH-7.1"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "PID-0",
            "pid-3",
            "PID3",
            "PID-3.0",
            "PID-3[0]",
            "MSH-1",
            "PID-3.1.1.1",
            "PID-x",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_and_broken_messages_are_refused() {
        let a01 = "MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A01|1|P|2.4\rPID|||P1";
        let refusal = Hl7Message::parse(a01).unwrap().check_header().unwrap_err();
        assert_eq!((refusal.code, refusal.error_code), (AckCode::Reject, 201));
        let orm = "MSH|^~\\&|HIS|H|CB|H|20261128||ORM^O01|1|P|2.4\rPID|||P1";
        assert_eq!(
            Hl7Message::parse(orm)
                .unwrap()
                .check_header()
                .unwrap_err()
                .error_code,
            200
        );
        let v26 = "MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03|1|P|2.6\rPID|||P1";
        assert_eq!(
            Hl7Message::parse(v26)
                .unwrap()
                .check_header()
                .unwrap_err()
                .error_code,
            203
        );
        assert!(Hl7Message::parse("PID|||P1").is_err());
        let no_id = "MSH|^~\\&|HIS|H|CB|H|20261128||ADT^A03||P|2.4\rPID|||P1";
        assert_eq!(
            Hl7Message::parse(no_id)
                .unwrap()
                .check_header()
                .unwrap_err()
                .location
                .as_deref(),
            Some("MSH-10")
        );
    }

    #[test]
    fn acks_follow_the_inbound_version() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T08:35:12Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = wire(A03);
        let message = Hl7Message::parse(&text).unwrap();
        let ack_text = ack(&message.header, message.separators(), Ok(()), "ACK1", now);
        assert_eq!(
            ack_text,
            "MSH|^~\\&|CALLBACK|SZRMYY|HIS|SZRMYY|20261128083512||ACK^A03^ACK|ACK1|P|2.4\rMSA|AA|MSG20261128163512001\r"
        );
        let parsed = Hl7Message::parse(&ack_text).unwrap();
        assert_eq!(
            parsed.values("MSA-2").unwrap(),
            vec!["MSG20261128163512001"]
        );

        let text = wire(A03_V23);
        let message = Hl7Message::parse(&text).unwrap();
        let refusal = Refusal::reject(101, Some("PID-3"), "PID-3.1 (subject_id) is missing");
        let ack_text = ack(
            &message.header,
            message.separators(),
            Err(&refusal),
            "ACK2",
            now,
        );
        assert!(ack_text.contains("||ACK^A03|ACK2|P|2.3\r"), "{ack_text}");
        assert!(
            ack_text.contains("MSA|AR|00042317|PID-3.1 (subject_id) is missing\r"),
            "{ack_text}"
        );
        assert!(
            ack_text.contains("ERR|PID^1^3^101&Required field missing&HL70357\r"),
            "{ack_text}"
        );

        let text = wire(S12);
        let message = Hl7Message::parse(&text).unwrap();
        let ack_text = ack(
            &message.header,
            message.separators(),
            Err(&Refusal::error("database unavailable")),
            "ACK3",
            now,
        );
        assert!(
            ack_text.contains("|ACK^S12^ACK|ACK3|P|2.5.1\r"),
            "{ack_text}"
        );
        assert!(
            ack_text.contains("MSA|AE|A8812-20261130-0042|database unavailable\r"),
            "{ack_text}"
        );
        assert!(
            ack_text.contains("ERR|||207^Application internal error^HL70357|E\r"),
            "{ack_text}"
        );
    }
}
