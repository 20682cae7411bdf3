//! Between the log and the contracts: services append the event types of
//! `callback-contracts` and decode recorded events into them, never raw JSON. Errors are the
//! event store's own (`InvalidEvent` when a payload cannot be encoded, `Decode` when a
//! recorded payload does not fit its contract), so services map them as they map the store's.

use callback_contracts::EventContract;
use callback_eventstore::{Error, NewEvent, RecordedEvent};

/// A new event (fresh time-ordered id, no metadata) from a contract value.
pub fn new_event<T: EventContract>(event: &T) -> Result<NewEvent, Error> {
    let encoded = callback_contracts::encode(event).map_err(|e| Error::InvalidEvent {
        index: 0,
        field: "payload",
        reason: e.to_string(),
    })?;
    Ok(NewEvent::from_json(encoded.event_type, encoded.payload)
        .with_schema_version(encoded.schema_version))
}

/// A recorded event decoded into its contract type, upcast from an older schema version.
pub fn decode<T: EventContract>(event: &RecordedEvent) -> Result<T, Error> {
    callback_contracts::decode(&event.event_type, event.schema_version, &event.payload).map_err(
        |e| Error::Decode {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            reason: e.to_string(),
        },
    )
}
