#![allow(clippy::unwrap_used)]

mod common;

use callback_eventstore::{
    Checkpoint, Error, ExpectedVersion, Filter, NewEvent, StreamAppend, StreamName,
    MAX_PAYLOAD_BYTES,
};
use common::{event, read_all_visible, store, stream};

#[tokio::test]
async fn expected_versions_are_enforced_and_conflicts_carry_the_actual_version() {
    let (_db, store) = store().await;
    let s = stream("a");

    let first = store
        .append(&s, ExpectedVersion::NoStream, &[event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(first.stream_version, 2);
    assert!(!first.already_written);

    match store
        .append(&s, ExpectedVersion::NoStream, &[event(3)])
        .await
    {
        Err(Error::VersionConflict {
            actual, expected, ..
        }) => {
            assert_eq!(actual, 2);
            assert_eq!(expected, ExpectedVersion::NoStream);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&s, ExpectedVersion::Exact(1), &[event(3)])
        .await
    {
        Err(Error::VersionConflict { actual: 2, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&s, ExpectedVersion::Exact(5), &[event(3)])
        .await
    {
        Err(Error::VersionConflict { actual: 2, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let third = store
        .append(&s, ExpectedVersion::Exact(2), &[event(3)])
        .await
        .unwrap();
    assert_eq!(third.stream_version, 3);
    let fourth = store
        .append(&s, ExpectedVersion::Any, &[event(4)])
        .await
        .unwrap();
    assert_eq!(fourth.stream_version, 4);

    let events = store.read_stream(&s, 1).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let ns: Vec<u64> = events
        .iter()
        .map(|e| {
            e.decode::<serde_json::Value>().unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, vec![1, 2, 3, 4]);
    assert_eq!(store.read_stream(&s, 3).await.unwrap().len(), 2);
    assert_eq!(store.stream_version(&s).await.unwrap(), 4);
}

#[tokio::test]
async fn a_retried_append_with_the_same_ids_writes_nothing_twice() {
    let (_db, store) = store().await;
    let s = stream("idem");
    let batch = vec![event(1), event(2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    // Same ids with the original expected version, and with "any": both succeed, no writes.
    let again = store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    assert!(again.already_written);
    assert_eq!(again.stream_version, first.stream_version);
    assert_eq!(again.first_position, first.first_position);
    let again_any = store
        .append(&s, ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    assert!(again_any.already_written);
    assert_eq!(store.read_stream(&s, 1).await.unwrap().len(), 2);

    // An id reused in another stream, or mixed with new ids, is an error and writes nothing.
    let reused = vec![event(9), batch[0].clone()];
    match store
        .append(&stream("other"), ExpectedVersion::Any, &reused)
        .await
    {
        Err(Error::DuplicateEventId(id)) => assert_eq!(id, batch[0].event_id),
        other => panic!("expected a duplicate id error, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream("other")).await.unwrap(), 0);
}

#[tokio::test]
async fn bad_input_is_rejected_with_a_typed_error_and_nothing_is_written() {
    let (_db, store) = store().await;
    let s = stream("bad");

    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[]).await,
        Err(Error::EmptyBatch)
    ));
    let malformed = NewEvent::from_json("Thing.Happened", "{not json");
    match store
        .append(&s, ExpectedVersion::Any, &[event(1), malformed])
        .await
    {
        Err(Error::InvalidEvent {
            index: 1,
            field: "payload",
            ..
        }) => {}
        other => panic!("expected a malformed payload error, got {other:?}"),
    }
    let not_object = NewEvent::from_json("Thing.Happened", "[1,2]");
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[not_object]).await,
        Err(Error::InvalidEvent {
            field: "payload",
            ..
        })
    ));
    let huge = "x".repeat(MAX_PAYLOAD_BYTES);
    let oversized = NewEvent::new("Thing.Happened", &serde_json::json!({ "text": huge })).unwrap();
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, &[event(1), oversized])
            .await,
        Err(Error::EventTooLarge {
            index: 1,
            field: "payload",
            ..
        })
    ));
    let bad_type = NewEvent::new("has spaces", &serde_json::json!({})).unwrap();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[bad_type]).await,
        Err(Error::InvalidEvent {
            field: "event_type",
            ..
        })
    ));
    let unknown = StreamName::new("nobody_owns_this", "1").unwrap();
    match store
        .append(&unknown, ExpectedVersion::Any, &[event(1)])
        .await
    {
        Err(Error::UnknownCategory(c)) => assert_eq!(c, "nobody_owns_this"),
        other => panic!("expected unknown category, got {other:?}"),
    }
    assert!(matches!(
        StreamName::new("Bad Category", "1"),
        Err(Error::InvalidStream(_))
    ));
    assert!(matches!(
        StreamName::new("test", ""),
        Err(Error::InvalidStream(_))
    ));
    let twice = event(1);
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, &[twice.clone(), twice])
            .await,
        Err(Error::InvalidEvent {
            field: "event_id",
            ..
        })
    ));

    let everything = store
        .read_all(Checkpoint::START, &Filter::all(), 100)
        .await
        .unwrap();
    assert!(
        everything.events.is_empty(),
        "nothing may be written by rejected appends"
    );
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_when_the_database_rejects_part_of_it() {
    let (_db, store) = store().await;
    let taken = event(1);
    store
        .append(
            &stream("x"),
            ExpectedVersion::Any,
            std::slice::from_ref(&taken),
        )
        .await
        .unwrap();
    // The second event's id is taken: the first must not be written either.
    let batch = vec![event(2), taken];
    assert!(store
        .append(&stream("y"), ExpectedVersion::Any, &batch)
        .await
        .is_err());
    assert_eq!(store.stream_version(&stream("y")).await.unwrap(), 0);
}

#[tokio::test]
async fn appends_inside_a_caller_transaction_commit_or_roll_back_with_it() {
    let (db, store) = store().await;
    sqlx::query("CREATE TABLE side (n int)")
        .execute(&db.pool)
        .await
        .unwrap();

    let mut tx = store.begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            &stream("t"),
            ExpectedVersion::NoStream,
            &[event(1)],
        )
        .await
        .unwrap();
    sqlx::query("INSERT INTO side VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // A conflict inside the transaction leaves it usable.
    assert!(store
        .append_in(
            &mut tx,
            &stream("t"),
            ExpectedVersion::NoStream,
            &[event(2)]
        )
        .await
        .is_err());
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version(&stream("t")).await.unwrap(), 0);

    let mut tx = store.begin().await.unwrap();
    let e = event(1);
    store
        .append_in(
            &mut tx,
            &stream("t"),
            ExpectedVersion::NoStream,
            std::slice::from_ref(&e),
        )
        .await
        .unwrap();
    // An idempotent retry inside the same transaction recovers through the savepoint.
    let again = store
        .append_in(
            &mut tx,
            &stream("t"),
            ExpectedVersion::Any,
            std::slice::from_ref(&e),
        )
        .await
        .unwrap();
    assert!(again.already_written);
    sqlx::query("INSERT INTO side VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    store.commit(tx).await.unwrap();
    assert_eq!(store.stream_version(&stream("t")).await.unwrap(), 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM side")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn read_all_follows_global_order_and_filters() {
    let (_db, store) = store().await;
    let other = StreamName::new("other", "1").unwrap();
    store
        .append(&stream("a"), ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap();
    store
        .append(
            &other,
            ExpectedVersion::Any,
            &[NewEvent::new("Other.Thing", &serde_json::json!({})).unwrap()],
        )
        .await
        .unwrap();
    store
        .append(&stream("b"), ExpectedVersion::Any, &[event(2), event(3)])
        .await
        .unwrap();

    let all = read_all_visible(&store, &Filter::all()).await;
    assert_eq!(all.events.len(), 4);
    assert!(all.reached_horizon);
    assert!(all
        .events
        .windows(2)
        .all(|w| w[0].checkpoint < w[1].checkpoint));

    let only_test = store
        .read_all(Checkpoint::START, &Filter::categories(["test"]), 100)
        .await
        .unwrap();
    assert_eq!(only_test.events.len(), 3);
    let by_type = store
        .read_all(
            Checkpoint::START,
            &Filter::all().with_event_types(["Other.Thing"]),
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_type.events.len(), 1);
    assert_eq!(by_type.events[0].category, "other");
    // The filtered read still advanced past everything it scanned.
    assert!(by_type.checkpoint >= all.events[3].checkpoint);
    let nothing_new = store
        .read_all(by_type.checkpoint, &Filter::all(), 100)
        .await
        .unwrap();
    assert!(nothing_new.events.is_empty());

    // Paging: two pages of two.
    let page1 = store
        .read_all(Checkpoint::START, &Filter::all(), 2)
        .await
        .unwrap();
    assert!(!page1.reached_horizon);
    let page2 = store
        .read_all(page1.checkpoint, &Filter::all(), 2)
        .await
        .unwrap();
    let paged: Vec<_> = page1
        .events
        .iter()
        .chain(&page2.events)
        .map(|e| e.event_id)
        .collect();
    let whole: Vec<_> = all.events.iter().map(|e| e.event_id).collect();
    assert_eq!(paged, whole);
}

#[tokio::test]
async fn the_log_rejects_update_delete_and_truncate() {
    let (db, store) = store().await;
    store
        .append(&stream("a"), ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap();
    for statement in [
        "UPDATE events SET event_type = 'Changed'",
        "DELETE FROM events",
        "DELETE FROM events WHERE false",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        let error = Error::from(error);
        assert!(matches!(error, Error::AppendOnly), "{statement}: {error:?}");
    }
    assert_eq!(store.read_stream(&stream("a"), 1).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_loses_a_race_gets_a_typed_conflict_with_the_actual_version() {
    let (db, store) = store().await;
    let s = stream("race");
    // Writer A holds version 1 uncommitted.
    let mut a = store.begin().await.unwrap();
    store
        .append_in(&mut a, &s, ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();
    // Writer B, in its own transaction, blocks on A's unique index entry.
    let b = {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            store
                .append_in(&mut tx, &s, ExpectedVersion::NoStream, &[event(2)])
                .await
        })
    };
    // Wait (polling, with a deadline) until B is really waiting on A's lock, then commit A.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never blocked");
        tokio::task::yield_now().await;
    }
    store.commit(a).await.unwrap();
    match b.await.unwrap() {
        Err(Error::VersionConflict {
            actual, expected, ..
        }) => {
            assert_eq!(actual, 1);
            assert_eq!(expected, ExpectedVersion::NoStream);
        }
        other => panic!("expected a typed conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_multi_stream_append_checks_every_stream_and_writes_all_or_nothing() {
    let (_db, store) = store().await;
    let (a, b, c) = (stream("multi-a"), stream("multi-b"), stream("multi-c"));
    store
        .append(&a, ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();

    let (to_a, to_b) = ([event(2), event(3)], [event(4)]);
    let mut tx = store.begin().await.unwrap();
    let results = store
        .append_streams_in(
            &mut tx,
            &[
                StreamAppend {
                    stream: &a,
                    expected: ExpectedVersion::Exact(1),
                    events: &to_a,
                },
                StreamAppend {
                    stream: &b,
                    expected: ExpectedVersion::NoStream,
                    events: &to_b,
                },
            ],
        )
        .await
        .unwrap();
    store.commit(tx).await.unwrap();
    assert_eq!(
        results.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        vec![3, 1]
    );
    assert!(results[0].first_position < results[1].first_position);

    // One stale expectation: a typed conflict naming that stream, nothing written to any, and
    // the caller's transaction still usable.
    let (to_c, to_a_again) = ([event(5)], [event(6)]);
    let mut tx = store.begin().await.unwrap();
    match store
        .append_streams_in(
            &mut tx,
            &[
                StreamAppend {
                    stream: &c,
                    expected: ExpectedVersion::NoStream,
                    events: &to_c,
                },
                StreamAppend {
                    stream: &a,
                    expected: ExpectedVersion::Exact(2),
                    events: &to_a_again,
                },
            ],
        )
        .await
    {
        Err(Error::VersionConflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, a.stream_id());
            assert_eq!(expected, ExpectedVersion::Exact(2));
            assert_eq!(actual, 3);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let still_usable: i64 = sqlx::query_scalar("SELECT 1::int8")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(still_usable, 1);
    tx.commit().await.unwrap();

    let mut conn = store.pool().acquire().await.unwrap();
    let read = store
        .read_streams_on(&mut conn, &[c.clone(), a.clone(), b.clone()])
        .await
        .unwrap();
    let versions: Vec<Vec<i64>> = read
        .iter()
        .map(|events| events.iter().map(|e| e.stream_version).collect())
        .collect();
    assert_eq!(versions, vec![vec![], vec![1, 2, 3], vec![1]]);

    // Input the statement cannot take: named before anything is sent.
    let mut tx = store.begin().await.unwrap();
    let twice = store
        .append_streams_in(
            &mut tx,
            &[
                StreamAppend {
                    stream: &c,
                    expected: ExpectedVersion::NoStream,
                    events: &to_c,
                },
                StreamAppend {
                    stream: &c,
                    expected: ExpectedVersion::NoStream,
                    events: &to_a_again,
                },
            ],
        )
        .await;
    assert!(
        matches!(twice, Err(Error::InvalidStream(ref m)) if m.contains("twice")),
        "{twice:?}"
    );
    let any = store
        .append_streams_in(
            &mut tx,
            &[StreamAppend {
                stream: &c,
                expected: ExpectedVersion::Any,
                events: &to_c,
            }],
        )
        .await;
    assert!(matches!(any, Err(Error::InvalidStream(_))), "{any:?}");
    let empty = store
        .append_streams_in(
            &mut tx,
            &[StreamAppend {
                stream: &c,
                expected: ExpectedVersion::NoStream,
                events: &[],
            }],
        )
        .await;
    assert!(matches!(empty, Err(Error::EmptyBatch)), "{empty:?}");
    drop(tx);
    assert_eq!(store.stream_version(&c).await.unwrap(), 0);

    // Commands served together: the one whose expectation is stale (a retry) is left out and
    // the others written in the same transaction.
    let mut tx = store.begin().await.unwrap();
    let written = store
        .append_commands_in(
            &mut tx,
            &[
                vec![StreamAppend {
                    stream: &a,
                    expected: ExpectedVersion::NoStream,
                    events: &to_a_again,
                }],
                vec![StreamAppend {
                    stream: &c,
                    expected: ExpectedVersion::NoStream,
                    events: &to_c,
                }],
            ],
        )
        .await
        .unwrap();
    store.commit(tx).await.unwrap();
    assert_eq!(written, vec![false, true]);
    assert_eq!(store.stream_version(&a).await.unwrap(), 3);
    assert_eq!(store.stream_version(&c).await.unwrap(), 1);
}
