//! Reading a call record: masked by default; a full view needs a reason and is itself recorded
//! as an event.

use super::*;

use callback_vault::{ERASED, RESTRICTED};

/// A call record as a reader sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallRecordView {
    pub attempt_id: String,
    pub callback_id: String,
    pub agent_id: String,
    pub disposition: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub number_dialed: String,
    pub network_result: String,
    pub notes: String,
    pub answers_json: String,
    pub flags: Vec<String>,
}

impl CallLogging {
    /// One call record for `reader`. Phone numbers are masked unless `full_view` is asked for
    /// with a reason; a full view is recorded as a `CallRecordViewed` event before it is given.
    #[tracing::instrument(name = "call_logging.get_call_record", skip_all, fields(attempt_id = %attempt_id, full_view))]
    pub async fn get_call_record(
        &self,
        tenant_id: &str,
        attempt_id: &str,
        reader: &str,
        full_view: bool,
        reason: &str,
    ) -> Result<CallRecordView, Error> {
        if reader.trim().is_empty() {
            return Err(invalid("reader", "must not be empty"));
        }
        if full_view && (reason.trim().is_empty() || reason.chars().count() > 500) {
            return Err(invalid(
                "reason",
                "a full view needs a reason of 1-500 characters",
            ));
        }
        let stream = super::attempt_stream(tenant_id, attempt_id)?;
        let mut events = self
            .store
            .read_stream(&stream, 1)
            .await
            .map_err(Error::from)?;
        if events.is_empty() {
            // Logged before attempt streams were named by tenant: the tenant check below
            // keeps other tenants' records out.
            if let Ok(legacy) = StreamName::new(CallAttemptLogged::CATEGORY, attempt_id.to_owned())
            {
                events = self
                    .store
                    .read_stream(&legacy, 1)
                    .await
                    .map_err(Error::from)?;
            }
        }
        let not_found = || {
            Error::NotFound(format!(
                "call record {} not found",
                callback_rules::input::excerpt(attempt_id)
            ))
        };
        let first = events.first().ok_or_else(not_found)?;
        let logged: CallAttemptLogged = decode(first)?;
        if logged.tenant_id != tenant_id {
            return Err(not_found());
        }
        // Sealed text opens with the key it was sealed for, as stored now: an erased
        // subject's notes and answers read as erased.
        let key = match &logged.sealed_for {
            Some(subject) => self
                .vault
                .existing_key(tenant_id, subject)
                .await
                .map_err(super::telephony::vault_error)?,
            None => None,
        };
        let open = |text: &str| callback_vault::open_for_reader(key.as_ref(), text);
        let mut view = CallRecordView {
            attempt_id: attempt_id.to_owned(),
            callback_id: logged.callback_id.to_string(),
            agent_id: logged.agent_id,
            disposition: logged.disposition.standard.name().to_owned(),
            started_at: Some(logged.started_at),
            ended_at: Some(logged.ended_at),
            notes: open(&logged.notes),
            ..CallRecordView::default()
        };
        for event in &events[1..] {
            match event.event_type.as_str() {
                SurveyAnswered::EVENT_TYPE => {
                    let mut survey: SurveyAnswered = decode(event)?;
                    for answer in survey.answers.values_mut() {
                        if let serde_json::Value::String(text) = answer {
                            *text = open(text);
                        }
                    }
                    view.answers_json = serde_json::to_string(&survey.answers)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                }
                HonestyFlagRaised::EVENT_TYPE => {
                    view.flags
                        .push(decode::<HonestyFlagRaised>(event)?.flag.kind().to_owned());
                }
                _ => {}
            }
        }
        let call_id = logged.telephony_call_id;
        if !call_id.is_empty() {
            let cdr = StreamName::new(TelephonyRecord::CATEGORY, format!("{tenant_id}:{call_id}"))
                .map_err(Error::from)?;
            if let Some(event) = self
                .store
                .read_stream(&cdr, 1)
                .await
                .map_err(Error::from)?
                .first()
            {
                let record: TelephonyRecord = decode(event)?;
                view.network_result = record.network_result;
                view.number_dialed = if callback_vault::is_sealed(&record.number_dialed) {
                    self.vault
                        .open_sealed(
                            tenant_id,
                            &super::telephony::telephony_subject(&call_id),
                            &record.number_dialed,
                        )
                        .await
                        .map_err(super::telephony::vault_error)?
                        .or_marker()
                } else {
                    record.number_dialed
                };
            }
        }
        if full_view {
            let viewed = CallRecordViewed {
                tenant_id: tenant_id.to_owned(),
                attempt_id: attempt_id.to_owned(),
                reader: reader.to_owned(),
                reason: reason.to_owned(),
                at: Utc::now(),
            };
            let viewed = new_event(&viewed, tenant_id, reader)?;
            self.store
                .append(&stream, ExpectedVersion::Any, &[viewed])
                .await
                .map_err(Error::from)?;
            tracing::info!("full view of a call record recorded");
        } else if view.number_dialed != ERASED && view.number_dialed != RESTRICTED {
            view.number_dialed = crate::domain::privacy::mask_phone(&view.number_dialed);
        }
        Ok(view)
    }
}
