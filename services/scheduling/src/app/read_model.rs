//! The read model: the row writers every command and the rebuild share, so a rebuild from the
//! log writes exactly what the commands wrote.

use super::*;

pub(super) async fn project_tenant(
    conn: &mut PgConnection,
    published: &TenantPublished,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sched_tenants (tenant_id, version, settings) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = EXCLUDED.version, settings = EXCLUDED.settings",
    )
    .bind(&published.tenant_id)
    .bind(version as i64)
    .bind(serde_json::to_value(&published.settings).map_err(|e| Error::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn project_policy(
    conn: &mut PgConnection,
    tenant_id: &str,
    policy: &Policy,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sched_policies (tenant_id, policy_id, version, trigger_event_type, cancel_on, reschedule_on, policy) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, policy_id) DO UPDATE SET \
         version = EXCLUDED.version, trigger_event_type = EXCLUDED.trigger_event_type, \
         cancel_on = EXCLUDED.cancel_on, reschedule_on = EXCLUDED.reschedule_on, policy = EXCLUDED.policy",
    )
    .bind(tenant_id)
    .bind(&policy.policy_id)
    .bind(version as i64)
    .bind(&policy.trigger.event_type)
    .bind(&policy.cancel_on)
    .bind(&policy.reschedule_on)
    .bind(serde_json::to_value(policy).map_err(|e| Error::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn project_subject(
    conn: &mut PgConnection,
    tenant_id: &str,
    subject: &SubjectContact,
) -> Result<()> {
    project_subjects(conn, &[(tenant_id, subject)]).await
}

/// Writes subject rows (each subject at most once) in one statement.
pub(super) async fn project_subjects(
    conn: &mut PgConnection,
    subjects: &[(&str, &SubjectContact)],
) -> Result<()> {
    let tenant_ids: Vec<&str> = subjects.iter().map(|(t, _)| *t).collect();
    let ids: Vec<&str> = subjects
        .iter()
        .map(|(_, s)| s.subject_id.as_str())
        .collect();
    // Never the clear name or numbers: the sealed contact and the numbers' keyed hashes.
    let sealed: Vec<Option<&str>> = subjects.iter().map(|(_, s)| s.sealed.as_deref()).collect();
    // Keys as one JSON array per subject: PostgreSQL has no arrays of arrays of text with
    // different lengths.
    let phone_keys: Vec<serde_json::Value> = subjects
        .iter()
        .map(|(_, s)| serde_json::json!(s.phone_keys))
        .collect();
    let owners: Vec<Option<&str>> = subjects
        .iter()
        .map(|(_, s)| s.owner_agent_id.as_deref())
        .collect();
    let departments: Vec<Option<&str>> = subjects
        .iter()
        .map(|(_, s)| s.department.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO sched_subjects (tenant_id, subject_id, sealed, phone_keys, owner_agent_id, department) \
         SELECT t, id, n, ARRAY(SELECT jsonb_array_elements_text(p)), o, d \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[]) AS u(t, id, n, p, o, d) \
         ON CONFLICT (tenant_id, subject_id) DO UPDATE SET \
         sealed = EXCLUDED.sealed, phone_keys = EXCLUDED.phone_keys, owner_agent_id = EXCLUDED.owner_agent_id, \
         department = EXCLUDED.department",
    )
    .bind(&tenant_ids)
    .bind(&ids)
    .bind(&sealed)
    .bind(&phone_keys)
    .bind(&owners)
    .bind(&departments)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn project_callback(
    conn: &mut PgConnection,
    queue_starts: &QueueStarts,
    state: &CallbackState,
    version: u64,
) -> Result<()> {
    project_callbacks(conn, queue_starts, &[(state, version)]).await
}

/// Writes callback rows (each callback at most once) in one statement, and tells the claims'
/// queue starts of every row it puts into the waiting queue.
pub(super) async fn project_callbacks(
    conn: &mut PgConnection,
    queue_starts: &QueueStarts,
    rows: &[(&CallbackState, u64)],
) -> Result<()> {
    let mut c = CallbackColumns::default();
    for (state, version) in rows {
        let s = &state.scheduled;
        c.callback_id.push(s.callback_id);
        c.tenant_id.push(s.tenant_id.as_str());
        c.policy_id.push(s.policy_id.as_str());
        c.policy_version.push(s.policy_version as i64);
        c.step.push(s.step.as_str());
        c.occurrence.push(s.occurrence as i32);
        c.subject_id.push(s.subject_id.as_str());
        c.department.push(s.department.as_deref());
        c.status.push(state.status.as_str());
        c.due_at.push(state.due_at);
        c.deadline.push(state.deadline);
        c.give_up_at.push(state.give_up_at);
        c.priority.push(i16::from(s.priority));
        c.owner_agent_id.push(s.owner_agent_id.as_deref());
        c.pool.push(s.pool.as_str());
        c.pool_after.push(s.pool_after);
        c.claimed_by.push(state.claimed_by.as_deref());
        c.lease_until.push(state.lease_until);
        c.attempts.push(state.attempts as i32);
        c.end_reason.push(state.end_reason.as_deref());
        c.stream_version.push(*version as i64);
    }
    sqlx::query(
        "INSERT INTO sched_callbacks (callback_id, tenant_id, policy_id, policy_version, step, occurrence, \
           subject_id, department, status, due_at, deadline, priority, owner_agent_id, pool, pool_after, \
           claimed_by, lease_until, attempts, end_reason, stream_version, give_up_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int4[], \
           $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::int2[], \
           $13::text[], $14::text[], $15::timestamptz[], $16::text[], $17::timestamptz[], $18::int4[], \
           $19::text[], $20::int8[], $21::timestamptz[]) \
         ON CONFLICT (callback_id) DO UPDATE SET status = EXCLUDED.status, due_at = EXCLUDED.due_at, \
           deadline = EXCLUDED.deadline, give_up_at = EXCLUDED.give_up_at, claimed_by = EXCLUDED.claimed_by, lease_until = EXCLUDED.lease_until, \
           attempts = EXCLUDED.attempts, end_reason = EXCLUDED.end_reason, stream_version = EXCLUDED.stream_version",
    )
    .bind(&c.callback_id)
    .bind(&c.tenant_id)
    .bind(&c.policy_id)
    .bind(&c.policy_version)
    .bind(&c.step)
    .bind(&c.occurrence)
    .bind(&c.subject_id)
    .bind(&c.department)
    .bind(&c.status)
    .bind(&c.due_at)
    .bind(&c.deadline)
    .bind(&c.priority)
    .bind(&c.owner_agent_id)
    .bind(&c.pool)
    .bind(&c.pool_after)
    .bind(&c.claimed_by)
    .bind(&c.lease_until)
    .bind(&c.attempts)
    .bind(&c.end_reason)
    .bind(&c.stream_version)
    .bind(&c.give_up_at)
    .execute(conn)
    .await?;
    let now = std::time::Instant::now();
    for (state, _) in rows {
        if state.status == Status::Scheduled {
            queue_starts.queued(&state.scheduled.tenant_id, QueueKey::of(state), now);
        }
    }
    Ok(())
}

/// The columns of [`project_callbacks`], one entry per row.
#[derive(Default)]
pub(super) struct CallbackColumns<'a> {
    callback_id: Vec<Uuid>,
    tenant_id: Vec<&'a str>,
    policy_id: Vec<&'a str>,
    policy_version: Vec<i64>,
    step: Vec<&'a str>,
    occurrence: Vec<i32>,
    subject_id: Vec<&'a str>,
    department: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    due_at: Vec<DateTime<Utc>>,
    deadline: Vec<DateTime<Utc>>,
    give_up_at: Vec<DateTime<Utc>>,
    priority: Vec<i16>,
    owner_agent_id: Vec<Option<&'a str>>,
    pool: Vec<&'a str>,
    pool_after: Vec<DateTime<Utc>>,
    claimed_by: Vec<Option<&'a str>>,
    lease_until: Vec<Option<DateTime<Utc>>>,
    attempts: Vec<i32>,
    end_reason: Vec<Option<&'a str>>,
    stream_version: Vec<i64>,
}

pub(super) async fn project_attempt(
    conn: &mut PgConnection,
    state: &CallbackState,
    attempt_id: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    outcome_batch::project_attempts(conn, &[(state, attempt_id, at)]).await
}

/// The columns of [`CallbackRow`].
pub const CALLBACK_COLUMNS: &str = "callback_id, tenant_id, policy_id, policy_version, step, occurrence, subject_id, \
     department, status, due_at, deadline, priority, owner_agent_id, pool, pool_after, claimed_by, lease_until, \
     attempts, end_reason, stream_version, give_up_at";

/// One row of the callbacks read model.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackRow {
    pub callback_id: Uuid,
    pub tenant_id: String,
    pub policy_id: String,
    pub policy_version: i64,
    pub step: String,
    pub occurrence: i32,
    pub subject_id: String,
    pub department: Option<String>,
    pub status: String,
    pub due_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub priority: i16,
    pub owner_agent_id: Option<String>,
    pub pool: String,
    pub pool_after: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub end_reason: Option<String>,
    pub stream_version: i64,
    /// Past the deadline and before this, the callback is overdue; at this, it is lost.
    pub give_up_at: DateTime<Utc>,
}

impl Scheduling {
    /// Clears every scheduling projection and rebuilds it from the log, in one transaction,
    /// with the same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64> {
        // The replay first waits for older transactions; it is opened before the rebuild's
        // own transaction, which would otherwise be one of them.
        let mut replay = self
            .store
            .replay(Filter::categories(crate::CATEGORIES.iter().copied()))
            .await?;
        let mut tx = self.store.begin().await?;
        sqlx::query("TRUNCATE sched_tenants, sched_policies, sched_subjects, sched_callbacks, sched_contact_attempts")
            .execute(&mut *tx)
            .await?;
        let mut callbacks: HashMap<Uuid, (Option<CallbackState>, u64)> = HashMap::new();
        let mut applied = 0u64;
        while let Some(events) = replay.next_page().await? {
            for event in &events {
                applied += 1;
                let version = event.stream_version as u64;
                match event.category.as_str() {
                    TenantPublished::CATEGORY => {
                        project_tenant(&mut tx, &decode(event)?, version).await?
                    }
                    PolicyPublished::CATEGORY => {
                        let published: PolicyPublished = decode(event)?;
                        let tenant_id = published.tenant_id.clone();
                        let policy = published_policy(published)?;
                        project_policy(&mut tx, &tenant_id, &policy, version).await?
                    }
                    BusinessEventIngested::CATEGORY => {
                        let ingested: BusinessEventIngested = decode(event)?;
                        project_subject(&mut tx, &ingested.fact.tenant_id, &ingested.subject)
                            .await?;
                    }
                    callback_contracts::scheduling::SubjectErased::CATEGORY => {
                        super::erasure::project_erasure(&mut tx, &decode(event)?).await?
                    }
                    _ => {
                        let id: Uuid = event
                            .stream_id
                            .trim_start_matches(CallbackEvent::CATEGORY)
                            .trim_start_matches('-')
                            .parse()
                            .map_err(|_| {
                                Error::Corrupt(format!("callback stream id {}", event.stream_id))
                            })?;
                        let callback_event: CallbackEvent = decode(event)?;
                        let entry = callbacks.entry(id).or_insert((None, 0));
                        entry.0 = CallbackState::evolve(entry.0.take(), &callback_event);
                        entry.1 = version;
                        if let (
                            CallbackEvent::CallbackAttempted { attempt_id, at, .. },
                            Some(state),
                        ) = (&callback_event, &entry.0)
                        {
                            project_attempt(&mut tx, state, attempt_id, *at).await?;
                        }
                    }
                }
            }
        }
        for (state, version) in callbacks.values() {
            if let Some(state) = state {
                project_callback(&mut tx, &self.queue_starts, state, *version).await?;
            }
        }
        tx.commit().await?;
        self.queue_starts.clear();
        Ok(applied)
    }
}
