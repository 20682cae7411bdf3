//! `callbackd rebuild` as an operator runs it, on a shared server where another database has a
//! transaction open (a backup, an ETL job): it waits for it, says which session it waits for,
//! and rebuilds everything once it ends; or gives up after its configured wait, committing
//! nothing.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use callback_testkit::{ForeignTransaction, TestDb};
use serde_json::json;

/// The master key the test's services and the rebuild command share.
fn master_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| callback_vault::MasterKeys::generate_text("test"))
}

/// A scheduling log with a tenant, a policy and one fact.
async fn scheduling_log(db: &TestDb) {
    let store = callback_eventstore::EventStore::open(db.pool.clone())
        .await
        .unwrap();
    store
        .register_categories("scheduling", callback_scheduling::CATEGORIES)
        .await
        .unwrap();
    callback_vault::migrator().run(&db.pool).await.unwrap();
    let keys = callback_vault::MasterKeys::parse(master_key()).unwrap();
    let vault = callback_vault::Vault::open(db.pool.clone(), keys)
        .await
        .unwrap();
    let app = callback_scheduling::open(
        store,
        vault,
        std::sync::Arc::new(callback_rules::SystemClock),
    )
    .await
    .unwrap();
    let settings = json!({"calendar": {"time_zone": "Asia/Shanghai",
        "windows": [{"start": "00:00", "end": "24:00"}],
        "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["desk"]});
    app.publish_tenant("dealer", &settings.to_string())
        .await
        .unwrap();
    let policy = json!({"policy_id": "repair", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "s", "owner": {"kind": "pool", "pool": "desk"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 3}}}]});
    app.publish_policy("dealer", &policy.to_string())
        .await
        .unwrap();
    let fact = callback_scheduling::domain::BusinessFact {
        tenant_id: "dealer".into(),
        source: "dms".into(),
        source_event_id: "ro-1".into(),
        event_type: "repair_order.closed".into(),
        occurred_at: chrono::Utc::now(),
        subject_id: "customer-1".into(),
        attributes: Default::default(),
    };
    let subject = callback_scheduling::app::SubjectContact {
        subject_id: "customer-1".into(),
        name: "李四".into(),
        phones: vec!["13900139000".into()],
        owner_agent_id: None,
        department: None,
        ..Default::default()
    };
    app.ingest(fact, subject).await.unwrap();
}

fn rebuild(db: &TestDb, wait_seconds: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbackd"));
    command
        .args(["rebuild", "scheduling"])
        .env("DATABASE_URL", db.url())
        .env("CALLBACK_MASTER_KEY", master_key())
        .env("CALLBACK_REBUILD_WAIT_SECONDS", wait_seconds.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn the_rebuild_command_waits_for_older_transactions_names_them_and_completes() {
    let db = TestDb::new().await;
    scheduling_log(&db).await;
    let foreign = ForeignTransaction::open("nightly-backup").await;
    let mut child = rebuild(&db, 60).spawn().unwrap();
    // Past the first report (3 s), still waiting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(child.try_wait().unwrap().is_none(), "it must wait");
    foreign.release().await;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("nightly-backup"), "names the session: {said}");
    assert!(
        said.contains("rebuilt the scheduling read models from 4 events (unchanged)"),
        "{said}"
    );
}

#[tokio::test]
async fn the_rebuild_command_gives_up_after_its_wait_and_changes_nothing() {
    let db = TestDb::new().await;
    scheduling_log(&db).await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sched_callbacks")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let before = rows().await;
    let foreign = ForeignTransaction::open("etl-load").await;
    let output = rebuild(&db, 1).output().await.unwrap();
    foreign.release().await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("gave up") && said.contains("etl-load"),
        "{said}"
    );
    assert_eq!(rows().await, before, "nothing was cleared");
}
