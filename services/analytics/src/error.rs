//! Errors of the analytics service; input faults name the field.

use callback_host::HostError;
use callback_kit::grpc::GrpcError;
use callback_kit::status::{ErrorCode, ServiceError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("event log: {0}")]
    Store(#[from] callback_eventstore::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode<'_> {
        match self {
            Error::InvalidArgument { field, reason } => {
                ErrorCode::InvalidArgument { field, reason }
            }
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Store(e) => ErrorCode::Store(e),
            Error::Database(e) => ErrorCode::Database(e),
            Error::Host(_) | Error::Grpc(_) | Error::Migrate(_) | Error::Corrupt(_) => {
                ErrorCode::Internal
            }
        }
    }
}

callback_kit::status_from_service_error!(Error);
