//! The key an attempt's personal data (notes, free-text answers, a complaint's text) is sealed
//! with (`callback-vault`).

use super::PendingAttempt;
use crate::app::CallLogging;
use crate::error::Error;

impl CallLogging {
    /// The key an attempt's personal data is sealed with: its callback's subject's (so an
    /// erasure of the subject reaches it), or the callback's own when scheduling named no
    /// subject. A restricted subject's attempt is refused: nothing new is processed for it.
    pub(super) async fn sealing_key(
        &self,
        pending: &PendingAttempt,
        subject_id: &str,
    ) -> Result<(String, callback_vault::SubjectKey), Error> {
        let sealed_for = if subject_id.is_empty() {
            format!("callback:{}", pending.callback_id)
        } else {
            subject_id.to_owned()
        };
        match self
            .vault
            .key_for_sealing(&pending.report.tenant_id, &sealed_for)
            .await
        {
            Ok(key) => Ok((sealed_for, key)),
            Err(callback_vault::VaultError::Restricted) => Err(Error::FailedPrecondition(
                "the subject's processing is restricted; no attempt is recorded for it".into(),
            )),
            Err(callback_vault::VaultError::Database(error)) => Err(Error::from(error)),
            Err(other) => Err(Error::Internal(other.to_string())),
        }
    }
}

/// Free text sealed with `key`; empty stays empty.
pub(super) fn seal_text(key: &callback_vault::SubjectKey, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        key.seal(text)
    }
}
