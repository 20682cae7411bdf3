#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use callback_eventstore::{Checkpoint, ExpectedVersion, Filter, NewEvent, SubscriptionItem};
use common::{event, store, stream};

async fn next_event(
    sub: &mut callback_eventstore::Subscription,
) -> callback_eventstore::RecordedEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            SubscriptionItem::Event(e) => return e,
            SubscriptionItem::CaughtUp(_) => continue,
        }
    }
}

#[tokio::test]
async fn catches_up_announces_it_then_follows_live_appends() {
    let (_db, store) = store().await;
    common::append_numbered(&store, "a", 3).await;
    let mut sub = store.subscribe(Checkpoint::START, Filter::all());
    let mut caught_up_after = None;
    let mut seen = 0;
    while caught_up_after.is_none() {
        match tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            SubscriptionItem::Event(_) => seen += 1,
            SubscriptionItem::CaughtUp(cp) => caught_up_after = Some(cp),
        }
    }
    // Another test's open transaction may hold the horizon back, so the catch-up may end
    // before all three are visible; the rest arrive live.
    while seen < 3 {
        next_event(&mut sub).await;
        seen += 1;
    }
    assert!(sub.is_live());

    // A live append is delivered without waiting for the fallback poll.
    let live = NewEvent::new("Live.Event", &serde_json::json!({"x": 1})).unwrap();
    let started = std::time::Instant::now();
    store
        .append(
            &stream("b"),
            ExpectedVersion::Any,
            std::slice::from_ref(&live),
        )
        .await
        .unwrap();
    let got = next_event(&mut sub).await;
    assert_eq!(got.event_id, live.event_id);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(sub.checkpoint(), got.checkpoint.max(sub.checkpoint()));
}

#[tokio::test]
async fn a_slow_consumer_falls_back_to_catch_up_and_loses_nothing() {
    let (_db, store) = store().await;
    let mut sub = store
        .subscribe(Checkpoint::START, Filter::categories(["test"]))
        .with_page_size(100);
    // Go live on the empty log.
    assert!(matches!(
        sub.next().await.unwrap(),
        SubscriptionItem::CaughtUp(_)
    ));
    // The consumer stalls while 2,000 events are written.
    for chunk in 0..20u64 {
        let batch: Vec<_> = (0..100).map(|n| event(chunk * 100 + n)).collect();
        store
            .append(&stream("bulk"), ExpectedVersion::Any, &batch)
            .await
            .unwrap();
    }
    let mut last = Checkpoint::START;
    for expected_n in 0..2000u64 {
        let e = next_event(&mut sub).await;
        assert!(e.checkpoint > last);
        last = e.checkpoint;
        let n = e.decode::<serde_json::Value>().unwrap()["n"]
            .as_u64()
            .unwrap();
        assert_eq!(n, expected_n);
    }
}

#[tokio::test]
async fn a_subscription_resumes_from_a_checkpoint_without_repeats() {
    let (_db, store) = store().await;
    let batch: Vec<_> = (0..10).map(event).collect();
    store
        .append(&stream("r"), ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    let mut sub = store.subscribe(Checkpoint::START, Filter::all());
    let mut first_half = Vec::new();
    while first_half.len() < 5 {
        first_half.push(next_event(&mut sub).await);
    }
    let resume_at = sub.checkpoint();
    let mut resumed = store.subscribe(resume_at, Filter::all());
    let mut rest = Vec::new();
    while rest.len() < 5 {
        rest.push(next_event(&mut resumed).await);
    }
    let ids: Vec<_> = first_half.iter().chain(&rest).map(|e| e.event_id).collect();
    let expected: Vec<_> = batch.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, expected);
}
