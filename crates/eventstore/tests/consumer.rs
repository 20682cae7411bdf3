#![allow(clippy::unwrap_used)]

mod common;

use callback_eventstore::{
    apply_batch, Checkpoint, ExpectedVersion, Filter, Projection, RecordedEvent,
};
use common::{event, read_all_visible, store, stream};
use sqlx::PgConnection;

/// Sums the `n` of every event; optionally fails after a number of events (a crash).
struct Sum {
    fail_after: Option<usize>,
}

impl Projection for Sum {
    type Error = callback_eventstore::Error;

    fn name(&self) -> &str {
        "sum"
    }

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), Self::Error> {
        for (i, e) in events.iter().enumerate() {
            if self.fail_after == Some(i) {
                return Err(callback_eventstore::Error::AppendOnly);
            }
            let n = e.decode::<serde_json::Value>()?["n"].as_i64().unwrap_or(0);
            sqlx::query("UPDATE total SET sum = sum + $1, events = events + 1")
                .bind(n)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn effects_and_checkpoint_commit_together_exactly_once() {
    let (db, store) = store().await;
    sqlx::query("CREATE TABLE total (sum bigint, events bigint)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO total VALUES (0, 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let batch: Vec<_> = (1..=10).map(event).collect();
    store
        .append(&stream("c"), ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    let page = read_all_visible(&store, &Filter::all(), 10).await;

    // A crash half-way through leaves neither effects nor checkpoint.
    let mut crashing = Sum {
        fail_after: Some(5),
    };
    assert!(
        apply_batch(&store, &mut crashing, &page.events, page.checkpoint)
            .await
            .is_err()
    );
    assert_eq!(
        store.load_checkpoint("sum").await.unwrap(),
        Checkpoint::START
    );
    let (sum, n): (i64, i64) = sqlx::query_as("SELECT sum, events FROM total")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((sum, n), (0, 0));

    // The retry applies everything once; applying the same batch again changes nothing.
    let mut healthy = Sum { fail_after: None };
    assert_eq!(
        apply_batch(&store, &mut healthy, &page.events, page.checkpoint)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        apply_batch(&store, &mut healthy, &page.events, page.checkpoint)
            .await
            .unwrap(),
        0
    );
    // An overlapping batch applies only its new part.
    let more: Vec<_> = (11..=12).map(event).collect();
    store
        .append(&stream("c"), ExpectedVersion::Any, &more)
        .await
        .unwrap();
    let page2 = read_all_visible(&store, &Filter::all(), 12).await;
    assert_eq!(
        apply_batch(&store, &mut healthy, &page2.events, page2.checkpoint)
            .await
            .unwrap(),
        2
    );

    let (sum, n): (i64, i64) = sqlx::query_as("SELECT sum, events FROM total")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((sum, n), ((1..=12).sum::<i64>(), 12));
    assert_eq!(
        store.load_checkpoint("sum").await.unwrap(),
        page2.checkpoint
    );
}
