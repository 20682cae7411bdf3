use std::fmt;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Largest payload accepted for one event (JSON text), 256 KiB. Events are facts, not files:
/// recordings and documents are referenced, not embedded.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Largest metadata accepted for one event (JSON text), 8 KiB.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Most events in one append.
pub const MAX_BATCH_EVENTS: usize = 1000;
const MAX_EVENT_TYPE_LEN: usize = 100;
const MAX_STREAM_ID_LEN: usize = 200;

/// A stream: a category (the kind of aggregate, owned by one service) and an id within it.
/// Stored as `category-id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamName {
    category: String,
    id: String,
}

impl StreamName {
    pub fn new(category: impl Into<String>, id: impl Into<String>) -> Result<Self> {
        let category = category.into();
        let id = id.into();
        if !is_valid_category(&category) {
            return Err(Error::InvalidStream(format!(
                "category `{category}` must be lowercase letters, digits and `_`, starting with a letter"
            )));
        }
        if id.is_empty() || id.len() > MAX_STREAM_ID_LEN || id.chars().any(char::is_control) {
            return Err(Error::InvalidStream(format!(
                "id must be 1-{MAX_STREAM_ID_LEN} printable characters"
            )));
        }
        Ok(Self { category, id })
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored form, `category-id`.
    pub fn stream_id(&self) -> String {
        format!("{}-{}", self.category, self.id)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.category, self.id)
    }
}

pub(crate) fn is_valid_category(category: &str) -> bool {
    let mut chars = category.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && category.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The optimistic concurrency check of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (versions start at 1).
    Exact(u64),
}

impl ExpectedVersion {
    /// The version the stream must be at, if any (`NoStream` is version 0).
    pub(crate) fn required(self) -> Option<u64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Who and what caused an event. Stored as JSON beside the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The user, agent or system that acted, e.g. `agent:42` or `system:his`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// W3C trace context of the request that wrote the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    /// JSON object text.
    pub payload: String,
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with a fresh time-ordered id (UUIDv7 keeps index inserts local).
    pub fn new(event_type: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidEvent {
            index: 0,
            field: "payload",
            reason: e.to_string(),
        })?;
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        })
    }

    /// An event from JSON text as received from outside; validated on append.
    pub fn from_json(event_type: impl Into<String>, payload_json: impl Into<String>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload_json.into(),
            metadata: Metadata::default(),
        }
    }

    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn with_schema_version(mut self, schema_version: i32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Checks one event of a batch; returns its metadata as JSON text.
    pub(crate) fn validate(&self, index: usize) -> Result<String> {
        if self.event_type.is_empty()
            || self.event_type.len() > MAX_EVENT_TYPE_LEN
            || !self
                .event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(Error::InvalidEvent {
                index,
                field: "event_type",
                reason: format!("must be 1-{MAX_EVENT_TYPE_LEN} ASCII letters, digits, `_` or `.`"),
            });
        }
        if self.schema_version < 1 {
            return Err(Error::InvalidEvent {
                index,
                field: "schema_version",
                reason: "must be at least 1".into(),
            });
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::EventTooLarge {
                index,
                field: "payload",
                size: self.payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        // PostgreSQL would reject invalid JSON too, but only after a round trip and with a
        // message that does not name the event; NUL characters it rejects in text anyway.
        match serde_json::from_str::<&serde_json::value::RawValue>(&self.payload) {
            Ok(raw) if raw.get().trim_start().starts_with('{') => {}
            Ok(_) => {
                return Err(Error::InvalidEvent {
                    index,
                    field: "payload",
                    reason: "must be a JSON object".into(),
                })
            }
            Err(e) => {
                return Err(Error::InvalidEvent {
                    index,
                    field: "payload",
                    reason: format!("malformed JSON: {e}"),
                })
            }
        }
        if self.payload.contains("\\u0000") {
            return Err(Error::InvalidEvent {
                index,
                field: "payload",
                reason: "must not contain NUL characters".into(),
            });
        }
        let metadata = serde_json::to_string(&self.metadata).map_err(|e| Error::InvalidEvent {
            index,
            field: "metadata",
            reason: e.to_string(),
        })?;
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(Error::EventTooLarge {
                index,
                field: "metadata",
                size: metadata.len(),
                limit: MAX_METADATA_BYTES,
            });
        }
        Ok(metadata)
    }
}

/// What an append wrote (or, for an idempotent retry, had written before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub stream_version: u64,
    /// Position of the first event of the batch.
    pub first_position: i64,
    /// True when every event already existed and nothing was written.
    pub already_written: bool,
}

/// A point in the global order: everything at or before it has been seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    pub transaction_id: u64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint {
        transaction_id: 0,
        position: 0,
    };

    pub fn new(transaction_id: u64, position: i64) -> Self {
        Self {
            transaction_id,
            position,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transaction_id, self.position)
    }
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub checkpoint: Checkpoint,
    pub event_id: Uuid,
    pub stream_id: String,
    pub category: String,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i32,
    /// JSON object text, exactly as stored.
    pub payload: String,
    /// JSON object text, exactly as stored.
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The payload decoded into its type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.payload).map_err(|e| Error::Decode {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        })
    }

    /// The metadata decoded; unknown fields are ignored.
    pub fn metadata(&self) -> Result<Metadata> {
        serde_json::from_str(&self.metadata).map_err(|e| Error::Decode {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: format!("metadata: {e}"),
        })
    }

    pub fn position(&self) -> i64 {
        self.checkpoint.position
    }
}

/// Which events `read_all` and subscriptions deliver. Empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub categories: Vec<String>,
    pub event_types: Vec<String>,
}

impl Filter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn categories<S: Into<String>>(categories: impl IntoIterator<Item = S>) -> Self {
        Self {
            categories: categories.into_iter().map(Into::into).collect(),
            event_types: Vec::new(),
        }
    }

    pub fn with_event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.categories.is_empty() || self.categories.contains(&event.category))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// One page of the global order.
#[derive(Clone, Debug)]
pub struct ReadPage {
    pub events: Vec<RecordedEvent>,
    /// Where the next read starts: past the last event returned, and, when the page reached
    /// the visibility horizon, past every filtered-out event below it too.
    pub checkpoint: Checkpoint,
    /// True when everything committed and visible was read (the page was not full).
    pub reached_horizon: bool,
    /// The visibility horizon of the read: every transaction id below it had ended.
    pub horizon: u64,
}
