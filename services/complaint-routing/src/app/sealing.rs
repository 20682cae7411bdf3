//! Complainants' names and numbers and complaint texts are sealed with a subject key
//! (`callback-vault`) before anything is written: the customer's, so an erasure of the
//! customer reaches their complaints, or the complaint's own when the complainant is
//! anonymous. Decisions (classification, routing, repeat and group detection) are made on the
//! clear intake first; numbers are matched by their keyed hashes.

use callback_contracts::complaint_routing::Customer;
use callback_contracts::scheduling::ClearContact;
use callback_vault::{Opened, SubjectKey};

use super::*;

pub use callback_vault::{ERASED, RESTRICTED};

/// The vault subject a complaint's personal data is sealed under.
pub fn sealing_subject(customer_id: &str, complaint_id: Uuid) -> String {
    if customer_id.is_empty() {
        format!("complaint:{complaint_id}")
    } else {
        customer_id.to_owned()
    }
}

impl ComplaintRouting {
    /// The intake as the log keeps it, and the key that sealed it. Refused
    /// (FAILED_PRECONDITION) when the customer's processing is restricted.
    pub(super) async fn seal_intake(
        &self,
        conn: &mut PgConnection,
        intake: &Intake,
        complaint_id: Uuid,
    ) -> Result<Intake> {
        let subject = sealing_subject(&intake.customer.customer_id, complaint_id);
        let key = self
            .vault
            .key_for_sealing_on(conn, &intake.tenant_id, &subject)
            .await
            .map_err(vault_error)?;
        Ok(self.sealed_with(&key, intake))
    }

    fn sealed_with(&self, key: &SubjectKey, intake: &Intake) -> Intake {
        if callback_vault::is_sealed(&intake.text) {
            return intake.clone();
        }
        let customer = &intake.customer;
        let has_contact = !customer.name.is_empty() || !customer.phones.is_empty();
        Intake {
            customer: Customer {
                customer_id: customer.customer_id.clone(),
                name: String::new(),
                phones: Vec::new(),
                sealed: has_contact.then(|| {
                    key.seal_json(&ClearContact {
                        name: customer.name.clone(),
                        phones: customer.phones.clone(),
                    })
                }),
                phone_keys: customer
                    .phones
                    .iter()
                    .map(|phone| self.vault.phone_key(&intake.tenant_id, phone))
                    .collect(),
            },
            text: key.seal(&intake.text),
            ..intake.clone()
        }
    }

    /// The keyed hashes of the intake's (normalised) numbers, for matching.
    pub(super) fn phone_keys(&self, intake: &Intake) -> Vec<String> {
        intake
            .customer
            .phones
            .iter()
            .map(|phone| self.vault.phone_key(&intake.tenant_id, phone))
            .collect()
    }

    /// `customer` and `text` opened with the key they were sealed for, as stored now: an
    /// erased complainant reads as erased. Clear (older) values pass through.
    pub(super) async fn open_personal(
        &self,
        tenant_id: &str,
        complaint_id: Uuid,
        customer: &mut Customer,
        text: &mut String,
    ) -> Result<()> {
        if customer.sealed.is_none() && !callback_vault::is_sealed(text) {
            return Ok(());
        }
        let subject = sealing_subject(&customer.customer_id, complaint_id);
        let key = self
            .vault
            .existing_key(tenant_id, &subject)
            .await
            .map_err(vault_error)?;
        // The opened view has the numbers themselves; their keyed hashes are for matching.
        customer.phone_keys.clear();
        if let Some(sealed) = customer.sealed.take() {
            match callback_vault::open_json::<ClearContact>(key.as_ref(), &sealed) {
                Ok(Opened::Clear(clear)) => {
                    customer.name = clear.name;
                    customer.phones = clear.phones;
                }
                Ok(Opened::Restricted) => customer.name = RESTRICTED.into(),
                Ok(Opened::Erased) | Err(_) => customer.name = ERASED.into(),
            }
        }
        *text = callback_vault::open_for_reader(key.as_ref(), text);
        Ok(())
    }

    /// A text sealed for vault subject `subject` (or clear), opened.
    pub async fn open_text(&self, tenant_id: &str, subject: &str, text: &str) -> Result<String> {
        if !callback_vault::is_sealed(text) {
            return Ok(text.to_owned());
        }
        Ok(self
            .vault
            .open_sealed(tenant_id, subject, text)
            .await
            .map_err(vault_error)?
            .or_marker())
    }

    /// An erased customer's numbers (their keyed hashes) are matched no more.
    pub async fn customer_erased_in(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        customer_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE cr_complaints SET phones = '{}' WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant_id)
        .bind(customer_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A complaint's filing with its personal data opened (for views and retries).
    pub(super) async fn opened(&self, mut complaint: Complaint) -> Result<Complaint> {
        let filed = &mut complaint.state.filed;
        let (tenant_id, id) = (filed.tenant_id.clone(), filed.complaint_id);
        self.open_personal(&tenant_id, id, &mut filed.customer, &mut filed.text)
            .await?;
        Ok(complaint)
    }
}

/// The vault's refusal as complaint routing's error.
pub(super) fn vault_error(error: callback_vault::VaultError) -> Error {
    match error {
        callback_vault::VaultError::Restricted => Error::FailedPrecondition(
            "customer.customer_id: the customer's processing is restricted".into(),
        ),
        callback_vault::VaultError::Database(error) => Error::from(error),
        other => Error::Corrupt(other.to_string()),
    }
}
