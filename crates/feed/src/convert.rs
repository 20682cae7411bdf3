//! Wire types <-> event store types.

use callback_eventstore::{Checkpoint, RecordedEvent};
use callback_kit::wire;
use callback_proto::v1;

pub fn checkpoint_to_proto(checkpoint: Checkpoint) -> v1::Checkpoint {
    v1::Checkpoint {
        transaction_id: checkpoint.transaction_id,
        position: checkpoint.position,
    }
}

pub fn checkpoint_from_proto(checkpoint: Option<&v1::Checkpoint>) -> Checkpoint {
    checkpoint.map_or(Checkpoint::START, |c| {
        Checkpoint::new(c.transaction_id, c.position)
    })
}

pub fn event_to_proto(event: &RecordedEvent) -> v1::Event {
    v1::Event {
        event_id: event.event_id.to_string(),
        stream_id: event.stream_id.clone(),
        category: event.category.clone(),
        stream_version: event.stream_version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        payload_json: event.payload.clone(),
        metadata_json: event.metadata.clone(),
        recorded_at: Some(wire::timestamp(event.recorded_at)),
        checkpoint: Some(checkpoint_to_proto(event.checkpoint)),
    }
}

/// Converts a received event; a malformed one is a protocol fault of the peer.
pub fn event_from_proto(event: v1::Event) -> Result<RecordedEvent, tonic::Status> {
    let event_id = event
        .event_id
        .parse()
        .map_err(|_| tonic::Status::data_loss("event.event_id: not a UUID"))?;
    let recorded_at = event
        .recorded_at
        .as_ref()
        .and_then(wire::datetime)
        .ok_or_else(|| tonic::Status::data_loss("event.recorded_at: missing or out of range"))?;
    let checkpoint = event
        .checkpoint
        .as_ref()
        .map(|c| Checkpoint::new(c.transaction_id, c.position))
        .ok_or_else(|| tonic::Status::data_loss("event.checkpoint: missing"))?;
    Ok(RecordedEvent {
        checkpoint,
        event_id,
        stream_id: event.stream_id,
        category: event.category,
        stream_version: event.stream_version,
        event_type: event.event_type,
        schema_version: event.schema_version,
        payload: event.payload_json,
        metadata: event.metadata_json,
        recorded_at,
    })
}
