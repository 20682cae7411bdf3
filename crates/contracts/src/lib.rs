//! The contracts between services: every event a service appends to the log and serves on its
//! feed, as Rust types.
//!
//! - One module per producer ([`scheduling`], [`call_logging`], [`complaint_routing`],
//!   [`analytics`]). A producer appends only these types, a consumer decodes only these types,
//!   so a producer that changes a field breaks its consumers' build, not their data.
//! - A stream whose events form one life (a callback, a complaint) is one enum, tagged by
//!   `"type"` in the payload; every other event is a struct. Each has its event type(s) and its
//!   stream category as constants ([`EventContract`]); no other crate spells an event type.
//! - Payload shapes are versioned per event type. A change to a published shape is a new
//!   schema version with an upcaster from the old one ([`EventContract::upcast`]); the golden
//!   JSON tests (`tests/golden.rs`) fail when a shape changes without one.
//!
//! `docs/CONTRACTS.md` lists every event, its category, version, producer and consumers.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub mod analytics;
pub mod audit;
pub mod call_logging;
pub mod complaint_routing;
pub mod integration_gateway;
pub mod scheduling;

/// An event type's payload contract.
pub trait EventContract: Serialize + DeserializeOwned {
    /// The stream category events of this type are appended to (owned by their producer).
    const CATEGORY: &'static str;
    /// Every event type this Rust type stands for.
    const EVENT_TYPES: &'static [&'static str];

    /// The event type of this value.
    fn event_type(&self) -> &'static str;

    /// The schema version producers write for `event_type` today.
    fn schema_version(_event_type: &str) -> i32 {
        1
    }

    /// Decodes a payload of an older schema version straight into the current type, for
    /// versions read often enough that the generic upcast ([`EventContract::upcast`], through
    /// a JSON tree) would cost; `None` leaves it to the upcast.
    fn decode_older(
        _event_type: &str,
        _version: i32,
        _payload: &str,
    ) -> Option<Result<Self, ContractError>> {
        None
    }

    /// Brings a payload of `event_type` written at schema version `from` to the current shape.
    /// Only called for `from` below [`EventContract::schema_version`].
    fn upcast(event_type: &str, from: i32, _payload: Value) -> Result<Value, ContractError> {
        Err(ContractError::NoUpcaster {
            event_type: event_type.to_owned(),
            from,
        })
    }
}

/// The part of an event's payload one consumer reads, declared beside the event so a producer
/// cannot change it unnoticed: the golden tests decode every view from every stored version of
/// its event types. A view lets a consumer that folds millions of events (analytics) read a
/// few fields without decoding the whole payload.
pub trait EventView: DeserializeOwned {
    /// The contract the view reads.
    type Of: EventContract;
    /// The event types it reads (among `Of::EVENT_TYPES`).
    const EVENT_TYPES: &'static [&'static str];
}

/// An event ready to append: type, schema version and payload text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub event_type: &'static str,
    pub schema_version: i32,
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("event type `{event_type}` is not a {expected}")]
    UnexpectedType {
        event_type: String,
        expected: &'static str,
    },
    #[error("`{event_type}` schema version {version} is newer than this build knows ({known})")]
    NewerVersion {
        event_type: String,
        version: i32,
        known: i32,
    },
    #[error("`{event_type}` has no upcaster from schema version {from}")]
    NoUpcaster { event_type: String, from: i32 },
    #[error("`{event_type}` payload: {reason}")]
    Payload { event_type: String, reason: String },
}

/// The payload of `event` at its current schema version.
pub fn encode<T: EventContract>(event: &T) -> Result<Encoded, ContractError> {
    let event_type = event.event_type();
    let payload = serde_json::to_string(event).map_err(|e| ContractError::Payload {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Encoded {
        event_type,
        schema_version: T::schema_version(event_type),
        payload,
    })
}

/// Decodes a stored payload of `event_type` written at `schema_version`, upcasting older
/// versions first.
pub fn decode<T: EventContract>(
    event_type: &str,
    schema_version: i32,
    payload: &str,
) -> Result<T, ContractError> {
    if !T::EVENT_TYPES.contains(&event_type) {
        return Err(ContractError::UnexpectedType {
            event_type: event_type.to_owned(),
            expected: std::any::type_name::<T>(),
        });
    }
    let payload_error = |e: serde_json::Error| ContractError::Payload {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    };
    let current = T::schema_version(event_type);
    if schema_version == current {
        // The common case stays one parse: catch-ups decode millions of these.
        return serde_json::from_str(payload).map_err(payload_error);
    }
    if schema_version > current {
        return Err(ContractError::NewerVersion {
            event_type: event_type.to_owned(),
            version: schema_version,
            known: current,
        });
    }
    if let Some(decoded) = T::decode_older(event_type, schema_version.max(1), payload) {
        return decoded;
    }
    let mut value: Value = serde_json::from_str(payload).map_err(payload_error)?;
    for from in schema_version.max(1)..current {
        value = T::upcast(event_type, from, value)?;
    }
    serde_json::from_value(value).map_err(payload_error)
}

/// Decodes the view `V` of a stored payload. Every schema version up to the current one has
/// the view's fields (the golden tests prove it), so no upcasting is needed.
pub fn decode_view<V: EventView>(
    event_type: &str,
    schema_version: i32,
    payload: &str,
) -> Result<V, ContractError> {
    if !V::EVENT_TYPES.contains(&event_type) {
        return Err(ContractError::UnexpectedType {
            event_type: event_type.to_owned(),
            expected: std::any::type_name::<V>(),
        });
    }
    let current = V::Of::schema_version(event_type);
    if schema_version > current {
        return Err(ContractError::NewerVersion {
            event_type: event_type.to_owned(),
            version: schema_version,
            known: current,
        });
    }
    serde_json::from_str(payload).map_err(|e| ContractError::Payload {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })
}

/// Implements [`EventContract`] for a struct that is one event type.
macro_rules! single_event {
    ($type:ident, $category:expr) => {
        impl $type {
            pub const EVENT_TYPE: &'static str = stringify!($type);
        }
        impl $crate::EventContract for $type {
            const CATEGORY: &'static str = $category;
            const EVENT_TYPES: &'static [&'static str] = &[stringify!($type)];
            fn event_type(&self) -> &'static str {
                stringify!($type)
            }
        }
    };
}

/// For an enum whose variants are the events of one stream, named as their event types:
/// a constant per event type, `ALL_TYPES`, and `event_type()`.
macro_rules! event_family {
    ($family:ident { $($variant:ident => $constant:ident),+ $(,)? }) => {
        impl $family {
            $(pub const $constant: &'static str = stringify!($variant);)+
            pub const ALL_TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)+
                }
            }
        }
    };
}

pub(crate) use event_family;
pub(crate) use single_event;
