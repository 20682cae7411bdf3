//! FHIR R4 under `/fhir/{tenant}`: the CapabilityStatement, Encounter and Appointment
//! (create, conditional update) and transaction / batch Bundles.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use callback_rules::access::{Principal, Role};
use serde_json::{json, Value};

use super::*;
use crate::app::Gateway;
use crate::fhir::{self, Translation};

pub(super) async fn metadata(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
) -> Response {
    if let Err(refused) = check_tenant(&tenant) {
        return refused.fhir();
    }
    fhir_json(StatusCode::OK, fhir::capability_statement(gateway.now()))
}

#[derive(serde::Deserialize)]
pub(super) struct Conditional {
    identifier: Option<String>,
}

pub(super) async fn create(
    State(gateway): State<Gateway>,
    Path((tenant, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    one_resource(&gateway, &tenant, &kind, None, None, &headers, &body).await
}

pub(super) async fn update(
    State(gateway): State<Gateway>,
    Path((tenant, kind)): Path<(String, String)>,
    Query(conditional): Query<Conditional>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if conditional.identifier.is_none() {
        return Refused::new(
            StatusCode::BAD_REQUEST,
            "identifier",
            "a conditional update names the resource: PUT [type]?identifier=system|value",
        )
        .fhir();
    }
    one_resource(
        &gateway,
        &tenant,
        &kind,
        conditional.identifier.as_deref(),
        None,
        &headers,
        &body,
    )
    .await
}

pub(super) async fn update_by_id(
    State(gateway): State<Gateway>,
    Path((tenant, kind, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    one_resource(&gateway, &tenant, &kind, None, Some(&id), &headers, &body).await
}

/// The resource's identifier as the conditional URL names it, when the body has none; a
/// body that names another is refused.
fn apply_conditions(
    resource: &mut Value,
    identifier: Option<&str>,
    id: Option<&str>,
) -> Result<(), Refused> {
    if let Some(id) = id {
        match resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id != id => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    "id",
                    "the resource's id differs from the URL's",
                ))
            }
            _ => resource["id"] = json!(id),
        }
    }
    if let Some(identifier) = identifier {
        let (system, value) = identifier.split_once('|').unwrap_or(("", identifier));
        let present = resource
            .get("identifier")
            .and_then(Value::as_array)
            .is_some_and(|ids| !ids.is_empty());
        if !present {
            resource["identifier"] = json!([{"system": system, "value": value}]);
        } else {
            let matches = resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| {
                    i.get("value").and_then(Value::as_str) == Some(value)
                        && (system.is_empty()
                            || i.get("system").and_then(Value::as_str) == Some(system))
                });
            if !matches {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    "identifier",
                    "the resource's identifiers do not include the URL's",
                ));
            }
        }
    }
    Ok(())
}

async fn one_resource(
    gateway: &Gateway,
    tenant: &str,
    kind: &str,
    identifier: Option<&str>,
    id: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let result = async {
        check_tenant(tenant)?;
        if kind != "Encounter" && kind != "Appointment" {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                "",
                format!(
                    "{} is not supported here (Encounter, Appointment)",
                    callback_rules::input::excerpt(kind)
                ),
            ));
        }
        let principal = bearer(gateway, headers, tenant, &[Role::Integration], "fhir")?;
        let mut resource = parse_json(body)?;
        if resource.get("resourceType").and_then(Value::as_str) != Some(kind) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "resourceType",
                format!("must be {kind}"),
            ));
        }
        apply_conditions(&mut resource, identifier, id)?;
        let status = handle_resource(gateway, tenant, &principal, &resource, &[]).await?;
        Ok((status, resource))
    }
    .await;
    match result {
        Ok((status, resource)) => fhir_json(status, resource),
        Err(refused) => refused.fhir(),
    }
}

/// Translates and hands on one resource: its HTTP status.
async fn handle_resource(
    gateway: &Gateway,
    tenant: &str,
    principal: &Principal,
    resource: &Value,
    bundle: &[Value],
) -> Result<StatusCode, Refused> {
    match translate(gateway, tenant, resource, bundle).await? {
        Translation::Ignored(_) => Ok(StatusCode::OK),
        Translation::Fact {
            source_event_id,
            fact,
        } => {
            let handed = gateway
                .ingest(tenant, &fhir_source(principal), &source_event_id, fact)
                .await;
            handed_status(&handed)
        }
    }
}

/// FHIR facts are idempotent per client: the token's subject is the source.
fn fhir_source(principal: &Principal) -> String {
    crate::mapping::source_name("fhir", &[&principal.subject])
}

async fn translate(
    gateway: &Gateway,
    tenant: &str,
    resource: &Value,
    bundle: &[Value],
) -> Result<Translation, Refused> {
    let published = tenant_settings(gateway, tenant).await?;
    let settings = &published.settings;
    let now = gateway.now();
    let translated = match resource.get("resourceType").and_then(Value::as_str) {
        Some("Encounter") => {
            fhir::encounter(resource, bundle, &settings.fhir, settings.time_zone(), now)
        }
        Some("Appointment") => {
            fhir::appointment(resource, bundle, &settings.fhir, settings.time_zone(), now)
        }
        _ => {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "resourceType",
                "must be Encounter or Appointment",
            ))
        }
    };
    translated.map_err(Refused::unprocessable)
}

/// A transaction (or batch) Bundle of Encounters and Appointments (Patients beside them are
/// read, not stored). Every entry is translated before anything is handed on, so an invalid
/// entry writes nothing; a passing fault midway is answered 503 and the resent Bundle's
/// committed entries are recognised as resends.
pub(super) async fn bundle(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_tenant(&tenant)?;
        let principal = bearer(&gateway, &headers, &tenant, &[Role::Integration], "fhir")?;
        let bundle = parse_json(&body)?;
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(Refused::new(StatusCode::BAD_REQUEST, "resourceType", "must be Bundle"));
        }
        let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "transaction" && kind != "batch" {
            return Err(Refused::new(StatusCode::BAD_REQUEST, "Bundle.type", "must be transaction or batch"));
        }
        let entries: Vec<Value> = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
        if entries.len() > MAX_BUNDLE_ENTRIES {
            return Err(Refused::new(StatusCode::BAD_REQUEST, "Bundle.entry", format!("at most {MAX_BUNDLE_ENTRIES} entries")));
        }
        // Patients are addressed by their entry's fullUrl as well as their id.
        let resources: Vec<Value> = entries
            .iter()
            .filter_map(|entry| {
                let mut resource = entry.get("resource")?.clone();
                if let (Some(url), Some(object)) = (entry.get("fullUrl"), resource.as_object_mut()) {
                    object.insert("fullUrl".into(), url.clone());
                }
                Some(resource)
            })
            .collect();
        let mut translated = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(resource) = entry.get("resource") else {
                return Err(Refused::new(StatusCode::BAD_REQUEST, format!("Bundle.entry[{i}].resource"), "is missing"));
            };
            match resource.get("resourceType").and_then(Value::as_str) {
                Some("Patient") => translated.push(None),
                Some("Encounter" | "Appointment") => {
                    let translation = translate(&gateway, &tenant, resource, &resources).await.map_err(|r| {
                        let field = if r.field.is_empty() { format!("Bundle.entry[{i}]") } else { format!("Bundle.entry[{i}].{}", r.field) };
                        Refused::new(r.status, field, r.reason)
                    })?;
                    translated.push(Some(translation));
                }
                _ => {
                    return Err(Refused::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("Bundle.entry[{i}].resource.resourceType"),
                        "must be Encounter, Appointment or Patient",
                    ))
                }
            }
        }
        let mut responses = Vec::new();
        for (i, translation) in translated.into_iter().enumerate() {
            let status = match translation {
                None | Some(Translation::Ignored(_)) => StatusCode::OK,
                Some(Translation::Fact { source_event_id, fact }) => {
                    let handed = gateway.ingest(&tenant, &fhir_source(&principal), &source_event_id, fact).await;
                    handed_status(&handed).map_err(|r| {
                        Refused::new(r.status, format!("Bundle.entry[{i}]"), r.reason)
                    })?
                }
            };
            responses.push(json!({"response": {"status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))}}));
        }
        Ok(json!({"resourceType": "Bundle", "type": format!("{kind}-response"), "entry": responses}))
    }
    .await;
    match result {
        Ok(response) => fhir_json(StatusCode::OK, response),
        Err(refused) => refused.fhir(),
    }
}
