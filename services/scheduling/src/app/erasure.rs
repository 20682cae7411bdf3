//! Erasure (PIPL art. 47) and restriction of a subject's personal data: the subject's key is
//! deleted (or marked restricted) in the transaction that records `SubjectErased`, its open
//! callbacks are cancelled, and the read model drops what it holds of the subject. Everything
//! sealed with the key, in the log, the read models of every service and their backups, is
//! unreadable from then on; the log itself is not rewritten.

use callback_contracts::scheduling::{ErasureMode, SubjectErased};
use callback_eventstore::ExpectedVersion;
use sqlx::PgConnection;

use super::*;
use crate::error::Result;

/// The longest reason an erasure records.
pub const MAX_ERASURE_REASON: usize = 500;

/// What an erasure did.
#[derive(Debug)]
pub struct Erasure {
    /// The subject had a key (it had personal data on record).
    pub had_key: bool,
    pub cancelled: Vec<Uuid>,
}

impl Scheduling {
    /// Erases or restricts `subject_id` in `tenant_id`, as `by` (the authenticated principal).
    pub async fn erase_subject(
        &self,
        tenant_id: &str,
        subject_id: &str,
        mode: ErasureMode,
        reason: &str,
        by: &str,
    ) -> Result<Erasure> {
        validate_id("tenant_id", tenant_id)?;
        if subject_id.trim().is_empty() || subject_id.len() > 128 {
            return Err(invalid("subject_id", "must be 1-128 characters"));
        }
        if reason.trim().is_empty() || reason.len() > MAX_ERASURE_REASON {
            return Err(invalid(
                "reason",
                format!("must be 1-{MAX_ERASURE_REASON} bytes (a request or ticket number; no personal data)"),
            ));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let had_key = match mode {
            ErasureMode::Erase => {
                callback_vault::Vault::erase_on(&mut tx, tenant_id, subject_id).await?
            }
            ErasureMode::Restrict => {
                callback_vault::Vault::restrict_on(&mut tx, tenant_id, subject_id).await?
            }
        };
        let why = match mode {
            ErasureMode::Erase => "the subject's personal data was erased",
            ErasureMode::Restrict => "the subject's processing is restricted",
        };
        let cancelled = self
            .cancel_open(&mut tx, tenant_id, subject_id, "", why, now)
            .await?;
        let event = SubjectErased {
            tenant_id: tenant_id.to_owned(),
            subject_id: subject_id.to_owned(),
            mode,
            reason: reason.to_owned(),
            by: by.to_owned(),
            at: now,
        };
        project_erasure(&mut tx, &event).await?;
        let stream = stream(SubjectErased::CATEGORY, format!("{tenant_id}:{subject_id}"))?;
        self.store
            .append_in(
                &mut tx,
                &stream,
                ExpectedVersion::Any,
                &[new_event(&event, tenant_id)?],
            )
            .await?;
        self.store.commit(tx).await?;
        Ok(Erasure { had_key, cancelled })
    }
}

/// What the read model keeps of an erased subject: nothing of its contact (the sealed
/// contact and the numbers' keyed hashes go). A restricted subject's row stays (storage is
/// kept; nothing opens it).
pub(super) async fn project_erasure(conn: &mut PgConnection, event: &SubjectErased) -> Result<()> {
    if event.mode == ErasureMode::Erase {
        sqlx::query(
            "UPDATE sched_subjects SET sealed = NULL, phone_keys = '{}' \
             WHERE tenant_id = $1 AND subject_id = $2",
        )
        .bind(&event.tenant_id)
        .bind(&event.subject_id)
        .execute(conn)
        .await?;
    }
    Ok(())
}
