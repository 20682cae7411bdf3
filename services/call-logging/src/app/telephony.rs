//! Telephony records from the call platform, and the honesty checks they settle: a reached
//! call's record contradicting it, or no record arriving by the frontier.

use super::*;

/// A logged attempt matched to a telephony record by call id.
#[derive(sqlx::FromRow)]
pub(super) struct MatchedAttempt {
    attempt_id: String,
    agent_id: String,
    disposition: String,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
}

/// The latest start among the tenant's telephony records: calls that ended well before it
/// should have their records by now.
pub(super) async fn records_until(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    sqlx::query_scalar("SELECT max(started_at) FROM cl_telephony WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await
        .map_err(Error::from)
}

impl CallLogging {
    /// Records a call detail record; matched to a logged attempt, it may raise flags there.
    #[tracing::instrument(name = "call_logging.ingest_telephony", skip_all, fields(tenant_id = %record.tenant_id))]
    pub async fn ingest_telephony(
        &self,
        mut record: TelephonyRecord,
    ) -> Result<(bool, Vec<String>), Error> {
        if record.tenant_id.is_empty() || record.tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        if record.call_id.is_empty() || record.call_id.len() > 128 {
            return Err(invalid("call_id", "must be 1-128 characters"));
        }
        if !["ANSWER", "BUSY", "NOANSWER", "FAILED"].contains(&record.network_result.as_str()) {
            return Err(invalid(
                "network_result",
                "must be ANSWER, BUSY, NOANSWER or FAILED",
            ));
        }
        if record.ended_at < record.started_at {
            return Err(invalid("ended_at", "is before started_at"));
        }
        if (record.ended_at - record.started_at).num_seconds() > MAX_CALL_SECONDS {
            return Err(invalid("ended_at", "a call cannot last longer than a day"));
        }
        let digits = record
            .number_dialed
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        if !(3..=20).contains(&digits) {
            return Err(invalid("number_dialed", "is not a phone number"));
        }
        let stream = StreamName::new(
            TelephonyRecord::CATEGORY,
            format!("{}:{}", record.tenant_id, record.call_id),
        )
        .map_err(Error::from)?;
        // The dialled number is sealed with the record's own key; its keyed hash tells a
        // retry from another record under the same call id.
        let key = self
            .vault
            .key_for_sealing(&record.tenant_id, &telephony_subject(&record.call_id))
            .await
            .map_err(vault_error)?;
        record.number_key = Some(
            self.vault
                .phone_key(&record.tenant_id, &record.number_dialed),
        );
        record.number_dialed = key.seal(&record.number_dialed);
        let event = new_event(&record, &record.tenant_id, "system:telephony")?;
        let mut tx = self.store.begin().await.map_err(Error::from)?;
        match self
            .store
            .append_in(&mut tx, &stream, ExpectedVersion::NoStream, &[event])
            .await
        {
            Ok(_) => {}
            Err(callback_eventstore::Error::VersionConflict { .. }) => {
                // A retry repeats the record; the same call id with another record is a
                // conflict, not a retry.
                drop(tx);
                let before = self
                    .store
                    .read_stream(&stream, 1)
                    .await
                    .map_err(Error::from)?;
                let same = match before.first() {
                    Some(event) => {
                        let before = decode::<TelephonyRecord>(event)?;
                        before.number_key == record.number_key
                            && TelephonyRecord {
                                number_dialed: String::new(),
                                ..before
                            } == TelephonyRecord {
                                number_dialed: String::new(),
                                ..record.clone()
                            }
                    }
                    None => false,
                };
                if !same {
                    return Err(Error::Conflict {
                        field: "call_id".into(),
                        reason: "already has another telephony record; a retry must repeat \
                                 the record as first sent"
                            .into(),
                    });
                }
                return Ok((true, Vec::new()));
            }
            Err(e) => return Err(e.into()),
        }
        let frontier = records_until(&mut tx, &record.tenant_id).await?;
        project_telephony(&mut tx, &record).await?;
        let mut raised = Vec::new();
        if frontier.is_none_or(|until| record.started_at > until) {
            raised.extend(
                self.flag_unmatched(&mut tx, &record.tenant_id, frontier, record.started_at)
                    .await?,
            );
        }
        let attempt: Option<MatchedAttempt> = sqlx::query_as(
            "SELECT attempt_id, agent_id, disposition, started_at, ended_at FROM cl_attempts \
             WHERE tenant_id = $1 AND telephony_call_id = $2 LIMIT 1",
        )
        .bind(&record.tenant_id)
        .bind(&record.call_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::from)?;
        if let Some(MatchedAttempt {
            attempt_id,
            agent_id,
            disposition,
            started_at,
            ended_at,
        }) = attempt
        {
            let facts = AttemptFacts {
                disposition,
                started_at,
                ended_at,
            };
            let call = CallRecord {
                call_id: record.call_id.clone(),
                network_result: record.network_result.clone(),
                billable_seconds: i64::from(record.billable_seconds),
            };
            for flag in honesty::check_attempt(&facts, Some(&call)) {
                let already: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM cl_flags WHERE tenant_id = $3 AND attempt_id = $1 AND kind = $2)",
                )
                .bind(&attempt_id)
                .bind(flag.kind())
                .bind(&record.tenant_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::from)?;
                if already {
                    continue;
                }
                let attempt_stream = super::attempt_stream(&record.tenant_id, &attempt_id)?;
                let flag_event = flag_raised(
                    &record.tenant_id,
                    &attempt_id,
                    &agent_id,
                    facts.started_at,
                    &flag,
                );
                let event = new_event(&flag_event, &record.tenant_id, "system:telephony")?;
                self.store
                    .append_in(&mut tx, &attempt_stream, ExpectedVersion::Any, &[event])
                    .await
                    .map_err(Error::from)?;
                project_flag(&mut tx, &record.tenant_id, &attempt_id, &agent_id, &flag).await?;
                raised.push(flag.kind().to_owned());
            }
        }
        self.store.commit(tx).await.map_err(Error::from)?;
        Ok((false, raised))
    }

    /// The records frontier moved from `from` to `until`: "reached" phone calls that ended in
    /// between (less the tolerance) and still have no record are flagged `no_telephony_record`.
    pub(super) async fn flag_unmatched(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant_id: &str,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let tolerance = chrono::Duration::minutes(honesty::TELEPHONY_TOLERANCE_MINUTES);
        let unmatched: Vec<(String, String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
            "SELECT a.attempt_id, a.agent_id, a.started_at, a.telephony_call_id FROM cl_attempts a \
             WHERE a.tenant_id = $1 AND a.disposition = 'reached' AND a.channel = 'phone' \
             AND a.ended_at < $2 AND ($3::timestamptz IS NULL OR a.ended_at >= $3) \
             AND NOT EXISTS (SELECT 1 FROM cl_telephony t WHERE t.tenant_id = a.tenant_id AND t.call_id = a.telephony_call_id) \
             AND NOT EXISTS (SELECT 1 FROM cl_flags f WHERE f.tenant_id = a.tenant_id AND f.attempt_id = a.attempt_id AND f.kind = 'no_telephony_record') \
             ORDER BY a.ended_at, a.attempt_id",
        )
        .bind(tenant_id)
        .bind(until - tolerance)
        .bind(from.map(|f| f - tolerance))
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::from)?;
        let mut raised = Vec::new();
        for (attempt_id, agent_id, started_at, call_id) in unmatched {
            let flag = honesty::missing_record(call_id.as_deref().unwrap_or(""), until);
            let stream = super::attempt_stream(tenant_id, &attempt_id)?;
            let flag_event = flag_raised(tenant_id, &attempt_id, &agent_id, started_at, &flag);
            let event = new_event(&flag_event, tenant_id, "system:telephony")?;
            self.store
                .append_in(tx, &stream, ExpectedVersion::Any, &[event])
                .await
                .map_err(Error::from)?;
            project_flag(tx, tenant_id, &attempt_id, &agent_id, &flag).await?;
            raised.push(flag.kind().to_owned());
        }
        Ok(raised)
    }
}

/// The vault subject a call detail record's number is sealed under.
pub(super) fn telephony_subject(call_id: &str) -> String {
    format!("telephony:{call_id}")
}

/// The vault's refusal as call-logging's error.
pub(super) fn vault_error(error: callback_vault::VaultError) -> Error {
    match error {
        callback_vault::VaultError::Restricted => {
            Error::FailedPrecondition("the subject's processing is restricted".into())
        }
        callback_vault::VaultError::Database(error) => Error::from(error),
        other => Error::Internal(other.to_string()),
    }
}
