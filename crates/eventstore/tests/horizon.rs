//! Reading "everything" while other transactions are open anywhere on the server: a replay
//! and a subscription's first "caught up" wait for every transaction begun before them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use callback_eventstore::{
    Checkpoint, Error, EventStore, ExpectedVersion, Filter, RecordedEvent, SubscriptionItem,
};
use callback_testkit::ForeignTransaction;
use common::{append_numbered, event, store, stream};

async fn replay_all(store: &EventStore) -> Result<Vec<RecordedEvent>, Error> {
    let mut replay = store.replay(Filter::all()).await?;
    let mut events = Vec::new();
    while let Some(page) = replay.next_page().await? {
        events.extend(page);
    }
    Ok(events)
}

#[tokio::test]
async fn a_replay_reads_everything_committed_by_transactions_begun_before_it() {
    let (_db, store) = store().await;
    append_numbered(&store, "a", 3).await;
    // A writer of this log and a transaction in another database, both begun before the
    // replay; the writer commits while the replay waits.
    let mut writer = store.begin().await.unwrap();
    store
        .append_in(
            &mut writer,
            &stream("late"),
            ExpectedVersion::Any,
            &[event(9)],
        )
        .await
        .unwrap();
    let foreign = ForeignTransaction::open("nightly-backup").await;
    let (events, ()) = tokio::join!(replay_all(&store), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.commit(writer).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        foreign.release().await;
    });
    let events = events.unwrap();
    assert_eq!(events.len(), 4, "the late writer's event is read too");
    assert!(events.iter().any(|e| e.stream_id == "test-late"));
}

#[tokio::test]
async fn a_replay_gives_up_naming_the_session_it_waited_for() {
    let (_db, store) = store().await;
    store
        .append(&stream("a"), ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap();
    let foreign = ForeignTransaction::open("nightly-backup").await;
    let impatient = store.clone().with_horizon_wait(Duration::from_secs(1));
    let error = replay_all(&impatient).await.unwrap_err();
    foreign.release().await;
    let message = error.to_string();
    assert!(matches!(error, Error::HorizonBlocked { .. }), "{message}");
    let pid = message
        .split("pid ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<i32>().ok())
        .collect::<Vec<_>>();
    assert!(
        message.contains("(nightly-backup) in database `postgres`"),
        "{message}"
    );
    assert!(!pid.is_empty(), "{message}");
    // Once it has ended, the replay reads the log.
    assert_eq!(replay_all(&store).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_subscription_is_not_caught_up_while_an_older_transaction_is_open() {
    let (_db, store) = store().await;
    append_numbered(&store, "a", 3).await;
    let foreign = ForeignTransaction::open("etl").await;
    let mut sub = store
        .subscribe(Checkpoint::START, Filter::all())
        .with_poll_interval(Duration::from_millis(50));
    let mut delivered = 0;
    // Everything visible is delivered, but "caught up" is not claimed.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(item) = tokio::time::timeout_at(deadline, sub.next()).await {
        match item.unwrap() {
            SubscriptionItem::Event(_) => delivered += 1,
            SubscriptionItem::CaughtUp(_) => panic!("caught up while an older transaction is open"),
        }
    }
    assert!(delivered <= 3);
    foreign.release().await;
    while let SubscriptionItem::Event(_) = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .unwrap()
        .unwrap()
    {
        delivered += 1;
    }
    assert_eq!(delivered, 3);
}
