//! Sending events that are already encoded: the sensor's spool holds each
//! event as its protobuf bytes, and an `EventBatch` on the wire is nothing
//! but those bytes, each framed as field 1 (`events`). Framing them again
//! costs a copy; decoding them into `Event`s only to encode them again cost
//! the sensor most of its shipping time.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{DecodeContext, WireType, encode_key, encode_varint, skip_field},
};
use tonic::{
    Response, Status, Streaming,
    codegen::{http::uri::PathAndQuery, tokio_stream::Stream},
    transport::Channel,
};

use crate::v1::Ack;

/// `EventBatch.events`.
const EVENTS_FIELD: u32 = 1;

/// The gRPC method the generated `CollectorClient::stream` calls.
pub const STREAM_PATH: &str = "/sensor.v1.Collector/Stream";

/// An `EventBatch` built from encoded `Event`s; encodes to exactly the bytes
/// of the `EventBatch` holding those events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    events: u64,
}

impl EncodedBatch {
    /// An empty batch with room for `bytes` of encoded events.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            events: 0,
        }
    }

    /// Adds one encoded `Event` (as `Event::encode_to_vec` gives it).
    pub fn push(&mut self, event: &[u8]) {
        encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(event.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(event);
        self.events += 1;
    }

    /// How many events it holds.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.events
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

impl Message for EncodedBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Only ever sent, never received: fields are skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.events = 0;
    }
}

/// Opens the `Collector.Stream` call on `channel` with batches of encoded
/// events: the same call, on the wire, as `CollectorClient::stream`.
///
/// # Errors
/// The channel is not ready or the collector refuses the call.
pub async fn stream<S>(channel: Channel, batches: S) -> Result<Response<Streaming<Ack>>, Status>
where
    S: Stream<Item = EncodedBatch> + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("service was not ready: {e}")))?;
    grpc.streaming(
        tonic::Request::new(batches),
        PathAndQuery::from_static(STREAM_PATH),
        tonic_prost::ProstCodec::<EncodedBatch, Ack>::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Event, EventBatch, collector_server::SERVICE_NAME};

    fn event(seq: u64, comm: &str) -> Event {
        Event {
            sensor_id: "s".into(),
            seq,
            process: Some(crate::v1::Process {
                comm: comm.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_batch_is_byte_for_byte_the_event_batch() {
        // One event over 127 bytes, so its length takes a two-byte varint.
        let events = vec![event(1, "sh"), event(2, &"x".repeat(300)), Event::default()];
        let mut batch = EncodedBatch::default();
        for e in &events {
            batch.push(&e.encode_to_vec());
        }
        let expected = EventBatch { events }.encode_to_vec();
        assert_eq!(batch.encode_to_vec(), expected);
        assert_eq!(batch.encoded_len(), expected.len());
        assert_eq!(batch.len(), 3);
        assert_eq!(
            EventBatch::decode(batch.encode_to_vec().as_slice())
                .unwrap()
                .events[1]
                .seq,
            2
        );
    }

    #[test]
    fn the_stream_path_is_the_generated_services() {
        assert_eq!(STREAM_PATH, format!("/{SERVICE_NAME}/Stream"));
    }
}
