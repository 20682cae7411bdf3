//! FHIR R4: the few elements of `Encounter`, `Appointment`, `Patient` and `Bundle` the gateway
//! reads, as a small hand-written model over `serde_json::Value` (a full FHIR model costs
//! minutes of build for nothing used), their translation into facts, `OperationOutcome` and
//! the `CapabilityStatement`. Pure.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::mapping::{parse_time, MappedFact, MappingError};
use crate::settings::FhirSettings;

/// What a resource becomes.
#[derive(Debug, PartialEq)]
pub enum Translation {
    /// A fact to ingest, idempotent on `source_event_id`.
    Fact {
        source_event_id: String,
        fact: MappedFact,
    },
    /// Accepted, nothing to schedule (e.g. an encounter still in progress); the reason.
    Ignored(String),
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("")
}

/// The resource's stable key: its business identifier (`system|value`), else its logical id.
fn resource_key(resource: &Value, kind: &str) -> Result<String, MappingError> {
    let identifiers = resource.get("identifier").and_then(Value::as_array);
    if let Some(identifier) =
        identifiers.and_then(|ids| ids.iter().find(|i| !text(i, "/value").is_empty()))
    {
        return Ok(format!(
            "{}|{}",
            text(identifier, "/system"),
            text(identifier, "/value")
        ));
    }
    let id = text(resource, "/id");
    if !id.is_empty() {
        return Ok(id.to_owned());
    }
    Err(MappingError::new(
        format!("{kind}.identifier"),
        "an identifier (or the resource's id) is required to recognise a resend",
    ))
}

/// A reference's target id (`Patient/123` -> `123`, `#p1` -> `p1`).
fn reference_id(reference: &str) -> &str {
    reference
        .rsplit('/')
        .next()
        .unwrap_or(reference)
        .trim_start_matches('#')
}

/// The Patient a reference points to: contained in the resource, or an entry of the bundle.
fn resolve_patient<'a>(
    resource: &'a Value,
    reference: &Value,
    bundle: &'a [Value],
) -> Option<&'a Value> {
    let target = reference.get("reference").and_then(Value::as_str)?;
    let id = reference_id(target);
    let contained = resource
        .get("contained")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    contained.chain(bundle.iter()).find(|candidate| {
        text(candidate, "/resourceType") == "Patient"
            && (text(candidate, "/id") == id
                || candidate.get("fullUrl").and_then(Value::as_str) == Some(target))
    })
}

struct Subject {
    id: String,
    name: String,
    phones: Vec<String>,
}

fn subject(
    resource: &Value,
    reference: Option<&Value>,
    bundle: &[Value],
    settings: &FhirSettings,
    field: &str,
) -> Result<Subject, MappingError> {
    let reference = reference.ok_or_else(|| MappingError::new(field, "is missing"))?;
    let patient = resolve_patient(resource, reference, bundle);
    let from_identifier = |identifiers: Option<&Value>| -> Option<String> {
        let identifiers = identifiers?.as_array()?;
        let chosen = if settings.patient_identifier_system.is_empty() {
            identifiers.iter().find(|i| !text(i, "/value").is_empty())
        } else {
            identifiers
                .iter()
                .find(|i| text(i, "/system") == settings.patient_identifier_system)
        };
        chosen
            .map(|i| text(i, "/value").to_owned())
            .filter(|v| !v.is_empty())
    };
    let id = patient
        .and_then(|p| from_identifier(p.get("identifier")))
        .or_else(|| {
            // A logical reference: `{"identifier": {"system": ..., "value": ...}}`.
            let identifier = reference.get("identifier")?;
            let value = text(identifier, "/value");
            (!value.is_empty()).then(|| value.to_owned())
        })
        .or_else(|| {
            let target = reference.get("reference").and_then(Value::as_str)?;
            let id = reference_id(target);
            (!id.is_empty() && !target.starts_with('#')).then(|| id.to_owned())
        })
        .ok_or_else(|| {
            MappingError::new(
                field,
                "names no patient identifier (and no Patient to read one from)",
            )
        })?;
    if id.len() > 200 || id.chars().any(char::is_control) {
        return Err(MappingError::new(
            field,
            "the patient identifier must be 1-200 printable characters",
        ));
    }
    let mut name = String::new();
    let mut phones = Vec::new();
    if let Some(patient) = patient {
        if let Some(first) = patient.pointer("/name/0") {
            name = text(first, "/text").to_owned();
            if name.is_empty() {
                let given: Vec<&str> = first
                    .get("given")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let family = text(first, "/family");
                let latin = family.chars().any(|c| c.is_ascii_alphabetic());
                name = if latin {
                    format!("{} {}", given.join(" "), family).trim().to_owned()
                } else {
                    format!("{family}{}", given.join(""))
                };
            }
        }
        for telecom in patient
            .get("telecom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let system = text(telecom, "/system");
            let value = text(telecom, "/value");
            if (system == "phone" || system == "sms")
                && !value.is_empty()
                && !phones.iter().any(|p| p == value)
            {
                phones.push(value.to_owned());
            }
        }
    }
    Ok(Subject { id, name, phones })
}

fn required_time(
    value: &str,
    field: &str,
    time_zone: chrono_tz::Tz,
) -> Result<DateTime<Utc>, MappingError> {
    if value.is_empty() {
        return Err(MappingError::new(field, "is missing"));
    }
    parse_time(value, time_zone).ok_or_else(|| {
        MappingError::new(
            field,
            format!(
                "`{}` is not a FHIR dateTime",
                callback_rules::input::excerpt(value)
            ),
        )
    })
}

fn first_code(value: &Value, pointer: &str) -> String {
    text(value, pointer).to_owned()
}

/// An Encounter: finished is a discharge (inpatient for IMP/ACUTE/NONAC/OBSENC, outpatient for
/// AMB, emergency for EMER), entered-in-error or cancelled withdraws it, anything else is
/// accepted and ignored.
pub fn encounter(
    resource: &Value,
    bundle: &[Value],
    settings: &FhirSettings,
    time_zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<Translation, MappingError> {
    let status = text(resource, "/status");
    let event_type = match status {
        "finished" => "patient.discharged",
        "entered-in-error" | "cancelled" => "patient.discharge_cancelled",
        "" => return Err(MappingError::new("Encounter.status", "is missing")),
        "planned" | "arrived" | "triaged" | "in-progress" | "onleave" | "unknown" => {
            return Ok(Translation::Ignored(format!(
                "an encounter with status {status} is not a discharge"
            )))
        }
        _ => {
            return Err(MappingError::new(
                "Encounter.status",
                "is not an R4 encounter status",
            ))
        }
    };
    let key = resource_key(resource, "Encounter")?;
    let subject = subject(
        resource,
        resource.get("subject"),
        bundle,
        settings,
        "Encounter.subject",
    )?;
    let class = text(resource, "/class/code");
    let visit_type = match class {
        "IMP" | "ACUTE" | "NONAC" | "OBSENC" => "inpatient",
        "AMB" | "VR" | "HH" => "outpatient",
        "EMER" => "emergency",
        "" => return Err(MappingError::new("Encounter.class", "is missing")),
        _ => "other",
    };
    let occurred_at = if event_type == "patient.discharged" {
        required_time(
            text(resource, "/period/end"),
            "Encounter.period.end",
            time_zone,
        )?
    } else {
        match text(resource, "/meta/lastUpdated") {
            "" => now,
            updated => required_time(updated, "Encounter.meta.lastUpdated", time_zone)?,
        }
    };
    let owner = resource
        .pointer("/participant/0/individual")
        .map(|individual| {
            let identifier = text(individual, "/identifier/value");
            if identifier.is_empty() {
                reference_id(text(individual, "/reference")).to_owned()
            } else {
                identifier.to_owned()
            }
        })
        .unwrap_or_default();
    let mut attributes = serde_json::Map::new();
    attributes.insert("visit_type".into(), json!(visit_type));
    attributes.insert("encounter".into(), json!(key));
    let department = {
        let service = first_code(resource, "/serviceType/coding/0/code");
        if service.is_empty() {
            first_code(resource, "/location/0/location/identifier/value")
        } else {
            service
        }
    };
    Ok(Translation::Fact {
        source_event_id: format!("Encounter/{key}/{status}"),
        fact: MappedFact {
            event_type: event_type.into(),
            subject_id: subject.id,
            name: subject.name,
            phones: subject.phones,
            owner,
            department,
            occurred_at,
            attributes,
        },
    })
}

/// An Appointment: booked (its start in the key, so a moved appointment is a new fact),
/// cancelled or entered-in-error, noshow; anything else is accepted and ignored.
pub fn appointment(
    resource: &Value,
    bundle: &[Value],
    settings: &FhirSettings,
    time_zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<Translation, MappingError> {
    let status = text(resource, "/status");
    let event_type = match status {
        "booked" => "appointment.booked",
        "cancelled" | "entered-in-error" => "appointment.cancelled",
        "noshow" => "appointment.no_show",
        "" => return Err(MappingError::new("Appointment.status", "is missing")),
        "proposed" | "pending" | "arrived" | "fulfilled" | "checked-in" | "waitlist" => {
            return Ok(Translation::Ignored(format!(
                "an appointment with status {status} needs no callback"
            )))
        }
        _ => {
            return Err(MappingError::new(
                "Appointment.status",
                "is not an R4 appointment status",
            ))
        }
    };
    let key = resource_key(resource, "Appointment")?;
    let participants: Vec<&Value> = resource
        .get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let patient = participants
        .iter()
        .filter_map(|p| p.get("actor"))
        .find(|actor| {
            let reference = text(actor, "/reference");
            reference.starts_with("Patient/")
                || reference.starts_with('#')
                || text(actor, "/type") == "Patient"
        });
    let subject = subject(
        resource,
        patient,
        bundle,
        settings,
        "Appointment.participant (Patient)",
    )?;
    let owner = participants
        .iter()
        .filter_map(|p| p.get("actor"))
        .find(|actor| text(actor, "/reference").starts_with("Practitioner/"))
        .map(|actor| reference_id(text(actor, "/reference")).to_owned())
        .unwrap_or_default();
    let start = text(resource, "/start");
    if event_type == "appointment.booked" {
        required_time(start, "Appointment.start", time_zone)?;
    }
    let occurred_at = match text(resource, "/meta/lastUpdated") {
        "" => match text(resource, "/created") {
            "" => now,
            created => required_time(created, "Appointment.created", time_zone)?,
        },
        updated => required_time(updated, "Appointment.meta.lastUpdated", time_zone)?,
    };
    let mut attributes = serde_json::Map::new();
    attributes.insert("appointment_id".into(), json!(key));
    if !start.is_empty() {
        attributes.insert("appointment_start".into(), json!(start));
    }
    let kind = first_code(resource, "/appointmentType/coding/0/code");
    if !kind.is_empty() {
        attributes.insert("appointment_type".into(), json!(kind));
    }
    let service = first_code(resource, "/serviceType/0/coding/0/code");
    if !service.is_empty() {
        attributes.insert("service".into(), json!(service));
    }
    let source_event_id = if status == "booked" {
        format!("Appointment/{key}/booked/{start}")
    } else {
        format!("Appointment/{key}/{status}")
    };
    Ok(Translation::Fact {
        source_event_id,
        fact: MappedFact {
            event_type: event_type.into(),
            subject_id: subject.id,
            name: subject.name,
            phones: subject.phones,
            owner,
            department: service,
            occurred_at,
            attributes,
        },
    })
}

/// An `OperationOutcome` with one issue.
pub fn outcome(severity: &str, code: &str, diagnostics: &str, expression: Option<&str>) -> Value {
    let mut issue = json!({"severity": severity, "code": code, "diagnostics": diagnostics});
    if let Some(expression) = expression {
        issue["expression"] = json!([expression]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

/// What this server supports (`GET [base]/metadata`).
pub fn capability_statement(now: DateTime<Utc>) -> Value {
    let interactions = json!([{"code": "create"}, {"code": "update"}]);
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.to_rfc3339(),
        "kind": "instance",
        "software": {"name": "callback integration gateway", "version": env!("CARGO_PKG_VERSION")},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {"service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
                         "description": "Bearer tokens (JWT) with the integration role of the tenant in the base URL"},
            "resource": [
                {"type": "Encounter", "interaction": interactions, "conditionalCreate": true, "conditionalUpdate": true,
                 "documentation": "finished = discharge (class IMP/ACUTE/NONAC/OBSENC inpatient, AMB outpatient, EMER emergency); entered-in-error or cancelled withdraws it; other statuses are accepted and ignored"},
                {"type": "Appointment", "interaction": interactions, "conditionalCreate": true, "conditionalUpdate": true,
                 "documentation": "booked, cancelled (or entered-in-error), noshow; other statuses are accepted and ignored"},
                {"type": "Patient", "documentation": "read from contained resources or the same transaction Bundle, never stored on its own"}
            ],
            "interaction": [{"code": "transaction"}, {"code": "batch"}]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_489_600, 0).unwrap()
    }

    fn discharge() -> Value {
        json!({
            "resourceType": "Encounter", "identifier": [{"system": "urn:his:visit", "value": "V-1"}],
            "status": "finished", "class": {"code": "IMP"},
            "subject": {"reference": "#p"},
            "contained": [{"resourceType": "Patient", "id": "p",
                "identifier": [{"system": "urn:his:mrn", "value": "P0012345"}],
                "name": [{"family": "张", "given": ["伟"]}],
                "telecom": [{"system": "phone", "value": "13912345678"}, {"system": "email", "value": "x@y"}]}],
            "participant": [{"individual": {"reference": "Practitioner/D0417"}}],
            "serviceType": {"coding": [{"code": "CARD"}]},
            "period": {"start": "2026-11-20T09:10:00+08:00", "end": "2026-11-28T16:30:00+08:00"}
        })
    }

    #[test]
    fn a_finished_inpatient_encounter_is_a_discharge() {
        let Translation::Fact {
            source_event_id,
            fact,
        } = encounter(
            &discharge(),
            &[],
            &FhirSettings::default(),
            chrono_tz::Asia::Shanghai,
            now(),
        )
        .unwrap()
        else {
            panic!("a fact")
        };
        assert_eq!(source_event_id, "Encounter/urn:his:visit|V-1/finished");
        assert_eq!(fact.event_type, "patient.discharged");
        assert_eq!(fact.subject_id, "P0012345");
        assert_eq!(fact.name, "张伟");
        assert_eq!(fact.phones, vec!["13912345678"]);
        assert_eq!(
            (fact.owner.as_str(), fact.department.as_str()),
            ("D0417", "CARD")
        );
        assert_eq!(fact.attributes["visit_type"], "inpatient");
        assert_eq!(fact.occurred_at.to_rfc3339(), "2026-11-28T08:30:00+00:00");
    }

    #[test]
    fn other_statuses_are_ignored_and_faults_named() {
        let mut in_progress = discharge();
        in_progress["status"] = json!("in-progress");
        assert!(matches!(
            encounter(
                &in_progress,
                &[],
                &FhirSettings::default(),
                chrono_tz::Asia::Shanghai,
                now()
            ),
            Ok(Translation::Ignored(_))
        ));
        let mut no_end = discharge();
        no_end["period"] = json!({"start": "2026-11-20"});
        let error = encounter(
            &no_end,
            &[],
            &FhirSettings::default(),
            chrono_tz::Asia::Shanghai,
            now(),
        )
        .unwrap_err();
        assert_eq!(error.field, "Encounter.period.end");
        let mut no_subject = discharge();
        no_subject.as_object_mut().unwrap().remove("subject");
        let error = encounter(
            &no_subject,
            &[],
            &FhirSettings::default(),
            chrono_tz::Asia::Shanghai,
            now(),
        )
        .unwrap_err();
        assert_eq!(error.field, "Encounter.subject");
        let mut no_key = discharge();
        no_key.as_object_mut().unwrap().remove("identifier");
        let error = encounter(
            &no_key,
            &[],
            &FhirSettings::default(),
            chrono_tz::Asia::Shanghai,
            now(),
        )
        .unwrap_err();
        assert_eq!(error.field, "Encounter.identifier");
    }

    #[test]
    fn an_appointment_reads_its_patient_from_the_bundle() {
        let patient = json!({"resourceType": "Patient", "id": "c9", "fullUrl": "urn:uuid:1",
            "identifier": [{"value": "C0098876"}], "name": [{"text": "陈晓明"}]});
        let appointment_resource = json!({"resourceType": "Appointment", "id": "APT-77812", "status": "booked",
            "start": "2026-12-07T14:30:00+08:00",
            "participant": [{"actor": {"reference": "Patient/c9"}}, {"actor": {"reference": "Practitioner/L022"}}]});
        let Translation::Fact {
            source_event_id,
            fact,
        } = appointment(
            &appointment_resource,
            &[patient],
            &FhirSettings::default(),
            chrono_tz::Asia::Shanghai,
            now(),
        )
        .unwrap()
        else {
            panic!("a fact")
        };
        assert_eq!(
            source_event_id,
            "Appointment/APT-77812/booked/2026-12-07T14:30:00+08:00"
        );
        assert_eq!(
            (
                fact.subject_id.as_str(),
                fact.name.as_str(),
                fact.owner.as_str()
            ),
            ("C0098876", "陈晓明", "L022")
        );
        assert_eq!(fact.occurred_at, now());
    }
}
