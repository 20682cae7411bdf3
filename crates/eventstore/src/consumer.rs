//! Consumers that apply events to a read model with their checkpoint in the same
//! transaction, so each event's effects happen exactly once across crashes and retries.

use std::future::Future;

use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row, Transaction};

use crate::error::Result;
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::EventStore;

/// A transaction holding a consumer's checkpoint row locked.
///
/// Write the read model through [`ConsumerTx::conn`], then [`ConsumerTx::commit`] with the
/// checkpoint of the last event applied. A second instance of the same consumer blocks on the
/// lock and then sees the advanced checkpoint, so it never applies the same events twice.
pub struct ConsumerTx {
    tx: Transaction<'static, Postgres>,
    consumer: String,
    stored: Checkpoint,
}

impl ConsumerTx {
    /// The checkpoint stored when the transaction began.
    pub fn checkpoint(&self) -> Checkpoint {
        self.stored
    }

    /// True when `event` lies after the stored checkpoint (has not been applied yet).
    pub fn is_new(&self, event: &RecordedEvent) -> bool {
        event.checkpoint > self.stored
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The underlying transaction, e.g. to append events with [`EventStore::append_in`].
    pub fn transaction(&mut self) -> &mut Transaction<'static, Postgres> {
        &mut self.tx
    }

    /// Stores the checkpoint (never moving it backwards) and commits.
    pub async fn commit(mut self, checkpoint: Checkpoint) -> Result<()> {
        if checkpoint > self.stored {
            sqlx::query(
                "UPDATE consumer_checkpoints SET transaction_id = $2, position = $3, \
                 updated_at = now() WHERE consumer = $1",
            )
            .bind(&self.consumer)
            .bind(checkpoint.transaction_id as i64)
            .bind(checkpoint.position)
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

impl EventStore {
    /// The consumer's stored checkpoint, or the start of the log.
    pub async fn load_checkpoint(&self, consumer: &str) -> Result<Checkpoint> {
        let row = sqlx::query(
            "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1",
        )
        .bind(consumer)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(row) => Checkpoint::new(
                row.try_get::<i64, _>("transaction_id")? as u64,
                row.try_get("position")?,
            ),
            None => Checkpoint::START,
        })
    }

    /// Begins a consumer transaction, locking the consumer's checkpoint row.
    pub async fn begin_consumer(&self, consumer: &str) -> Result<ConsumerTx> {
        let mut tx = self.pool().begin().await?;
        // One round trip: creates the row on first use, else locks it (the no-op update) and
        // returns what is stored.
        let row = sqlx::query(
            "INSERT INTO consumer_checkpoints (consumer, transaction_id, position) \
             VALUES ($1, 0, 0) \
             ON CONFLICT (consumer) DO UPDATE SET consumer = EXCLUDED.consumer \
             RETURNING transaction_id, position",
        )
        .bind(consumer)
        .fetch_one(&mut *tx)
        .await?;
        let stored = Checkpoint::new(
            row.try_get::<i64, _>("transaction_id")? as u64,
            row.try_get("position")?,
        );
        Ok(ConsumerTx {
            tx,
            consumer: consumer.to_owned(),
            stored,
        })
    }

    /// Begins the transaction that writes one batch of a read model, moving the consumer's
    /// checkpoint from `expected` to `up_to` first (one statement that checks and locks it).
    /// Another instance that moved the checkpoint meanwhile makes it fail with
    /// [`Error::CheckpointMoved`](crate::Error::CheckpointMoved), so nothing is applied twice.
    ///
    /// The commit does not wait for the WAL flush: the transaction holds read-model rows and
    /// their checkpoint only, so a crash that loses its commit loses both, and the events are
    /// applied again from the checkpoint that survived. Not for transactions with effects
    /// outside the database.
    pub(crate) async fn begin_batch(
        &self,
        consumer: &str,
        expected: Checkpoint,
        up_to: Checkpoint,
    ) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?;
        // The first batch ever creates the row; later ones must find it where they left it.
        let advance = if expected == Checkpoint::START {
            "INSERT INTO consumer_checkpoints (consumer, transaction_id, position) VALUES ($1, $4, $5) \
             ON CONFLICT (consumer) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, \
               position = EXCLUDED.position, updated_at = now() \
             WHERE consumer_checkpoints.transaction_id = $2 AND consumer_checkpoints.position = $3"
        } else {
            "UPDATE consumer_checkpoints SET transaction_id = $4, position = $5, updated_at = now() \
             WHERE consumer = $1 AND transaction_id = $2 AND position = $3"
        };
        let advanced = sqlx::query(advance)
            .bind(consumer)
            .bind(expected.transaction_id as i64)
            .bind(expected.position)
            .bind(up_to.transaction_id as i64)
            .bind(up_to.position)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if advanced != 1 {
            tx.rollback().await?;
            return Err(crate::Error::CheckpointMoved {
                consumer: consumer.to_owned(),
                expected,
                found: self.load_checkpoint(consumer).await?,
            });
        }
        Ok(tx)
    }

    /// Forgets a consumer's checkpoint (for a rebuild). The caller clears its read model in
    /// the same transaction.
    pub async fn reset_checkpoint(&self, conn: &mut PgConnection, consumer: &str) -> Result<()> {
        sqlx::query("DELETE FROM consumer_checkpoints WHERE consumer = $1")
            .bind(consumer)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// A read model fed by events.
pub trait Projection {
    type Error: From<crate::Error>;

    /// A stable name; the checkpoint is stored under it.
    fn name(&self) -> &str;

    /// Applies events (all new to this projection, in global order) inside the transaction.
    fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Applies a batch to a projection and advances its checkpoint to `up_to` in one
/// transaction. Events at or before the stored checkpoint are skipped, so replays and
/// concurrent duplicates have no effect. Returns how many events were applied.
pub async fn apply_batch<P: Projection>(
    store: &EventStore,
    projection: &mut P,
    events: &[RecordedEvent],
    up_to: Checkpoint,
) -> Result<usize, P::Error> {
    let mut tx = store.begin_consumer(projection.name()).await?;
    let first_new = events.partition_point(|e| !tx.is_new(e));
    let fresh = &events[first_new..];
    if !fresh.is_empty() {
        projection.apply(tx.conn(), fresh).await?;
    }
    if fresh.is_empty() && up_to <= tx.checkpoint() {
        return Ok(0);
    }
    tx.commit(up_to).await?;
    if !fresh.is_empty() {
        // The projection may have appended events of its own.
        store.notifier().committed();
    }
    Ok(fresh.len())
}
