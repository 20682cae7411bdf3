//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol): each message is `VT message FS CR`
//! (0x0B ... 0x1C 0x0D) on a TCP stream, frames split and coalesced across reads at will.
//! A `tokio-util` codec; bytes before a frame's start are skipped (senders' stray newlines),
//! and a frame over the configured size is an error that closes the connection.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub const START: u8 = 0x0b;
pub const END: [u8; 2] = [0x1c, 0x0d];

#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("an MLLP frame exceeds {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes frames into message bytes; encodes message text into a frame.
pub struct MllpCodec {
    max_frame: usize,
    /// How far a partial frame has been searched for its end.
    searched: usize,
}

impl MllpCodec {
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            searched: 0,
        }
    }
}

impl Decoder for MllpCodec {
    type Item = BytesMut;
    type Error = MllpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, MllpError> {
        // Skip anything before the start byte.
        match src.iter().position(|b| *b == START) {
            Some(0) => {}
            Some(start) => {
                src.advance(start);
                self.searched = 0;
            }
            None => {
                src.clear();
                self.searched = 0;
                return Ok(None);
            }
        }
        let from = self.searched.max(1);
        let found = src[from..]
            .windows(2)
            .position(|w| w == END)
            .map(|i| i + from);
        match found {
            Some(end) => {
                self.searched = 0;
                let mut frame = src.split_to(end + 2);
                frame.advance(1);
                frame.truncate(frame.len() - 2);
                if frame.len() > self.max_frame {
                    return Err(MllpError::TooLarge(self.max_frame));
                }
                Ok(Some(frame))
            }
            None => {
                if src.len() > self.max_frame + 3 {
                    return Err(MllpError::TooLarge(self.max_frame));
                }
                // The end may straddle this read and the next: search again from its first byte.
                self.searched = src.len().saturating_sub(1).max(1);
                Ok(None)
            }
        }
    }
}

impl Encoder<&str> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: &str, dst: &mut BytesMut) -> Result<(), MllpError> {
        dst.reserve(message.len() + 3);
        dst.put_u8(START);
        dst.put_slice(message.as_bytes());
        dst.put_slice(&END);
        Ok(())
    }
}

/// A message framed for the wire.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                frames.push(frame.to_vec());
            }
        }
        frames
    }

    #[test]
    fn frames_split_and_coalesced_across_reads_come_out_whole() {
        let mut wire = frame("MSH|one");
        wire.extend(frame("MSH|two"));
        wire.extend(b"\r\n");
        wire.extend(frame("MSH|three"));
        // Every split point, including inside the two end bytes.
        for split in 0..wire.len() {
            let mut codec = MllpCodec::new(1024);
            let frames = decode_all(&mut codec, &[&wire[..split], &wire[split..]]);
            assert_eq!(
                frames,
                vec![
                    b"MSH|one".to_vec(),
                    b"MSH|two".to_vec(),
                    b"MSH|three".to_vec()
                ],
                "split at {split}"
            );
        }
        // One byte at a time.
        let mut codec = MllpCodec::new(1024);
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&mut codec, &chunks).len(), 3);
    }

    #[test]
    fn an_oversized_frame_is_an_error() {
        let mut codec = MllpCodec::new(1024);
        let mut buffer = BytesMut::from(&frame(&"x".repeat(2000))[..]);
        assert!(matches!(
            codec.decode(&mut buffer),
            Err(MllpError::TooLarge(1024))
        ));
        let mut codec = MllpCodec::new(1024);
        let mut buffer = BytesMut::from(&[START][..]);
        buffer.extend_from_slice(&[b'x'; 1100]);
        assert!(matches!(
            codec.decode(&mut buffer),
            Err(MllpError::TooLarge(1024))
        ));
    }

    #[test]
    fn a_lone_end_byte_inside_a_message_does_not_end_it() {
        let mut codec = MllpCodec::new(1024);
        let frames = decode_all(&mut codec, &[b"\x0bMSH|a\x1cb\x1c\r"]);
        assert_eq!(frames, vec![b"MSH|a\x1cb".to_vec()]);
    }
}
