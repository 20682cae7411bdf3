//! Access refusals as events (`AccessRefused`, category `access_audit`): who was refused
//! what, with the authenticated principal. Written in the background, so a refusal is answered
//! at once and a database fault never turns it into another answer; at most
//! [`REFUSALS_PER_MINUTE`] per principal and service are written (a caller hammering the API
//! cannot fill the log), the rest only counted in the service's log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use callback_contracts::audit::AccessRefused;
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, StreamName};
use callback_rules::access::{Credential, Principal};

/// The most refusals of one principal a service records per minute.
pub const REFUSALS_PER_MINUTE: u32 = 600;

/// Where a service records the refusals it answers.
#[derive(Clone)]
pub struct RefusalLog {
    store: EventStore,
    service: &'static str,
    /// Per principal: the minute and how many were recorded in it.
    recent: Arc<Mutex<HashMap<String, (i64, u32)>>>,
}

impl RefusalLog {
    /// The category refusals are appended to (register it before the first refusal).
    pub const CATEGORY: &'static str = AccessRefused::CATEGORY;

    /// `store` must have [`RefusalLog::CATEGORY`] registered.
    pub fn new(store: EventStore, service: &'static str) -> Self {
        Self {
            store,
            service,
            recent: Arc::default(),
        }
    }

    /// Records a refusal of `principal` on `method` (about `tenant_id` when known).
    pub fn record(
        &self,
        principal: &Principal,
        method: &str,
        tenant_id: Option<&str>,
        reason: &str,
    ) {
        let at = chrono::Utc::now();
        let minute = at.timestamp() / 60;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() > 10_000 {
                recent.retain(|_, (seen, _)| *seen == minute);
            }
            let entry = recent
                .entry(principal.subject.clone())
                .or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            if entry.1 > REFUSALS_PER_MINUTE {
                tracing::warn!(service = self.service, %method, "access refused (not recorded: over the per-minute limit)");
                return;
            }
        }
        let refused = AccessRefused {
            service: self.service.to_owned(),
            method: method.to_owned(),
            subject: principal.subject.clone(),
            credential: match principal.credential {
                Credential::BearerToken => "bearer_token",
                Credential::ClientCertificate => "client_certificate",
            }
            .to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            reason: reason.to_owned(),
            at,
        };
        let store = self.store.clone();
        let stream = format!("{}:{}", self.service, at.format("%Y-%m-%d"));
        tokio::spawn(async move {
            let written = async {
                let stream = StreamName::new(AccessRefused::CATEGORY, stream)?;
                let event = crate::events::new_event(&refused)?.with_metadata(
                    crate::telemetry::event_metadata(
                        refused.tenant_id.as_deref(),
                        Some(&refused.subject),
                    ),
                );
                store
                    .append(&stream, ExpectedVersion::Any, &[event])
                    .await?;
                Ok::<(), callback_eventstore::Error>(())
            };
            if let Err(error) = written.await {
                tracing::warn!(%error, "an access refusal could not be recorded");
            }
        });
        tracing::info!(service = self.service, %method, "access refused");
    }
}
