//! What complaint routing consumes over gRPC, each applied with the consumer's checkpoint in
//! one transaction (so each fact counts once):
//! - call-logging's feed: complaints raised during callbacks (`ComplaintRaised`) and the
//!   answers of verification callbacks (`SurveyAnswered`);
//! - scheduling's feed: verification callbacks that ended without an answer (`CallbackLost`,
//!   `CallbackCancelled`, `CallbackSkipped`).

use callback_eventstore::{Projection, RecordedEvent};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::{ComplaintRouting, CALLBACK_CHANNEL};
use crate::domain::{Customer, Intake};
use crate::error::Error;

pub const CALL_LOGGING_CATEGORIES: [&str; 1] = ["call_attempt"];
pub const CALL_LOGGING_EVENT_TYPES: [&str; 2] = ["ComplaintRaised", "SurveyAnswered"];
pub const SCHEDULING_CATEGORIES: [&str; 1] = ["callback"];
pub const SCHEDULING_EVENT_TYPES: [&str; 3] =
    ["CallbackLost", "CallbackCancelled", "CallbackSkipped"];

/// The fields of call-logging's `ComplaintRaised` this service reads.
#[derive(Deserialize)]
struct ComplaintRaised {
    tenant_id: String,
    callback_id: Uuid,
    attempt_id: String,
    #[serde(default)]
    subject_id: String,
    complaint: RaisedComplaint,
}

#[derive(Deserialize)]
struct RaisedComplaint {
    text: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    severity_hint: String,
    #[serde(default)]
    reply_by: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct SurveyAnswered {
    callback_id: Uuid,
    answers: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct CallbackEnded {
    #[serde(default)]
    reason: String,
}

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
                "ComplaintRaised" => match event.decode::<ComplaintRaised>() {
                    Ok(raised) => {
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
                "SurveyAnswered" => match event.decode::<SurveyAnswered>() {
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
            let outcome = match event.event_type.as_str() {
                "CallbackLost" => "lost",
                "CallbackCancelled" => "cancelled",
                "CallbackSkipped" => "skipped",
                _ => continue,
            };
            let Ok(callback_id) = event
                .stream_id
                .trim_start_matches("callback-")
                .parse::<Uuid>()
            else {
                continue;
            };
            let reason = event
                .decode::<CallbackEnded>()
                .map(|e| e.reason)
                .unwrap_or_default();
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
