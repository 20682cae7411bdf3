//! Subjects' contact details as scheduling keeps them: numbers in E.164, the name and
//! numbers sealed with the subject's key (`callback-vault`), the numbers' keyed hashes for
//! matching, and the details on record reused by a fact that names only the subject.

use sqlx::{PgConnection, Row};

use super::*;
use crate::error::{Error, Result};

/// A fact from another service may name only the subject (a complaint's verification call
/// knows the customer id, not the number): it then reuses the contact details known from the
/// subject's earlier facts. A fact that brings its own name or phones replaces them.
pub(super) async fn with_known_contact(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject: SubjectContact,
) -> Result<SubjectContact> {
    if subject.sealed.is_some() || !subject.name.is_empty() || !subject.phones.is_empty() {
        return Ok(subject);
    }
    Ok(
        match known_contact(conn, tenant_id, &subject.subject_id).await? {
            Some(known) => SubjectContact {
                owner_agent_id: subject.owner_agent_id.or(known.owner_agent_id),
                department: subject.department.or(known.department),
                ..known
            },
            None => subject,
        },
    )
}

pub(super) async fn known_contact(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject_id: &str,
) -> Result<Option<SubjectContact>> {
    let row = sqlx::query("SELECT sealed, phone_keys, owner_agent_id, department FROM sched_subjects WHERE tenant_id = $1 AND subject_id = $2")
        .bind(tenant_id)
        .bind(subject_id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(SubjectContact {
            subject_id: subject_id.to_owned(),
            sealed: row.try_get("sealed")?,
            phone_keys: row.try_get("phone_keys")?,
            owner_agent_id: row.try_get("owner_agent_id")?,
            department: row.try_get("department")?,
            ..SubjectContact::default()
        })
    })
    .transpose()
}

impl Scheduling {
    /// `subject` as the log and read model keep it: the name and numbers sealed with the
    /// subject's key, the numbers' keyed hashes beside them. Refused (FAILED_PRECONDITION)
    /// when the subject's processing is restricted.
    pub(super) fn seal_contact(
        &self,
        key: Option<&Option<callback_vault::SubjectKey>>,
        tenant_id: &str,
        subject: SubjectContact,
    ) -> Result<SubjectContact> {
        let key = match key {
            Some(Some(key)) => key,
            Some(None) => {
                return Err(Error::FailedPrecondition(
                    "subject.subject_id: the subject's processing is restricted; nothing is \
                     scheduled for it"
                        .into(),
                ))
            }
            None => return Err(Error::Corrupt("a subject without its key".into())),
        };
        if subject.name.is_empty() && subject.phones.is_empty() {
            return Ok(subject);
        }
        let phone_keys = subject
            .phones
            .iter()
            .map(|phone| self.vault.phone_key(tenant_id, phone))
            .collect();
        let clear = ClearContact {
            name: subject.name,
            phones: subject.phones,
        };
        Ok(SubjectContact {
            sealed: Some(key.seal_json(&clear)),
            phone_keys,
            name: String::new(),
            phones: Vec::new(),
            ..subject
        })
    }
}

/// The subject with its phone numbers in E.164 (read in the tenant's region), or the refusal
/// naming the number that is not one.
pub(super) fn normalized_phones(
    mut subject: SubjectContact,
    region: &str,
) -> Result<SubjectContact> {
    for (i, phone) in subject.phones.iter_mut().enumerate() {
        *phone = callback_rules::phone::normalize(phone, region)
            .map_err(|reason| super::invalid(format!("subject.phones[{i}]"), reason))?;
    }
    Ok(subject)
}
