//! Errors to gRPC status codes, one mapping for every service. Input faults name the field;
//! INTERNAL hides internals behind an incident id.
//!
//! Each service has its own error enum (`error.rs`) and says what kind of fault each variant
//! is ([`ServiceError::error_code`]); [`to_status`] turns that into the status, so the codes
//! mean the same in every service.

use tonic::Code;

/// The kind of a service error, from which its gRPC status follows.
#[derive(Debug)]
pub enum ErrorCode<'a> {
    /// Bad input: INVALID_ARGUMENT, naming the field.
    InvalidArgument { field: &'a str, reason: &'a str },
    /// NOT_FOUND.
    NotFound,
    /// The state does not allow it: FAILED_PRECONDITION.
    FailedPrecondition,
    /// A client's idempotency key reused with other content: ALREADY_EXISTS.
    AlreadyExists,
    /// A per-caller limit is reached (e.g. an agent's leases); retry later: RESOURCE_EXHAUSTED.
    ResourceExhausted,
    /// PERMISSION_DENIED.
    PermissionDenied,
    /// A concurrent change won; the caller may retry: ABORTED.
    Aborted,
    /// A service this one depends on is down; the caller may retry: UNAVAILABLE.
    Unavailable,
    /// An event store error, mapped by [`from_store_error`].
    Store(&'a callback_eventstore::Error),
    /// A database error: UNAVAILABLE when the database cannot be reached (the caller may
    /// retry), else INTERNAL.
    Database(&'a sqlx::Error),
    /// A real fault: INTERNAL with an incident id; the details go to the log only.
    Internal,
}

/// Whether a database error means the database could not be reached or went away (a
/// connection fault, an exhausted or closed pool, a server shutting down), not a fault of the
/// request or the code: clients know to retry UNAVAILABLE.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot
        // connect now; 53300: too many connections; 55000 at connect: the database is closed to
        // connections (maintenance, a restore).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                || (&*code == "55000"
                    && db.message().contains("not currently accepting connections"))
        }),
        _ => false,
    }
}

/// What was wrong with the request when PostgreSQL refused a value of it: a NUL character in
/// a text (it cannot be stored), a time or number outside what it can hold. A safety net:
/// the edges check what they know of; nothing was written, as the statement failed.
pub fn database_input_problem(error: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    match db.code().as_deref() {
        Some("22021" | "22P05") => Some("a text of the request contains a NUL character (U+0000)"),
        Some("22008") => Some("a time of the request is out of range"),
        Some("22003") => Some("a number of the request is out of range"),
        _ => None,
    }
}

/// The status of a database fault: UNAVAILABLE (with a short message, nothing internal),
/// INVALID_ARGUMENT for a value of the request the database cannot hold, or INTERNAL with an
/// incident id.
fn database_status(error: &sqlx::Error, shown: &dyn std::fmt::Display) -> Status {
    if database_unavailable(error) {
        tracing::warn!(%error, "database unavailable");
        Status::unavailable("the database is unavailable; retry")
    } else if let Some(problem) = database_input_problem(error) {
        invalid_argument("request", problem)
    } else {
        internal(shown)
    }
}

/// A service's error: it says which kind of fault it is; its `Display` is the message callers
/// see (except for internal faults, whose message stays in the log).
pub trait ServiceError: std::fmt::Display {
    fn error_code(&self) -> ErrorCode<'_>;
}

/// `impl From<$error> for tonic::Status` through [`to_status`], for a service's error enum.
#[macro_export]
macro_rules! status_from_service_error {
    ($error:ty) => {
        impl From<$error> for $crate::status::Status {
            fn from(error: $error) -> $crate::status::Status {
                $crate::status::to_status(&error)
            }
        }
    };
}

pub use tonic::Status;

/// The gRPC status of a service error.
pub fn to_status<E: ServiceError>(error: &E) -> Status {
    match error.error_code() {
        ErrorCode::InvalidArgument { field, reason } => invalid_argument(field, reason),
        ErrorCode::NotFound => Status::not_found(error.to_string()),
        ErrorCode::FailedPrecondition => Status::failed_precondition(error.to_string()),
        ErrorCode::AlreadyExists => Status::already_exists(error.to_string()),
        ErrorCode::ResourceExhausted => Status::resource_exhausted(error.to_string()),
        ErrorCode::PermissionDenied => Status::permission_denied(error.to_string()),
        ErrorCode::Aborted => Status::aborted(error.to_string()),
        ErrorCode::Unavailable => Status::unavailable(error.to_string()),
        ErrorCode::Store(store) => store_status(store),
        ErrorCode::Database(db) => database_status(db, error),
        ErrorCode::Internal => internal(error),
    }
}

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
    store_status(&error)
}

fn store_status(error: &callback_eventstore::Error) -> Status {
    use callback_eventstore::Error as E;
    match error {
        E::VersionConflict { .. } => Status::new(Code::Aborted, error.to_string()),
        E::DuplicateEventId(_) => Status::already_exists(error.to_string()),
        _ if error.is_invalid_input() => Status::invalid_argument(error.to_string()),
        E::Database(db) => database_status(db, error),
        E::HorizonBlocked { .. } => Status::unavailable(error.to_string()),
        _ => internal(error),
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
        let internal = from_store_error(Error::Database(sqlx::Error::RowNotFound));
        assert_eq!(internal.code(), Code::Internal);
        assert!(
            !internal.message().contains("no rows"),
            "internals must not leak"
        );
        // A database that cannot be reached is worth a retry: UNAVAILABLE, still without
        // internals.
        let unavailable = from_store_error(Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert!(!unavailable.message().contains("pool"));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(
            from_store_error(Error::Database(sqlx::Error::Io(io))).code(),
            Code::Unavailable
        );
    }
}
