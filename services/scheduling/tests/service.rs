//! The scheduling service's commands against a real PostgreSQL, on simulated time.

#![allow(clippy::unwrap_used)]

use callback_contracts::scheduling::{BusinessEventIngested, CallbackEvent};
use std::collections::HashSet;
use std::sync::Arc;

use callback_contracts::call_logging::{AttemptDisposition, CallAttemptLogged};
use callback_contracts::EventContract;
use callback_eventstore::{Checkpoint, EventStore, Filter};
use callback_rules::ManualClock;
use callback_scheduling::app::CallbackRow;
use callback_scheduling::app::{Scheduling, SubjectContact, CALLBACK_COLUMNS};
use callback_scheduling::domain::{BusinessFact, Disposition, Status};
use callback_scheduling::Error;
use callback_testkit::TestDb;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

async fn setup() -> (TestDb, Scheduling, ManualClock) {
    let db = TestDb::new().await;
    let store = EventStore::open(db.pool.clone()).await.unwrap();
    store
        .register_categories("scheduling", callback_scheduling::CATEGORIES)
        .await
        .unwrap();
    let clock = ManualClock::new(shanghai(2026, 9, 7, 9, 0));
    let vault = callback_vault::Vault::with_fresh_master_key(db.pool.clone())
        .await
        .unwrap();
    let app = callback_scheduling::open(store, vault, Arc::new(clock.clone()))
        .await
        .unwrap();
    app.publish_tenant("hospital", &settings()).await.unwrap();
    app.publish_policy("hospital", &ward_policy())
        .await
        .unwrap();
    (db, app, clock)
}

/// The hospital's settings with these frequency caps.
async fn publish_frequency_caps(app: &Scheduling, caps: serde_json::Value) {
    let mut capped: serde_json::Value = serde_json::from_str(&settings()).unwrap();
    capped["frequency_caps"] = caps;
    app.publish_tenant("hospital", &capped.to_string())
        .await
        .unwrap();
}

/// A second discharge policy, for the call center: a survey 3-10 days after discharge.
async fn publish_survey_policy(app: &Scheduling) {
    let survey = json!({
        "policy_id": "satisfaction", "name": "满意度调查", "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "survey", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 3}, "latest": {"days": 10}}}]
    });
    app.publish_policy("hospital", &survey.to_string())
        .await
        .unwrap();
}

/// These tests claim several callbacks per agent at once; the default lease cap (one per agent)
/// is tested over gRPC in `tests/tests/scheduling.rs`.
fn settings() -> String {
    json!({
        "max_leases_per_agent": 0,
        "calendar": {
            "time_zone": "Asia/Shanghai",
            "windows": [{"start": "08:00", "end": "12:00"}, {"start": "13:30", "end": "17:30"}],
            "holidays": ["2026-10-01","2026-10-02","2026-10-03","2026-10-04","2026-10-05","2026-10-06","2026-10-07"],
            "extra_working_days": ["2026-09-27", "2026-10-10"]
        },
        "departments": ["cardiology", "surgery"],
        "pools": ["ward-nurses", "call-center"],
        "agents": [
            {"agent_id": "dr-li", "departments": ["cardiology"], "pools": []},
            {"agent_id": "nurse-wang", "departments": ["cardiology"], "pools": ["ward-nurses"]},
            {"agent_id": "nurse-zhao", "departments": ["cardiology", "surgery"], "pools": ["ward-nurses"]},
            {"agent_id": "cc-1", "pools": ["call-center"]}
        ]
    })
    .to_string()
}

fn ward_policy() -> String {
    json!({
        "policy_id": "ward-discharge", "name": "出院回访",
        "trigger": {"event_type": "patient.discharged"},
        "cancel_on": ["patient.discharge_cancelled", "patient.deceased"],
        "steps": [
            {"name": "first", "questionnaire_id": "discharge-v3",
             "owner": {"kind": "subject_owner", "fallback_pool": "ward-nurses", "pool_after_hours": 24},
             "retry": {"max_attempts": 3, "default_spacing_minutes": 120, "spacing_minutes": {"busy": 30}},
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 7}}},
            {"name": "second",
             "owner": {"kind": "pool", "pool": "ward-nurses"},
             "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 8}, "latest": {"months": 2}}}
        ]
    })
    .to_string()
}

fn discharge(id: &str, at: DateTime<Utc>, owner: Option<&str>) -> (BusinessFact, SubjectContact) {
    (
        BusinessFact {
            tenant_id: "hospital".into(),
            source: "his".into(),
            source_event_id: id.into(),
            event_type: "patient.discharged".into(),
            occurred_at: at,
            subject_id: format!("patient-{id}"),
            attributes: json!({"visit_type": "inpatient"})
                .as_object()
                .cloned()
                .unwrap(),
        },
        SubjectContact {
            subject_id: format!("patient-{id}"),
            name: "张三".into(),
            phones: vec!["+86 138-0013-8000".into()],
            owner_agent_id: owner.map(str::to_owned),
            department: Some("cardiology".into()),
            ..Default::default()
        },
    )
}

/// The log's events of a category, once everything committed so far is readable: another
/// test's open transaction may hold the visibility horizon back for a moment.
async fn visible_events(store: &EventStore, category: &str) -> callback_eventstore::ReadPage {
    store.wait_for_horizon().await.unwrap();
    store
        .read_all(Checkpoint::START, &Filter::categories([category]), 10_000)
        .await
        .unwrap()
}

async fn event_count(app: &Scheduling) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

async fn rows(app: &Scheduling) -> Vec<CallbackRow> {
    sqlx::query_as(&format!(
        "SELECT {CALLBACK_COLUMNS} FROM sched_callbacks ORDER BY callback_id"
    ))
    .fetch_all(app.store().pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn ingest_schedules_once_and_bad_input_writes_nothing() {
    let (_db, app, clock) = setup().await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), Some("dr-li"));
    let first = app.ingest(fact.clone(), subject.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.scheduled.len(), 1);
    assert_eq!(first.scheduled[0].due_at, shanghai(2026, 9, 8, 8, 0));
    assert_eq!(first.scheduled[0].deadline, shanghai(2026, 9, 15, 0, 0));
    // A retry, even later, schedules nothing twice and answers the same.
    clock.advance(Duration::hours(3));
    let again = app.ingest(fact.clone(), subject.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.scheduled, first.scheduled);
    assert_eq!(rows(&app).await.len(), 1);
    // The same source event id for another patient is a conflict naming the key, not a retry.
    let reused = app
        .ingest(
            BusinessFact {
                subject_id: "another-patient".into(),
                ..fact
            },
            subject,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&reused, Error::Conflict { field, reason } if field == "source_event_id" && reason.contains("subject_id")),
        "{reused:?}"
    );
    assert_eq!(rows(&app).await.len(), 1);

    let before = event_count(&app).await;
    let (mut fact, mut subject) = discharge("d2", shanghai(2026, 9, 7, 8, 30), None);
    subject.subject_id = String::new();
    assert!(
        matches!(app.ingest(fact.clone(), subject.clone()).await, Err(Error::InvalidArgument { field, .. }) if field == "subject.subject_id")
    );
    subject.subject_id = "p2".into();
    subject.phones = vec!["not-a-phone".into()];
    assert!(
        matches!(app.ingest(fact.clone(), subject.clone()).await, Err(Error::InvalidArgument { field, .. }) if field == "subject.phones[0]")
    );
    subject.phones = vec!["13800138000".into()];
    fact.tenant_id = "nobody".into();
    assert!(matches!(
        app.ingest(fact, subject).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        event_count(&app).await,
        before,
        "rejected input wrote nothing"
    );

    assert!(matches!(
        app.publish_policy("nobody", &ward_policy()).await,
        Err(Error::NotFound(_))
    ));
    let bad = ward_policy().replace("\"days\":7", "\"days\":0");
    assert_ne!(bad, ward_policy());
    match app.publish_policy("hospital", &bad).await {
        Err(Error::InvalidArgument { field, .. }) => {
            assert_eq!(field, "policy_json.steps[0].timing.latest")
        }
        other => panic!("{other:?}"),
    }
    let bad_settings = settings().replace("08:00", "12:30");
    assert!(matches!(
        app.publish_tenant("hospital", &bad_settings).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(event_count(&app).await, before);
}

#[tokio::test]
async fn the_owner_claims_first_the_pool_after_the_handover_and_leases_expire() {
    let (_db, app, clock) = setup().await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), Some("dr-li"));
    app.ingest(fact, subject).await.unwrap();

    // Not due yet.
    assert!(app
        .claim_next("hospital", "dr-li", &[], 0)
        .await
        .unwrap()
        .is_none());
    clock.set(shanghai(2026, 9, 8, 8, 5));
    // The pool must wait 24 hours for the owner.
    assert!(app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .is_none());
    let claim = app
        .claim_next("hospital", "dr-li", &[], 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claim.subject.name, "张三",
        "contact details go to the claiming agent"
    );
    assert_eq!(claim.lease_until, shanghai(2026, 9, 8, 8, 15));
    // Under lease nobody else gets it; after the lease expires it returns to the queue.
    assert!(app
        .claim_next("hospital", "dr-li", &[], 0)
        .await
        .unwrap()
        .is_none());
    clock.set(shanghai(2026, 9, 9, 9, 0));
    let reclaimed = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reclaimed.state.scheduled.callback_id,
        claim.state.scheduled.callback_id
    );
    assert_ne!(reclaimed.lease_id, claim.lease_id);
    // The old lease can no longer report an outcome.
    let stale = app
        .record_outcome(
            claim.state.scheduled.callback_id,
            "a1",
            "dr-li",
            claim.lease_id,
            &Disposition::Reached,
            clock_now(&clock),
        )
        .await;
    assert!(matches!(stale, Err(Error::InvalidArgument { field, .. }) if field == "agent_id"));

    assert!(matches!(
        app.claim_next("hospital", "ghost", &[], 0).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        app.claim_next("hospital", "dr-li", &[], 99_999).await,
        Err(Error::InvalidArgument { .. })
    ));
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    use callback_rules::Clock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_get_the_same_callback() {
    let (_db, app, clock) = setup().await;
    for i in 0..30 {
        let (fact, subject) = discharge(&format!("c{i}"), shanghai(2026, 9, 7, 8, 30), None);
        app.ingest(fact, subject).await.unwrap();
    }
    clock.set(shanghai(2026, 9, 8, 9, 0));
    let mut tasks = Vec::new();
    for agent in ["nurse-wang", "nurse-zhao"].iter().cycle().take(12) {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(claim) = app.claim_next("hospital", agent, &[], 0).await.unwrap() {
                got.push(claim.state.scheduled.callback_id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 30, "every callback claimed exactly once");
    assert_eq!(unique.len(), 30);
}

// On the single-threaded test runtime, spawned tasks run only once the test awaits, so all the
// requests below are queued before a worker looks: they are served as one batch.
#[tokio::test]
async fn claims_arriving_together_are_served_by_one_transaction() {
    let (_db, app, clock) = setup().await;
    for i in 0..10 {
        let (fact, subject) = discharge(&format!("t{i}"), shanghai(2026, 9, 7, 8, 30), None);
        app.ingest(fact, subject).await.unwrap();
    }
    clock.set(shanghai(2026, 9, 8, 9, 0));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, agent) in ["nurse-wang", "nurse-zhao", "ghost"]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
    {
        let app = app.clone();
        tasks.spawn(async move { (i, *agent, app.claim_next("hospital", agent, &[], 0).await) });
    }
    let mut claimed = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, agent, result) = joined.unwrap();
        if agent == "ghost" {
            // An unknown agent's error is its own; the others in the batch are served.
            assert!(
                matches!(result, Err(Error::NotFound(ref m)) if m.contains("agent_id")),
                "{i}: {result:?}"
            );
            continue;
        }
        let claim = result.unwrap().expect("a callback for every known agent");
        assert_eq!(claim.state.claimed_by.as_deref(), Some(agent));
        assert_eq!(claim.subject.phones, vec!["+8613800138000".to_owned()]);
        assert!(claimed.insert(claim.state.scheduled.callback_id));
    }
    assert_eq!(claimed.len(), 6);
    assert_eq!(
        largest_transaction(&app, CallbackEvent::CLAIMED).await,
        6,
        "one transaction"
    );
    let before = rows(&app).await;
    app.rebuild_projections().await.unwrap();
    assert_eq!(rows(&app).await, before, "a rebuild writes the same rows");
}

/// The most events of a type that one transaction appended.
async fn largest_transaction(app: &Scheduling, event_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events WHERE event_type = $1 \
         GROUP BY transaction_id) t",
    )
    .bind(event_type)
    .fetch_one(app.store().pool())
    .await
    .unwrap()
}

// Single-threaded: every ingest below is queued before a worker looks (see above).
#[tokio::test]
async fn concurrent_ingests_are_served_together_and_each_gets_its_own_answer() {
    let (_db, app, _clock) = setup().await;
    // One fact whose subject comes back later without contact details, one that a
    // correcting fact will cancel: both kinds are served alone, beside the batches.
    let (fact, subject) = discharge("known", shanghai(2026, 9, 7, 8, 30), None);
    app.ingest(fact, subject).await.unwrap();
    let (fact, subject) = discharge("dies", shanghai(2026, 9, 7, 8, 30), None);
    let doomed = app.ingest(fact, subject).await.unwrap().scheduled[0].callback_id;

    let mut tasks = Vec::new();
    for i in 0..40 {
        // Facts 0-4 are sent twice at once: a retry racing its original.
        for _ in 0..(if i < 5 { 2 } else { 1 }) {
            let app = app.clone();
            let (fact, subject) = discharge(&format!("b{i}"), shanghai(2026, 9, 7, 8, 30), None);
            tasks.push(tokio::spawn(
                async move { (i, app.ingest(fact, subject).await) },
            ));
        }
    }
    let app2 = app.clone();
    let (mut again, mut nameless) = discharge("known2", shanghai(2026, 9, 7, 9, 0), None);
    again.subject_id = "patient-known".into();
    nameless.subject_id = "patient-known".into();
    nameless.name.clear();
    nameless.phones.clear();
    tasks.push(tokio::spawn(async move {
        (100, app2.ingest(again, nameless).await)
    }));
    let app3 = app.clone();
    let (mut deceased, contact) = discharge("dies", shanghai(2026, 9, 7, 10, 0), None);
    deceased.source_event_id = "dies-deceased".into();
    deceased.event_type = "patient.deceased".into();
    tasks.push(tokio::spawn(async move {
        (101, app3.ingest(deceased, contact).await)
    }));

    let mut answers: std::collections::HashMap<i32, Vec<_>> = Default::default();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        answers.entry(i).or_default().push(result.unwrap());
    }
    for i in 0..40 {
        let got = &answers[&i];
        let firsts = got.iter().filter(|r| !r.duplicate).count();
        assert_eq!(
            firsts, 1,
            "fact b{i}: exactly one answer is the first ingest"
        );
        assert!(got
            .iter()
            .all(|r| r.scheduled == got[0].scheduled && r.scheduled.len() == 1));
    }
    assert_eq!(
        answers[&101][0].cancelled,
        vec![doomed],
        "the correcting fact cancelled"
    );
    // The nameless fact reused the contact on record: the number in E.164, kept as its
    // keyed hash.
    let phones: Vec<String> = sqlx::query_scalar(
        "SELECT phone_keys FROM sched_subjects WHERE subject_id = 'patient-known'",
    )
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    assert_eq!(
        phones,
        vec![app.vault().phone_key("hospital", "+8613800138000")],
        "in E.164"
    );

    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(BusinessEventIngested::EVENT_TYPE)
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(facts, 2 + 40 + 2, "every fact once, retries nothing twice");
    assert!(
        largest_transaction(&app, BusinessEventIngested::EVENT_TYPE).await > 1,
        "no ingests were batched"
    );
    let before = rows(&app).await;
    assert_eq!(before.len(), 2 + 40 + 1);
    app.rebuild_projections().await.unwrap();
    assert_eq!(rows(&app).await, before, "a rebuild writes the same rows");
}

#[tokio::test]
async fn a_discharge_walks_through_retries_a_named_time_completion_and_the_next_step() {
    let (_db, app, clock) = setup().await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    let id = app.ingest(fact, subject).await.unwrap().scheduled[0].callback_id;

    // No answer at 11:50: retry two hours later, in the next window (13:30 after lunch).
    clock.set(shanghai(2026, 9, 8, 11, 50));
    let c = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    let s = app
        .record_outcome(
            id,
            "a1",
            "nurse-wang",
            c.lease_id,
            &Disposition::NoAnswer,
            shanghai(2026, 9, 8, 11, 52),
        )
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.attempts, s.due_at),
        (Status::Scheduled, 1, shanghai(2026, 9, 8, 13, 52))
    );
    // The same report again changes nothing (idempotent on the attempt id).
    let same = app
        .record_outcome(
            id,
            "a1",
            "nurse-wang",
            c.lease_id,
            &Disposition::NoAnswer,
            shanghai(2026, 9, 8, 11, 52),
        )
        .await
        .unwrap();
    assert_eq!(same.attempts, 1);

    // "Not convenient, call me Thursday at 15:00."
    clock.set(shanghai(2026, 9, 8, 14, 0));
    let c = app
        .claim_next("hospital", "nurse-zhao", &[], 0)
        .await
        .unwrap()
        .unwrap();
    let named = shanghai(2026, 9, 10, 15, 0);
    let s = app
        .record_outcome(
            id,
            "a2",
            "nurse-zhao",
            c.lease_id,
            &Disposition::NotConvenient { named_time: named },
            shanghai(2026, 9, 8, 14, 1),
        )
        .await
        .unwrap();
    assert_eq!((s.status, s.due_at), (Status::Scheduled, named));
    clock.set(shanghai(2026, 9, 10, 14, 59));
    assert!(
        app.claim_next("hospital", "nurse-wang", &[], 0)
            .await
            .unwrap()
            .is_none(),
        "not before the named time"
    );
    clock.set(named);
    let c = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    let s = app
        .record_outcome(
            id,
            "a3",
            "nurse-wang",
            c.lease_id,
            &Disposition::Reached,
            named + Duration::minutes(6),
        )
        .await
        .unwrap();
    assert_eq!((s.status, s.attempts), (Status::Completed, 3));

    // The second step is scheduled from the policy version the first was created under.
    let open = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.status == "scheduled")
        .collect::<Vec<_>>();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].step, "second");
    assert_eq!(open[0].due_at, shanghai(2026, 9, 15, 8, 0));
    // A closed callback takes no more outcomes.
    let closed = app
        .record_outcome(
            id,
            "a4",
            "nurse-wang",
            c.lease_id,
            &Disposition::Reached,
            named,
        )
        .await;
    assert!(matches!(closed, Err(Error::FailedPrecondition(_))));
}

#[tokio::test]
async fn deadlines_lose_callbacks_once_and_correcting_facts_cancel_them() {
    let (_db, app, clock) = setup().await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    let first = app.ingest(fact, subject).await.unwrap().scheduled[0].callback_id;
    // At the deadline it is overdue, not lost: still listed and claimable until it is given
    // up, as long again as its window (7 days) later.
    clock.set(shanghai(2026, 9, 15, 0, 0));
    assert_eq!(app.sweep_deadlines().await.unwrap(), 0);
    let overdue = app
        .list_callbacks("hospital", "", "", true, 10)
        .await
        .unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].callback_id, first);
    assert_eq!(overdue[0].give_up_at, shanghai(2026, 9, 22, 0, 0));
    clock.set(shanghai(2026, 9, 22, 0, 0));
    assert_eq!(app.sweep_deadlines().await.unwrap(), 1);
    assert_eq!(
        app.sweep_deadlines().await.unwrap(),
        0,
        "a timer fires once"
    );
    let (lost, _) = app.load(first).await.unwrap();
    assert_eq!(
        (lost.status, lost.end_reason.as_deref()),
        (Status::Lost, Some(callback_scheduling::domain::GIVEN_UP))
    );
    // The policy goes on: the second step.
    let open = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.status == "scheduled")
        .collect::<Vec<_>>();
    assert_eq!(open.len(), 1);

    // The discharge is cancelled by the HIS: its open callbacks are cancelled with the reason.
    let (mut correction, subject) = discharge("d1-cancel", shanghai(2026, 9, 15, 10, 0), None);
    correction.event_type = "patient.discharge_cancelled".into();
    correction.subject_id = "patient-d1".into();
    let result = app
        .ingest(
            correction,
            SubjectContact {
                subject_id: "patient-d1".into(),
                ..subject
            },
        )
        .await
        .unwrap();
    assert_eq!(result.cancelled, vec![open[0].callback_id]);
    let (cancelled, _) = app.load(open[0].callback_id).await.unwrap();
    assert_eq!(
        cancelled.end_reason.as_deref(),
        Some("cancelled by patient.discharge_cancelled")
    );
}

/// A correcting fact sent again (a retry) answers as before and cancels nothing more, even
/// when callbacks of the subject were planned since; and a batch with ordinary and correcting
/// facts is one transaction (one write path).
#[tokio::test]
async fn a_retried_correcting_fact_cancels_nothing_planned_since() {
    let (_db, app, clock) = setup().await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    let first = app.ingest(fact, subject.clone()).await.unwrap().scheduled[0].callback_id;
    let correction = |id: &str| {
        let (mut correction, _) = discharge(id, shanghai(2026, 9, 7, 10, 0), None);
        correction.event_type = "patient.discharge_cancelled".into();
        correction.subject_id = "patient-d1".into();
        correction
    };
    let cancelled = app.ingest(correction("c1"), subject.clone()).await.unwrap();
    assert_eq!(
        (cancelled.duplicate, cancelled.cancelled.clone()),
        (false, vec![first])
    );
    // Readmitted and discharged again: a new callback for the same subject and policy.
    clock.set(shanghai(2026, 9, 9, 9, 0));
    let (mut again, _) = discharge("d2", shanghai(2026, 9, 9, 8, 30), None);
    again.subject_id = "patient-d1".into();
    let second = app.ingest(again, subject.clone()).await.unwrap().scheduled[0].callback_id;
    // The HIS resends the correction.
    let retried = app.ingest(correction("c1"), subject).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.cancelled, vec![first], "the recorded answer");
    let (state, _) = app.load(second).await.unwrap();
    assert_eq!(
        state.status,
        Status::Scheduled,
        "planned since: not cancelled"
    );
}

#[tokio::test]
async fn do_not_call_cancels_every_open_callback_of_the_subject() {
    let (_db, app, clock) = setup().await;
    publish_survey_policy(&app).await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    let scheduled = app.ingest(fact, subject).await.unwrap().scheduled;
    assert_eq!(scheduled.len(), 2);
    // Another patient reached on the same number, written otherwise: the same person answers.
    // A third has a number of their own.
    let (fact, mut same_number) = discharge("d2", shanghai(2026, 9, 7, 8, 40), None);
    same_number.phones = vec!["008613800138000".into()];
    assert_eq!(
        app.ingest(fact, same_number).await.unwrap().scheduled.len(),
        2
    );
    let (fact, mut other_number) = discharge("d3", shanghai(2026, 9, 7, 8, 50), None);
    other_number.phones = vec!["13900001111".into()];
    assert_eq!(
        app.ingest(fact, other_number)
            .await
            .unwrap()
            .scheduled
            .len(),
        2
    );
    clock.set(shanghai(2026, 9, 8, 9, 0));
    let c = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    app.record_outcome(
        c.state.scheduled.callback_id,
        "a1",
        "nurse-wang",
        c.lease_id,
        &Disposition::DoNotCall,
        shanghai(2026, 9, 8, 9, 1),
    )
    .await
    .unwrap();
    let statuses: Vec<(String, String, Option<String>)> = rows(&app)
        .await
        .into_iter()
        .map(|r| (r.subject_id, r.status, r.end_reason))
        .collect();
    assert_eq!(statuses.len(), 6, "no next step after do-not-call");
    for (subject, status, reason) in &statuses {
        if subject == "patient-d3" {
            assert_eq!(status, "scheduled", "{statuses:?}");
        } else {
            assert_eq!(
                (status.as_str(), reason.as_deref()),
                ("cancelled", Some("do not call")),
                "{statuses:?}"
            );
        }
    }
}

/// A batch from the feed is applied as if one outcome after another: an outcome after a
/// do-not-call finds the subject's other callbacks cancelled; and a single report is a batch
/// of one through the same path.
#[tokio::test]
async fn a_do_not_call_in_a_batch_cancels_before_the_outcomes_after_it() {
    let (_db, app, clock) = setup().await;
    publish_survey_policy(&app).await;
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    assert_eq!(app.ingest(fact, subject).await.unwrap().scheduled.len(), 2);
    clock.set(shanghai(2026, 9, 10, 9, 0));
    let ward = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    let call_center = app
        .claim_next("hospital", "cc-1", &[], 0)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        ward.state.scheduled.callback_id,
        call_center.state.scheduled.callback_id
    );
    let at = shanghai(2026, 9, 10, 9, 5);
    let outcome = |claim: &callback_scheduling::app::Claim, agent: &str, disposition| {
        callback_scheduling::app::ReportedOutcome {
            callback_id: claim.state.scheduled.callback_id,
            attempt_id: format!("{agent}-1"),
            agent_id: agent.into(),
            lease_id: claim.lease_id,
            disposition,
            at,
        }
    };
    let batch = [
        outcome(&ward, "nurse-wang", Disposition::DoNotCall),
        outcome(&call_center, "cc-1", Disposition::Reached),
    ];
    let mut tx = app.store().begin().await.unwrap();
    let applied = app.record_outcomes_in(&mut tx, &batch).await.unwrap();
    app.store().commit(tx).await.unwrap();
    use callback_scheduling::app::OutcomeApplied;
    assert!(matches!(&applied[0], OutcomeApplied::Applied(s) if s.status == Status::Cancelled));
    assert!(
        matches!(
            &applied[1],
            OutcomeApplied::Refused(Error::FailedPrecondition(_))
        ),
        "{:?}",
        applied[1]
    );
    let (survey_state, _) = app
        .load(call_center.state.scheduled.callback_id)
        .await
        .unwrap();
    assert_eq!(
        (survey_state.status, survey_state.end_reason.as_deref()),
        (Status::Cancelled, Some("do not call"))
    );
    // The same report again, alone: logged before, nothing changes.
    let again = app
        .record_outcome(
            ward.state.scheduled.callback_id,
            "nurse-wang-1",
            "nurse-wang",
            ward.lease_id,
            &Disposition::DoNotCall,
            at,
        )
        .await
        .unwrap();
    assert_eq!(again.status, Status::Cancelled);
}

#[tokio::test]
async fn time_travel_and_rebuild_reproduce_the_read_model() {
    let (_db, app, clock) = setup().await;
    // A month of hospital and dealer traffic on simulated time (the demo's), with a probe
    // of the wall clock after day 10 for time travel.
    let first = callback_scheduling::demo::run(&app, &clock, 10, 42)
        .await
        .unwrap();
    assert!(first.facts > 50 && first.claims > 50, "{first:?}");
    let probe = Utc::now();
    let month = callback_scheduling::demo::run(&app, &clock, 30, 7)
        .await
        .unwrap();
    assert!(month.facts > 150, "{month:?}");
    // Late facts and overdue completions are part of the month.
    assert!(
        month.late_facts > 0 && month.reached_overdue > 0,
        "{month:?}"
    );
    let before = rows(&app).await;
    assert!(before.len() > 200, "{} callbacks", before.len());
    let statuses: HashSet<&str> = before.iter().map(|r| r.status.as_str()).collect();
    for expected in ["scheduled", "completed", "lost"] {
        assert!(statuses.contains(expected), "{statuses:?}");
    }

    // A transaction open in another database of the server while the rebuild starts: the
    // rebuild waits for it rather than commit a read model of part of the log.
    let applied = callback_testkit::while_a_foreign_transaction_is_open(
        std::time::Duration::from_millis(700),
        app.rebuild_projections(),
    )
    .await
    .unwrap();
    assert!(applied > 0);
    assert_eq!(
        rows(&app).await,
        before,
        "a rebuild from the log reproduces every row"
    );

    // Time travel: each callback's state as of day 10 is the fold of its events until then;
    // callbacks created before then existed, and some have changed since.
    let mut existed = 0;
    let mut changed_since = 0;
    for row in &before {
        let now = app
            .get_callback(&row.tenant_id, row.callback_id, None)
            .await
            .unwrap();
        match app
            .get_callback(&row.tenant_id, row.callback_id, Some(probe))
            .await
        {
            Ok(then) => {
                existed += 1;
                assert!(then.history.iter().all(|e| e.recorded_at <= probe));
                assert_eq!(
                    then.history[..],
                    now.history[..then.history.len()],
                    "history is a prefix"
                );
                if then.history.len() < now.history.len() {
                    changed_since += 1;
                }
            }
            Err(Error::NotFound(_)) => assert!(
                now.history[0].recorded_at > probe,
                "only later callbacks are unknown then"
            ),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(
        existed > 20 && changed_since > 0,
        "existed {existed}, changed since {changed_since}"
    );
    let any = &before[0];
    assert!(matches!(
        app.get_callback("other-tenant", any.callback_id, None)
            .await,
        Err(Error::NotFound(_))
    ));
    // The log holds every callback's events; nothing was updated in place.
    let page = visible_events(app.store(), "callback").await;
    assert!(page.events.len() >= before.len());
}

#[tokio::test]
async fn frequency_caps_defer_calls_to_one_person_across_policies() {
    let (_db, app, clock) = setup().await;
    publish_frequency_caps(&app, json!({"per_day": 1, "per_week": 3})).await;
    let survey = json!({
        "policy_id": "satisfaction", "name": "满意度调查", "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "survey", "owner": {"kind": "pool", "pool": "ward-nurses"}, "priority": 6,
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {"days": 1}, "latest": {"days": 10}}}]
    });
    app.publish_policy("hospital", &survey.to_string())
        .await
        .unwrap();
    let (fact, subject) = discharge("d1", shanghai(2026, 9, 7, 8, 30), None);
    let scheduled = app.ingest(fact, subject).await.unwrap().scheduled;
    assert_eq!(scheduled.len(), 2, "two policies, one patient");

    // 09:00: the ward call is made (no answer): the patient's one call for the day.
    clock.set(shanghai(2026, 9, 8, 9, 0));
    let c = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.state.scheduled.policy_id, "ward-discharge",
        "the more urgent one first"
    );
    app.record_outcome(
        c.state.scheduled.callback_id,
        "a1",
        "nurse-wang",
        c.lease_id,
        &Disposition::NoAnswer,
        clock_now(&clock),
    )
    .await
    .unwrap();
    // 09:05: the survey is due, but the patient was called today: deferred, not dropped.
    clock.set(shanghai(2026, 9, 8, 9, 5));
    assert!(app
        .claim_next("hospital", "nurse-zhao", &[], 0)
        .await
        .unwrap()
        .is_none());
    let survey_id = scheduled
        .iter()
        .find(|s| s.policy_id == "satisfaction")
        .unwrap()
        .callback_id;
    let (deferred, _) = app.load(survey_id).await.unwrap();
    assert_eq!(
        (deferred.status, deferred.due_at),
        (Status::Scheduled, shanghai(2026, 9, 9, 9, 0))
    );
    // 11:00: the ward call's retry is due; the cap defers it too.
    clock.set(shanghai(2026, 9, 8, 11, 0));
    assert!(app
        .claim_next("hospital", "nurse-zhao", &[], 0)
        .await
        .unwrap()
        .is_none());
    let (retry, _) = app.load(c.state.scheduled.callback_id).await.unwrap();
    assert_eq!(retry.due_at, shanghai(2026, 9, 9, 9, 0));
    let record = app.get_callback("hospital", survey_id, None).await.unwrap();
    assert!(
        record
            .history
            .iter()
            .any(|e| e.event_type == CallbackEvent::RESCHEDULED
                && e.payload.contains("frequency cap"))
    );
    // The next morning one of them may be made.
    clock.set(shanghai(2026, 9, 9, 9, 0));
    assert!(app
        .claim_next("hospital", "nurse-zhao", &[], 0)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_rescheduled_appointment_moves_its_reminder() {
    let (_db, app, _clock) = setup().await;
    let reminder = json!({
        "policy_id": "reminder", "name": "预约提醒",
        "trigger": {"event_type": "appointment.booked"},
        "reschedule_on": ["appointment.rescheduled"], "cancel_on": ["appointment.cancelled"],
        "steps": [{"name": "reminder", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": {"attribute": "appointment_at"},
                              "earliest": {"days": -1, "at": "13:30"}, "latest": {"days": -1, "at": "17:30"}}}]
    });
    app.publish_policy("hospital", &reminder.to_string())
        .await
        .unwrap();
    let booked = |id: &str, event_type: &str, appointment: &str| {
        let (mut fact, subject) = discharge(id, shanghai(2026, 9, 7, 9, 0), None);
        fact.event_type = event_type.into();
        fact.subject_id = "patient-a".into();
        fact.attributes = json!({"appointment_at": appointment})
            .as_object()
            .cloned()
            .unwrap();
        (
            fact,
            SubjectContact {
                subject_id: "patient-a".into(),
                ..subject
            },
        )
    };
    let (fact, subject) = booked("b1", "appointment.booked", "2026-09-10T09:30:00+08:00");
    let first = app.ingest(fact, subject).await.unwrap().scheduled;
    assert_eq!(first[0].due_at, shanghai(2026, 9, 9, 13, 30));

    // Moved to the 15th: the old reminder is cancelled with the reason, a new one planned.
    let (fact, subject) = booked("b2", "appointment.rescheduled", "2026-09-15T10:00:00+08:00");
    let moved = app.ingest(fact, subject).await.unwrap();
    assert_eq!(moved.cancelled, vec![first[0].callback_id]);
    assert_eq!(moved.scheduled.len(), 1);
    assert_eq!(moved.scheduled[0].due_at, shanghai(2026, 9, 14, 13, 30));
    let (old, _) = app.load(first[0].callback_id).await.unwrap();
    assert_eq!(
        old.end_reason.as_deref(),
        Some("moved by appointment.rescheduled")
    );
}

#[tokio::test]
async fn outcomes_applied_as_a_batch_take_effect_once_when_the_checkpoint_is_lost() {
    use callback_eventstore::{apply_batch, ExpectedVersion, Projection, StreamName};
    use callback_scheduling::outcomes::OutcomeConsumer;

    let (_db, app, clock) = setup().await;
    let store = app.store().clone();
    store
        .register_categories("call-logging", &["call_attempt"])
        .await
        .unwrap();
    for i in 0..6 {
        let (fact, subject) = discharge(&format!("lane{i}"), shanghai(2026, 9, 7, 8, 30), None);
        app.ingest(fact, subject).await.unwrap();
    }
    clock.set(shanghai(2026, 9, 8, 9, 0));
    let mut claimed = Vec::new();
    while let Some(claim) = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
    {
        claimed.push(claim);
    }
    assert_eq!(claimed.len(), 6);
    // Call-logging's facts: half reached, half no answer.
    for (i, claim) in claimed.iter().enumerate() {
        let disposition = if i % 2 == 0 {
            Disposition::Reached
        } else {
            Disposition::NoAnswer
        };
        let attempt = CallAttemptLogged {
            tenant_id: claim.state.scheduled.tenant_id.clone(),
            callback_id: claim.state.scheduled.callback_id,
            attempt_id: format!("lane-attempt-{i}"),
            agent_id: "nurse-wang".into(),
            lease_id: claim.lease_id,
            channel: "phone".into(),
            disposition: AttemptDisposition {
                standard: disposition,
                tenant_kind: None,
            },
            started_at: shanghai(2026, 9, 8, 9, 1),
            ended_at: shanghai(2026, 9, 8, 9, 5),
            telephony_call_id: String::new(),
            recording_ref: String::new(),
            notes: String::new(),
            survey_declined: None,
            sealed_for: None,
        };
        store
            .append(
                &StreamName::new(CallAttemptLogged::CATEGORY, format!("lane-attempt-{i}")).unwrap(),
                ExpectedVersion::NoStream,
                &[callback_kit::events::new_event(&attempt).unwrap()],
            )
            .await
            .unwrap();
    }
    let page = visible_events(&store, CallAttemptLogged::CATEGORY).await;
    assert_eq!(page.events.len(), 6);

    // The batch's effects commit, but the checkpoint does not (as if the process died
    // between the two): the feed delivers the batch again.
    let mut consumer = OutcomeConsumer::new(app.clone());
    let mut effects = store.begin().await.unwrap();
    consumer.apply(&mut effects, &page.events).await.unwrap();
    effects.commit().await.unwrap();
    for claim in &claimed {
        let (state, _) = app.load(claim.state.scheduled.callback_id).await.unwrap();
        assert_eq!(state.attempts, 1, "the batch took effect");
    }
    assert_eq!(
        store.load_checkpoint(consumer.name()).await.unwrap(),
        Checkpoint::START
    );
    let applied_once = rows(&app).await;
    assert_eq!(
        applied_once.len(),
        6 + 3,
        "each completed callback's next step is scheduled"
    );
    // The replay applies nothing twice.
    apply_batch(&store, &mut consumer, &page.events, page.checkpoint)
        .await
        .unwrap();
    for (i, claim) in claimed.iter().enumerate() {
        let id = claim.state.scheduled.callback_id;
        let (state, _) = app.load(id).await.unwrap();
        assert_eq!(state.attempts, 1, "callback {i}");
        let expected = if i % 2 == 0 {
            Status::Completed
        } else {
            Status::Scheduled
        };
        assert_eq!(state.status, expected, "callback {i}");
    }
    assert_eq!(
        store.load_checkpoint(consumer.name()).await.unwrap(),
        page.checkpoint
    );
    assert_eq!(rows(&app).await, applied_once, "the replay changed no row");
}

/// The most urgent callback `agent` may take now, found by walking the whole queue (no
/// remembered start), for checking what `claim_next` hands out.
async fn most_urgent_for(
    app: &Scheduling,
    agent: &str,
    pools: &[&str],
    departments: &[&str],
    now: DateTime<Utc>,
) -> Option<Uuid> {
    sqlx::query_scalar(
        "SELECT callback_id FROM sched_callbacks WHERE tenant_id = 'hospital' AND status = 'scheduled' \
         AND due_at <= $1 AND deadline > $1 AND department = ANY($4) \
         AND (owner_agent_id = $2 OR (pool = ANY($3) AND (owner_agent_id IS NULL OR pool_after <= $1))) \
         ORDER BY priority, deadline, due_at, callback_id LIMIT 1",
    )
    .bind(now)
    .bind(agent)
    .bind(pools)
    .bind(departments)
    .fetch_optional(app.store().pool())
    .await
    .unwrap()
}

// Claims walk the queue from where the previous walk found its first waiting row. Callbacks
// keep entering the queue below that point (facts reported late, retries, named times, a more
// urgent policy) and the clock moves on; every claim must still get exactly the callback that
// a walk of the whole queue finds.
#[tokio::test]
async fn claims_always_take_the_most_urgent_callback_as_callbacks_enter_the_queue_anywhere() {
    let (_db, app, clock) = setup().await;
    let urgent = json!({
        "policy_id": "post-surgery", "name": "术后回访", "trigger": {"event_type": "patient.operated"},
        "steps": [{"name": "call", "owner": {"kind": "pool", "pool": "ward-nurses"}, "priority": 1,
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 3}}}]
    });
    app.publish_policy("hospital", &urgent.to_string())
        .await
        .unwrap();
    // A fixed pseudo-random sequence (a linear congruential generator), so a failure repeats.
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let agents: [(&str, &[&str]); 2] = [
        ("nurse-wang", &["cardiology"]),
        ("nurse-zhao", &["cardiology", "surgery"]),
    ];
    clock.set(shanghai(2026, 9, 14, 8, 0));
    let mut claims = 0;
    let mut facts = 0;
    for round in 0..120 {
        // Facts about discharges from up to six days ago (deadlines anywhere in the queue).
        for _ in 0..next(4) {
            facts += 1;
            let hours_ago = next(6 * 24) as i64;
            let (mut fact, mut subject) = discharge(
                &format!("f{facts}"),
                clock_now(&clock) - Duration::hours(hours_ago),
                None,
            );
            if next(3) == 0 {
                subject.department = Some("surgery".into());
            }
            if next(4) == 0 {
                fact.event_type = "patient.operated".into();
            }
            app.ingest(fact, subject).await.unwrap();
        }
        let (agent, departments) = agents[next(2) as usize];
        let now = clock_now(&clock);
        let expected = most_urgent_for(&app, agent, &["ward-nurses"], departments, now).await;
        let claim = app.claim_next("hospital", agent, &[], 3600).await.unwrap();
        assert_eq!(
            claim.as_ref().map(|c| c.state.scheduled.callback_id),
            expected,
            "round {round}: {agent} at {now}"
        );
        if let Some(claim) = claim {
            claims += 1;
            let id = claim.state.scheduled.callback_id;
            // Each outcome puts the callback back into the queue somewhere, or ends it.
            let disposition = match next(3) {
                0 => Disposition::NoAnswer,
                1 => Disposition::NotConvenient {
                    named_time: now + Duration::minutes(10 + next(600) as i64),
                },
                _ => Disposition::Reached,
            };
            app.record_outcome(
                id,
                &format!("a{round}"),
                agent,
                claim.lease_id,
                &disposition,
                now,
            )
            .await
            .unwrap();
        }
        clock.set(now + Duration::minutes(next(40) as i64));
    }
    assert!(claims > 60, "only {claims} claims: the test lost its point");
}

#[tokio::test]
async fn check_leases_names_its_own_field_over_the_bound() {
    let (_db, app, _clock) = setup().await;
    let leases: Vec<callback_scheduling::app::LeaseToCheck> = (0..1001u128)
        .map(|i| callback_scheduling::app::LeaseToCheck {
            callback_id: Uuid::from_u128(i),
            agent_id: "nurse-wang".into(),
            lease_id: Uuid::from_u128(i),
        })
        .collect();
    match app.check_leases("hospital", &leases).await {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "leases"),
        other => panic!("expected INVALID_ARGUMENT on leases, got {other:?}"),
    }
    assert_eq!(
        app.check_leases("hospital", &leases[..1000])
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test]
async fn a_late_fact_skips_the_closed_window_and_plans_the_rest_of_its_series() {
    let (_db, app, clock) = setup().await;
    // Discharged on 1 September, entered on 9 September: the first call's window (2-8
    // September) has closed; the second step's window (from 9 September) is open.
    clock.set(shanghai(2026, 9, 9, 10, 0));
    let (fact, subject) = discharge("late-1", shanghai(2026, 9, 1, 10, 0), None);
    let answer = app.ingest(fact, subject).await.unwrap();
    let planned: Vec<(String, Status, DateTime<Utc>)> = answer
        .scheduled
        .iter()
        .map(|s| (s.step.clone(), s.status, s.due_at))
        .collect();
    assert_eq!(
        planned,
        [
            // Due when its window opened, so figures count it in that period.
            (
                "first".to_owned(),
                Status::Skipped,
                shanghai(2026, 9, 2, 8, 0)
            ),
            (
                "second".to_owned(),
                Status::Scheduled,
                shanghai(2026, 9, 9, 8, 0)
            ),
        ]
    );
    let before = rows(&app).await;
    assert_eq!(before.len(), 2);
    app.rebuild_projections().await.unwrap();
    assert_eq!(rows(&app).await, before);
}

#[tokio::test]
async fn frequency_caps_count_every_subject_on_the_same_number() {
    let (_db, app, clock) = setup().await;
    publish_frequency_caps(&app, json!({"per_day": 1})).await;
    // Two patients, one number written two ways (a parent answering for a child).
    let (fact, parent) = discharge("p1", shanghai(2026, 9, 7, 8, 30), None);
    app.ingest(fact, parent).await.unwrap();
    let (fact, mut child) = discharge("p2", shanghai(2026, 9, 7, 8, 40), None);
    child.phones = vec!["138 0013 8000".into()];
    app.ingest(fact, child).await.unwrap();

    clock.set(shanghai(2026, 9, 8, 9, 0));
    let first = app
        .claim_next("hospital", "nurse-wang", &[], 0)
        .await
        .unwrap()
        .unwrap();
    app.record_outcome(
        first.state.scheduled.callback_id,
        "a1",
        "nurse-wang",
        first.lease_id,
        &Disposition::NoAnswer,
        clock_now(&clock),
    )
    .await
    .unwrap();
    // The person was called today: the other patient's call waits for tomorrow.
    clock.set(shanghai(2026, 9, 8, 9, 5));
    assert!(app
        .claim_next("hospital", "nurse-zhao", &[], 0)
        .await
        .unwrap()
        .is_none());
    let deferred: Vec<CallbackRow> = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.callback_id != first.state.scheduled.callback_id)
        .collect();
    assert_eq!(deferred.len(), 1);
    assert_eq!(
        deferred[0].due_at,
        shanghai(2026, 9, 9, 9, 0),
        "{deferred:?}"
    );
}
