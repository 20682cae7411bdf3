#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use callback_eventstore::{
    apply_batch, BatchProjection, Checkpoint, Error, ExpectedVersion, Filter, Pipeline, Projection,
    RecordedEvent,
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
    let page = read_all_visible(&store, &Filter::all()).await;

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
    let page2 = read_all_visible(&store, &Filter::all()).await;
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

/// The same sum, folded per batch and written with one statement.
struct BatchSum;

impl BatchProjection for BatchSum {
    type Folded = (i64, i64);
    type Error = Error;

    fn name(&self) -> &str {
        "batch_sum"
    }

    fn fold(&self, events: &[RecordedEvent]) -> (i64, i64) {
        let sum = events
            .iter()
            .map(|e| {
                e.decode::<serde_json::Value>().unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .sum();
        (sum, events.len() as i64)
    }

    async fn write(&self, conn: &mut PgConnection, (sum, n): (i64, i64)) -> Result<(), Error> {
        sqlx::query("UPDATE batch_total SET sum = sum + $1, events = events + $2")
            .bind(sum)
            .bind(n)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn batch_total(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT sum, events FROM batch_total")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pipeline_writes_each_batch_once_and_refuses_to_race_another_instance() {
    let (db, store) = store().await;
    sqlx::query("CREATE TABLE batch_total (sum bigint, events bigint)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO batch_total VALUES (0, 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let events: Vec<_> = (1..=30).map(event).collect();
    store
        .append(&stream("p"), ExpectedVersion::Any, &events)
        .await
        .unwrap();
    let page = read_all_visible(&store, &Filter::all()).await;
    let batches: Vec<&[RecordedEvent]> = page.events.chunks(10).collect();

    // Three batches: the committed checkpoint lags one write behind until settled.
    let mut pipeline = Pipeline::new(store.clone(), Arc::new(BatchSum), Checkpoint::START);
    let mut committed = Vec::new();
    for batch in &batches {
        let up_to = batch[batch.len() - 1].checkpoint;
        committed.push(pipeline.submit(batch, up_to).await.unwrap());
    }
    assert_eq!(committed[0], Checkpoint::START);
    assert_eq!(committed[2], batches[1][9].checkpoint);
    let last = batches[2][9].checkpoint;
    assert_eq!(pipeline.settle().await.unwrap(), last);
    assert_eq!(batch_total(&db.pool).await, ((1..=30).sum::<i64>(), 30));
    assert_eq!(store.load_checkpoint("batch_sum").await.unwrap(), last);

    // Resubmitting what was written changes nothing but the checkpoint, which may move on
    // past events the projection never sees.
    pipeline
        .submit(&page.events, page.checkpoint)
        .await
        .unwrap();
    assert_eq!(pipeline.settle().await.unwrap(), page.checkpoint);
    assert_eq!(batch_total(&db.pool).await.1, 30);

    // A second instance that started from an older checkpoint refuses to write on top of the
    // first one's work, and writes nothing.
    let mut stale = Pipeline::new(store.clone(), Arc::new(BatchSum), batches[0][9].checkpoint);
    stale
        .submit(batches[1], batches[1][9].checkpoint)
        .await
        .unwrap();
    let moved = stale.settle().await.unwrap_err();
    assert!(
        matches!(moved, Error::CheckpointMoved { found, .. } if found == page.checkpoint),
        "{moved}"
    );
    assert_eq!(batch_total(&db.pool).await, ((1..=30).sum::<i64>(), 30));

    // So does one starting from the beginning (its first batch would create the checkpoint).
    let mut fresh = Pipeline::new(store.clone(), Arc::new(BatchSum), Checkpoint::START);
    fresh
        .submit(batches[0], batches[0][9].checkpoint)
        .await
        .unwrap();
    let moved = fresh.settle().await.unwrap_err();
    assert!(
        matches!(moved, Error::CheckpointMoved { expected, found, .. }
            if expected == Checkpoint::START && found == page.checkpoint),
        "{moved}"
    );
    assert_eq!(batch_total(&db.pool).await, ((1..=30).sum::<i64>(), 30));
    assert_eq!(
        store.load_checkpoint("batch_sum").await.unwrap(),
        page.checkpoint
    );
}
