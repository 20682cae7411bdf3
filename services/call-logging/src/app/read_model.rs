//! The read model: the row writers every command and the rebuild share.

use super::*;

/// One row of `cl_attempts`.
pub(super) struct AttemptRow<'a> {
    pub(super) tenant_id: &'a str,
    pub(super) attempt_id: &'a str,
    pub(super) callback_id: uuid::Uuid,
    pub(super) agent_id: &'a str,
    pub(super) disposition: &'a str,
    pub(super) channel: &'a str,
    pub(super) started_at: DateTime<Utc>,
    pub(super) ended_at: DateTime<Utc>,
    pub(super) telephony_call_id: &'a str,
    /// The vault subject sealing its personal data (empty: clear, from before sealing).
    pub(super) sealed_for: &'a str,
}

pub(super) async fn project_attempt(
    conn: &mut sqlx::PgConnection,
    row: &AttemptRow<'_>,
) -> Result<(), Error> {
    attempts::project_attempts(conn, std::slice::from_ref(row)).await
}

pub(super) async fn project_flag(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    attempt_id: &str,
    agent_id: &str,
    flag: &Flag,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cl_flags (attempt_id, kind, tenant_id, agent_id, evidence) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, attempt_id, kind) DO NOTHING",
    )
    .bind(attempt_id)
    .bind(flag.kind())
    .bind(tenant_id)
    .bind(agent_id)
    .bind(flag.evidence())
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

pub(super) async fn project_telephony(
    conn: &mut sqlx::PgConnection,
    record: &TelephonyRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cl_telephony (tenant_id, call_id, network_result, started_at, answered_at, ended_at, billable_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, call_id) DO NOTHING",
    )
    .bind(&record.tenant_id)
    .bind(&record.call_id)
    .bind(&record.network_result)
    .bind(record.started_at)
    .bind(record.answered_at)
    .bind(record.ended_at)
    .bind(record.billable_seconds as i32)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

impl CallLogging {
    /// Clears call-logging's read models and rebuilds them from the log, in one transaction,
    /// with the same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64, Error> {
        // The replay first waits for older transactions; it is opened before the rebuild's
        // own transaction, which would otherwise be one of them.
        let mut replay = self
            .store
            .replay(callback_eventstore::Filter::categories([
                CallAttemptLogged::CATEGORY,
                TelephonyRecord::CATEGORY,
            ]))
            .await?;
        let mut tx = self.store.begin().await.map_err(Error::from)?;
        sqlx::query("TRUNCATE cl_attempts, cl_telephony, cl_flags")
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        let mut applied = 0;
        while let Some(events) = replay.next_page().await? {
            for event in &events {
                applied += 1;
                match event.event_type.as_str() {
                    CallAttemptLogged::EVENT_TYPE => {
                        let logged: CallAttemptLogged = decode(event)?;
                        let attempt = AttemptRow {
                            tenant_id: &logged.tenant_id,
                            attempt_id: &logged.attempt_id,
                            callback_id: logged.callback_id,
                            agent_id: &logged.agent_id,
                            disposition: logged.disposition.standard.name(),
                            channel: &logged.channel,
                            started_at: logged.started_at,
                            ended_at: logged.ended_at,
                            telephony_call_id: &logged.telephony_call_id,
                            sealed_for: logged.sealed_for.as_deref().unwrap_or_default(),
                        };
                        project_attempt(&mut tx, &attempt).await?;
                    }
                    HonestyFlagRaised::EVENT_TYPE => {
                        let raised: HonestyFlagRaised = decode(event)?;
                        let flag = raised.flag;
                        project_flag(
                            &mut tx,
                            &raised.tenant_id,
                            &raised.attempt_id,
                            &raised.agent_id,
                            &flag,
                        )
                        .await?;
                    }
                    TelephonyRecord::EVENT_TYPE => {
                        let record: TelephonyRecord = decode(event)?;
                        project_telephony(&mut tx, &record).await?;
                    }
                    _ => {}
                }
            }
        }
        tx.commit().await.map_err(Error::from)?;
        Ok(applied)
    }
}
