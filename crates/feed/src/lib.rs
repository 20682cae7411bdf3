//! Event feeds between services over gRPC.
//!
//! - [`FeedServer`]: the `callback.v1.EventFeed` service a service serves for the stream
//!   categories it owns.
//! - [`RemoteConsumer`]: feeds a [`callback_eventstore::Projection`] from another service's
//!   feed, storing the checkpoint with the projection's rows, reconnecting with backoff and
//!   resuming from the stored checkpoint.

mod client;
mod convert;
mod server;

pub use client::{ConsumerProgress, RemoteConsumer};
pub use convert::{checkpoint_from_proto, checkpoint_to_proto, event_from_proto, event_to_proto};
pub use server::FeedServer;
