//! What every service shares: configuration, telemetry, the gRPC server bootstrap with
//! health and reflection, shutdown, and the mapping of errors to gRPC status codes.

pub mod batch;
pub mod config;
pub mod events;
pub mod exclusive;
pub mod grpc;
pub mod invalidate;
pub mod metrics;
pub mod security;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod wire;

pub use config::{pool_options, Config, ConfigError, ServiceKind};
pub use security::Security;
pub use shutdown::Shutdown;
