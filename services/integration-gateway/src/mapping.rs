//! Mapping as data: which fields of an inbound message become the business fact's subject
//! (id, name, phones, owner, department), its time and its attributes. One model for every
//! format; the paths are read by the format's [`Source`]: HL7 v2 field paths (`PID-3.1`,
//! `PID-13[*].1`) or JSON pointers (`/customer/id`, `/customer/phones/*`). Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A value an inbound message could not be turned into: the field (the mapping's name and
/// the path it reads) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MappingError {
    pub field: String,
    pub reason: String,
}

impl MappingError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reads values at a path of one message format.
pub trait Source {
    /// Every value at `path` (several where the path repeats, e.g. `PID-13[*].1`), decoded,
    /// empty ones left out. An error when the path itself is not valid for the format.
    fn values(&self, path: &str) -> Result<Vec<String>, String>;
}

/// How a message of one type becomes a business fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactMapping {
    /// The fact's `event_type` (what policies trigger on), e.g. `patient.discharged`.
    pub event_type: String,
    /// The subject's id: the first non-empty value of these paths.
    pub subject_id: Vec<String>,
    /// Parts of the name, joined (family then given; a space only between Latin parts).
    #[serde(default)]
    pub name: Vec<String>,
    /// Every value of every path is a phone number.
    #[serde(default)]
    pub phones: Vec<String>,
    /// The responsible staff member's id: the first non-empty value.
    #[serde(default)]
    pub owner: Vec<String>,
    /// The department: the first non-empty value.
    #[serde(default)]
    pub department: Vec<String>,
    /// When it happened: the first non-empty value; a local time is in the tenant's time zone.
    #[serde(default)]
    pub occurred_at: Vec<String>,
    /// Attributes policies filter on, by name.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeMapping>,
}

/// One attribute: the first non-empty value of `paths`, translated through `values` when given
/// (a value missing there is refused), `required` or left out when empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMapping {
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// What a mapping made of a message.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedFact {
    pub event_type: String,
    pub subject_id: String,
    pub name: String,
    pub phones: Vec<String>,
    pub owner: String,
    pub department: String,
    pub occurred_at: DateTime<Utc>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl FactMapping {
    /// Checks the mapping itself (names and paths) against `format`'s path syntax.
    pub fn validate(
        &self,
        at: &str,
        check_path: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(), MappingError> {
        if !valid_event_type(&self.event_type) {
            return Err(MappingError::new(
                format!("{at}.event_type"),
                "must be 1-100 lowercase letters, digits, `.`, `_` or `-`",
            ));
        }
        if self.subject_id.is_empty() {
            return Err(MappingError::new(
                format!("{at}.subject_id"),
                "needs at least one path",
            ));
        }
        let lists = [
            ("subject_id", &self.subject_id),
            ("name", &self.name),
            ("phones", &self.phones),
            ("owner", &self.owner),
            ("department", &self.department),
            ("occurred_at", &self.occurred_at),
        ];
        for (name, paths) in lists {
            for (i, path) in paths.iter().enumerate() {
                check_path(path)
                    .map_err(|reason| MappingError::new(format!("{at}.{name}[{i}]"), reason))?;
            }
        }
        for (name, attribute) in &self.attributes {
            if name.is_empty() || name.len() > 64 {
                return Err(MappingError::new(
                    format!("{at}.attributes"),
                    "names are 1-64 bytes",
                ));
            }
            if attribute.paths.is_empty() {
                return Err(MappingError::new(
                    format!("{at}.attributes.{name}.paths"),
                    "needs at least one path",
                ));
            }
            for (i, path) in attribute.paths.iter().enumerate() {
                check_path(path).map_err(|reason| {
                    MappingError::new(format!("{at}.attributes.{name}.paths[{i}]"), reason)
                })?;
            }
        }
        Ok(())
    }

    /// The fact `source` holds, or the first field that keeps it from being one.
    pub fn apply(
        &self,
        source: &dyn Source,
        time_zone: chrono_tz::Tz,
    ) -> Result<MappedFact, MappingError> {
        let subject_id = first(source, "subject_id", &self.subject_id)?.ok_or_else(|| {
            MappingError::new(
                format!("subject_id ({})", self.subject_id.join(", ")),
                "is missing or empty",
            )
        })?;
        if subject_id.len() > 200 || subject_id.chars().any(char::is_control) {
            return Err(MappingError::new(
                format!("subject_id ({})", self.subject_id.join(", ")),
                "must be 1-200 printable characters",
            ));
        }
        let mut name_parts = Vec::new();
        for path in &self.name {
            name_parts.extend(read(source, "name", path)?.into_iter().take(1));
        }
        let mut phones = Vec::new();
        for path in &self.phones {
            for phone in read(source, "phones", path)? {
                if !phones.contains(&phone) {
                    phones.push(phone);
                }
            }
        }
        let owner = first(source, "owner", &self.owner)?.unwrap_or_default();
        let department = first(source, "department", &self.department)?.unwrap_or_default();
        let occurred_at = match first_with_path(source, "occurred_at", &self.occurred_at)? {
            Some((path, text)) => parse_time(&text, time_zone).ok_or_else(|| {
                MappingError::new(
                    format!("occurred_at ({path})"),
                    format!(
                        "`{}` is not a time (HL7 YYYYMMDD[HHMM[SS]][+ZZZZ] or RFC 3339)",
                        callback_rules::input::excerpt(&text)
                    ),
                )
            })?,
            None => {
                return Err(MappingError::new(
                    format!("occurred_at ({})", self.occurred_at.join(", ")),
                    "is missing or empty",
                ))
            }
        };
        let mut attributes = serde_json::Map::new();
        for (name, attribute) in &self.attributes {
            let field = format!("attributes.{name}");
            match first_with_path(source, &field, &attribute.paths)? {
                Some((path, value)) => {
                    let value = if attribute.values.is_empty() {
                        value
                    } else {
                        match attribute.values.get(&value) {
                            Some(mapped) => mapped.clone(),
                            None => {
                                return Err(MappingError::new(
                                    format!("{field} ({path})"),
                                    format!(
                                        "`{}` is not one of {}",
                                        callback_rules::input::excerpt(&value),
                                        attribute
                                            .values
                                            .keys()
                                            .cloned()
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                ))
                            }
                        }
                    };
                    attributes.insert(name.clone(), serde_json::Value::String(value));
                }
                None if attribute.required => {
                    return Err(MappingError::new(
                        format!("{field} ({})", attribute.paths.join(", ")),
                        "is missing or empty",
                    ))
                }
                None => {}
            }
        }
        Ok(MappedFact {
            event_type: self.event_type.clone(),
            subject_id,
            name: join_name(&name_parts),
            phones,
            owner,
            department,
            occurred_at,
            attributes,
        })
    }
}

fn read(source: &dyn Source, field: &str, path: &str) -> Result<Vec<String>, MappingError> {
    source
        .values(path)
        .map_err(|reason| MappingError::new(format!("{field} ({path})"), reason))
}

fn first(
    source: &dyn Source,
    field: &str,
    paths: &[String],
) -> Result<Option<String>, MappingError> {
    Ok(first_with_path(source, field, paths)?.map(|(_, value)| value))
}

fn first_with_path(
    source: &dyn Source,
    field: &str,
    paths: &[String],
) -> Result<Option<(String, String)>, MappingError> {
    for path in paths {
        if let Some(value) = read(source, field, path)?.into_iter().next() {
            return Ok(Some((path.clone(), value)));
        }
    }
    Ok(None)
}

/// Family and given names: Chinese names are written together (张伟), Latin ones apart.
fn join_name(parts: &[String]) -> String {
    let latin = |s: &str| s.chars().any(|c| c.is_ascii_alphabetic());
    let mut name = String::new();
    for part in parts {
        if !name.is_empty() && (latin(&name) || latin(part)) {
            name.push(' ');
        }
        name.push_str(part);
    }
    name
}

/// The `source` scheduling records a sender's facts under (with the sender's own event id, the
/// idempotency key): `kind.part.part`, letters, digits, `-` and `_` kept; when anything else
/// had to be replaced, or the name is long, a digest of the original keeps senders apart.
pub fn source_name(kind: &str, parts: &[&str]) -> String {
    use sha2::Digest;
    let original = parts.join("\u{1f}");
    let clean: Vec<String> = parts
        .iter()
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    let mut name = format!("{kind}.{}", clean.join("."));
    let changed = clean.iter().zip(parts).any(|(clean, part)| clean != part);
    if changed || name.len() > 64 {
        let digest = sha2::Sha256::digest(original.as_bytes());
        let tag: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        name.truncate(64 - tag.len() - 1);
        name = format!("{name}.{tag}");
    }
    name
}

pub fn valid_event_type(event_type: &str) -> bool {
    !event_type.is_empty()
        && event_type.len() <= 100
        && event_type
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// An HL7 time (`YYYYMMDD[HHMM[SS[.S+]]][+/-ZZZZ]`, local in `time_zone` without an offset) or
/// an RFC 3339 time (FHIR, JSON webhooks; a bare date is midnight local).
pub fn parse_time(text: &str, time_zone: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return local(date.and_hms_opt(0, 0, 0)?, time_zone);
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return local(at, time_zone);
        }
    }
    // HL7: digits, an optional fraction, an optional offset.
    let (body, offset) = match text.find(['+', '-']) {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    let digits = body.split('.').next()?;
    if !digits.chars().all(|c| c.is_ascii_digit()) || ![8, 10, 12, 14].contains(&digits.len()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        digits.get(range).map_or(Some(0), |s| s.parse().ok())
    };
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(4..6)?, number(6..8)?)?;
    let at = date.and_hms_opt(number(8..10)?, number(10..12)?, number(12..14)?)?;
    match offset {
        None => local(at, time_zone),
        Some(offset) => {
            if offset.len() != 5 || !offset[1..].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let hours: i32 = offset[1..3].parse().ok()?;
            let minutes: i32 = offset[3..5].parse().ok()?;
            let seconds =
                (hours * 3600 + minutes * 60) * if offset.starts_with('-') { -1 } else { 1 };
            let zone = chrono::FixedOffset::east_opt(seconds)?;
            zone.from_local_datetime(&at)
                .single()
                .map(|t| t.with_timezone(&Utc))
        }
    }
}

fn local(at: NaiveDateTime, time_zone: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    time_zone
        .from_local_datetime(&at)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Values of a JSON document by pointer, `*` standing for every element of an array.
pub struct JsonSource<'a>(pub &'a serde_json::Value);

impl Source for JsonSource<'_> {
    fn values(&self, path: &str) -> Result<Vec<String>, String> {
        check_json_path(path)?;
        let mut current = vec![self.0];
        for token in path.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            let mut next = Vec::new();
            for value in current {
                match (value, token.as_str()) {
                    (serde_json::Value::Array(items), "*") => next.extend(items.iter()),
                    (serde_json::Value::Array(items), index) => {
                        if let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) {
                            next.push(item);
                        }
                    }
                    (serde_json::Value::Object(map), key) => {
                        if let Some(item) = map.get(key) {
                            next.push(item);
                        }
                    }
                    _ => {}
                }
            }
            current = next;
        }
        Ok(current
            .into_iter()
            .filter_map(|value| match value {
                serde_json::Value::String(s) => Some(s.trim().to_owned()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// A JSON pointer (`/a/b/0`, `*` for every element).
pub fn check_json_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() > 200 {
        return Err(format!(
            "`{}` is not a JSON pointer such as /customer/id",
            callback_rules::input::excerpt(path)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> FactMapping {
        serde_json::from_value(json!({
            "event_type": "vehicle.sold",
            "subject_id": ["/customer/id"],
            "name": ["/customer/name"],
            "phones": ["/customer/phones/*", "/customer/mobile"],
            "owner": ["/advisor/id"],
            "occurred_at": ["/delivered_at", "/sold_at"],
            "attributes": {
                "model": {"paths": ["/vehicle/model"]},
                "channel": {"paths": ["/channel"], "values": {"S": "showroom", "O": "online"}, "required": true}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_json_document_maps_to_a_fact() {
        let doc = json!({
            "customer": {"id": "C-1", "name": "王芳", "phones": ["13800000001", ""], "mobile": "13800000001"},
            "advisor": {"id": "advisor-2"}, "sold_at": "2026-11-30T10:00:00+08:00",
            "vehicle": {"model": "X5"}, "channel": "S"
        });
        let fact = mapping()
            .apply(&JsonSource(&doc), chrono_tz::Asia::Shanghai)
            .unwrap();
        assert_eq!(fact.subject_id, "C-1");
        assert_eq!(fact.phones, vec!["13800000001"]);
        assert_eq!(fact.owner, "advisor-2");
        assert_eq!(fact.occurred_at.to_rfc3339(), "2026-11-30T02:00:00+00:00");
        assert_eq!(fact.attributes["channel"], "showroom");
        assert_eq!(fact.attributes["model"], "X5");
    }

    #[test]
    fn a_missing_subject_or_an_unknown_value_names_the_field() {
        let doc = json!({"customer": {}, "sold_at": "2026-11-30", "channel": "S"});
        let error = mapping()
            .apply(&JsonSource(&doc), chrono_tz::Asia::Shanghai)
            .unwrap_err();
        assert_eq!(error.field, "subject_id (/customer/id)");
        let doc = json!({"customer": {"id": "C"}, "sold_at": "2026-11-30", "channel": "X"});
        let error = mapping()
            .apply(&JsonSource(&doc), chrono_tz::Asia::Shanghai)
            .unwrap_err();
        assert_eq!(error.field, "attributes.channel (/channel)");
        let doc = json!({"customer": {"id": "C"}, "sold_at": "yesterday", "channel": "S"});
        let error = mapping()
            .apply(&JsonSource(&doc), chrono_tz::Asia::Shanghai)
            .unwrap_err();
        assert_eq!(error.field, "occurred_at (/sold_at)");
    }

    #[test]
    fn hl7_times_are_local_unless_they_carry_an_offset() {
        let shanghai = chrono_tz::Asia::Shanghai;
        assert_eq!(
            parse_time("20261128163000", shanghai).unwrap().to_rfc3339(),
            "2026-11-28T08:30:00+00:00"
        );
        assert_eq!(
            parse_time("202611281630+0000", shanghai)
                .unwrap()
                .to_rfc3339(),
            "2026-11-28T16:30:00+00:00"
        );
        assert_eq!(
            parse_time("20261128", shanghai).unwrap().to_rfc3339(),
            "2026-11-27T16:00:00+00:00"
        );
        assert!(parse_time("2026112", shanghai).is_none());
        assert!(parse_time("20261340", shanghai).is_none());
        assert!(parse_time("", shanghai).is_none());
    }

    #[test]
    fn source_names_are_safe_and_keep_senders_apart() {
        assert_eq!(source_name("hl7", &["HIS", "SZRMYY"]), "hl7.HIS.SZRMYY");
        let odd = source_name("hl7", &["HIS 1", "人民医院"]);
        assert!(odd.starts_with("hl7.HIS_1.") && odd.len() <= 64, "{odd}");
        assert_ne!(
            source_name("hl7", &["HIS 1", ""]),
            source_name("hl7", &["HIS_1", ""])
        );
        assert_ne!(
            source_name("hl7", &["HIS 1", ""]),
            source_name("hl7", &["HIS.1", ""])
        );
        assert!(source_name("fhir", &[&"x".repeat(200)]).len() <= 64);
    }

    #[test]
    fn names_join_as_written() {
        assert_eq!(join_name(&["张".into(), "伟".into()]), "张伟");
        assert_eq!(join_name(&["DUCK".into(), "DONALD".into()]), "DUCK DONALD");
    }
}
