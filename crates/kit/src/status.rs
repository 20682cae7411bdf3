//! Errors to gRPC status codes. Input faults name the field; INTERNAL hides internals.

use tonic::{Code, Status};

/// INVALID_ARGUMENT naming the offending field, e.g. `subject.id: must not be empty`.
pub fn invalid_argument(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// INTERNAL for a real fault: the details go to the log (with an id), the caller gets the id.
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    let incident = uuid::Uuid::now_v7();
    tracing::error!(%incident, %error, "internal error");
    Status::internal(format!("internal error (incident {incident})"))
}

/// The status for an event store error.
pub fn from_store_error(error: callback_eventstore::Error) -> Status {
    use callback_eventstore::Error as E;
    match &error {
        E::VersionConflict { .. } => Status::new(Code::Aborted, error.to_string()),
        E::DuplicateEventId(_) => Status::already_exists(error.to_string()),
        _ if error.is_invalid_input() => Status::invalid_argument(error.to_string()),
        E::Decode { .. } | E::AppendOnly | E::Database(_) | E::Migrate(_) => internal(&error),
        _ => internal(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_precise_codes() {
        use callback_eventstore::{Error, ExpectedVersion};
        let conflict = from_store_error(Error::VersionConflict {
            stream: "callback-1".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2,
        });
        assert_eq!(conflict.code(), Code::Aborted);
        assert!(conflict.message().contains("actual version 2"));
        assert_eq!(
            from_store_error(Error::EmptyBatch).code(),
            Code::InvalidArgument
        );
        let unknown = from_store_error(Error::UnknownCategory("x".into()));
        assert_eq!(unknown.code(), Code::InvalidArgument);
        assert!(unknown.message().contains("stream.category"));
        let internal = from_store_error(Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(internal.code(), Code::Internal);
        assert!(
            !internal.message().contains("pool"),
            "internals must not leak"
        );
    }
}
