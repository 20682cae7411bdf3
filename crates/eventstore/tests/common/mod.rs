#![allow(dead_code, clippy::unwrap_used)]

use callback_eventstore::{EventStore, NewEvent, StreamName};
use callback_testkit::TestDb;

pub async fn store() -> (TestDb, EventStore) {
    store_with_connections(20).await
}

pub async fn store_with_connections(max: u32) -> (TestDb, EventStore) {
    let db = TestDb::with_max_connections(max).await;
    let store = EventStore::open(db.pool.clone()).await.unwrap();
    store
        .register_categories("tests", &["test", "other"])
        .await
        .unwrap();
    (db, store)
}

pub fn stream(id: &str) -> StreamName {
    StreamName::new("test", id).unwrap()
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Thing.Happened",
        &serde_json::json!({ "n": n, "text": "回访 测试" }),
    )
    .unwrap()
}

/// Reads the whole log once everything committed so far is readable. Another test's open
/// transaction anywhere on the server holds the visibility horizon back for a moment.
pub async fn read_all_visible(
    store: &EventStore,
    filter: &callback_eventstore::Filter,
) -> callback_eventstore::ReadPage {
    store.wait_for_horizon().await.unwrap();
    store
        .read_all(callback_eventstore::Checkpoint::START, filter, 10_000)
        .await
        .unwrap()
}

/// Appends events numbered `0..count` to stream `id`, one append each.
pub async fn append_numbered(store: &EventStore, id: &str, count: u64) {
    for n in 0..count {
        store
            .append(
                &stream(id),
                callback_eventstore::ExpectedVersion::Any,
                &[event(n)],
            )
            .await
            .unwrap();
    }
}
