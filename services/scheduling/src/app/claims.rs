//! Claiming: `ClaimNext` requests that arrive together are served by one transaction
//! (see `callback_kit::batch`): one queue query per group of agents with the same pools and
//! departments, one read of the chosen callbacks' streams, one append to all their streams,
//! one projection write, one contact read and one commit. The queue query walks the
//! waiting queue from where the previous walk found its first waiting row (see
//! `queue_starts`), not over the dead entries that earlier claims left at its head.
//!
//! What a claim means does not change: each agent gets the most urgent due callback it may
//! take (expired leases first, then the waiting queue), rows locked with `SKIP LOCKED` so
//! concurrent batches never hand out the same callback, and a candidate over the tenant's
//! frequency caps is deferred with an event and the next one tried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use callback_calendar::Calendar;
use callback_eventstore::StreamName;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::queue_starts::{QueueKey, ScanPlan};
use super::*;
use crate::domain::{CallbackEvent, CallbackState, FrequencyCaps, TenantSettings};
use crate::error::{Error, Result};
use callback_kit::batch::{BatchQueue, Serve};

mod lease_caps;

/// A `ClaimNext` waiting for a worker.
pub(super) struct ClaimRequest {
    pub tenant_id: String,
    pub agent_id: String,
    /// As asked; empty means the agent's own departments.
    pub departments: Vec<String>,
    pub lease: Duration,
    pub reply: oneshot::Sender<Result<Option<Claim>>>,
}

pub(super) type ClaimQueue = BatchQueue<ClaimRequest>;

pub(super) const SERVE_CLAIMS: Serve<Scheduling, ClaimRequest> =
    |app, batch| Box::pin(async move { app.serve_claims(batch).await });

/// A queue row a group of agents may get, in urgency order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub callback_id: Uuid,
    pub stream_version: u64,
    /// Set when only this agent may take it (its owner, before the pool takes over).
    pub reserved_for: Option<String>,
}

/// Hands out candidates (in urgency order) to agents (in arrival order): a reserved row to its
/// agent, any other to the first agent still without one. The same as serving the agents one
/// after another, each taking the most urgent row it may. Returns each agent's candidate index.
pub(crate) fn assign(candidates: &[Candidate], agents: &[&str]) -> Vec<Option<usize>> {
    let mut assigned: Vec<Option<usize>> = vec![None; agents.len()];
    for (index, candidate) in candidates.iter().enumerate() {
        let taker = match &candidate.reserved_for {
            Some(owner) => agents
                .iter()
                .position(|a| a == owner)
                .filter(|&i| assigned[i].is_none()),
            None => assigned.iter().position(Option::is_none),
        };
        if let Some(agent) = taker {
            assigned[agent] = Some(index);
        }
    }
    assigned
}

/// A request still looking for a callback in this batch.
struct Want {
    request: usize,
    pools: Vec<String>,
    departments: Vec<String>,
    /// Candidates deferred for it so far (frequency caps).
    deferrals: usize,
}

/// A callback a batch locked for a request, with its state from its stream.
struct Picked {
    want: Want,
    state: CallbackState,
    version: u64,
}

type Tenants = HashMap<String, (Arc<TenantSettings>, Arc<Calendar>)>;

impl Scheduling {
    /// Serves a batch; when the batch as a whole fails, each request is tried alone so one
    /// request's problem is not every agent's answer.
    async fn serve_claims(&self, batch: Vec<ClaimRequest>) {
        let outcome = self.claim_batch(&batch).await;
        match outcome {
            Ok(results) => {
                for (request, result) in batch.into_iter().zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(request) = batch.into_iter().next() {
                    let _ = request.reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, requests = batch.len(), "claim batch failed; serving each alone");
                for request in batch {
                    let result = match self.claim_batch(std::slice::from_ref(&request)).await {
                        Ok(mut results) => results.pop().unwrap_or(Ok(None)),
                        Err(error) => Err(error),
                    };
                    let _ = request.reply.send(result);
                }
            }
        }
    }

    /// One transaction for a batch of claims: an answer per request, in order. An `Err`
    /// means nothing was written.
    async fn claim_batch(&self, requests: &[ClaimRequest]) -> Result<Vec<Result<Option<Claim>>>> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let mut answers: Vec<Option<Result<Option<Claim>>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut tenants: Tenants = HashMap::new();
        let mut wants = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            if !tenants.contains_key(&request.tenant_id) {
                match self.tenant(&mut tx, &request.tenant_id).await {
                    Ok(loaded) => {
                        tenants.insert(request.tenant_id.clone(), loaded);
                    }
                    Err(error) => {
                        answers[index] = Some(Err(error));
                        continue;
                    }
                }
            }
            let Some(agent) = tenants[&request.tenant_id].0.agent(&request.agent_id) else {
                answers[index] = Some(Err(Error::NotFound(format!(
                    "agent_id: agent `{}` of tenant `{}`",
                    request.agent_id, request.tenant_id
                ))));
                continue;
            };
            wants.push(Want {
                request: index,
                pools: agent.pools.clone(),
                departments: if request.departments.is_empty() {
                    agent.departments.clone()
                } else {
                    request.departments.clone()
                },
                deferrals: 0,
            });
        }

        let mut wants = self
            .within_lease_caps(&mut tx, wants, requests, &tenants, &mut answers, now)
            .await?;

        // Every callback this batch locked, so later rounds do not return them again (a
        // transaction's own locks are not skipped by SKIP LOCKED).
        let mut locked: Vec<Uuid> = Vec::new();
        let mut changes: Vec<(CallbackState, u64, CallbackEvent)> = Vec::new();
        let mut claimed: Vec<Picked> = Vec::new();
        // What each queue walk found, for the next walks once this batch has committed.
        let mut walks: Vec<(ScanPlan, Option<QueueKey>)> = Vec::new();
        while !wants.is_empty() {
            let mut again = Vec::new();
            let mut chosen: Vec<(Want, Uuid, u64)> = Vec::new();
            for group in group_wants(wants, requests) {
                let agents: Vec<&str> = group
                    .iter()
                    .map(|w| requests[w.request].agent_id.as_str())
                    .collect();
                let head = &group[0];
                let tenant_id = &requests[head.request].tenant_id;
                let plan = self
                    .queue_starts
                    .plan(tenant_id, &head.departments, Instant::now());
                let (candidates, first_waiting) = next_candidates(
                    &mut tx,
                    tenant_id,
                    &agents,
                    &head.pools,
                    &head.departments,
                    &locked,
                    &plan,
                    now,
                )
                .await?;
                walks.push((plan, first_waiting));
                locked.extend(candidates.iter().map(|c| c.callback_id));
                let exhausted = candidates.len() < group.len();
                let assignment = assign(&candidates, &agents);
                for (want, taken) in group.into_iter().zip(assignment) {
                    match taken {
                        Some(i) => {
                            let c = &candidates[i];
                            chosen.push((want, c.callback_id, c.stream_version));
                        }
                        // Fewer rows than agents: nothing (more) for this one now.
                        None if exhausted => answers[want.request] = Some(Ok(None)),
                        // The rows went to their owners: look further down the queue.
                        None => again.push(want),
                    }
                }
            }
            let picked = self.read_states(&mut tx, chosen).await?;
            let free_at = self
                .capped(&mut tx, &picked, requests, &tenants, now)
                .await?;
            for (mut pick, free_at) in picked.into_iter().zip(free_at) {
                let Some(free_at) = free_at else {
                    claimed.push(pick);
                    continue;
                };
                // Honour the cap even past the policy's window: the deadline moves with it.
                let calendar = &tenants[&requests[pick.want.request].tenant_id].1;
                let defer = pick.state.decide_defer(free_at, calendar, now);
                changes.push((pick.state, pick.version, defer));
                pick.want.deferrals += 1;
                if pick.want.deferrals >= MAX_DEFERRALS_PER_CLAIM {
                    answers[pick.want.request] = Some(Ok(None));
                } else {
                    again.push(pick.want);
                }
            }
            wants = again;
        }

        let mut claims = Vec::with_capacity(claimed.len());
        for pick in claimed {
            let request = &requests[pick.want.request];
            let lease_id = Uuid::now_v7();
            let lease_until = now + request.lease;
            // The walk found it open and claimable under the row lock.
            let event = pick
                .state
                .decide_claim(&request.agent_id, lease_id, lease_until, now)
                .map_err(super::callback_refused)?;
            claims.push(Granted {
                request: pick.want.request,
                lease_id,
                lease_until,
                change: changes.len(),
            });
            changes.push((pick.state, pick.version, event));
        }
        let states = self.write_changes(&mut tx, changes).await?;
        let contacts = contacts_of(&mut tx, &self.vault, &states, &claims).await?;
        self.store.commit(tx).await?;
        let committed_at = Instant::now();
        for (plan, first_waiting) in &walks {
            self.queue_starts
                .advance(plan, *first_waiting, committed_at);
        }
        for (granted, subject) in claims.into_iter().zip(contacts) {
            let state = states[granted.change].clone();
            tracing::info!(callback_id = %state.scheduled.callback_id, "callback claimed");
            answers[granted.request] = Some(Ok(Some(Claim {
                state,
                lease_id: granted.lease_id,
                lease_until: granted.lease_until,
                subject,
            })));
        }
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Ok(None)))
            .collect())
    }

    /// The chosen callbacks' states, folded from their streams read in one query; each
    /// stream must be at the version its row says (the row lock guards both).
    async fn read_states(
        &self,
        tx: &mut PgConnection,
        chosen: Vec<(Want, Uuid, u64)>,
    ) -> Result<Vec<Picked>> {
        let streams = chosen
            .iter()
            .map(|(_, id, _)| callback_stream(*id))
            .collect::<Result<Vec<StreamName>>>()?;
        let histories = self.store.read_streams_on(tx, &streams).await?;
        let mut picked = Vec::with_capacity(chosen.len());
        for ((want, callback_id, version), events) in chosen.into_iter().zip(histories) {
            if events.len() as u64 != version {
                return Err(Error::Corrupt(format!(
                    "callback {callback_id} projection is behind its stream"
                )));
            }
            let state = callback_state(&events)?
                .ok_or_else(|| Error::NotFound(format!("callback `{callback_id}`")))?;
            picked.push(Picked {
                want,
                state,
                version,
            });
        }
        Ok(picked)
    }

    /// For each picked callback, the time its subject is free again under the tenant's
    /// frequency caps, or `None` when it may be called now. One read per tenant with caps.
    async fn capped(
        &self,
        tx: &mut PgConnection,
        picked: &[Picked],
        requests: &[ClaimRequest],
        tenants: &Tenants,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<DateTime<Utc>>>> {
        let mut free_at = vec![None; picked.len()];
        let mut by_tenant: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, pick) in picked.iter().enumerate() {
            let tenant_id = requests[pick.want.request].tenant_id.as_str();
            if tenants[tenant_id].0.frequency_caps != FrequencyCaps::default() {
                by_tenant.entry(tenant_id).or_default().push(i);
            }
        }
        for (tenant_id, members) in by_tenant {
            let subjects: Vec<&str> = members
                .iter()
                .map(|&i| picked[i].state.scheduled.subject_id.as_str())
                .collect();
            // A person's attempts: the subject's, and those of subjects sharing its number.
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT me.subject_id, a.attempted_at FROM unnest($2::text[]) AS me(subject_id) \
                 JOIN sched_contact_attempts a ON a.tenant_id = $1 AND a.attempted_at > $3 \
                  AND (a.subject_id = me.subject_id OR a.subject_id IN ( \
                    SELECT o.subject_id FROM sched_subjects s \
                    JOIN sched_subjects o ON o.tenant_id = s.tenant_id AND o.phone_keys && s.phone_keys \
                    WHERE s.tenant_id = $1 AND s.subject_id = me.subject_id \
                      AND cardinality(s.phone_keys) > 0)) \
                 ORDER BY a.attempted_at",
            )
            .bind(tenant_id)
            .bind(&subjects)
            .bind(now - Duration::days(7))
            // Planned afresh (once per batch): a generic plan cached while the table was nearly
            // empty would scan all of it on every claim batch as it grows (as `cl_attempts` did).
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
            let caps = tenants[tenant_id].0.frequency_caps;
            for i in members {
                let subject = &picked[i].state.scheduled.subject_id;
                let attempts: Vec<DateTime<Utc>> = rows
                    .iter()
                    .filter(|(s, _)| s == subject)
                    .map(|(_, at)| *at)
                    .collect();
                free_at[i] = crate::domain::next_allowed_attempt(&caps, &attempts, now);
            }
        }
        Ok(free_at)
    }

    /// Appends each change to its callback's stream (one statement) and writes the rows.
    async fn write_changes(
        &self,
        tx: &mut PgConnection,
        changes: Vec<(CallbackState, u64, CallbackEvent)>,
    ) -> Result<Vec<CallbackState>> {
        let mut next = Vec::with_capacity(changes.len());
        let mut applied = Vec::with_capacity(changes.len());
        for (state, version, event) in changes {
            next.push(
                CallbackState::evolve(Some(state), &event)
                    .ok_or_else(|| Error::Corrupt("a callback change lost its state".into()))?,
            );
            applied.push((version, event));
        }
        let appends: Vec<(&CallbackState, u64, &[CallbackEvent])> = next
            .iter()
            .zip(&applied)
            .map(|(state, (version, event))| (state, *version, std::slice::from_ref(event)))
            .collect();
        self.append_callbacks(tx, &appends).await?;
        Ok(next)
    }
}

/// Wants of the same tenant, pools and departments see the same queue rows: one query each.
fn group_wants(wants: Vec<Want>, requests: &[ClaimRequest]) -> Vec<Vec<Want>> {
    let mut groups: Vec<Vec<Want>> = Vec::new();
    for want in wants {
        let same = groups.iter_mut().find(|g| {
            let head = &g[0];
            requests[head.request].tenant_id == requests[want.request].tenant_id
                && head.pools == want.pools
                && head.departments == want.departments
        });
        match same {
            Some(group) => group.push(want),
            None => groups.push(vec![want]),
        }
    }
    groups
}

/// Up to one queue row per agent of the group, locked, most urgent first: expired leases
/// (they were at the head of the queue when claimed), then the waiting queue walked from the
/// plan's start; and the first waiting row of these departments at or after that start
/// (locked or not, due or not), where the next walk may start.
#[allow(clippy::too_many_arguments)]
async fn next_candidates(
    tx: &mut PgConnection,
    tenant_id: &str,
    agents: &[&str],
    pools: &[String],
    departments: &[String],
    locked: &[Uuid],
    plan: &ScanPlan,
    now: DateTime<Utc>,
) -> Result<(Vec<Candidate>, Option<QueueKey>)> {
    // Each status is a literal, not a parameter: only then can a generic plan use its partial
    // index. For leases the expiry is a condition of its own, so the scan reads only expired
    // leases (inside an OR it read every live lease of the tenant). Overdue callbacks (past the
    // deadline, before the give-up time) are still claimable. The give-up time is written
    // so that it cannot be an index condition: as one (on the index's third column) it took
    // the place of the walk's start (`>= $8...`) in positioning the scan, which then began
    // at the head of the start's priority again.
    const ELIGIBLE: &str = "tenant_id = $1 AND due_at <= $2 AND give_up_at - $2 > interval '0' \
         AND (owner_agent_id = ANY($3) OR (pool = ANY($4) AND (owner_agent_id IS NULL OR pool_after <= $2))) \
         AND (cardinality($5::text[]) = 0 OR department = ANY($5)) \
         AND callback_id <> ALL($6)";
    const COLUMNS: &str =
        "callback_id, stream_version, owner_agent_id, pool, pool_after, priority, deadline, due_at";
    const FROM_START: &str = "(priority, deadline, due_at, callback_id) >= ($8, $9, $10, $11)";
    // The `queue` column: 0 expired leases, 1 waiting rows, and this for the first waiting row.
    const FIRST_WAITING: i32 = 2;
    let sql = format!(
        "WITH expired AS ( \
            SELECT {COLUMNS}, 0 AS queue \
            FROM sched_callbacks WHERE status = 'claimed' AND lease_until <= $2 AND {ELIGIBLE} \
            ORDER BY priority, deadline, due_at, callback_id LIMIT $7 FOR UPDATE SKIP LOCKED \
         ), waiting AS ( \
            SELECT {COLUMNS}, 1 AS queue \
            FROM sched_callbacks WHERE status = 'scheduled' AND {ELIGIBLE} AND {FROM_START} \
            ORDER BY priority, deadline, due_at, callback_id \
            LIMIT $7 - (SELECT count(*) FROM expired) FOR UPDATE SKIP LOCKED \
         ), first_waiting AS ( \
            SELECT callback_id, NULL::bigint, NULL::text, NULL::text, NULL::timestamptz, priority, deadline, due_at, {FIRST_WAITING} \
            FROM sched_callbacks WHERE status = 'scheduled' AND tenant_id = $1 \
            AND (cardinality($5::text[]) = 0 OR department = ANY($5)) AND {FROM_START} \
            ORDER BY priority, deadline, due_at, callback_id LIMIT 1 \
         ) \
         SELECT {COLUMNS}, queue FROM ( \
            SELECT * FROM expired UNION ALL SELECT * FROM waiting UNION ALL SELECT * FROM first_waiting \
         ) c ORDER BY queue, priority, deadline, due_at, callback_id"
    );
    let from = plan.start_key();
    let rows = sqlx::query(&sql)
        .bind(tenant_id)
        .bind(now)
        .bind(agents)
        .bind(pools)
        .bind(departments)
        .bind(locked)
        .bind(agents.len() as i64)
        .bind(from.priority)
        .bind(from.deadline)
        .bind(from.due_at)
        .bind(from.callback_id)
        .fetch_all(&mut *tx)
        .await?;
    let mut candidates = Vec::with_capacity(rows.len());
    let mut first_waiting = None;
    for row in &rows {
        let callback_id: Uuid = row.try_get("callback_id")?;
        let queue: i32 = row.try_get("queue")?;
        if queue == FIRST_WAITING {
            first_waiting = Some(QueueKey {
                priority: row.try_get("priority")?,
                deadline: row.try_get("deadline")?,
                due_at: row.try_get("due_at")?,
                callback_id,
            });
            continue;
        }
        let owner: Option<String> = row.try_get("owner_agent_id")?;
        let pool: String = row.try_get("pool")?;
        let pool_after: DateTime<Utc> = row.try_get("pool_after")?;
        let version: i64 = row.try_get("stream_version")?;
        // Anyone of the group may take a row of its pools that no owner holds (any more);
        // any other row came back for its owner.
        let open_to_pool = pools.contains(&pool) && (owner.is_none() || pool_after <= now);
        candidates.push(Candidate {
            callback_id,
            stream_version: version as u64,
            reserved_for: if open_to_pool { None } else { owner },
        });
    }
    Ok((candidates, first_waiting))
}

/// A claim a batch grants: whose, its lease, and which change carries it.
struct Granted {
    request: usize,
    lease_id: Uuid,
    lease_until: DateTime<Utc>,
    change: usize,
}

/// The claimed subjects' contact details, one read per tenant, in the order of `claims`:
/// opened for the claiming agent with each subject's key (read in the same query). An erased
/// or restricted subject has no contact details.
async fn contacts_of(
    tx: &mut PgConnection,
    vault: &callback_vault::Vault,
    states: &[CallbackState],
    claims: &[Granted],
) -> Result<Vec<SubjectContact>> {
    let mut found: HashMap<(String, String), SubjectContact> = HashMap::new();
    let mut by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
    for granted in claims {
        let s = &states[granted.change].scheduled;
        by_tenant
            .entry(s.tenant_id.as_str())
            .or_default()
            .push(s.subject_id.as_str());
    }
    for (tenant_id, subjects) in by_tenant {
        let rows = sqlx::query(
            // The key by a primary-key lookup per subject: `OFFSET 0` keeps the planner from
            // flattening the subquery into a join, which the prepared statement's generic plan
            // ran as a hash join over the whole key table on every claim batch (measured:
            // claims -25%, p99 doubled).
            "SELECT s.subject_id, s.sealed, s.owner_agent_id, s.department, \
                    k.master_key_id, k.wrapped, k.restricted \
             FROM sched_subjects s LEFT JOIN LATERAL ( \
               SELECT v.master_key_id, v.wrapped, v.restricted FROM vault_subject_keys v \
               WHERE v.tenant_id = s.tenant_id AND v.subject_id = s.subject_id OFFSET 0) k ON true \
             WHERE s.tenant_id = $1 AND s.subject_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&subjects)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let subject_id: String = row.try_get("subject_id")?;
            let sealed: Option<String> = row.try_get("sealed")?;
            let master_key_id: Option<String> = row.try_get("master_key_id")?;
            let key = match (master_key_id, row.try_get::<Option<Vec<u8>>, _>("wrapped")?) {
                (Some(id), Some(wrapped)) => Some(vault.unwrap(
                    tenant_id,
                    &subject_id,
                    &id,
                    &wrapped,
                    row.try_get("restricted")?,
                )?),
                _ => None,
            };
            let clear = match sealed {
                Some(sealed) => callback_vault::open_json::<ClearContact>(key.as_ref(), &sealed)?
                    .clear()
                    .unwrap_or_default(),
                None => ClearContact::default(),
            };
            found.insert(
                (tenant_id.to_owned(), subject_id.clone()),
                SubjectContact {
                    subject_id,
                    name: clear.name,
                    phones: clear.phones,
                    owner_agent_id: row.try_get("owner_agent_id")?,
                    department: row.try_get("department")?,
                    ..SubjectContact::default()
                },
            );
        }
    }
    claims
        .iter()
        .map(|granted| {
            let s = &states[granted.change].scheduled;
            found
                .get(&(s.tenant_id.clone(), s.subject_id.clone()))
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("subject of tenant {} missing", s.tenant_id)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(n: u128) -> Candidate {
        Candidate {
            callback_id: Uuid::from_u128(n),
            stream_version: 1,
            reserved_for: None,
        }
    }

    fn reserved(n: u128, owner: &str) -> Candidate {
        Candidate {
            reserved_for: Some(owner.into()),
            ..open(n)
        }
    }

    #[test]
    fn agents_take_the_most_urgent_rows_in_arrival_order() {
        assert_eq!(
            assign(&[open(1), open(2), open(3)], &["a", "b"]),
            vec![Some(0), Some(1)]
        );
    }

    #[test]
    fn a_reserved_row_goes_to_its_owner_only() {
        // b's own row is the most urgent; a takes the next open one.
        assert_eq!(
            assign(&[reserved(1, "b"), open(2)], &["a", "b"]),
            vec![Some(1), Some(0)]
        );
        // A row reserved for someone outside the group, or for an agent already served, is
        // left for later.
        assert_eq!(assign(&[reserved(1, "z"), open(2)], &["a"]), vec![Some(1)]);
        assert_eq!(
            assign(&[open(1), reserved(2, "a")], &["a", "b"]),
            vec![Some(0), None]
        );
    }

    #[test]
    fn fewer_rows_than_agents_leaves_the_last_arrivals_without() {
        assert_eq!(assign(&[open(1)], &["a", "b"]), vec![Some(0), None]);
        assert_eq!(assign(&[], &["a"]), vec![None]);
    }
}
