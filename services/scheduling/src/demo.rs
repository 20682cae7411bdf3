//! A month of hospital and car-dealer traffic on simulated time, for `callbackd demo` and
//! for tests that need realistic volume (the rebuild test replays it).
//!
//! Deterministic: the same seed gives the same traffic, outcomes and numbers.

use std::collections::BTreeMap;

use callback_rules::ManualClock;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use crate::app::{Scheduling, SubjectContact};
use crate::domain::{BusinessFact, Disposition};
use crate::error::Result;

/// What the month produced, by tenant, policy and final status (`lost: deadline passed` ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub facts: u64,
    /// Facts entered days after they happened (a holiday backlog, a late warranty report).
    pub late_facts: u64,
    pub claims: u64,
    /// Callbacks reached after their deadline, before their give-up time: reached (回访) but
    /// not on time (及时).
    pub reached_overdue: u64,
    pub by_outcome: BTreeMap<(String, String, String), u64>,
}

/// A tiny deterministic generator (no dependency, stable across platforms).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

const HOSPITAL: &str = "demo-hospital";
const DEALER: &str = "demo-dealer";

fn shanghai(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

/// Publishes the demo tenants and policies (idempotent in effect: a new version each time).
pub async fn publish_demo_tenants(app: &Scheduling) -> Result<()> {
    let hospital_agents: Vec<_> = (0..6)
        .map(|i| json!({"agent_id": format!("nurse-{i}"), "departments": ["cardiology", "surgery"], "pools": ["ward-nurses"]}))
        .chain((0..3).map(|i| json!({"agent_id": format!("dr-{i}"), "departments": ["cardiology"]})))
        .collect();
    app.publish_tenant(
        HOSPITAL,
        &json!({
            "calendar": {"time_zone": "Asia/Shanghai",
                         "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
                         "holidays": ["2026-10-01","2026-10-02","2026-10-03","2026-10-04","2026-10-05","2026-10-06","2026-10-07"],
                         "extra_working_days": ["2026-09-27", "2026-10-10"]},
            "departments": ["cardiology", "surgery"], "pools": ["ward-nurses"], "agents": hospital_agents,
            "frequency_caps": {"per_day": 1, "per_week": 3}
        })
        .to_string(),
    )
    .await?;
    app.publish_policy(
        HOSPITAL,
        &json!({
            "policy_id": "ward-discharge", "name": "出院回访",
            "trigger": {"event_type": "patient.discharged", "filters": [{"attribute": "visit_type", "equals": "inpatient"}]},
            "cancel_on": ["patient.discharge_cancelled", "patient.deceased"],
            "steps": [
                {"name": "first", "questionnaire_id": "discharge-v3",
                 "owner": {"kind": "subject_owner", "fallback_pool": "ward-nurses", "pool_after_hours": 24},
                 "retry": {"max_attempts": 3, "default_spacing_minutes": 120, "spacing_minutes": {"busy": 30}},
                 "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 7}}},
                {"name": "second", "owner": {"kind": "pool", "pool": "ward-nurses"},
                 "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 8}, "latest": {"months": 2}}}
            ]
        })
        .to_string(),
    )
    .await?;
    app.publish_policy(
        HOSPITAL,
        &json!({
            "policy_id": "outpatient-sample", "name": "门诊抽样回访",
            "trigger": {"event_type": "patient.discharged", "filters": [{"attribute": "visit_type", "equals": "outpatient"}]},
            "steps": [{"name": "survey", "owner": {"kind": "pool", "pool": "ward-nurses"}, "sample_rate": 0.05,
                       "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 7}}}]
        })
        .to_string(),
    )
    .await?;
    let dealer_agents: Vec<_> = (0..4)
        .map(|i| json!({"agent_id": format!("advisor-{i}"), "pools": ["info-office"]}))
        .collect();
    app.publish_tenant(
        DEALER,
        &json!({
            "calendar": {"time_zone": "Asia/Shanghai",
                         "windows": [{"start": "09:00", "end": "11:00"}, {"start": "15:00", "end": "17:00"}],
                         "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
            "pools": ["info-office"], "agents": dealer_agents
        })
        .to_string(),
    )
    .await?;
    app.publish_policy(
        DEALER,
        &json!({
            "policy_id": "vehicle-sold", "name": "新车交付回访", "trigger": {"event_type": "vehicle.sold"},
            "steps": [
                {"name": "advisor", "owner": {"kind": "subject_owner", "fallback_pool": "info-office", "pool_after_hours": 48},
                 "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 7}}},
                {"name": "information-officer", "owner": {"kind": "pool", "pool": "info-office"},
                 "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 8}, "latest": {"months": 1}}}
            ]
        })
        .to_string(),
    )
    .await?;
    app.publish_policy(
        DEALER,
        &json!({
            "policy_id": "repair-order", "name": "维修回访", "trigger": {"event_type": "repair_order.closed"},
            "steps": [{"name": "within-3-days", "owner": {"kind": "pool", "pool": "info-office"},
                       "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 3}}}]
        })
        .to_string(),
    )
    .await?;
    Ok(())
}

/// Runs `days` days of traffic from 2026-09-07 (Shanghai): business facts every working hour,
/// agents claiming and reporting outcomes, the deadline watch every evening.
pub async fn run(
    app: &Scheduling,
    clock: &ManualClock,
    days: i64,
    seed: u64,
) -> Result<DemoSummary> {
    publish_demo_tenants(app).await?;
    let mut rng = Lcg(seed);
    let mut summary = DemoSummary::default();
    let hospital_agents: Vec<String> = (0..6)
        .map(|i| format!("nurse-{i}"))
        .chain((0..3).map(|i| format!("dr-{i}")))
        .collect();
    let dealer_agents: Vec<String> = (0..4).map(|i| format!("advisor-{i}")).collect();
    let start = shanghai(2026, 9, 7, 8);
    for day in 0..days {
        for hour in 0..10 {
            let now = start + Duration::days(day) + Duration::hours(hour);
            clock.set(now);
            // Facts: discharges (some outpatient), vehicle sales and repair orders.
            for _ in 0..rng.next(4) {
                summary.facts += 1;
                let n = summary.facts;
                let (tenant, event_type, attributes, owner) = match rng.next(4) {
                    0 => (
                        DEALER,
                        "vehicle.sold",
                        json!({}),
                        Some(format!("advisor-{}", rng.next(4))),
                    ),
                    1 => (DEALER, "repair_order.closed", json!({}), None),
                    2 => (
                        HOSPITAL,
                        "patient.discharged",
                        json!({"visit_type": "outpatient"}),
                        None,
                    ),
                    _ => (
                        HOSPITAL,
                        "patient.discharged",
                        json!({"visit_type": "inpatient"}),
                        Some(format!("dr-{}", rng.next(3))),
                    ),
                };
                let fact = BusinessFact {
                    tenant_id: tenant.into(),
                    source: "demo".into(),
                    source_event_id: format!("fact-{seed}-{n}"),
                    event_type: event_type.into(),
                    occurred_at: if rng.next(8) == 0 {
                        // Entered late: 3 to 20 days after it happened.
                        summary.late_facts += 1;
                        now - Duration::days(3 + rng.next(18) as i64)
                    } else {
                        now - Duration::minutes(rng.next(120) as i64)
                    },
                    subject_id: format!("subject-{n}"),
                    attributes: attributes.as_object().cloned().unwrap_or_default(),
                };
                let subject = SubjectContact {
                    subject_id: format!("subject-{n}"),
                    name: "演示客户".into(),
                    phones: vec![format!("1380013{:04}", n % 10_000)],
                    owner_agent_id: owner,
                    department: (tenant == HOSPITAL).then(|| "cardiology".to_owned()),
                    ..Default::default()
                };
                app.ingest(fact, subject).await?;
            }
            // Agents work the queue, except during four days each fortnight when nobody
            // calls: work piles up past its deadlines, and is reached overdue afterwards or
            // given up.
            let short_staffed = (3..7).contains(&(day % 14));
            for (tenant, agents) in [(HOSPITAL, &hospital_agents), (DEALER, &dealer_agents)] {
                let agents = if short_staffed {
                    &agents[..0]
                } else {
                    &agents[..]
                };
                for agent in agents.iter() {
                    let Some(claim) = app.claim_next(tenant, agent, &[], 0).await? else {
                        continue;
                    };
                    summary.claims += 1;
                    let disposition = match rng.next(10) {
                        0..=5 => Disposition::Reached,
                        6 => Disposition::NoAnswer,
                        7 => Disposition::Busy,
                        8 => Disposition::NotConvenient {
                            named_time: now + Duration::hours(20 + rng.next(30) as i64),
                        },
                        _ => Disposition::WrongNumber,
                    };
                    if disposition == Disposition::Reached && claim.state.deadline < now {
                        summary.reached_overdue += 1;
                    }
                    let attempt = format!("attempt-{}", summary.claims);
                    app.record_outcome(
                        claim.state.scheduled.callback_id,
                        &attempt,
                        agent,
                        claim.lease_id,
                        &disposition,
                        now,
                    )
                    .await?;
                }
            }
        }
        clock.set(start + Duration::days(day) + Duration::hours(16));
        app.sweep_deadlines().await?;
    }
    let rows: Vec<(String, String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT tenant_id, policy_id, status, end_reason, count(*) FROM sched_callbacks \
         WHERE tenant_id IN ($1, $2) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .bind(HOSPITAL)
    .bind(DEALER)
    .fetch_all(app.store().pool())
    .await?;
    for (tenant, policy, status, reason, count) in rows {
        let outcome = match (status.as_str(), reason) {
            ("lost", Some(reason)) => format!("lost: {reason}"),
            _ => status,
        };
        *summary
            .by_outcome
            .entry((tenant, policy, outcome))
            .or_default() += count as u64;
    }
    Ok(summary)
}
