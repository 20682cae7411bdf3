//! Analytics end to end: a month of hospital traffic driven through the real services over gRPC
//! on simulated time (discharges, claims, attempts with answers, complaints raised and handled,
//! verification callbacks, corrections, late telephony records); then every metric is computed
//! independently, straight from the event log, and compared with the analytics service's answers;
//! then the analytics read models are rebuilt from zero and give the same numbers.

#![allow(clippy::unwrap_used)]

use callback_contracts::call_logging::{
    HonestyFlagRaised, QuestionnairePublished, SharedContactFlagged, SurveyAnswered,
};
use callback_contracts::complaint_routing::ComplaintEvent;
use callback_contracts::scheduling::CallbackEvent;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::v1::analytics_client::AnalyticsClient;
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ComplaintActionRequest, ComplaintReport, Disposition, IngestBusinessEventRequest,
    IngestTelephonyRecordRequest, ListCallbacksRequest, ListComplaintsRequest,
    LogCallAttemptRequest, MonthlySummaryRequest, PublishAnalyticsSettingsRequest,
    PublishPolicyRequest, PublishQuestionnaireRequest, PublishRoutingRulesRequest,
    PublishTenantRequest, ReportRequest, ReportResponse, SpotCheckRequest, Subject,
};
use callback_rules::{Clock, ManualClock};
use callback_tests::{eventually, System};
use chrono::{DateTime, Datelike, Duration as Span, TimeZone, Utc};
use prost_types::Timestamp;
use serde_json::{json, Value};
use tonic::transport::Channel;

const TENANT: &str = "hospital";
const AGENTS: [&str; 3] = ["nurse-1", "nurse-2", "nurse-3"];

fn shanghai(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(callback_kit::wire::timestamp(t))
}

/// A small deterministic generator (the test must not depend on luck).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone)]
struct Clients {
    scheduling: SchedulingClient<Channel>,
    calls: CallLoggingClient<Channel>,
    complaints: ComplaintRoutingClient<Channel>,
    analytics: AnalyticsClient<Channel>,
}

impl Clients {
    fn new(system: &System) -> Clients {
        Clients {
            scheduling: SchedulingClient::new(system.channel(ServiceKind::Scheduling)),
            calls: CallLoggingClient::new(system.channel(ServiceKind::CallLogging)),
            complaints: ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting)),
            analytics: AnalyticsClient::new(system.channel(ServiceKind::Analytics)),
        }
    }
}

async fn publish(c: &mut Clients) {
    let agents: Vec<Value> = AGENTS
        .iter()
        .map(|a| json!({"agent_id": a, "pools": ["nurses"]}))
        .collect();
    c.scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: TENANT.into(),
            settings_json: json!({
                "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]},
                "pools": ["nurses"], "agents": agents
            })
            .to_string(),
        })
        .await
        .unwrap();
    for policy in [
        json!({"policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
               "cancel_on": ["patient.discharge_cancelled"],
               "steps": [{"name": "first", "questionnaire_id": "sat-v1", "owner": {"kind": "pool", "pool": "nurses"},
                          "retry": {"max_attempts": 3, "default_spacing_minutes": 60},
                          "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 3}}}]}),
        json!({"policy_id": "verification", "name": "监督回访", "trigger": {"event_type": "complaint.resolved"},
               "steps": [{"name": "verify", "questionnaire_id": "verify-v1", "priority": 1, "owner": {"kind": "pool", "pool": "nurses"},
                          "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"working_hours": 24}}}]}),
    ] {
        c.scheduling
            .publish_policy(PublishPolicyRequest {
                tenant_id: TENANT.into(),
                policy_json: policy.to_string(),
            })
            .await
            .unwrap();
    }
    for questionnaire in [
        json!({"questionnaire_id": "sat-v1", "title": "出院满意度", "items": [
            {"id": "nursing", "text": "护理", "kind": {"type": "rating"}, "required": true},
            {"id": "doctor", "text": "医生", "kind": {"type": "rating"}, "required": true},
            {"id": "recommend", "text": "推荐", "kind": {"type": "recommend"}, "required": true},
            {"id": "recovered", "text": "恢复", "kind": {"type": "yes_no"}, "required": false}]}),
        json!({"questionnaire_id": "verify-v1", "title": "监督回访", "items": [
            {"id": "satisfied", "text": "满意吗", "kind": {"type": "yes_no"}, "required": true}]}),
    ] {
        c.calls
            .publish_questionnaire(PublishQuestionnaireRequest {
                tenant_id: TENANT.into(),
                questionnaire_json: questionnaire.to_string(),
            })
            .await
            .unwrap();
    }
    c.complaints
        .publish_routing_rules(PublishRoutingRulesRequest {
            tenant_id: TENANT.into(),
            rules_json: json!({
                "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}]},
                "default_route": {"class": "C", "origin": "our_service", "department": "patient_services"},
                "categories": [
                    {"category": "nursing", "class": "C", "origin": "our_service", "department": "nursing"},
                    {"category": "billing", "class": "E", "origin": "our_service", "department": "finance"},
                    {"category": "injury", "class": "A", "origin": "our_service", "department": "medical"}
                ],
                "targets": {
                    "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 16},
                    "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 24},
                    "C": {"first_response_hours": 4, "update_hours": 16, "resolution_hours": 24},
                    "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 40},
                    "E": {"first_response_hours": 8, "update_hours": 40, "resolution_hours": 40}
                },
                "departments": {
                    "nursing": {"handler": "ward-desk", "head": "head-nurse", "manager": "nursing-director"},
                    "finance": {"handler": "fin-desk", "head": "fin-head", "manager": "cfo"},
                    "medical": {"handler": "med-desk", "head": "med-head", "manager": "medical-director"},
                    "patient_services": {"handler": "ps-desk", "head": "ps-head", "manager": "medical-director"}
                },
                "general_manager": "president"
            })
            .to_string(),
        })
        .await
        .unwrap();
    c.analytics
        .publish_analytics_settings(PublishAnalyticsSettingsRequest {
            tenant_id: TENANT.into(),
            settings_json: json!({"min_sample": 5, "spot_check_rate": 0.3,
                                  "reviewers": ["sup-1", "nurse-1"], "population": 2000})
            .to_string(),
        })
        .await
        .unwrap();
}

/// One working day of traffic at `day` (a date in September).
async fn run_day(c: &mut Clients, clock: &ManualClock, rng: &mut Lcg, day: u32, n: &mut u32) {
    clock.set(shanghai(9, day, 8, 0));
    for _ in 0..5 {
        *n += 1;
        let department = ["ward-a", "ward-b"][rng.next(2) as usize];
        c.scheduling
            .ingest_business_event(IngestBusinessEventRequest {
                tenant_id: TENANT.into(),
                source: "his".into(),
                source_event_id: format!("adt-{n}"),
                event_type: "patient.discharged".into(),
                occurred_at: ts(shanghai(9, day, 7, 0)),
                subject: Some(Subject {
                    subject_id: format!("p{n}"),
                    name: "病人".into(),
                    phones: vec![format!("1390000{:04}", n)],
                    department: department.into(),
                    ..Default::default()
                }),
                attributes_json: String::new(),
            })
            .await
            .unwrap();
        // One discharge in eight is corrected (cancelled) the same morning.
        if rng.next(8) == 0 {
            c.scheduling
                .ingest_business_event(IngestBusinessEventRequest {
                    tenant_id: TENANT.into(),
                    source: "his".into(),
                    source_event_id: format!("adt-{n}-cancel"),
                    event_type: "patient.discharge_cancelled".into(),
                    occurred_at: ts(shanghai(9, day, 7, 30)),
                    subject: Some(Subject {
                        subject_id: format!("p{n}"),
                        ..Default::default()
                    }),
                    attributes_json: String::new(),
                })
                .await
                .unwrap();
        }
    }
    for hour in [9, 10, 11, 14, 15, 16] {
        for agent in AGENTS {
            let at = shanghai(9, day, hour, 5 + 10 * (rng.next(4) as u32));
            clock.set(at);
            let Some(claimed) = callback_tests::claim(&mut c.scheduling, TENANT, agent).await
            else {
                continue;
            };
            *n += 1;
            let attempt_id = format!("att-{n}");
            let verification = claimed.policy_id == "verification";
            let roll = rng.next(100);
            let (kind, seconds) = match roll {
                0..=54 => ("reached", if rng.next(10) == 0 { 5 } else { 180 }),
                55..=79 => ("no_answer", 30),
                80..=92 => ("busy", 10),
                _ => ("wrong_number", 20),
            };
            let mut request = LogCallAttemptRequest {
                attempt_id: attempt_id.clone(),
                tenant_id: TENANT.into(),
                callback_id: claimed.callback_id.clone(),
                lease_id: claimed.lease_id.clone(),
                agent_id: agent.into(),
                channel: "phone".into(),
                started_at: ts(at),
                ended_at: ts(at + Span::seconds(seconds)),
                disposition: Some(Disposition {
                    kind: kind.into(),
                    named_time: None,
                }),
                telephony_call_id: format!("cdr-{attempt_id}"),
                ..Default::default()
            };
            if kind == "reached" {
                if verification {
                    request.questionnaire_id = "verify-v1".into();
                    request.answers_json = json!({"satisfied": rng.next(3) != 0}).to_string();
                } else {
                    request.questionnaire_id = "sat-v1".into();
                    request.answers_json = json!({
                        "nursing": 1 + rng.next(5), "doctor": 2 + rng.next(4),
                        "recommend": rng.next(11), "recovered": rng.next(2) == 0
                    })
                    .to_string();
                    if rng.next(6) == 0 {
                        let category =
                            ["nursing", "billing", "injury", "parking"][rng.next(4) as usize];
                        request.complaint = Some(ComplaintReport {
                            text: "投诉内容".into(),
                            category: category.into(),
                            topic: format!("topic-{}", rng.next(3)),
                            ..Default::default()
                        });
                    }
                }
                request.questionnaire_version = 1;
            }
            c.calls.log_call_attempt(request).await.unwrap();
            // Telephony records arrive later; one in five contradicts a "reached".
            if kind == "reached" && rng.next(5) == 0 {
                c.calls
                    .ingest_telephony_record(IngestTelephonyRecordRequest {
                        tenant_id: TENANT.into(),
                        call_id: format!("cdr-{attempt_id}"),
                        number_dialed: "13900000000".into(),
                        started_at: ts(at),
                        answered_at: None,
                        ended_at: ts(at + Span::seconds(40)),
                        billable_seconds: 0,
                        network_result: "NOANSWER".into(),
                    })
                    .await
                    .unwrap();
            }
        }
    }
    // The departments handle open complaints at the end of the day.
    clock.set(shanghai(9, day, 17, 0));
    let open = c
        .complaints
        .list_complaints(ListComplaintsRequest {
            tenant_id: TENANT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .complaints;
    for complaint in open {
        let action = |text: &str| ComplaintActionRequest {
            tenant_id: TENANT.into(),
            complaint_id: complaint.complaint_id.clone(),
            actor: "desk".into(),
            text: text.into(),
            to_department: String::new(),
        };
        let result = match (complaint.status.as_str(), rng.next(10)) {
            ("open", 0) => c.complaints.reject(action("not a hospital matter")).await,
            ("open", 1..=3) => c.complaints.resolve(action("settled at once")).await,
            ("open", _) => c.complaints.acknowledge(action("")).await,
            ("in_progress", 0..=6) => c.complaints.resolve(action("resolved")).await,
            _ => continue,
        };
        result.unwrap();
    }
}

/// Every analytics figure we compare, computed straight from the event log.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    callbacks: BTreeMap<String, Vec<Option<f64>>>,
    /// Due and reached callbacks by the local day (and the local week's Monday) of their due
    /// time; the tenant is in Shanghai (UTC+8 all year).
    by_day: BTreeMap<String, Vec<Option<f64>>>,
    by_week: BTreeMap<String, Vec<Option<f64>>>,
    /// Due and reached callbacks by policy: grouped by policy, and asked of each policy alone
    /// with a filter (the two index paths of the report query).
    by_policy: BTreeMap<String, Vec<Option<f64>>>,
    filtered_by_policy: BTreeMap<String, Vec<Option<f64>>>,
    satisfaction: BTreeMap<String, Vec<Option<f64>>>,
    complaints: BTreeMap<String, Vec<Option<f64>>>,
    honesty: BTreeMap<String, Vec<Option<f64>>>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// PostgreSQL's `percentile_cont`: linear interpolation between the closest ranks.
fn percentile_cont(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    Some(sorted[lo] + (position - lo as f64) * (sorted[hi] - sorted[lo]))
}

async fn expected_from_log(
    pool: &sqlx::PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Expected {
    let rows: Vec<(String, String, String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT stream_id, event_type, payload::text, recorded_at, stream_version FROM events \
         ORDER BY transaction_id, position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    #[derive(Default)]
    struct Cb {
        department: String,
        policy: String,
        due_at: Option<DateTime<Utc>>,
        deadline: Option<DateTime<Utc>>,
        status: String,
        attempts: f64,
        reached_at: Option<DateTime<Utc>>,
    }
    #[derive(Default)]
    struct Complaint {
        class: String,
        filed_at: Option<DateTime<Utc>>,
        rejected: bool,
        responded: bool,
        first_breached: bool,
        update_breached: bool,
        resolution_breached: bool,
        resolved: bool,
        resolved_at: Option<DateTime<Utc>>,
        reopened: bool,
        verifications: f64,
        satisfied: f64,
    }
    let mut callbacks: HashMap<String, Cb> = HashMap::new();
    let mut item_kinds: HashMap<(String, i64, String), String> = HashMap::new();
    let mut answers: Vec<(String, String, String, i64, Value)> = Vec::new();
    let mut complaints: HashMap<String, Complaint> = HashMap::new();
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let time = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    for (stream, event_type, payload, recorded_at, version) in rows {
        let p: Value = serde_json::from_str(&payload).unwrap();
        if let Some(id) = stream.strip_prefix("callback-") {
            let cb = callbacks.entry(id.to_owned()).or_default();
            match event_type.as_str() {
                CallbackEvent::SCHEDULED => {
                    cb.department = p["department"].as_str().unwrap_or("").to_owned();
                    cb.policy = p["policy_id"].as_str().unwrap().to_owned();
                    cb.due_at = Some(time(&p["due_at"]));
                    cb.deadline = Some(time(&p["deadline"]));
                    cb.status = "open".into();
                }
                CallbackEvent::ATTEMPTED => cb.attempts += 1.0,
                CallbackEvent::RESCHEDULED => cb.deadline = Some(time(&p["deadline"])),
                CallbackEvent::COMPLETED => {
                    cb.status = "completed".into();
                    cb.reached_at = Some(time(&p["at"]));
                }
                CallbackEvent::LOST | CallbackEvent::SKIPPED => cb.status = "lost".into(),
                CallbackEvent::CANCELLED => cb.status = "cancelled".into(),
                _ => {}
            }
        } else if let Some(id) = stream.strip_prefix("complaint-") {
            let k = complaints.entry(id.to_owned()).or_default();
            match event_type.as_str() {
                ComplaintEvent::FILED => {
                    k.class = p["class"].as_str().unwrap().to_owned();
                    k.filed_at = Some(time(&p["at"]));
                }
                ComplaintEvent::RECLASSIFIED => k.class = p["to"].as_str().unwrap().to_owned(),
                ComplaintEvent::ACKNOWLEDGED
                | ComplaintEvent::PROGRESS_ADDED
                | ComplaintEvent::INFORMATION_REQUESTED => k.responded = true,
                ComplaintEvent::RESOLVED => {
                    k.responded = true;
                    k.resolved = true;
                    k.resolved_at.get_or_insert(time(&p["at"]));
                }
                ComplaintEvent::REJECTED => {
                    k.responded = true;
                    k.rejected = true;
                }
                ComplaintEvent::CLOCK_BREACHED => match p["clock"].as_str().unwrap() {
                    "first_response" => k.first_breached = true,
                    "update" => k.update_breached = true,
                    _ => k.resolution_breached = true,
                },
                ComplaintEvent::VERIFICATION_ANSWERED => {
                    k.verifications += 1.0;
                    if p["satisfied"].as_bool().unwrap() {
                        k.satisfied += 1.0;
                    }
                }
                ComplaintEvent::REOPENED => k.reopened = true,
                _ => {}
            }
        } else if event_type == QuestionnairePublished::EVENT_TYPE {
            let q = &p["questionnaire"];
            for item in q["items"].as_array().unwrap() {
                item_kinds.insert(
                    (
                        q["questionnaire_id"].as_str().unwrap().to_owned(),
                        version,
                        item["id"].as_str().unwrap().to_owned(),
                    ),
                    item["kind"]["type"].as_str().unwrap().to_owned(),
                );
            }
        } else if event_type == SurveyAnswered::EVENT_TYPE {
            for (item, value) in p["answers"].as_object().unwrap() {
                answers.push((
                    p["callback_id"].as_str().unwrap().to_owned(),
                    p["questionnaire_id"].as_str().unwrap().to_owned(),
                    item.clone(),
                    p["questionnaire_version"].as_i64().unwrap(),
                    value.clone(),
                ));
            }
        } else if event_type == HonestyFlagRaised::EVENT_TYPE {
            let at = p.get("attempt_started_at").map(time).unwrap_or(recorded_at);
            if at >= from && at < to {
                flags
                    .entry(p["kind"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(p["attempt_id"].as_str().unwrap().to_owned());
            }
        } else if event_type == SharedContactFlagged::EVENT_TYPE {
            // Subjects sharing one number: dated when flagged, one per pair of subjects.
            if recorded_at >= from && recorded_at < to {
                flags
                    .entry("shared_contact".to_owned())
                    .or_default()
                    .push(format!(
                        "{}|{}",
                        p["subject_id"].as_str().unwrap(),
                        p["other_subject_id"].as_str().unwrap()
                    ));
            }
        }
    }
    let in_range = |cb: &Cb| {
        cb.status != "cancelled" && cb.due_at.is_some_and(|d| d >= from && d < to && d <= now)
    };
    let mut expected = Expected::default();
    let china = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    for cb in callbacks.values().filter(|cb| in_range(cb)) {
        let day = cb.due_at.unwrap().with_timezone(&china).date_naive();
        let monday = day - Span::days(i64::from(day.weekday().num_days_from_monday()));
        let reached = f64::from(cb.status == "completed");
        let day = day.format("%Y-%m-%d").to_string();
        let monday = monday.format("%Y-%m-%d").to_string();
        for (groups, key) in [
            (&mut expected.by_day, day),
            (&mut expected.by_week, monday),
            (&mut expected.by_policy, cb.policy.clone()),
            (&mut expected.filtered_by_policy, cb.policy.clone()),
        ] {
            let figures = groups
                .entry(key)
                .or_insert_with(|| vec![Some(0.0), Some(0.0)]);
            figures[0] = figures[0].map(|n| n + 1.0);
            figures[1] = figures[1].map(|n| n + reached);
        }
    }
    let mut by_department: BTreeMap<String, Vec<&Cb>> = BTreeMap::new();
    for cb in callbacks.values().filter(|cb| in_range(cb)) {
        by_department
            .entry(cb.department.clone())
            .or_default()
            .push(cb);
    }
    for (department, cbs) in &by_department {
        let due = cbs.len() as f64;
        let reached: Vec<&&Cb> = cbs.iter().filter(|c| c.status == "completed").collect();
        let on_time = reached
            .iter()
            .filter(|c| c.reached_at <= c.deadline)
            .count() as f64;
        let lost = cbs.iter().filter(|c| c.status == "lost").count() as f64;
        let attempts: f64 = reached.iter().map(|c| c.attempts).sum();
        let r = reached.len() as f64;
        let open = cbs.iter().filter(|c| c.status == "open").count() as f64;
        expected.callbacks.insert(
            department.clone(),
            vec![
                Some(due),
                Some(r),
                Some(on_time),
                ratio(r, due),
                ratio(on_time, due),
                Some(lost),
                ratio(lost, due),
                Some(open),
                ratio(attempts, r),
            ],
        );
    }
    let mut by_item: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for (callback, questionnaire, item, version, value) in &answers {
        let Some(cb) = callbacks.get(callback) else {
            continue;
        };
        if !cb.due_at.is_some_and(|d| d >= from && d < to && d <= now) {
            continue;
        }
        let kind = item_kinds[&(questionnaire.clone(), *version, item.clone())].clone();
        let number = match value {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::Bool(b) => f64::from(u8::from(*b)),
            _ => continue,
        };
        by_item
            .entry(item.clone())
            .or_default()
            .push((kind, number));
    }
    for (item, values) in &by_item {
        let ratings: Vec<f64> = values
            .iter()
            .filter(|(k, _)| k == "rating")
            .map(|(_, v)| *v)
            .collect();
        let recommends: Vec<f64> = values
            .iter()
            .filter(|(k, _)| k == "recommend")
            .map(|(_, v)| *v)
            .collect();
        let n = ratings.len() as f64;
        let m = recommends.len() as f64;
        let promoters = recommends.iter().filter(|v| **v >= 9.0).count() as f64;
        let detractors = recommends.iter().filter(|v| **v <= 6.0).count() as f64;
        expected.satisfaction.insert(
            item.clone(),
            vec![
                Some(values.len() as f64),
                Some(n),
                Some(m),
                ratio(ratings.iter().sum(), n),
                ratio(ratings.iter().filter(|v| **v >= 4.0).count() as f64, n),
                ratio(100.0 * (promoters - detractors), m),
            ],
        );
    }
    let mut by_class: BTreeMap<String, Vec<&Complaint>> = BTreeMap::new();
    for k in complaints
        .values()
        .filter(|k| k.filed_at.is_some_and(|f| f >= from && f < to))
    {
        by_class.entry(k.class.clone()).or_default().push(k);
    }
    for (class, ks) in &by_class {
        let count = |f: &dyn Fn(&Complaint) -> bool| ks.iter().filter(|k| f(k)).count() as f64;
        let valid = count(&|k| !k.rejected);
        let verifications: f64 = ks.iter().map(|k| k.verifications).sum();
        let mut hours: Vec<f64> = ks
            .iter()
            .filter_map(|k| {
                Some((k.resolved_at? - k.filed_at?).num_milliseconds() as f64 / 3_600_000.0)
            })
            .collect();
        hours.sort_by(f64::total_cmp);
        let satisfied: f64 = ks.iter().map(|k| k.satisfied).sum();
        expected.complaints.insert(
            class.clone(),
            vec![
                Some(ks.len() as f64),
                Some(valid),
                Some(1000.0 * valid / 2000.0),
                ratio(
                    count(&|k| k.responded && !k.first_breached),
                    count(&|k| k.responded || k.first_breached),
                ),
                ratio(
                    count(&|k| k.responded && !k.update_breached),
                    count(&|k| k.responded),
                ),
                ratio(
                    count(&|k| k.resolved && !k.resolution_breached),
                    count(&|k| k.resolved || k.resolution_breached),
                ),
                percentile_cont(&hours, 0.5),
                percentile_cont(&hours, 0.9),
                ratio(satisfied, verifications),
                ratio(count(&|k| k.reopened), count(&|k| k.resolved)),
            ],
        );
    }
    for (kind, attempts) in flags {
        let distinct: std::collections::BTreeSet<&String> = attempts.iter().collect();
        expected.honesty.insert(
            kind,
            vec![Some(attempts.len() as f64), Some(distinct.len() as f64)],
        );
    }
    expected
}

fn request(report: &str, group_by: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> ReportRequest {
    ReportRequest {
        tenant_id: TENANT.into(),
        report: report.into(),
        group_by: vec![group_by.into()],
        granularity: String::new(),
        from: ts(from),
        to: ts(to),
        filters: Default::default(),
    }
}

/// The service's figures for `metrics`, by the single group-by key.
fn figures(report: &ReportResponse, metrics: &[&str]) -> BTreeMap<String, Vec<Option<f64>>> {
    let index: Vec<usize> = metrics
        .iter()
        .map(|m| report.metrics.iter().position(|x| x == m).unwrap())
        .collect();
    report
        .rows
        .iter()
        .map(|row| {
            let values = index
                .iter()
                .map(|i| {
                    let v = &row.values[*i];
                    v.defined.then_some(v.value)
                })
                .collect();
            (row.keys.first().cloned().unwrap_or_default(), values)
        })
        .collect()
}

async fn from_service(c: &mut Clients, from: DateTime<Utc>, to: DateTime<Utc>) -> Expected {
    let get = |report: &'static str, by: &'static str| {
        let mut client = c.analytics.clone();
        async move {
            client
                .report(request(report, by, from, to))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let by_period = |granularity: &'static str| {
        let mut client = c.analytics.clone();
        async move {
            let mut request = request("callbacks", "", from, to);
            request.group_by.clear();
            request.granularity = granularity.into();
            client.report(request).await.unwrap().into_inner()
        }
    };
    let by_day = figures(&by_period("day").await, &["due", "reached"]);
    let by_week = figures(&by_period("week").await, &["due", "reached"]);
    let by_policy = figures(&get("callbacks", "policy").await, &["due", "reached"]);
    let mut filtered_by_policy = BTreeMap::new();
    for policy in by_policy.keys() {
        let mut request = request("callbacks", "", from, to);
        request.group_by.clear();
        request.filters.insert("policy".into(), policy.clone());
        let report = c
            .analytics
            .clone()
            .report(request)
            .await
            .unwrap()
            .into_inner();
        for (_, values) in figures(&report, &["due", "reached"]) {
            filtered_by_policy.insert(policy.clone(), values);
        }
    }
    Expected {
        by_day,
        by_week,
        by_policy,
        filtered_by_policy,
        callbacks: figures(
            &get("callbacks", "department").await,
            &[
                "due",
                "reached",
                "reached_on_time",
                "callback_rate",
                "on_time_rate",
                "lost",
                "lost_rate",
                "open",
                "attempts_per_reached",
            ],
        ),
        satisfaction: figures(
            &get("satisfaction", "item").await,
            &[
                "answers",
                "rating_responses",
                "recommend_responses",
                "rating_mean",
                "satisfaction_rate",
                "nps",
            ],
        ),
        complaints: figures(
            &get("complaints", "class").await,
            &[
                "complaints",
                "valid",
                "valid_per_mille_of_population",
                "first_response_compliance",
                "update_compliance",
                "resolution_compliance",
                "resolve_hours_median",
                "resolve_hours_p90",
                "verification_satisfaction",
                "reopen_rate",
            ],
        ),
        honesty: figures(
            &get("honesty", "kind").await,
            &["flags", "flagged_attempts"],
        ),
    }
}

fn close(a: &Expected, b: &Expected) -> bool {
    let same = |x: &BTreeMap<String, Vec<Option<f64>>>, y: &BTreeMap<String, Vec<Option<f64>>>| {
        x.len() == y.len()
            && x.iter().zip(y).all(|((k1, v1), (k2, v2))| {
                k1 == k2
                    && v1.len() == v2.len()
                    && v1.iter().zip(v2).all(|(p, q)| match (p, q) {
                        (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                        (None, None) => true,
                        _ => false,
                    })
            })
    };
    same(&a.callbacks, &b.callbacks)
        && same(&a.by_day, &b.by_day)
        && same(&a.by_week, &b.by_week)
        && same(&a.by_policy, &b.by_policy)
        && same(&a.filtered_by_policy, &b.filtered_by_policy)
        && same(&a.satisfaction, &b.satisfaction)
        && same(&a.complaints, &b.complaints)
        && same(&a.honesty, &b.honesty)
}

async fn matches_log(
    c: &mut Clients,
    pool: &sqlx::PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Expected {
    // The log may still grow (timer sweeps, feeds catching up): both sides are read again
    // until they agree.
    let (mut expected, mut last) = (Expected::default(), Expected::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        last = from_service(c, from, to).await;
        expected = expected_from_log(pool, from, to, now).await;
        if close(&last, &expected) {
            return expected;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("analytics never matched the log:\nexpected {expected:#?}\ngot {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_traffic_gives_the_numbers_the_log_gives_and_a_rebuild_gives_them_again() {
    let clock = ManualClock::new(shanghai(9, 1, 7, 0));
    let mut system = System::start_on_clock(&ServiceKind::ALL, clock.clone()).await;
    let mut c = Clients::new(&system);
    publish(&mut c).await;
    let mut rng = Lcg(20_260_901);
    let mut n = 0;
    let working_days: Vec<u32> = (1..=30)
        .filter(|d| {
            let weekday = shanghai(9, *d, 12, 0)
                .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
            chrono::Datelike::weekday(&weekday).num_days_from_monday() < 5
        })
        .collect();
    for day in &working_days[..12] {
        run_day(&mut c, &clock, &mut rng, *day, &mut n).await;
    }

    // A late correction changes the figures: a discharge, due at once, then cancelled.
    let month = (shanghai(9, 1, 0, 0), shanghai(10, 1, 0, 0));
    let discharge = |id: &str, event_type: &str| IngestBusinessEventRequest {
        tenant_id: TENANT.into(),
        source: "his".into(),
        source_event_id: id.into(),
        event_type: event_type.into(),
        occurred_at: ts(clock.now()),
        subject: Some(Subject {
            subject_id: "late-patient".into(),
            department: "ward-b".into(),
            ..Default::default()
        }),
        attributes_json: String::new(),
    };
    // A discharge of a patient of its own, in `department`, reached on `phones`.
    let patient_discharged = |id: &str, subject_id: &str, department: &str, phones: Vec<String>| {
        IngestBusinessEventRequest {
            source_event_id: id.into(),
            subject: Some(Subject {
                subject_id: subject_id.into(),
                department: department.into(),
                phones,
                ..Default::default()
            }),
            ..discharge(id, "patient.discharged")
        }
    };
    c.scheduling
        .ingest_business_event(discharge("late-1", "patient.discharged"))
        .await
        .unwrap();
    let before = matches_log(&mut c, &system.db.pool, month.0, month.1, clock.now()).await;
    c.scheduling
        .ingest_business_event(discharge("late-1-cancel", "patient.discharge_cancelled"))
        .await
        .unwrap();
    let after = matches_log(&mut c, &system.db.pool, month.0, month.1, clock.now()).await;
    let total_due = |e: &Expected| e.callbacks.values().map(|v| v[0].unwrap()).sum::<f64>();
    assert_eq!(total_due(&after), total_due(&before) - 1.0);

    // Two patients given one number, written two ways: a shared contact, an honesty finding.
    for (id, phone) in [
        ("shared-1", "139 1111 2222"),
        ("shared-2", "+86 139-1111-2222"),
    ] {
        c.scheduling
            .ingest_business_event(patient_discharged(
                id,
                &format!("patient-{id}"),
                "ward-a",
                vec![phone.into()],
            ))
            .await
            .unwrap();
    }

    // A discharge entered eight days late: its window (three days) had closed, so it is
    // skipped, and counted where its window opened, not on the day it was entered.
    let late = IngestBusinessEventRequest {
        occurred_at: ts(clock.now() - chrono::Duration::days(8)),
        ..patient_discharged("entered-late", "late-entry", "ward-b", Vec::new())
    };
    let answer = c
        .scheduling
        .ingest_business_event(late)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.scheduled.len(), 1);
    assert_eq!(answer.scheduled[0].status, "skipped");
    assert!(
        answer.scheduled[0].due_at.as_ref().unwrap().seconds
            < (clock.now() - chrono::Duration::days(7)).timestamp(),
        "due when its window opened: {answer:?}"
    );

    for day in &working_days[12..] {
        run_day(&mut c, &clock, &mut rng, *day, &mut n).await;
    }

    // A discharge nobody reaches in time (its three days pass unworked), then reached
    // overdue: after its deadline, before its give-up time.
    let overdue_fact =
        patient_discharged("reached-overdue", "overdue-patient", "ward-b", Vec::new());
    let overdue_id = c
        .scheduling
        .ingest_business_event(overdue_fact)
        .await
        .unwrap()
        .into_inner()
        .scheduled[0]
        .callback_id
        .clone();
    let after_deadline = clock.now() + chrono::Duration::days(4);
    clock.set(after_deadline);
    let mut reached_overdue = false;
    for attempt in 0..40 {
        let Some(claimed) = callback_tests::claim(&mut c.scheduling, TENANT, "nurse-1").await
        else {
            break;
        };
        let kind = if claimed.callback_id == overdue_id {
            "reached"
        } else {
            "no_answer"
        };
        let mut request = LogCallAttemptRequest {
            attempt_id: format!("overdue-{attempt}"),
            tenant_id: TENANT.into(),
            callback_id: claimed.callback_id.clone(),
            lease_id: claimed.lease_id.clone(),
            agent_id: "nurse-1".into(),
            channel: "phone".into(),
            started_at: ts(after_deadline),
            ended_at: ts(after_deadline + Span::seconds(120)),
            disposition: Some(Disposition {
                kind: kind.into(),
                named_time: None,
            }),
            ..Default::default()
        };
        if kind == "reached" {
            request.questionnaire_id = "sat-v1".into();
            request.questionnaire_version = 1;
            request.answers_json =
                json!({"nursing": 4, "doctor": 4, "recommend": 8, "recovered": true}).to_string();
        }
        c.calls.log_call_attempt(request).await.unwrap();
        if kind == "reached" {
            reached_overdue = true;
            break;
        }
    }
    assert!(
        reached_overdue,
        "the overdue callback was claimable and reached"
    );
    // Late October: every September callback is past its give-up time (its deadline plus as
    // long again as its window, longer over the National Day holiday); scheduling has lost
    // what was not reached.
    clock.set(shanghai(10, 31, 9, 0));
    eventually(
        Duration::from_secs(60),
        "the deadline watch to catch up",
        || {
            let mut client = c.scheduling.clone();
            async move {
                let overdue = client
                    .list_callbacks(ListCallbacksRequest {
                        tenant_id: TENANT.into(),
                        view: "overdue".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .callbacks;
                overdue.is_empty().then_some(())
            }
        },
    )
    .await;
    // ...and complaint routing has fired every clock due by then (breaches, reminders).
    let pool = system.db.pool.clone();
    let now = clock.now();
    eventually(
        Duration::from_secs(60),
        "the complaint timers to catch up",
        || {
            let pool = pool.clone();
            async move {
                let due: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM cr_complaints WHERE next_timer_at <= $1",
                )
                .bind(now)
                .fetch_one(&pool)
                .await
                .unwrap();
                (due == 0).then_some(())
            }
        },
    )
    .await;
    let expected = matches_log(&mut c, &system.db.pool, month.0, month.1, clock.now()).await;
    // The month was real traffic, not an empty table.
    assert!(total_due(&expected) > 80.0, "{expected:#?}");
    assert!(
        expected.callbacks.values().any(|v| v[5].unwrap() > 0.0),
        "some were lost"
    );
    // Some were reached overdue (after the deadline, before giving up): reached, not on time,
    // so the callback rate (回访率) and the on-time rate (及时率) differ.
    assert!(
        expected
            .callbacks
            .values()
            .any(|v| v[1].unwrap() > v[2].unwrap()),
        "some were reached overdue: {expected:#?}"
    );
    assert!(
        expected.complaints.values().any(|v| v[7].is_some()),
        "some were resolved"
    );
    assert!(
        expected
            .complaints
            .values()
            .map(|v| v[0].unwrap())
            .sum::<f64>()
            >= 5.0
    );
    assert!(expected.by_policy.len() >= 2, "{:?}", expected.by_policy);
    assert!(expected.honesty.contains_key("network_contradiction"));
    assert!(expected.honesty.contains_key("short_reached"));
    // Shared contacts are honesty findings too, dated when flagged (the wall clock here, not
    // the simulated month): the report over today matches the log's recount.
    let wall = Utc::now();
    let today = matches_log(
        &mut c,
        &system.db.pool,
        wall - chrono::Duration::days(1),
        wall + chrono::Duration::days(1),
        clock.now(),
    )
    .await;
    assert_eq!(
        today.honesty.get("shared_contact"),
        Some(&vec![Some(1.0), Some(1.0)]),
        "{:?}",
        today.honesty
    );

    // Figures below the tenant's minimum sample are marked.
    let by_agent = c
        .analytics
        .report(request("satisfaction", "agent", month.0, month.1))
        .await
        .unwrap()
        .into_inner();
    // Plain counts are exact at any size and never marked.
    let counts = ["answers", "rating_responses", "recommend_responses"];
    for row in &by_agent.rows {
        for (metric, value) in by_agent.metrics.iter().zip(&row.values) {
            let expected = !counts.contains(&metric.as_str()) && value.sample_size < 5;
            assert_eq!(value.too_few, expected, "{metric} of {:?}", row.keys);
        }
    }

    // Spot checks and the monthly summary, before the rebuild.
    let spot = |mut client: AnalyticsClient<Channel>| async move {
        client
            .spot_check_sample(SpotCheckRequest {
                tenant_id: TENANT.into(),
                department: "ward-a".into(),
                month: "2026-09".into(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let sample = spot(c.analytics.clone()).await;
    assert!(sample.population > 0);
    assert!(!sample.sample.is_empty());
    assert!(sample.sample.iter().all(|s| s.reviewer != s.agent_id));
    let summary = c
        .analytics
        .monthly_summary(MonthlySummaryRequest {
            tenant_id: TENANT.into(),
            month: "2026-09".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(summary.ready);
    assert_eq!(
        summary.ready_at.unwrap().seconds,
        shanghai(10, 1, 0, 0).timestamp()
    );
    let summary_due = summary.callbacks.unwrap().rows[0].values[0].value;
    assert_eq!(summary_due, total_due(&expected));

    // Rebuild from zero: stop analytics, clear its read models and checkpoints, start it again.
    system.stop_service(ServiceKind::Analytics).await;
    let store = callback_eventstore::EventStore::open(system.db.pool.clone())
        .await
        .unwrap();
    callback_testkit::while_a_foreign_transaction_is_open(
        std::time::Duration::from_millis(700),
        callback_analytics::reset_read_models(&store),
    )
    .await
    .unwrap();
    let callbacks: i64 = sqlx::query_scalar("SELECT count(*) FROM an_callbacks")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(callbacks, 0);
    system.start_service(ServiceKind::Analytics).await;
    system.wait_serving(ServiceKind::Analytics).await;
    let mut c = Clients::new(&system);
    let rebuilt = matches_log(&mut c, &system.db.pool, month.0, month.1, clock.now()).await;
    assert_eq!(rebuilt, expected);
    assert_eq!(
        spot(c.analytics.clone()).await,
        sample,
        "the same sample after a rebuild"
    );

    // CSV export of the same report.
    let csv = c
        .analytics
        .export_csv(request("callbacks", "department", month.0, month.1))
        .await
        .unwrap()
        .into_inner()
        .csv;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("department,due,due_n,reached,reached_n"));
    assert_eq!(lines.len(), 1 + expected.callbacks.len());

    // Bad requests are refused naming the field.
    let mut bad = request("callbacks", "colour", month.0, month.1);
    let status = c.analytics.report(bad.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("group_by[0]"));
    bad.group_by.clear();
    bad.from = ts(month.1);
    bad.to = ts(month.0);
    let status = c.analytics.report(bad.clone()).await.unwrap_err();
    assert!(status.message().starts_with("to:"), "{}", status.message());
    bad.from = ts(shanghai(1, 1, 0, 0) - Span::days(800));
    bad.to = ts(month.1);
    bad.granularity = "day".into();
    let status = c.analytics.report(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The BI schema: readable by its role, nothing else is; no contact data in it.
    let mut conn = system.db.pool.acquire().await.unwrap();
    let personal: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'callback_bi' \
         AND (column_name LIKE '%phone%' OR column_name LIKE '%name%' OR column_name IN ('subject_id', 'customer_id', 'notes', 'text'))",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(personal.is_empty(), "{personal:?}");
    sqlx::query("SET ROLE callback_bi")
        .execute(&mut *conn)
        .await
        .unwrap();
    let visible: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM callback_bi.callbacks WHERE status <> 'cancelled'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(visible as f64 >= total_due(&expected));
    let denied = sqlx::query("SELECT count(*) FROM events")
        .execute(&mut *conn)
        .await;
    assert!(denied
        .unwrap_err()
        .to_string()
        .contains("permission denied"));
    let denied = sqlx::query("SELECT count(*) FROM an_callbacks")
        .execute(&mut *conn)
        .await;
    assert!(denied.is_err());
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    drop(conn);
    system.stop().await;
}
