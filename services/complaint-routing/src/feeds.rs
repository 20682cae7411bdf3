//! What complaint routing consumes over gRPC, each applied with the consumer's checkpoint in
//! one transaction (so each fact counts once):
//! - call-logging's feed: complaints raised during callbacks (`ComplaintRaised`) and the
//!   answers of verification callbacks (`SurveyAnswered`);
//! - scheduling's feed: verification callbacks that ended without an answer (`CallbackLost`,
//!   `CallbackCancelled`, `CallbackSkipped`).

use callback_contracts::call_logging::{ComplaintRaised, SurveyAnswered};
use callback_contracts::scheduling::{CallbackEvent, ErasureMode, SubjectErased};
use callback_contracts::EventContract;
use callback_eventstore::{Projection, RecordedEvent};
use callback_kit::events::decode;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::{ComplaintRouting, CALLBACK_CHANNEL};
use crate::domain::{Customer, Intake};
use crate::error::Error;

pub const CALL_LOGGING_CATEGORIES: [&str; 1] = [ComplaintRaised::CATEGORY];
pub const CALL_LOGGING_EVENT_TYPES: [&str; 2] =
    [ComplaintRaised::EVENT_TYPE, SurveyAnswered::EVENT_TYPE];
pub const SCHEDULING_CATEGORIES: [&str; 2] = [CallbackEvent::CATEGORY, SubjectErased::CATEGORY];
pub const SCHEDULING_EVENT_TYPES: [&str; 4] = [
    CallbackEvent::LOST,
    CallbackEvent::CANCELLED,
    CallbackEvent::SKIPPED,
    SubjectErased::EVENT_TYPE,
];

fn intake(raised: ComplaintRaised) -> Intake {
    let hint = raised.complaint.severity_hint;
    Intake {
        tenant_id: raised.tenant_id,
        source: CALLBACK_CHANNEL.into(),
        source_id: raised.attempt_id,
        channel: CALLBACK_CHANNEL.into(),
        customer: Customer {
            customer_id: raised.subject_id,
            ..Customer::default()
        },
        text: raised.complaint.text,
        category: raised.complaint.category,
        topic: raised.complaint.topic,
        severity_hints: crate::domain::rules::SEVERITY_HINTS
            .iter()
            .filter(|known| **known == hint)
            .map(|known| (*known).to_owned())
            .collect(),
        reply_by: raised.complaint.reply_by,
        callback_id: Some(raised.callback_id),
    }
}

/// Input that cannot become valid by retrying is skipped, loudly (it stays in the producer's
/// log); store and database failures stop the batch so it is retried. (A complaint for a tenant
/// without routing rules is not skipped but parked: see [`ComplaintRouting::park_in`].)
fn skip_or_fail(event: &RecordedEvent, error: Error) -> Result<(), Error> {
    match error {
        Error::InvalidArgument { .. } | Error::FailedPrecondition(_) | Error::NotFound(_) => {
            tracing::error!(event_id = %event.event_id, event_type = %event.event_type, %error, "fact not applied");
            Ok(())
        }
        error => Err(error),
    }
}

pub struct CallLoggingFacts {
    app: ComplaintRouting,
}

impl CallLoggingFacts {
    pub fn new(app: ComplaintRouting) -> Self {
        Self { app }
    }
}

impl Projection for CallLoggingFacts {
    type Error = Error;

    fn name(&self) -> &str {
        "complaint_routing.call_logging"
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        for event in events {
            let applied = match event.event_type.as_str() {
                ComplaintRaised::EVENT_TYPE => match decode::<ComplaintRaised>(event) {
                    Ok(mut raised) => {
                        // Call logging sealed the text with the callback's subject's key.
                        let sealed_for = if raised.subject_id.is_empty() {
                            format!("callback:{}", raised.callback_id)
                        } else {
                            raised.subject_id.clone()
                        };
                        raised.complaint.text = self
                            .app
                            .open_text(&raised.tenant_id, &sealed_for, &raised.complaint.text)
                            .await?;
                        let intake = intake(raised);
                        match self.app.file_in(conn, &intake).await {
                            // No routing rules yet: kept in the log, filed when they come.
                            Err(Error::FailedPrecondition(reason)) => {
                                self.app.park_in(conn, &intake, &reason).await
                            }
                            other => other.map(|_| ()),
                        }
                    }
                    Err(error) => Err(Error::InvalidArgument {
                        field: "payload".into(),
                        reason: error.to_string(),
                    }),
                },
                SurveyAnswered::EVENT_TYPE => match decode::<SurveyAnswered>(event) {
                    Ok(survey) => self
                        .app
                        .survey_answered_in(conn, survey.callback_id, &survey.answers)
                        .await
                        .map(|_| ()),
                    Err(error) => Err(Error::InvalidArgument {
                        field: "payload".into(),
                        reason: error.to_string(),
                    }),
                },
                _ => Ok(()),
            };
            if let Err(error) = applied {
                skip_or_fail(event, error)?;
            }
        }
        Ok(())
    }
}

pub struct SchedulingFacts {
    app: ComplaintRouting,
}

impl SchedulingFacts {
    pub fn new(app: ComplaintRouting) -> Self {
        Self { app }
    }
}

impl Projection for SchedulingFacts {
    type Error = Error;

    fn name(&self) -> &str {
        "complaint_routing.scheduling"
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Error> {
        for event in events {
            if event.event_type == SubjectErased::EVENT_TYPE {
                match decode::<SubjectErased>(event) {
                    Ok(erased) if erased.mode == ErasureMode::Erase => {
                        self.app
                            .customer_erased_in(conn, &erased.tenant_id, &erased.subject_id)
                            .await?
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(event_id = %event.event_id, %error, "undecodable erasure skipped")
                    }
                }
                continue;
            }
            let ended = match decode::<CallbackEvent>(event) {
                Ok(CallbackEvent::CallbackLost { reason, .. }) => ("lost", reason),
                Ok(CallbackEvent::CallbackCancelled { reason, .. }) => ("cancelled", reason),
                Ok(CallbackEvent::CallbackSkipped { reason, .. }) => ("skipped", reason),
                Ok(_) => continue,
                Err(error) => {
                    tracing::error!(event_id = %event.event_id, %error, "undecodable callback event skipped");
                    continue;
                }
            };
            let (outcome, reason) = ended;
            let Ok(callback_id) = event
                .stream_id
                .trim_start_matches(CallbackEvent::CATEGORY)
                .trim_start_matches('-')
                .parse::<Uuid>()
            else {
                continue;
            };
            if let Err(error) = self
                .app
                .callback_ended_in(conn, callback_id, outcome, &reason)
                .await
            {
                skip_or_fail(event, error)?;
            }
        }
        Ok(())
    }
}
