//! Answer, questionnaire-item and honesty-flag facts from call-logging's feed.

use super::*;

/// The honesty kind of a shared contact (`SharedContactFlagged`).
pub const SHARED_CONTACT_KIND: &str = "shared_contact";

/// The numeric value of an answer: ratings and scores as they are, yes = 1 and no = 0; choices
/// and free text have none (free text is personal data and is not kept).
pub fn numeric_answer(answer: &Value) -> Option<f64> {
    match answer {
        Value::Number(n) => n.as_f64(),
        Value::Bool(yes) => Some(if *yes { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// What one batch of call-logging events adds: rows to insert (each is written once; a
/// replayed event's rows are already there).
#[derive(Default)]
pub struct CallLoggingBatch {
    items: ItemRows,
    answers: AnswerRows,
    flags: FlagRows,
}

#[derive(Default)]
pub(super) struct ItemRows {
    tenant: Vec<String>,
    questionnaire: Vec<String>,
    version: Vec<i64>,
    item: Vec<String>,
    kind: Vec<String>,
}

#[derive(Default)]
pub(super) struct AnswerRows {
    attempt: Vec<String>,
    item: Vec<String>,
    tenant: Vec<String>,
    callback: Vec<Uuid>,
    questionnaire: Vec<String>,
    version: Vec<i64>,
    value: Vec<Option<f64>>,
}

#[derive(Default)]
pub(super) struct FlagRows {
    attempt: Vec<String>,
    kind: Vec<String>,
    tenant: Vec<String>,
    agent: Vec<String>,
    raised_at: Vec<DateTime<Utc>>,
}

pub struct CallLoggingFacts;

impl BatchProjection for CallLoggingFacts {
    type Folded = CallLoggingBatch;
    type Error = Error;

    fn name(&self) -> &str {
        "analytics.call_logging_facts"
    }

    fn fold(&self, events: &[RecordedEvent]) -> CallLoggingBatch {
        let mut batch = CallLoggingBatch::default();
        for event in events {
            match event.event_type.as_str() {
                QuestionnairePublished::EVENT_TYPE => {
                    let Some(published) = decode::<QuestionnairePublished>(event) else {
                        continue;
                    };
                    let rows = &mut batch.items;
                    for item in published.questionnaire.items {
                        rows.tenant.push(published.tenant_id.clone());
                        rows.questionnaire
                            .push(published.questionnaire.questionnaire_id.clone());
                        rows.version.push(event.stream_version);
                        rows.item.push(item.id);
                        rows.kind.push(item.kind.name().to_owned());
                    }
                }
                SurveyAnswered::EVENT_TYPE => {
                    let Some(survey) = decode::<SurveyAnswered>(event) else {
                        continue;
                    };
                    let rows = &mut batch.answers;
                    for (item, answer) in &survey.answers {
                        rows.attempt.push(survey.attempt_id.clone());
                        rows.item.push(item.clone());
                        rows.tenant.push(survey.tenant_id.clone());
                        rows.callback.push(survey.callback_id);
                        rows.questionnaire.push(survey.questionnaire_id.clone());
                        rows.version.push(survey.questionnaire_version as i64);
                        rows.value.push(numeric_answer(answer));
                    }
                }
                HonestyFlagRaised::EVENT_TYPE => {
                    let Some(flag) = decode::<HonestyFlagRaised>(event) else {
                        continue;
                    };
                    let rows = &mut batch.flags;
                    rows.raised_at
                        .push(flag.attempt_started_at.unwrap_or(event.recorded_at));
                    rows.attempt.push(flag.attempt_id);
                    rows.kind.push(flag.flag.kind().to_owned());
                    rows.tenant.push(flag.tenant_id);
                    rows.agent.push(flag.agent_id);
                }
                // One person, several subjects on one number: an honesty finding about the
                // subjects, not a call (no agent); kept without the number.
                SharedContactFlagged::EVENT_TYPE => {
                    let Some(shared) = decode::<SharedContactFlagged>(event) else {
                        continue;
                    };
                    let rows = &mut batch.flags;
                    rows.raised_at.push(event.recorded_at);
                    rows.attempt
                        .push(format!("{}|{}", shared.subject_id, shared.other_subject_id));
                    rows.kind.push(SHARED_CONTACT_KIND.to_owned());
                    rows.tenant.push(shared.tenant_id);
                    rows.agent.push(String::new());
                }
                _ => {}
            }
        }
        batch
    }

    async fn write(&self, conn: &mut PgConnection, batch: CallLoggingBatch) -> Result<(), Error> {
        let CallLoggingBatch {
            items,
            answers,
            flags,
        } = batch;
        if !items.item.is_empty() {
            sqlx::query(
                "INSERT INTO an_questionnaire_items (tenant_id, questionnaire_id, version, item_id, kind) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(items.tenant)
            .bind(items.questionnaire)
            .bind(items.version)
            .bind(items.item)
            .bind(items.kind)
            .execute(&mut *conn)
            .await?;
        }
        if !answers.item.is_empty() {
            sqlx::query(
                "INSERT INTO an_answers (attempt_id, item_id, tenant_id, callback_id, questionnaire_id, \
                   questionnaire_version, value) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bigint[], \
                   $7::float8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(answers.attempt)
            .bind(answers.item)
            .bind(answers.tenant)
            .bind(answers.callback)
            .bind(answers.questionnaire)
            .bind(answers.version)
            .bind(answers.value)
            .execute(&mut *conn)
            .await?;
        }
        if !flags.kind.is_empty() {
            sqlx::query(
                "INSERT INTO an_honesty_flags (attempt_id, kind, tenant_id, agent_id, raised_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(flags.attempt)
            .bind(flags.kind)
            .bind(flags.tenant)
            .bind(flags.agent)
            .bind(flags.raised_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
