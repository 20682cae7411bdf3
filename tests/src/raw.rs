//! Calls any RPC with encoded protobuf bytes, as a foreign client built from the published
//! descriptors does: the hostile-input and the access tests reach every RPC this way, so a
//! new RPC is covered without touching them.

use std::time::Duration;

use callback_proto::prost::Message;
use callback_proto::prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

// ---- a codec that passes encoded protobuf bytes through ----

#[derive(Clone, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes_put::Put;
        dst.put(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes_put::Take;
        Ok(Some(src.take_all()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The two buffer operations the codec needs, through tonic's re-exported `bytes` traits.
mod bytes_put {
    use callback_proto::prost::bytes::{Buf, BufMut};
    use tonic::codec::{DecodeBuf, EncodeBuf};

    pub trait Put {
        fn put(&mut self, bytes: &[u8]);
    }
    impl Put for EncodeBuf<'_> {
        fn put(&mut self, bytes: &[u8]) {
            self.put_slice(bytes);
        }
    }
    pub trait Take {
        fn take_all(&mut self) -> Vec<u8>;
    }
    impl Take for DecodeBuf<'_> {
        fn take_all(&mut self) -> Vec<u8> {
            let mut out = vec![0; self.remaining()];
            self.copy_to_slice(&mut out);
            out
        }
    }
}

/// One RPC of the API, from the descriptors.
pub struct Rpc {
    /// `/callback.v1.Scheduling/ClaimNext`
    pub path: String,
    pub service: String,
    pub method: String,
    pub input: DescriptorProto,
    pub server_streaming: bool,
}

/// Every RPC of `callback.v1`.
pub fn rpcs() -> Vec<Rpc> {
    let set = FileDescriptorSet::decode(callback_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: std::collections::HashMap<String, DescriptorProto> = set
        .file
        .iter()
        .flat_map(|file| {
            file.message_type
                .iter()
                .map(move |m| (format!(".{}.{}", file.package(), m.name()), m.clone()))
        })
        .collect();
    let mut rpcs = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push(Rpc {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    service: service.name().to_owned(),
                    method: method.name().to_owned(),
                    input: messages[method.input_type()].clone(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    rpcs
}

impl Rpc {
    /// A request with the given string fields set (those the input message has).
    pub fn request(&self, strings: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in &self.input.field {
            if let Some((_, value)) = strings.iter().find(|(name, _)| *name == field.name()) {
                let is_string = field.r#type()
                    == callback_proto::prost_types::field_descriptor_proto::Type::String;
                if is_string {
                    put_varint(&mut out, ((field.number() as u64) << 3) | 2);
                    put_varint(&mut out, value.len() as u64);
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        out
    }

    /// Sends `body` over `channel`, with `metadata` (e.g. an authorization header); a stream's
    /// first message or error counts as its answer.
    pub async fn call<T>(
        &self,
        channel: T,
        body: Vec<u8>,
        metadata: &[(&'static str, String)],
    ) -> Result<(), tonic::Status>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<tonic::codegen::StdError>,
        T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    {
        let mut client = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.into().to_string()))?;
        let route = tonic::codegen::http::uri::PathAndQuery::try_from(self.path.as_str()).unwrap();
        let mut request = tonic::Request::new(body);
        for (key, value) in metadata {
            request.metadata_mut().insert(*key, value.parse().unwrap());
        }
        if self.server_streaming {
            let response = client.server_streaming(request, route, RawCodec).await?;
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                Ok(Err(status)) => Err(status),
                _ => Ok(()),
            }
        } else {
            client.unary(request, route, RawCodec).await.map(|_| ())
        }
    }
}

/// Protobuf's variable-length integer.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
