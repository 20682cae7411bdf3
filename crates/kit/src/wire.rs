//! Conversions between protobuf well-known types and domain types, shared by every gRPC layer.

use callback_proto::prost_types::Timestamp;
use chrono::{DateTime, Utc};
use tonic::Status;

use crate::status::invalid_argument;

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The instant a timestamp means; `None` when it is out of range.
pub fn datetime(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

/// An optional request field: absent is `None`; out of range is INVALID_ARGUMENT naming it.
pub fn optional_instant(
    field: &str,
    t: Option<&Timestamp>,
) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| datetime(t).ok_or_else(|| invalid_argument(field, "is out of range")))
        .transpose()
}

/// A required request field: absent or out of range is INVALID_ARGUMENT naming it.
pub fn required_instant(field: &str, t: Option<&Timestamp>) -> Result<DateTime<Utc>, Status> {
    optional_instant(field, t)?.ok_or_else(|| invalid_argument(field, "is required"))
}
