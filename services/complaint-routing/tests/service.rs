//! The complaint-routing service's commands against a real PostgreSQL, on simulated time.
//! (Verification callbacks through a real scheduling service are in `tests/complaints.rs` at
//! the workspace root; here scheduling is unreachable, so callback requests wait.)

#![allow(clippy::unwrap_used)]

use callback_contracts::complaint_routing::ComplaintEvent;
use std::sync::Arc;

use callback_complaint_routing::app::{ComplaintRouting, ListFilter};
use callback_complaint_routing::domain::{Action, Class, Customer, Intake, Level, Status};
use callback_complaint_routing::Error;
use callback_eventstore::EventStore;
use callback_rules::ManualClock;
use callback_testkit::TestDb;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

fn shanghai(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn rules() -> Value {
    json!({
        "calendar": {
            "time_zone": "Asia/Shanghai",
            "windows": [{"start": "08:30", "end": "12:00"}, {"start": "13:00", "end": "17:30"}],
            "holidays": ["2026-10-01", "2026-10-02", "2026-10-05"]
        },
        "default_route": {"class": "C", "origin": "our_service", "department": "service_desk"},
        "categories": [
            {"category": "leak", "class": "A", "origin": "our_service", "department": "engineering"},
            {"category": "lift", "class": "C", "origin": "our_service", "department": "engineering"},
            {"category": "suggestion", "class": "E", "origin": "our_service", "department": "service_desk"}
        ],
        "group": {"min_customers": 5, "window_hours": 720, "department": "customer_relations"},
        "targets": {
            "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 40},
            "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 40},
            "C": {"first_response_hours": 8, "update_hours": 16, "resolution_hours": 40},
            "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 80},
            "E": {"first_response_hours": 16, "update_hours": 40, "resolution_hours": 80}
        },
        "departments": {
            "service_desk": {"handler": "desk-pool", "head": "desk-head", "manager": "ops-manager"},
            "engineering": {"handler": "eng-pool", "head": "eng-head", "manager": "ops-manager"},
            "customer_relations": {"handler": "cr-pool", "head": "cr-head", "manager": "ops-manager"}
        },
        "general_manager": "gm"
    })
}

struct Setup {
    db: TestDb,
    app: ComplaintRouting,
    clock: ManualClock,
}

async fn open_app(db: &TestDb, clock: &ManualClock) -> ComplaintRouting {
    let store = EventStore::open(db.pool.clone()).await.unwrap();
    store
        .register_categories("complaint-routing", callback_complaint_routing::CATEGORIES)
        .await
        .unwrap();
    // Nothing listens there: callback requests stay pending, as when scheduling is down.
    let scheduling = callback_kit::grpc::channel("http://127.0.0.1:9").unwrap();
    let vault = callback_vault::Vault::with_fresh_master_key(db.pool.clone())
        .await
        .unwrap();
    callback_complaint_routing::open(store, vault, Arc::new(clock.clone()), scheduling)
        .await
        .unwrap()
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    // Monday 28 September 2026, 09:00 in Shanghai.
    let clock = ManualClock::new(shanghai(9, 28, 9, 0));
    let app = open_app(&db, &clock).await;
    app.publish_rules("estate", &rules().to_string())
        .await
        .unwrap();
    Setup { db, app, clock }
}

fn intake(source_id: &str, customer: &str, category: &str) -> Intake {
    Intake {
        tenant_id: "estate".into(),
        source: "hotline-1".into(),
        source_id: source_id.into(),
        channel: "hotline".into(),
        customer: Customer {
            customer_id: customer.into(),
            name: "王小明".into(),
            phones: vec!["13900139000".into()],
            ..Default::default()
        },
        text: "the lift on block 3 stops between floors".into(),
        category: category.into(),
        ..Intake::default()
    }
}

async fn event_types(app: &ComplaintRouting, id: Uuid) -> Vec<String> {
    app.get("estate", id)
        .await
        .unwrap()
        .history
        .iter()
        .map(|e| e.event_type.clone())
        .collect()
}

fn field_of(error: Error) -> String {
    match error {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

async fn read_model(db: &TestDb) -> Vec<(Uuid, String, i64, String)> {
    sqlx::query_as(
        "SELECT complaint_id, status, version, state::text || coalesce(next_timer_at::text, '') \
         || needs_callback_request::text || breached::text FROM cr_complaints ORDER BY complaint_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn filing_is_idempotent_classified_and_routed() {
    let Setup { app, .. } = setup().await;
    let first = app.file(intake("h-1", "c1", "leak")).await.unwrap();
    assert!(!first.duplicate);
    let state = &first.complaint.state;
    assert_eq!(state.class, Class::A);
    assert_eq!(state.department, "engineering");
    assert_eq!(state.handler, "eng-pool");
    // Class A is reported to the manager at once.
    assert_eq!(state.level, Level::Manager);
    let again = app.file(intake("h-1", "c1", "leak")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.complaint.state.complaint_id(), state.complaint_id());
    assert_eq!(
        event_types(&app, state.complaint_id()).await,
        [ComplaintEvent::FILED, ComplaintEvent::ESCALATED]
    );
    // The same source id for another complaint is a conflict naming the key, not a retry.
    let reused = app.file(intake("h-1", "c9", "leak")).await.unwrap_err();
    assert!(
        matches!(&reused, callback_complaint_routing::Error::KeyReused { field, .. } if field == "source_id"),
        "{reused:?}"
    );
    assert_eq!(
        event_types(&app, state.complaint_id()).await,
        [ComplaintEvent::FILED, ComplaintEvent::ESCALATED]
    );

    // An unknown category falls back to the default route, flagged; nothing is lost.
    let unknown = app.file(intake("h-2", "c2", "parking")).await.unwrap();
    let state = &unknown.complaint.state;
    assert_eq!(state.department, "service_desk");
    assert_eq!(state.filed.flags, ["unknown_category"]);
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let Setup { app, db, .. } = setup().await;
    let mut empty = intake("h-1", "c1", "lift");
    empty.text = "  ".into();
    assert_eq!(field_of(app.file(empty).await.unwrap_err()), "text");
    let mut channel = intake("h-1", "c1", "lift");
    channel.channel = "pigeon".into();
    assert_eq!(field_of(app.file(channel).await.unwrap_err()), "channel");
    let mut phone = intake("h-1", "c1", "lift");
    phone.customer.phones = vec!["call me".into()];
    assert_eq!(
        field_of(app.file(phone).await.unwrap_err()),
        "customer.phones[0]"
    );
    let mut hint = intake("h-1", "c1", "lift");
    hint.severity_hints = vec!["angry".into()];
    assert_eq!(
        field_of(app.file(hint).await.unwrap_err()),
        "severity_hints[0]"
    );
    let mut other_tenant = intake("h-1", "c1", "lift");
    other_tenant.tenant_id = "nobody".into();
    assert!(matches!(
        app.file(other_tenant).await.unwrap_err(),
        Error::FailedPrecondition(_)
    ));
    let mut bad_rules = rules();
    bad_rules["categories"][0]["department"] = json!("nowhere");
    assert_eq!(
        field_of(
            app.publish_rules("estate", &bad_rules.to_string())
                .await
                .unwrap_err()
        ),
        "rules_json.categories[0].department"
    );
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id LIKE 'complaint-%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(count, 0);

    let filed = app.file(intake("h-9", "c9", "lift")).await.unwrap();
    let id = filed.complaint.state.complaint_id();
    let transfer = Action::Transfer {
        to: "moon".into(),
        reason: "wrong desk".into(),
    };
    assert_eq!(
        field_of(app.act("estate", id, "desk-1", transfer).await.unwrap_err()),
        "to_department"
    );
    assert!(matches!(
        app.act("estate", Uuid::nil(), "desk-1", Action::Acknowledge)
            .await
            .unwrap_err(),
        Error::NotFound(_)
    ));
    assert!(matches!(
        app.act("other", id, "desk-1", Action::Acknowledge)
            .await
            .unwrap_err(),
        Error::NotFound(_)
    ));
}

#[tokio::test]
async fn the_fifth_distinct_customer_upgrades_the_whole_group() {
    let Setup { app, clock, db } = setup().await;
    let mut ids = Vec::new();
    for (i, customer) in ["c1", "c2", "c3", "c4"].iter().enumerate() {
        let filed = app
            .file(intake(&format!("h-{i}"), customer, "lift"))
            .await
            .unwrap();
        assert_eq!(filed.complaint.state.class, Class::C);
        ids.push(filed.complaint.state.complaint_id());
        clock.advance(Duration::minutes(10));
    }
    // A second complaint from a customer already counted does not make a fifth customer,
    // but it is a repeat complaint: the manager hears of it.
    let repeat = app.file(intake("h-r", "c2", "lift")).await.unwrap();
    assert_eq!(repeat.complaint.state.class, Class::C);
    assert_eq!(repeat.complaint.state.level, Level::Manager);
    ids.push(repeat.complaint.state.complaint_id());
    // A suggestion (an opinion) on the same topic is another kind and does not count.
    let mut opinion = intake("h-o", "c7", "suggestion");
    opinion.topic = "lift".into();
    let opinion = app.file(opinion).await.unwrap();
    assert_eq!(opinion.complaint.state.class, Class::E);

    let fifth = app.file(intake("h-5", "c5", "lift")).await.unwrap();
    let state = &fifth.complaint.state;
    assert_eq!(state.class, Class::B);
    assert_eq!(state.department, "customer_relations");
    assert!(state.filed.flags.contains(&"group".to_owned()));
    for id in &ids {
        let record = app.get("estate", *id).await.unwrap();
        let state = &record.complaint.state;
        assert_eq!(state.class, Class::B, "every open member is upgraded");
        assert_eq!(state.department, "customer_relations");
        assert_eq!(state.level, Level::Manager);
        let reclassified: Vec<_> = record
            .history
            .iter()
            .filter(|e| e.event_type == ComplaintEvent::RECLASSIFIED)
            .collect();
        assert_eq!(reclassified.len(), 1);
        assert!(reclassified[0]
            .payload
            .contains("5 distinct customers on topic `lift`"));
    }
    let opinion = app
        .get("estate", opinion.complaint.state.complaint_id())
        .await
        .unwrap();
    assert_eq!(opinion.complaint.state.class, Class::E);

    // A sixth customer files straight into the group; nobody is reclassified twice.
    app.file(intake("h-6", "c6", "lift")).await.unwrap();
    let reclassified: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(ComplaintEvent::RECLASSIFIED)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(reclassified, 5);
}

#[tokio::test]
async fn concurrent_filings_count_the_fifth_customer_once() {
    let Setup { app, db, .. } = setup().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.file(intake(&format!("h-{i}"), &format!("c{i}"), "lift"))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let classes: Vec<(String, i64)> =
        sqlx::query_as("SELECT class, count(*) FROM cr_complaints GROUP BY class ORDER BY class")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(classes, [("B".to_owned(), 12)]);
    let reclassified: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(ComplaintEvent::RECLASSIFIED)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(reclassified, 4, "exactly the four filed before the fifth");
}

#[tokio::test]
async fn timers_fire_once_and_survive_a_restart() {
    let Setup { app, clock, db } = setup().await;
    // Monday 09:00; C first response 8 working hours: due Tuesday 09:00.
    let filed = app.file(intake("h-1", "c1", "lift")).await.unwrap();
    let id = filed.complaint.state.complaint_id();
    clock.set(shanghai(9, 28, 17, 0));
    assert_eq!(app.sweep_timers().await.unwrap(), 0);

    // The service "restarts" in the middle of the running clock: a new instance on the same
    // database, after the breach time.
    drop(app);
    clock.set(shanghai(9, 29, 9, 5));
    let app = open_app(&db, &clock).await;
    assert_eq!(app.sweep_timers().await.unwrap(), 1);
    assert_eq!(app.sweep_timers().await.unwrap(), 0, "nothing fires twice");
    let record = app.get("estate", id).await.unwrap();
    assert_eq!(record.complaint.state.level, Level::DepartmentHead);
    assert_eq!(record.complaint.state.escalated_to, "eng-head");
    let breach = record
        .history
        .iter()
        .find(|e| e.event_type == ComplaintEvent::CLOCK_BREACHED)
        .unwrap();
    let payload: Value = serde_json::from_str(&breach.payload).unwrap();
    assert_eq!(payload["clock"], "first_response");
    assert_eq!(
        payload["due_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        shanghai(9, 29, 9, 0)
    );

    // Two sweepers at once (two instances) still fire each timer once.
    clock.set(shanghai(9, 30, 9, 0));
    let other = open_app(&db, &clock).await;
    let (a, b) = tokio::join!(app.sweep_timers(), other.sweep_timers());
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let breaches: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(ComplaintEvent::CLOCK_BREACHED)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(breaches, 2);
}

#[tokio::test]
async fn an_action_after_a_missed_sweep_records_the_breach_first() {
    let Setup { app, clock, .. } = setup().await;
    let filed = app.file(intake("h-1", "c1", "lift")).await.unwrap();
    let id = filed.complaint.state.complaint_id();
    clock.set(shanghai(9, 29, 10, 0));
    let acted = app
        .act("estate", id, "eng-7", Action::Acknowledge)
        .await
        .unwrap();
    assert_eq!(
        acted.event_types,
        [
            ComplaintEvent::CLOCK_BREACHED,
            ComplaintEvent::ESCALATED,
            ComplaintEvent::ACKNOWLEDGED
        ]
    );
    assert_eq!(acted.complaint.state.status, Status::InProgress);
    // Acknowledging twice is refused, and changes nothing.
    assert!(matches!(
        app.act("estate", id, "eng-7", Action::Acknowledge)
            .await
            .unwrap_err(),
        Error::FailedPrecondition(_)
    ));
}

#[tokio::test]
async fn waiting_on_the_customer_pauses_the_clocks() {
    let Setup { app, clock, .. } = setup().await;
    let filed = app.file(intake("h-1", "c1", "lift")).await.unwrap();
    let id = filed.complaint.state.complaint_id();
    clock.set(shanghai(9, 28, 10, 0));
    app.act("estate", id, "eng-7", Action::Acknowledge)
        .await
        .unwrap();
    clock.set(shanghai(9, 28, 11, 0));
    let asked = app
        .act(
            "estate",
            id,
            "eng-7",
            Action::RequestInformation {
                question: "which floor?".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(asked.complaint.state.status, Status::WaitingOnCustomer);
    // Two weeks pass: no timer can fire while waiting.
    clock.set(shanghai(10, 12, 9, 0));
    assert_eq!(app.sweep_timers().await.unwrap(), 0);
    let refused = app
        .act(
            "estate",
            id,
            "eng-7",
            Action::AddProgress {
                note: "parts ordered".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::FailedPrecondition(_)));
    let resumed = app
        .act(
            "estate",
            id,
            "eng-7",
            Action::ReceiveInformation {
                note: "floor 12".into(),
            },
        )
        .await
        .unwrap();
    let state = &resumed.complaint.state;
    let calendar = &resumed.complaint.calendar.calendar;
    // 2.5 working hours were used before the pause (08:30 is not counted: filed at 09:00).
    assert_eq!(
        state.resolution.elapsed(calendar, shanghai(10, 12, 9, 0)),
        Duration::hours(2)
    );
    assert!(state.resolution.is_running());
}

#[tokio::test]
async fn closed_complaints_refuse_actions_and_rebuild_reproduces_every_row() {
    let Setup { app, clock, db } = setup().await;
    let mut ids = Vec::new();
    for (i, category) in ["lift", "leak", "suggestion", "parking"].iter().enumerate() {
        let filed = app
            .file(intake(&format!("h-{i}"), &format!("c{i}"), category))
            .await
            .unwrap();
        ids.push(filed.complaint.state.complaint_id());
    }
    clock.set(shanghai(9, 28, 11, 0));
    app.act("estate", ids[0], "eng-7", Action::Acknowledge)
        .await
        .unwrap();
    app.act(
        "estate",
        ids[1],
        "eng-7",
        Action::Transfer {
            to: "service_desk".into(),
            reason: "tenant's own pipe".into(),
        },
    )
    .await
    .unwrap();
    let rejected = app
        .act(
            "estate",
            ids[3],
            "desk-1",
            Action::Reject {
                explanation: "not our car park".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rejected.complaint.state.status, Status::Rejected);
    assert!(rejected.complaint.state.needs_callback_request());
    let refused = app
        .act(
            "estate",
            ids[3],
            "desk-1",
            Action::AddProgress {
                note: "more".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::FailedPrecondition(_)));
    app.act(
        "estate",
        ids[0],
        "eng-7",
        Action::Resolve {
            resolution: "cable replaced".into(),
        },
    )
    .await
    .unwrap();
    clock.set(shanghai(10, 9, 12, 0));
    assert!(app.sweep_timers().await.unwrap() > 0);

    let open = app
        .list(&ListFilter {
            tenant_id: "estate".into(),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 3, "the rejected complaint is not open");
    let breached = app
        .list(&ListFilter {
            tenant_id: "estate".into(),
            breach: "breached".into(),
            department: "service_desk".into(),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert!(breached.iter().all(|c| c.state.is_breached()));
    assert!(!breached.is_empty());

    let before = read_model(&db).await;
    callback_testkit::while_a_foreign_transaction_is_open(
        std::time::Duration::from_millis(700),
        app.rebuild_projections(),
    )
    .await
    .unwrap();
    assert_eq!(read_model(&db).await, before);
    // And each snapshot equals the fold of its stream.
    for id in ids {
        let record = app.get("estate", id).await.unwrap();
        let events: Vec<_> = record.history.iter().map(|e| e.decode().unwrap()).collect();
        let folded = callback_complaint_routing::app::fold(
            None,
            &events,
            &record.complaint.calendar.calendar,
        )
        .unwrap();
        assert_eq!(folded, record.complaint.state);
    }
}

/// `RoutingRulesPublished` carries the rules document as JSON (`callback-contracts`); the golden
/// document there must stay rules this service reads, unchanged by a round trip.
#[test]
fn the_contracts_golden_rules_document_is_routing_rules() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/contracts/tests/documents/routing_rules.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let (rules, _calendar) =
        callback_complaint_routing::domain::RoutingRules::parse(&text).unwrap();
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&rules).unwrap(), document);
}

#[tokio::test]
async fn a_complainant_without_an_id_is_recognised_by_number_however_written() {
    let Setup { app, .. } = setup().await;
    let anonymous = |source_id: &str, phone: &str| Intake {
        customer: Customer {
            customer_id: String::new(),
            name: String::new(),
            phones: vec![phone.into()],
            ..Default::default()
        },
        ..intake(source_id, "", "noise")
    };
    // A walk-in leaves only a number; a week later a letter gives it written another way.
    let first = app
        .file(anonymous("walk-in-1", "139-2222-3333"))
        .await
        .unwrap();
    assert_ne!(first.complaint.state.level, Level::Manager);
    assert_eq!(
        first.complaint.state.filed.customer.phones,
        ["+8613922223333"]
    );
    let again = app
        .file(anonymous("letter-1", "+86 139 2222 3333"))
        .await
        .unwrap();
    // The same person: a repeat complainant, reported to the manager at once.
    assert_eq!(again.complaint.state.level, Level::Manager);
    // Nobody identified at all is still a complaint.
    let nobody = Intake {
        customer: Customer::default(),
        ..intake("letter-2", "", "noise")
    };
    assert!(!app.file(nobody).await.unwrap().duplicate);
}

#[tokio::test]
async fn numbers_are_read_in_the_tenants_region() {
    let Setup { app, .. } = setup().await;
    let mut hong_kong = rules();
    hong_kong["phone_region"] = json!("HK");
    app.publish_rules("hk-estate", &hong_kong.to_string())
        .await
        .unwrap();
    let filed = app
        .file(Intake {
            tenant_id: "hk-estate".into(),
            customer: Customer {
                customer_id: "c1".into(),
                name: String::new(),
                phones: vec!["9123 4567".into()],
                ..Default::default()
            },
            ..intake("hk-1", "c1", "noise")
        })
        .await
        .unwrap();
    assert_eq!(
        filed.complaint.state.filed.customer.phones,
        ["+85291234567"]
    );
    hong_kong["phone_region"] = json!("XX");
    let refused = app
        .publish_rules("hk-estate", &hong_kong.to_string())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("phone_region"), "{refused}");
}
