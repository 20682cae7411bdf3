//! The services as they run in production: migrations as an owner role, the services as a
//! role that may only read and append to the log and write the read models. That role cannot
//! rewrite the log by any of the ways a table owner or superuser could.

#![allow(clippy::unwrap_used)]

use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    IngestBusinessEventRequest, PublishPolicyRequest, PublishTenantRequest, Subject,
};
use callback_testkit::TestDb;
use callback_tests::{eventually, System};
use serde_json::json;
use sqlx::{ConnectOptions, Connection};

fn url_as(db: &TestDb, role: &str) -> String {
    db.options.clone().username(role).to_url_lossy().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_appends_and_reads_but_cannot_alter_the_log() {
    let db = TestDb::new().await;
    // Roles are the server's, not the database's: named after the test's database.
    let owner = format!("{}_owner", db.name);
    let service = format!("{}_service", db.name);
    for statement in [
        format!("CREATE ROLE {owner} LOGIN"),
        format!("CREATE ROLE {service} LOGIN"),
        format!("ALTER DATABASE {} OWNER TO {owner}", db.name),
        format!("ALTER SCHEMA public OWNER TO {owner}"),
    ] {
        sqlx::query(&statement).execute(&db.pool).await.unwrap();
    }
    let (owner_url, service_url) = (url_as(&db, &owner), url_as(&db, &service));
    let name = db.name.clone();
    let system = System::start_as(&ServiceKind::ALL, db, service_url.clone(), owner_url).await;

    // The whole system works as the service role: publish, ingest, schedule, and the
    // analytics projection fed from the other services' feeds.
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["call-center"], "agents": [{"agent_id": "cc-1", "pools": ["call-center"]}]
    });
    scheduling
        .publish_tenant(PublishTenantRequest {
            tenant_id: "dealer".into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
    let policy = json!({
        "policy_id": "repair-closed", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "within-week", "owner": {"kind": "pool", "pool": "call-center"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    });
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: "dealer".into(),
            policy_json: policy.to_string(),
        })
        .await
        .unwrap();
    let ingested = scheduling
        .ingest_business_event(IngestBusinessEventRequest {
            tenant_id: "dealer".into(),
            source: "dms".into(),
            source_event_id: "ro-1".into(),
            event_type: "repair_order.closed".into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            subject: Some(Subject {
                subject_id: "customer-1".into(),
                phones: vec!["13900139000".into()],
                ..Default::default()
            }),
            attributes_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ingested.scheduled.len(), 1);
    let mut as_service = sqlx::PgConnection::connect(&service_url).await.unwrap();
    eventually(
        std::time::Duration::from_secs(30),
        "analytics projects the callback",
        || {
            let pool = system.db.pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM an_callbacks")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                (n > 0).then_some(())
            }
        },
    )
    .await;

    // Every way to rewrite the log fails for the service role.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut as_service)
        .await
        .unwrap();
    assert!(events > 3);
    let attempts = [
        "UPDATE events SET payload = '{}'::json",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "DROP TRIGGER events_append_only ON events",
        "DROP TABLE events",
        "SET session_replication_role = replica",
        "CREATE OR REPLACE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    ];
    for statement in attempts {
        let refused = sqlx::query(statement).execute(&mut as_service).await;
        let error = refused.expect_err(statement);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned())
            .unwrap_or_default();
        // 42501: insufficient privilege; 42809 and 55000 never apply to a role without
        // ownership, so only a privilege refusal is accepted.
        assert_eq!(code, "42501", "{statement}: {error}");
    }
    // Granting itself more is a no-op (PostgreSQL warns, grants nothing).
    sqlx::query("GRANT UPDATE, DELETE, TRUNCATE ON events TO PUBLIC")
        .execute(&mut as_service)
        .await
        .unwrap();
    let may_change: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE') \
         OR has_table_privilege('events', 'TRUNCATE') OR pg_has_role($1, 'MEMBER')",
    )
    .bind(&owner)
    .fetch_one(&mut as_service)
    .await
    .unwrap();
    assert!(!may_change, "the service role may change the log");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut as_service)
        .await
        .unwrap();
    assert_eq!(after, events);
    as_service.close().await.unwrap();
    system.stop().await;

    // The roles go with the database.
    let mut admin = callback_testkit::server_options().connect().await.unwrap();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {service}"),
        format!("DROP ROLE IF EXISTS {owner}"),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }
}
