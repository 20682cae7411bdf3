//! The one crate that owns code generated from `proto/`.
//!
//! Services use these types on the wire and convert them to their domain types at the edge;
//! nobody hand-writes a wire type.

pub use prost;
pub use prost_types;
pub use tonic;

/// Package `callback.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("callback.v1");
}

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/callback_descriptor.bin"));
