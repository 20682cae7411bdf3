//! The gateway's application: tenants' settings (published, projected, cached), the secrets
//! file, and the two ways a received message reaches the core services: a business fact to
//! scheduling (`IngestBusinessEvent`, idempotent on tenant, source and source event id) and a
//! call detail record to call logging (`IngestTelephonyRecord`, idempotent on tenant and call
//! id). The gateway stores nothing of the messages themselves: a resend is recognised by the
//! service that owns the fact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callback_contracts::integration_gateway::IntegrationSettingsPublished;
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, StreamName};
use callback_kit::config::IntegrationConfig;
use callback_kit::grpc::{traced, ServiceChannel, Traced};
use callback_kit::security::{RefusalLog, Security};
use callback_kit::telemetry::event_metadata;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{IngestBusinessEventRequest, IngestTelephonyRecordRequest, Subject};
use callback_rules::Clock;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::mapping::MappedFact;
use crate::settings::IntegrationSettings;
use crate::webhooks::CallRecord;

/// How long a tenant's settings and the sender table are trusted before they are read again:
/// the fallback only, as another replica's publish drops them when its event arrives on this
/// instance's subscription ([`Gateway::forget`]).
const CACHE_SECONDS: u64 = 30;

/// The gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    clock: Arc<dyn Clock>,
    scheduling: SchedulingClient<Traced>,
    call_logging: CallLoggingClient<Traced>,
    secrets: Secrets,
    security: Security,
    refusals: RefusalLog,
    config: IntegrationConfig,
    settings: Mutex<HashMap<String, (Instant, Arc<Published>)>>,
    senders: Mutex<Option<(Instant, Arc<SenderTable>)>>,
}

/// HL7 senders' tenants by (application, facility).
type SenderTable = HashMap<(String, String), String>;

/// A tenant's settings as published, with their version (0: never published, the defaults).
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub settings: IntegrationSettings,
}

/// Webhook senders' and subscriptions' secrets, by tenant and name.
#[derive(Clone, Debug, Default)]
pub struct Secrets(HashMap<String, HashMap<String, Vec<u8>>>);

impl Secrets {
    /// Reads `CALLBACK_INTEGRATION_SECRETS_FILE`: `{"<tenant>": {"<name>": "<secret>"}}`.
    pub fn load(path: Option<&std::path::Path>) -> std::result::Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "CALLBACK_INTEGRATION_SECRETS_FILE: cannot read {}: {e}",
                path.display()
            )
        })?;
        let parsed: HashMap<String, HashMap<String, String>> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "CALLBACK_INTEGRATION_SECRETS_FILE: {} is not {{\"<tenant>\": {{\"<name>\": \"<secret>\"}}}}: line {} column {}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        Ok(Self(
            parsed
                .into_iter()
                .map(|(tenant, names)| {
                    (
                        tenant,
                        names
                            .into_iter()
                            .map(|(name, secret)| (name, secret.into_bytes()))
                            .collect(),
                    )
                })
                .collect(),
        ))
    }

    pub fn get(&self, tenant: &str, name: &str) -> Option<&[u8]> {
        self.0.get(tenant)?.get(name).map(Vec::as_slice)
    }
}

/// What became of a fact or record handed on.
#[derive(Debug)]
pub enum Handed {
    /// Committed by its service; `duplicate` when it had been received before.
    Accepted { duplicate: bool, scheduled: usize },
    /// Never acceptable as sent: the owning service's reason (naming the field).
    Rejected(String),
    /// A fault that may pass (a service or the database down, a concurrent change): the
    /// sender should resend.
    Transient(tonic::Code, String),
}

impl Handed {
    fn from_status(status: tonic::Status) -> Self {
        use tonic::Code::*;
        match status.code() {
            InvalidArgument | FailedPrecondition | NotFound | AlreadyExists | OutOfRange
            | PermissionDenied => Handed::Rejected(status.message().to_owned()),
            code => Handed::Transient(code, status.message().to_owned()),
        }
    }
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: EventStore,
        clock: Arc<dyn Clock>,
        scheduling: ServiceChannel,
        call_logging: ServiceChannel,
        secrets: Secrets,
        security: Security,
        config: IntegrationConfig,
    ) -> Self {
        let refusals = RefusalLog::new(store.clone(), "integration-gateway");
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                scheduling: SchedulingClient::new(traced(scheduling)),
                call_logging: CallLoggingClient::new(traced(call_logging)),
                secrets,
                security,
                refusals,
                config,
                settings: Mutex::default(),
                senders: Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    pub fn security(&self) -> &Security {
        &self.inner.security
    }

    pub fn refusals(&self) -> &RefusalLog {
        &self.inner.refusals
    }

    pub fn config(&self) -> &IntegrationConfig {
        &self.inner.config
    }

    /// Publishes a tenant's settings as a new version: refused whole, naming the field, when
    /// the document is invalid, names a secret the secrets file lacks, or claims an HL7 sender
    /// of another tenant.
    pub async fn publish_settings(&self, tenant_id: &str, json: &str, actor: &str) -> Result<u64> {
        if let Some(problem) = callback_rules::ids::id_problem(tenant_id) {
            return Err(Error::invalid("tenant_id", problem));
        }
        let settings =
            IntegrationSettings::parse(json).map_err(|e| Error::invalid(e.field, e.reason))?;
        for (i, sender) in settings.webhooks.senders.iter().enumerate() {
            if self.inner.secrets.get(tenant_id, &sender.name).is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "settings_json.webhooks.senders[{i}].name: no secret of that name for this tenant in CALLBACK_INTEGRATION_SECRETS_FILE"
                )));
            }
        }
        for (i, subscription) in settings.subscriptions.iter().enumerate() {
            if !subscription.secret.is_empty()
                && self
                    .inner
                    .secrets
                    .get(tenant_id, &subscription.secret)
                    .is_none()
            {
                return Err(Error::FailedPrecondition(format!(
                    "settings_json.subscriptions[{i}].secret: no secret of that name for this tenant in CALLBACK_INTEGRATION_SECRETS_FILE"
                )));
            }
        }
        for (i, subscription) in settings.subscriptions.iter().enumerate() {
            if subscription.kind == crate::settings::SubscriptionKind::Email
                && self.inner.config.smtp.is_none()
            {
                return Err(Error::FailedPrecondition(format!(
                    "settings_json.subscriptions[{i}].kind: e-mail needs a mail relay (CALLBACK_SMTP_URL)"
                )));
            }
        }
        let published = IntegrationSettingsPublished {
            tenant_id: tenant_id.to_owned(),
            settings: serde_json::to_value(&settings).map_err(|e| Error::Corrupt(e.to_string()))?,
            actor: actor.to_owned(),
            at: self.now(),
        };
        let store = &self.inner.store;
        let mut tx = store.begin().await?;
        // One publisher at a time across replicas: the sender check below must see the others.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ig_settings'))")
            .execute(&mut *tx)
            .await?;
        for (i, sender) in settings.hl7.senders.iter().enumerate() {
            let owner: Option<String> = sqlx::query_scalar(
                "SELECT tenant_id FROM ig_hl7_senders WHERE application = $1 AND facility = $2 AND tenant_id <> $3",
            )
            .bind(&sender.application)
            .bind(&sender.facility)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
            if owner.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "settings_json.hl7.senders[{i}]: this sender belongs to another tenant"
                )));
            }
        }
        let event = callback_kit::events::new_event(&published)
            .map_err(|e| Error::Corrupt(e.to_string()))?
            .with_metadata(event_metadata(Some(tenant_id), Some(actor)));
        let appended = store
            .append_in(
                &mut tx,
                &settings_stream(tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        project_settings(&mut tx, &published, appended.stream_version).await?;
        store.commit(tx).await?;
        self.forget(tenant_id);
        tracing::info!(
            tenant_id,
            version = appended.stream_version,
            "integration settings published"
        );
        Ok(appended.stream_version)
    }

    /// Drops a tenant's cached settings and the sender table (its settings changed).
    pub fn forget(&self, tenant_id: &str) {
        if let Ok(mut settings) = self.inner.settings.lock() {
            settings.remove(tenant_id);
        }
        if let Ok(mut senders) = self.inner.senders.lock() {
            *senders = None;
        }
    }

    /// A tenant's settings (cached for a few seconds).
    pub async fn settings(&self, tenant_id: &str) -> Result<Arc<Published>> {
        if let Ok(cache) = self.inner.settings.lock() {
            if let Some((at, published)) = cache.get(tenant_id) {
                if at.elapsed() < Duration::from_secs(CACHE_SECONDS) {
                    return Ok(published.clone());
                }
            }
        }
        let row: Option<(i64, serde_json::Value)> =
            sqlx::query_as("SELECT version, settings FROM ig_settings WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.inner.store.pool())
                .await?;
        let published = Arc::new(match row {
            None => Published {
                version: 0,
                settings: IntegrationSettings::default(),
            },
            Some((version, settings)) => Published {
                version: version as u64,
                settings: serde_json::from_value(settings)
                    .map_err(|e| Error::Corrupt(e.to_string()))?,
            },
        });
        if let Ok(mut cache) = self.inner.settings.lock() {
            cache.insert(tenant_id.to_owned(), (Instant::now(), published.clone()));
        }
        Ok(published)
    }

    /// The tenant an HL7 sender belongs to: its application and facility, else its
    /// application with any facility.
    pub async fn tenant_of_sender(
        &self,
        application: &str,
        facility: &str,
    ) -> Result<Option<String>> {
        let cached = self.inner.senders.lock().ok().and_then(|senders| {
            senders
                .as_ref()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(CACHE_SECONDS))
                .map(|(_, table)| table.clone())
        });
        let table = match cached {
            Some(table) => table,
            None => {
                let rows: Vec<(String, String, String)> =
                    sqlx::query_as("SELECT application, facility, tenant_id FROM ig_hl7_senders")
                        .fetch_all(self.inner.store.pool())
                        .await?;
                let table: Arc<SenderTable> =
                    Arc::new(rows.into_iter().map(|(a, f, t)| ((a, f), t)).collect());
                if let Ok(mut senders) = self.inner.senders.lock() {
                    *senders = Some((Instant::now(), table.clone()));
                }
                table
            }
        };
        Ok(table
            .get(&(application.to_owned(), facility.to_owned()))
            .or_else(|| table.get(&(application.to_owned(), String::new())))
            .cloned())
    }

    /// Hands a fact to scheduling.
    pub async fn ingest(
        &self,
        tenant_id: &str,
        source: &str,
        source_event_id: &str,
        fact: MappedFact,
    ) -> Handed {
        let request = IngestBusinessEventRequest {
            tenant_id: tenant_id.to_owned(),
            source: source.to_owned(),
            source_event_id: source_event_id.to_owned(),
            event_type: fact.event_type,
            occurred_at: Some(callback_kit::wire::timestamp(fact.occurred_at)),
            subject: Some(Subject {
                subject_id: fact.subject_id,
                name: fact.name,
                phones: fact.phones,
                owner_agent_id: fact.owner,
                department: fact.department,
            }),
            attributes_json: serde_json::Value::Object(fact.attributes).to_string(),
        };
        let mut client = self.inner.scheduling.clone();
        match client.ingest_business_event(request).await {
            Ok(response) => {
                let response = response.into_inner();
                Handed::Accepted {
                    duplicate: response.duplicate,
                    scheduled: response
                        .scheduled
                        .iter()
                        .filter(|s| s.status == "scheduled")
                        .count(),
                }
            }
            Err(status) => Handed::from_status(status),
        }
    }

    /// Hands a call detail record to call logging.
    pub async fn telephony(&self, tenant_id: &str, record: CallRecord) -> Handed {
        let request = IngestTelephonyRecordRequest {
            tenant_id: tenant_id.to_owned(),
            call_id: record.call_id,
            number_dialed: record.number_dialed,
            started_at: Some(callback_kit::wire::timestamp(record.started_at)),
            answered_at: record.answered_at.map(callback_kit::wire::timestamp),
            ended_at: Some(callback_kit::wire::timestamp(record.ended_at)),
            billable_seconds: record.billable_seconds,
            network_result: record.network_result,
        };
        let mut client = self.inner.call_logging.clone();
        match client.ingest_telephony_record(request).await {
            Ok(response) => Handed::Accepted {
                duplicate: response.into_inner().duplicate,
                scheduled: 0,
            },
            Err(status) => Handed::from_status(status),
        }
    }
}

pub fn settings_stream(tenant_id: &str) -> Result<StreamName> {
    Ok(StreamName::new(
        IntegrationSettingsPublished::CATEGORY,
        tenant_id,
    )?)
}

/// Writes a published version into the read models (live and in a rebuild).
pub async fn project_settings(
    conn: &mut PgConnection,
    published: &IntegrationSettingsPublished,
    version: u64,
) -> Result<()> {
    let at = published.at;
    let settings: IntegrationSettings = serde_json::from_value(published.settings.clone())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let tenant = &published.tenant_id;
    sqlx::query(
        "INSERT INTO ig_settings (tenant_id, version, settings, published_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = EXCLUDED.version, settings = EXCLUDED.settings, \
         published_at = EXCLUDED.published_at",
    )
    .bind(tenant)
    .bind(version as i64)
    .bind(&published.settings)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM ig_hl7_senders WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    for sender in &settings.hl7.senders {
        sqlx::query(
            "INSERT INTO ig_hl7_senders (application, facility, tenant_id) VALUES ($1, $2, $3) \
             ON CONFLICT (application, facility) DO UPDATE SET tenant_id = EXCLUDED.tenant_id",
        )
        .bind(&sender.application)
        .bind(&sender.facility)
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    }
    let names: Vec<String> = settings
        .subscriptions
        .iter()
        .map(|s| s.name.clone())
        .collect();
    sqlx::query("DELETE FROM ig_subscriptions WHERE tenant_id = $1 AND NOT (name = ANY($2))")
        .bind(tenant)
        .bind(&names)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO ig_subscriptions (tenant_id, name, active_since) SELECT $1, unnest($2::text[]), $3 \
         ON CONFLICT (tenant_id, name) DO NOTHING",
    )
    .bind(tenant)
    .bind(&names)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
