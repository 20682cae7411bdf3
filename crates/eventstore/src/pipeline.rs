//! Catching up with the write of one batch overlapping the folding of the next.
//!
//! A projection that folds a batch in memory and writes the result once spends its time in two
//! places: decoding and folding (this process's CPU) and the write (the database's). Done in
//! turn, each waits for the other; [`Pipeline`] folds batch k+1 while batch k is being written,
//! one write at a time, each in its own transaction with its checkpoint.

use std::future::Future;
use std::sync::Arc;

use sqlx::postgres::PgConnection;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::model::{Checkpoint, RecordedEvent};
use crate::store::EventStore;

/// A read model written once per batch: [`BatchProjection::fold`] turns the events into what
/// must change (pure work, no IO) and [`BatchProjection::write`] stores it.
pub trait BatchProjection: Send + Sync + 'static {
    /// What one batch changes.
    type Folded: Send + 'static;
    type Error: From<Error> + Send + 'static;

    /// A stable name; the checkpoint is stored under it.
    fn name(&self) -> &str;

    /// Folds events (all new to this projection, in global order) into one change.
    fn fold(&self, events: &[RecordedEvent]) -> Self::Folded;

    /// Writes a folded batch inside the transaction that moves the checkpoint past it. Read
    /// models only: the commit does not wait for the WAL flush (a crash may undo it, checkpoint
    /// included, and the batch is applied again), and events appended here would not wake
    /// subscribers.
    fn write(
        &self,
        conn: &mut PgConnection,
        folded: Self::Folded,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

type Write<E> = JoinHandle<Result<Checkpoint, E>>;

/// Applies batches to a [`BatchProjection`], at most one write in flight.
///
/// Each batch must follow the previous one; the write checks that the stored checkpoint is
/// where the previous batch ended, so a second instance that applied events meanwhile makes it
/// fail with [`Error::CheckpointMoved`] (and the caller resumes from the stored checkpoint)
/// instead of applying anything twice.
pub struct Pipeline<P: BatchProjection> {
    store: EventStore,
    projection: Arc<P>,
    /// Where the last submitted batch ends.
    submitted: Checkpoint,
    /// Everything up to here is committed.
    committed: Checkpoint,
    /// The write of the last submitted batch. Dropped with the pipeline, it still finishes on
    /// its own: it commits its batch with its checkpoint or rolls both back.
    in_flight: Option<Write<P::Error>>,
}

impl<P: BatchProjection> Pipeline<P> {
    /// A pipeline resuming after `stored`, the projection's stored checkpoint.
    pub fn new(store: EventStore, projection: Arc<P>, stored: Checkpoint) -> Self {
        Self {
            store,
            projection,
            submitted: stored,
            committed: stored,
            in_flight: None,
        }
    }

    /// Folds `events` (those after the previous batch; earlier ones are skipped) and starts
    /// writing them with the checkpoint `up_to` once the previous write has committed. Returns
    /// the checkpoint committed so far, which lags one batch behind.
    pub async fn submit(
        &mut self,
        events: &[RecordedEvent],
        up_to: Checkpoint,
    ) -> Result<Checkpoint, P::Error> {
        let first_new = events.partition_point(|e| e.checkpoint <= self.submitted);
        let fresh = &events[first_new..];
        if fresh.is_empty() && up_to <= self.submitted {
            return Ok(self.committed);
        }
        // The fold runs while the previous batch is being written.
        let folded = self.projection.fold(fresh);
        self.settle().await?;
        let (store, projection, expected) =
            (self.store.clone(), self.projection.clone(), self.submitted);
        let write = tokio::spawn(async move {
            let mut tx = store
                .begin_batch(projection.name(), expected, up_to)
                .await?;
            projection.write(&mut tx, folded).await?;
            tx.commit().await.map_err(Error::from)?;
            Ok(up_to)
        });
        self.submitted = up_to.max(self.submitted);
        self.in_flight = Some(write);
        Ok(self.committed)
    }

    /// Waits for the write in flight; returns the checkpoint committed.
    pub async fn settle(&mut self) -> Result<Checkpoint, P::Error> {
        if let Some(write) = self.in_flight.take() {
            let committed = write
                .await
                .map_err(|e| Error::Background(e.to_string()))??;
            self.committed = self.committed.max(committed);
        }
        Ok(self.committed)
    }
}
