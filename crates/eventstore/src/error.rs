use crate::model::ExpectedVersion;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with the event log. Input problems name the event (its index
/// in the batch) and the field; nothing is written when any of them is returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stream {stream}: expected version {expected}, actual version {actual}")]
    VersionConflict {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("events: the batch is empty")]
    EmptyBatch,
    #[error("events: a batch holds at most {limit} events, got {actual}")]
    BatchTooLarge { actual: usize, limit: usize },
    #[error("stream.category: unknown stream category `{0}`")]
    UnknownCategory(String),
    #[error("stream: {0}")]
    InvalidStream(String),
    #[error("events[{index}].{field}: {reason}")]
    InvalidEvent {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("events[{index}].{field}: {size} bytes is over the limit of {limit} bytes")]
    EventTooLarge {
        index: usize,
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("events: event id {0} is already used by a different event")]
    DuplicateEventId(uuid::Uuid),
    #[error("the event log is append-only")]
    AppendOnly,
    #[error("event {event_id} ({event_type}) could not be decoded: {reason}")]
    Decode {
        event_id: uuid::Uuid,
        event_type: String,
        reason: String,
    },
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("consumer {consumer}: expected its checkpoint at {expected}, found {found} (another instance applied events meanwhile)")]
    CheckpointMoved {
        consumer: String,
        expected: crate::Checkpoint,
        found: crate::Checkpoint,
    },
    #[error("background read failed: {0}")]
    Background(String),
    #[error(
        "gave up after {waited_seconds} s waiting for transactions begun before this read to end, \
         so as not to read part of the log: {sessions}"
    )]
    HorizonBlocked {
        waited_seconds: u64,
        sessions: String,
    },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// SQLSTATE raised by the append-only trigger.
const APPEND_ONLY_SQLSTATE: &str = "CB001";

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if db.code().as_deref() == Some(APPEND_ONLY_SQLSTATE) {
                return Error::AppendOnly;
            }
        }
        Error::Database(error)
    }
}

impl Error {
    /// True for faults of the caller's input (as opposed to conflicts or infrastructure).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::EmptyBatch
                | Error::BatchTooLarge { .. }
                | Error::UnknownCategory(_)
                | Error::InvalidStream(_)
                | Error::InvalidEvent { .. }
                | Error::EventTooLarge { .. }
        )
    }
}

/// The name of the unique constraint a database error violated, if any.
pub(crate) fn violated_unique_constraint(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            db.constraint().map(str::to_owned)
        }
        _ => None,
    }
}
