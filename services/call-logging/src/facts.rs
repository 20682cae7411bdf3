//! What call-logging learns from the scheduling service's feed: tenants' calendars (for the
//! calling-window check) and subjects' phone numbers (for the shared-contact check, the
//! insurer rule: one number on two different customers is suspicious).
//!
//! Applied with the consumer's checkpoint in one transaction, so each fact counts once.

use callback_contracts::call_logging::SharedContactFlagged;
use callback_contracts::scheduling::{
    BusinessEventIngested, ErasureMode, SubjectContact, SubjectErased, TenantPublished,
};
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, Projection, RecordedEvent, StreamName};
use callback_kit::events::{decode, new_event};
use callback_kit::telemetry::event_metadata;
use sqlx::PgConnection;

pub const CATEGORIES: [&str; 3] = [
    TenantPublished::CATEGORY,
    BusinessEventIngested::CATEGORY,
    SubjectErased::CATEGORY,
];
pub const EVENT_TYPES: [&str; 3] = [
    TenantPublished::EVENT_TYPE,
    BusinessEventIngested::EVENT_TYPE,
    SubjectErased::EVENT_TYPE,
];

/// Namespace of shared-contact stream ids (UUIDv5 of tenant and number): the number itself
/// never appears in a stream id.
const SHARED_CONTACT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3c1e_77a0_5b2d_4e8f_8d61_0f4a_92b7_c5e3);

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct SchedulingFacts {
    store: EventStore,
}

impl SchedulingFacts {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }
}

impl Projection for SchedulingFacts {
    type Error = FactsError;

    fn name(&self) -> &str {
        "call_logging.scheduling_facts"
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), FactsError> {
        for event in events {
            match event.event_type.as_str() {
                TenantPublished::EVENT_TYPE => {
                    let published: TenantPublished = decode(event)?;
                    sqlx::query(
                        "INSERT INTO cl_tenant_calendars (tenant_id, calendar) VALUES ($1, $2) \
                         ON CONFLICT (tenant_id) DO UPDATE SET calendar = EXCLUDED.calendar",
                    )
                    .bind(&published.tenant_id)
                    .bind(sqlx::types::Json(&published.settings.calendar))
                    .execute(&mut *conn)
                    .await?;
                }
                BusinessEventIngested::EVENT_TYPE => {
                    let ingested: BusinessEventIngested = decode(event)?;
                    self.record_phones(conn, &ingested.fact.tenant_id, &ingested.subject)
                        .await?;
                }
                SubjectErased::EVENT_TYPE => {
                    // An erased subject's numbers (their keyed hashes) are matched no more;
                    // what was sealed with its key is unreadable already.
                    let erased: SubjectErased = decode(event)?;
                    // The numbers of the call records matched to the subject's attempts are
                    // sealed with keys of their own: they go (or are restricted) with it.
                    let records = "SELECT 'telephony:' || telephony_call_id FROM cl_attempts \
                         WHERE tenant_id = $1 AND sealed_for = $2 AND telephony_call_id IS NOT NULL";
                    let keys = match erased.mode {
                        ErasureMode::Erase => format!(
                            "DELETE FROM vault_subject_keys WHERE tenant_id = $1 AND subject_id IN ({records})"
                        ),
                        ErasureMode::Restrict => format!(
                            "UPDATE vault_subject_keys SET restricted = true WHERE tenant_id = $1 AND subject_id IN ({records})"
                        ),
                    };
                    sqlx::query(&keys)
                        .bind(&erased.tenant_id)
                        .bind(&erased.subject_id)
                        .execute(&mut *conn)
                        .await?;
                    if erased.mode == ErasureMode::Erase {
                        sqlx::query(
                            "DELETE FROM cl_contacts WHERE tenant_id = $1 AND subject_id = $2",
                        )
                        .bind(&erased.tenant_id)
                        .bind(&erased.subject_id)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl SchedulingFacts {
    async fn record_phones(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        subject: &SubjectContact,
    ) -> Result<(), FactsError> {
        // The numbers' keyed hashes (scheduling never publishes the numbers themselves):
        // equal numbers have equal keys, which is all a shared contact needs.
        for digits in &subject.phone_keys {
            sqlx::query("INSERT INTO cl_contacts (tenant_id, phone_digits, subject_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(tenant_id)
                .bind(digits)
                .bind(&subject.subject_id)
                .execute(&mut *conn)
                .await?;
            let others: Vec<String> = sqlx::query_scalar(
                "SELECT c.subject_id FROM cl_contacts c WHERE c.tenant_id = $1 AND c.phone_digits = $2 AND c.subject_id <> $3 \
                 AND NOT EXISTS (SELECT 1 FROM cl_shared_contacts s WHERE s.tenant_id = $1 AND s.phone_digits = $2 \
                                 AND s.subject_id = $3 AND s.other_subject_id = c.subject_id) \
                 ORDER BY c.subject_id",
            )
            .bind(tenant_id)
            .bind(digits)
            .bind(&subject.subject_id)
            .fetch_all(&mut *conn)
            .await?;
            for other in others {
                let stream_key = uuid::Uuid::new_v5(
                    &SHARED_CONTACT_NAMESPACE,
                    format!("{tenant_id}\n{digits}").as_bytes(),
                );
                let stream =
                    StreamName::new(SharedContactFlagged::CATEGORY, stream_key.to_string())?;
                let flagged = SharedContactFlagged {
                    tenant_id: tenant_id.to_owned(),
                    subject_id: subject.subject_id.clone(),
                    other_subject_id: other.clone(),
                    // No part of the number: the flag names the two subjects only.
                    phone_masked: String::new(),
                };
                // A deterministic id: replaying the feed (a rebuild) writes the flag only once.
                let event_id = uuid::Uuid::new_v5(
                    &SHARED_CONTACT_NAMESPACE,
                    format!("{tenant_id}\n{digits}\n{}\n{other}", subject.subject_id).as_bytes(),
                );
                let event = new_event(&flagged)?
                    .with_id(event_id)
                    .with_metadata(event_metadata(Some(tenant_id), Some("system:call-logging")));
                self.store
                    .append_in(conn, &stream, ExpectedVersion::Any, &[event])
                    .await?;
                for (a, b) in [(&subject.subject_id, &other), (&other, &subject.subject_id)] {
                    sqlx::query(
                        "INSERT INTO cl_shared_contacts (tenant_id, phone_digits, subject_id, other_subject_id) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(tenant_id)
                    .bind(digits)
                    .bind(a)
                    .bind(b)
                    .execute(&mut *conn)
                    .await?;
                }
                tracing::warn!(tenant_id, "shared contact flagged");
            }
        }
        Ok(())
    }
}
