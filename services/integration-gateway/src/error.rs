//! Errors of the integration gateway's API; input faults name the field.

use callback_host::HostError;
use callback_kit::status::{ErrorCode, ServiceError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode<'_> {
        match self {
            Error::InvalidArgument { field, reason } => {
                ErrorCode::InvalidArgument { field, reason }
            }
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Store(e) => ErrorCode::Store(e),
            Error::Database(e) => ErrorCode::Database(e),
            Error::Host(_) | Error::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

callback_kit::status_from_service_error!(Error);
