//! Conversions between protobuf well-known types and domain types, shared by every gRPC layer.

use callback_proto::prost_types::Timestamp;
use callback_rules::input::time_problem;
use chrono::{DateTime, Datelike, Utc};
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

/// An optional request field saying when something happened or is to happen (a discharge, a
/// call, a reply deadline): absent is `None`; a time before 2000 or more than two years ahead
/// of the server's clock ([`callback_rules::input::time_problem`]) is INVALID_ARGUMENT naming
/// the field.
pub fn optional_instant(
    field: &str,
    t: Option<&Timestamp>,
) -> Result<Option<DateTime<Utc>>, Status> {
    let Some(t) = t else { return Ok(None) };
    let at = datetime(t).ok_or_else(|| invalid_argument(field, "is out of range"))?;
    match time_problem(at, Utc::now()) {
        Some(problem) => Err(invalid_argument(field, problem)),
        None => Ok(Some(at)),
    }
}

/// A required request field of [`optional_instant`]'s kind: absent is INVALID_ARGUMENT too.
pub fn required_instant(field: &str, t: Option<&Timestamp>) -> Result<DateTime<Utc>, Status> {
    optional_instant(field, t)?.ok_or_else(|| invalid_argument(field, "is required"))
}

/// An optional bound of a query (a report's `from`, a time-travel `as_of`): any time in the
/// years 1 to 9999 is accepted (a client's "since the beginning"), others are
/// INVALID_ARGUMENT naming the field.
pub fn optional_bound(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    let Some(t) = t else { return Ok(None) };
    match datetime(t) {
        Some(at) if (1..=9999).contains(&at.year()) => Ok(Some(at)),
        _ => Err(invalid_argument(field, "is out of range (years 1 to 9999)")),
    }
}
