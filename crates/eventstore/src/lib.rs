//! The append-only PostgreSQL event log every service shares.
//!
//! - [`EventStore::append`] writes a batch to one stream, all or nothing, with an optimistic
//!   concurrency check and idempotency on event ids.
//! - [`EventStore::read_stream`] and [`EventStore::read_all`] read back; `read_all` follows the
//!   gap-safe global order (see `migrations/0001_event_log.sql` for why it is not `position`).
//! - [`EventStore::subscribe`] catches up and then follows live appends.
//! - [`ConsumerTx`] applies a batch of events to a read model and stores the consumer's
//!   checkpoint in the same transaction; [`Pipeline`] does so for a [`BatchProjection`] while
//!   the next batch is folded.

mod consumer;
mod error;
mod horizon;
mod model;
mod notify;
mod pipeline;
mod replay;
pub mod stats;
mod store;
mod subscription;

pub use consumer::{apply_batch, ConsumerTx, Projection};
pub use error::{Error, Result};
pub use horizon::{BlockingSession, DEFAULT_HORIZON_WAIT};
pub use model::{
    AppendResult, Checkpoint, ExpectedVersion, Filter, Metadata, NewEvent, ReadPage, RecordedEvent,
    StreamName, MAX_BATCH_EVENTS, MAX_METADATA_BYTES, MAX_PAYLOAD_BYTES,
};
pub use pipeline::{BatchProjection, Pipeline};
pub use replay::Replay;
pub use store::{EventStore, StreamAppend};
pub use subscription::{Subscription, SubscriptionItem};

/// Migrations of the event log, embedded in every binary.
pub fn migrator() -> sqlx::migrate::Migrator {
    shared_database(sqlx::migrate!("./migrations"))
}

/// Prepares a crate's embedded migrations for the one database all crates share.
///
/// Each crate that owns tables has its own migrations in one `_sqlx_migrations` table, with
/// its own version range (event log 1-999, scheduling 2000s, call-logging 3000s,
/// complaint-routing 4000s, analytics 5000s), so each migrator ignores the others' versions.
pub fn shared_database(mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    migrator.set_ignore_missing(true);
    migrator
}
