//! The HTTP listener (HTTPS when TLS is configured): FHIR R4 under `/fhir/{tenant}` and the
//! webhooks under `/webhooks/{tenant}/dms` and `/webhooks/{tenant}/telephony`.
//!
//! FHIR requests carry a bearer token with `integration` in the tenant; webhooks are signed
//! by a registered sender (HMAC-SHA256, see [`crate::webhooks`]) or carry such a token
//! (`middleware` may also post call records).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use callback_kit::Shutdown;
use callback_rules::access::{Principal, Role};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::{Gateway, Handed};
use crate::fhir::{self, Translation};
use crate::mapping::{JsonSource, MappingError};
use crate::webhooks;

/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Entries of one transaction Bundle.
const MAX_BUNDLE_ENTRIES: usize = 1000;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/fhir/{tenant}/metadata", get(metadata))
        .route("/fhir/{tenant}", post(bundle))
        .route("/fhir/{tenant}/{kind}", post(create).put(update))
        .route(
            "/fhir/{tenant}/{kind}/{id}",
            axum::routing::put(update_by_id),
        )
        .route("/webhooks/{tenant}/dms", post(dms))
        .route("/webhooks/{tenant}/telephony", post(telephony))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gateway)
}

/// Serves the router on `listener` until `shutdown`.
pub fn spawn(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let app = router(gateway);
    tokio::spawn(async move {
        let stop = shutdown.wait_owned();
        let result = match tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(config) => {
                let listener = TlsListener::start(listener, config, shutdown.clone());
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "http listener failed");
        }
    })
}

/// Accepts TCP connections and completes their TLS handshakes in their own tasks (a slow
/// client holds up nobody), handing finished ones to the server.
struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
        shutdown: Shutdown,
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = shutdown.wait() => return,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        let _ = sender.send((stream, peer)).await;
                    }
                });
            }
        });
        Self { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // Shut down: no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

// ---- answers ----

fn fhir_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    response
}

fn fhir_error(
    status: StatusCode,
    code: &str,
    diagnostics: &str,
    expression: Option<&str>,
) -> Response {
    let mut response = fhir_json(
        status,
        fhir::outcome("error", code, diagnostics, expression),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn webhook_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn webhook_error(status: StatusCode, field: &str, reason: &str) -> Response {
    webhook_json(status, json!({"error": {"field": field, "reason": reason}}))
}

/// Why a request is not served: its HTTP status, the field at fault, the reason.
struct Refused {
    status: StatusCode,
    field: String,
    reason: String,
}

impl Refused {
    fn new(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unprocessable(error: MappingError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.field, error.reason)
    }

    fn fhir(self) -> Response {
        let code = match self.status {
            StatusCode::UNAUTHORIZED => "login",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "transient",
            StatusCode::UNPROCESSABLE_ENTITY => "processing",
            StatusCode::NOT_FOUND => "not-supported",
            _ => "invalid",
        };
        let diagnostics = if self.field.is_empty() {
            self.reason.clone()
        } else {
            format!("{}: {}", self.field, self.reason)
        };
        fhir_error(
            self.status,
            code,
            &diagnostics,
            (!self.field.is_empty()).then_some(self.field.as_str()),
        )
    }

    fn webhook(self) -> Response {
        webhook_error(self.status, &self.field, &self.reason)
    }
}

/// A fact handed on, as an HTTP status: committed (201, or 200 for a resend), refused by
/// its service (422), a concurrent change (409) or a passing fault (503).
fn handed_status(handed: &Handed) -> Result<StatusCode, Refused> {
    match handed {
        Handed::Accepted {
            duplicate: true, ..
        } => Ok(StatusCode::OK),
        Handed::Accepted { .. } => Ok(StatusCode::CREATED),
        Handed::Rejected(reason) => Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            reason.clone(),
        )),
        Handed::Transient(tonic::Code::Aborted, reason) => {
            Err(Refused::new(StatusCode::CONFLICT, "", reason.clone()))
        }
        Handed::Transient(_, _) => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "not committed (a service or the database is unavailable); retry",
        )),
    }
}

// ---- authentication ----

/// The principal of a bearer token, once it may act in `tenant` with one of `roles`.
fn bearer(
    gateway: &Gateway,
    headers: &HeaderMap,
    tenant: &str,
    roles: &[Role],
    method: &str,
) -> Result<Arc<Principal>, Refused> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| Refused::new(StatusCode::UNAUTHORIZED, "", "a bearer token is required"))?;
    let keys = gateway.security().tokens.as_ref().ok_or_else(|| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            "",
            "this deployment accepts no tokens (CALLBACK_JWKS_FILE)",
        )
    })?;
    let principal = keys.verify_remembered(token.trim()).map_err(|reason| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            "",
            format!("the token is not valid: {reason}"),
        )
    })?;
    if let Err(refusal) = principal.may(tenant, roles) {
        gateway
            .refusals()
            .record(&principal, method, Some(tenant), &refusal.message);
        return Err(Refused::new(StatusCode::FORBIDDEN, "", refusal.message));
    }
    Ok(principal)
}

fn check_tenant(tenant: &str) -> Result<(), Refused> {
    match callback_rules::ids::id_problem(tenant) {
        None => Ok(()),
        Some(problem) => Err(Refused::new(StatusCode::NOT_FOUND, "tenant", problem)),
    }
}

/// A signed webhook: the sender registered in the tenant's settings, its secret from the
/// secrets file, the signature and timestamp valid. Or a bearer token with one of `roles`.
async fn signed(
    gateway: &Gateway,
    headers: &HeaderMap,
    tenant: &str,
    body: &[u8],
    roles: &[Role],
    method: &str,
) -> Result<String, Refused> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer(gateway, headers, tenant, roles, method).map(|p| p.subject.clone());
    }
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sender = header_text(webhooks::SENDER_HEADER).ok_or_else(|| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            webhooks::SENDER_HEADER,
            "is missing (or send a bearer token)",
        )
    })?;
    let published = gateway.settings(tenant).await.map_err(|_| {
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "the gateway's database is unavailable; retry",
        )
    })?;
    let registered = published
        .settings
        .webhooks
        .senders
        .iter()
        .any(|s| s.name == sender);
    let secret = gateway
        .secrets()
        .get(tenant, sender)
        .filter(|_| registered)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::UNAUTHORIZED,
                webhooks::SENDER_HEADER,
                "is not a registered sender of this tenant",
            )
        })?;
    webhooks::verify(
        secret,
        header_text(webhooks::TIMESTAMP_HEADER),
        header_text(webhooks::SIGNATURE_HEADER),
        body,
        gateway.now(),
        published.settings.webhooks.replay_window_seconds,
    )
    .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, "", e.to_string()))?;
    Ok(sender.to_owned())
}

fn parse_json(body: &[u8]) -> Result<Value, Refused> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not JSON: line {} column {}", e.line(), e.column()),
        )
    })?;
    if !value.is_object() {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "body",
            "is not a JSON object",
        ));
    }
    Ok(value)
}

// ---- FHIR ----

async fn metadata(State(gateway): State<Gateway>, Path(tenant): Path<String>) -> Response {
    if let Err(refused) = check_tenant(&tenant) {
        return refused.fhir();
    }
    fhir_json(StatusCode::OK, fhir::capability_statement(gateway.now()))
}

#[derive(serde::Deserialize)]
struct Conditional {
    identifier: Option<String>,
}

async fn create(
    State(gateway): State<Gateway>,
    Path((tenant, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    one_resource(&gateway, &tenant, &kind, None, None, &headers, &body).await
}

async fn update(
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

async fn update_by_id(
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
    let published = gateway.settings(tenant).await.map_err(|_| {
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "the gateway's database is unavailable; retry",
        )
    })?;
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
async fn bundle(
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

// ---- webhooks ----

/// A DMS / CRM event (`callback.dms.v1`).
async fn dms(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_tenant(&tenant)?;
        let sender = signed(&gateway, &headers, &tenant, &body, &[Role::Integration], "webhook/dms").await?;
        let document = parse_json(&body)?;
        let envelope = webhooks::envelope(&document).map_err(Refused::unprocessable)?;
        let published = gateway
            .settings(&tenant)
            .await
            .map_err(|_| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "", "the gateway's database is unavailable; retry"))?;
        let mapping = published.settings.webhook_mapping(&envelope.event).ok_or_else(|| {
            Refused::new(StatusCode::UNPROCESSABLE_ENTITY, "event", "has no mapping (vehicle.sold, repair_order.closed, insurance.renewal_due, or one in the tenant's settings)")
        })?;
        let fact = mapping
            .apply(&JsonSource(&document), published.settings.time_zone())
            .map_err(Refused::unprocessable)?;
        let handed = gateway.ingest(&tenant, &crate::mapping::source_name("dms", &[&sender]), &envelope.event_id, fact).await;
        let status = handed_status(&handed)?;
        let (duplicate, scheduled) = match handed {
            Handed::Accepted { duplicate, scheduled } => (duplicate, scheduled),
            _ => (false, 0),
        };
        Ok(webhook_json(status, json!({"status": "accepted", "duplicate": duplicate, "callbacks_scheduled": scheduled})))
    }
    .await;
    result.unwrap_or_else(Refused::webhook)
}

/// A call detail record (Asterisk or FreeSWITCH JSON).
async fn telephony(
    State(gateway): State<Gateway>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_tenant(&tenant)?;
        signed(
            &gateway,
            &headers,
            &tenant,
            &body,
            &[Role::Integration, Role::Middleware],
            "webhook/telephony",
        )
        .await?;
        let document = parse_json(&body)?;
        let published = gateway.settings(&tenant).await.map_err(|_| {
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "the gateway's database is unavailable; retry",
            )
        })?;
        let record = webhooks::call_record(&document, published.settings.time_zone())
            .map_err(Refused::unprocessable)?;
        let handed = gateway.telephony(&tenant, record).await;
        let status = handed_status(&handed)?;
        let duplicate = matches!(
            handed,
            Handed::Accepted {
                duplicate: true,
                ..
            }
        );
        Ok(webhook_json(
            status,
            json!({"status": "accepted", "duplicate": duplicate}),
        ))
    }
    .await;
    result.unwrap_or_else(Refused::webhook)
}
