//! Errors of the call-logging service; input faults name the field. The application layer
//! returns these; only the gRPC layer turns them into a status (`callback_kit::status`).

use callback_kit::status::{ErrorCode, ServiceError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The message names what was not found, e.g. "callback `…` not found".
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A client's key reused with other content: ALREADY_EXISTS, naming the key.
    #[error("{field}: {reason}")]
    Conflict { field: String, reason: String },
    #[error("{0}")]
    PermissionDenied(String),
    /// The scheduling service could not answer; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

impl Error {
    /// The same refusal again, for every attempt it concerns (a refusal names no internals;
    /// a fault becomes an internal error whose details were logged once).
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                field: field.clone(),
                reason: reason.clone(),
            },
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
            Error::Conflict { field, reason } => Error::Conflict {
                field: field.clone(),
                reason: reason.clone(),
            },
            Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode<'_> {
        match self {
            Error::InvalidArgument { field, reason } => {
                ErrorCode::InvalidArgument { field, reason }
            }
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Conflict { .. } => ErrorCode::AlreadyExists,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Store(e) => ErrorCode::Store(e),
            Error::Database(e) => ErrorCode::Database(e),
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

callback_kit::status_from_service_error!(Error);
