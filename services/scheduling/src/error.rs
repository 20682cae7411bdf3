use callback_kit::status::{ErrorCode, ServiceError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the scheduling service; input faults name the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A per-caller limit is reached: RESOURCE_EXHAUSTED, naming the setting.
    #[error("{0}")]
    LimitReached(String),
    /// A client's key reused with other content: ALREADY_EXISTS, naming the key.
    #[error("{field}: {reason}")]
    Conflict { field: String, reason: String },
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<callback_vault::VaultError> for Error {
    fn from(error: callback_vault::VaultError) -> Self {
        match error {
            callback_vault::VaultError::Database(error) => Error::Database(error),
            callback_vault::VaultError::Restricted => {
                Error::FailedPrecondition("the subject's processing is restricted".into())
            }
            other => Error::Corrupt(other.to_string()),
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
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
            Error::LimitReached(_) => ErrorCode::ResourceExhausted,
            Error::Store(e) => ErrorCode::Store(e),
            Error::Database(e) => ErrorCode::Database(e),
            Error::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

callback_kit::status_from_service_error!(Error);
