//! Events as bytes on both ends of the wire. The sensor's spool holds each
//! event as its protobuf bytes, and an `EventBatch` on the wire is nothing
//! but those bytes, each framed as field 1 (`events`). Framing them again
//! costs a copy; decoding them into `Event`s only to encode them again cost
//! the sensor most of its shipping time ([`EncodedBatch`]). The collector
//! stores each event's bytes as they came, beside the fields it copies out
//! of the decoded event ([`ReceivedBatch`]): encoding every event again was
//! a sixth of its writer thread's time. Nor does the collector copy out the
//! process's text it never reads ([`ReceivedEvent`]).

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut, Bytes},
    encoding::{
        DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, skip_field,
    },
};
use tonic::{
    Response, Status, Streaming,
    codegen::{http::uri::PathAndQuery, tokio_stream::Stream},
    transport::Channel,
};

use crate::v1::{Ack, Event, Process};

/// `EventBatch.events`.
const EVENTS_FIELD: u32 = 1;

/// The gRPC method the generated `CollectorClient::stream` calls.
pub const STREAM_PATH: &str = "/sensor.v1.Collector/Stream";

/// Appends one encoded `Event` to `buf` as an `EventBatch.events` field.
fn frame_event(event: &[u8], buf: &mut impl BufMut) {
    encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
    encode_varint(event.len() as u64, buf);
    buf.put_slice(event);
}

/// Reads one field of an `EventBatch`: an event's bytes as they came (a
/// slice of the message buffer when that is a `Bytes`), with prost's own
/// `bytes` checks of the wire type and length; `None` for another field,
/// which is skipped.
///
/// # Errors
/// The field is malformed.
pub fn merge_event_bytes(
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<Option<Bytes>, DecodeError> {
    if tag != EVENTS_FIELD {
        skip_field(wire_type, tag, buf, ctx)?;
        return Ok(None);
    }
    let mut encoded = Bytes::new();
    prost::encoding::bytes::merge(wire_type, &mut encoded, buf, ctx)?;
    Ok(Some(encoded))
}

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
        frame_event(event, &mut self.bytes);
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

/// One event of a received batch: decoded, and its bytes as they came.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event. Decoded from a batch, the process's text fields a
    /// receiver does not read ([`UNREAD_PROCESS_TEXT`]) are checked as
    /// decoding would check them and left empty: they are in `encoded`.
    pub event: Event,
    /// The event's protobuf bytes as the sender encoded them, fields this
    /// build does not know included; they decode to the whole event.
    pub encoded: Bytes,
}

impl From<Event> for ReceivedEvent {
    /// An event as a sender would have sent it (encoded here), whole.
    fn from(event: Event) -> Self {
        let encoded = event.encode_to_vec().into();
        Self { event, encoded }
    }
}

/// `Event.process`.
const PROCESS_FIELD: u32 = 7;

/// The `Process` text fields the collector neither stores in a column nor
/// searches by (user, comm, argv, cwd, cgroup_path, container_id, user_sid):
/// the events it receives are decoded without them. Copying each into a
/// `String` of its own and freeing it again (argv alone is several) cost
/// the collector 9% of its CPU per event (5.05 -> 4.60 µs with the sensor
/// under `sensor-bench workload 5`), which at that rate decided whether it
/// kept up with the sensor on two shared cores.
pub const UNREAD_PROCESS_TEXT: [u32; 7] = [12, 13, 15, 16, 18, 19, 21];

/// An `Event` decoded as [`ReceivedEvent::event`] holds it. Only ever
/// decoded: encoding it would leave out what was not read.
#[derive(Debug, Default)]
struct ReceivedEventFields(Event);

impl Message for ReceivedEventFields {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.0.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != PROCESS_FIELD {
            return self.0.merge_field(tag, wire_type, buf, ctx);
        }
        // prost's own nested-message merge: wire type, length and depth.
        let mut fields = ProcessFields {
            process: self.0.process.take().unwrap_or_default(),
            unread: String::new(),
        };
        let merged = prost::encoding::message::merge(wire_type, &mut fields, buf, ctx);
        self.0.process = Some(fields.process);
        merged
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A `Process` decoded without its [`UNREAD_PROCESS_TEXT`]. Only ever
/// decoded, as [`ReceivedEventFields`].
#[derive(Debug, Default)]
struct ProcessFields {
    process: Box<Process>,
    /// Where each unread text goes, in turn, to be checked by prost as it
    /// checks the text it keeps: one buffer for them all.
    unread: String,
}

impl Message for ProcessFields {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.process.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if UNREAD_PROCESS_TEXT.contains(&tag) {
            // Decoded all the same, so that an event whose unread text is
            // not UTF-8 is refused as before rather than stored never to
            // decode again.
            prost::encoding::string::merge(wire_type, &mut self.unread, buf, ctx)
        } else {
            self.process.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.process.encoded_len()
    }

    fn clear(&mut self) {
        self.process.clear();
    }
}

/// An `EventBatch` decoded with the bytes of each of its events. Decoded
/// from a gRPC message buffer, each event's bytes are a slice of that
/// buffer, not a copy.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReceivedBatch {
    pub events: Vec<ReceivedEvent>,
}

impl Message for ReceivedBatch {
    /// The same bytes as the `EventBatch` of these events, as sent.
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for event in &self.events {
            frame_event(&event.encoded, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let Some(encoded) = merge_event_bytes(tag, wire_type, buf, ctx)? else {
            return Ok(());
        };
        let event = ReceivedEventFields::decode(encoded.clone())?.0;
        self.events.push(ReceivedEvent { event, encoded });
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                key_len(EVENTS_FIELD) + encoded_len_varint(e.encoded.len() as u64) + e.encoded.len()
            })
            .sum()
    }

    fn clear(&mut self) {
        self.events.clear();
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
            process: Some(Box::new(crate::v1::Process {
                comm: comm.into(),
                ..Default::default()
            })),
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
    fn a_received_batch_keeps_each_events_bytes_as_sent() {
        // Fields out of the order prost writes them (seq after process), as
        // another encoder may send them: the bytes are kept as they came.
        let mut reordered = Event {
            seq: 0,
            ..event(7, "sh")
        }
        .encode_to_vec();
        prost::encoding::uint64::encode(4, &7, &mut reordered);
        let mut sent = EncodedBatch::default();
        sent.push(&event(1, "bash").encode_to_vec());
        sent.push(&reordered);
        let wire = sent.encode_to_vec();

        let received = ReceivedBatch::decode(prost::bytes::Bytes::from(wire.clone())).unwrap();
        assert_eq!(received.events.len(), 2);
        // The process's comm is not read: left empty, and in the bytes.
        let without_comm = |seq| Event {
            process: Some(Box::default()),
            ..event(seq, "")
        };
        assert_eq!(received.events[0].event, without_comm(1));
        assert_eq!(received.events[1].event, without_comm(7));
        assert_eq!(received.events[1].encoded.as_ref(), reordered.as_slice());
        assert_eq!(
            Event::decode(received.events[1].encoded.clone()).unwrap(),
            event(7, "sh")
        );
        assert_eq!(received.encode_to_vec(), wire);
        assert_eq!(received.encoded_len(), wire.len());
    }

    #[test]
    fn a_received_event_has_the_process_fields_the_collector_reads_and_not_its_other_text() {
        let process = crate::v1::Process {
            exec_id: "e1".into(),
            parent_exec_id: "e0".into(),
            pid: 42,
            tid: 43,
            uid: 1000,
            exe: "/usr/bin/curl".into(),
            user: "alice".into(),
            comm: "curl".into(),
            argv: vec!["curl".into(), "https://example.com".into()],
            cwd: "/home/alice".into(),
            cgroup_path: "/user.slice".into(),
            container_id: "c0ffee".into(),
            user_sid: "S-1-5-21".into(),
            start_time: Some(crate::Timestamp {
                seconds: 5,
                nanos: 6,
            }),
            ..Default::default()
        };
        let sent = Event {
            sensor_id: "s".into(),
            seq: 3,
            process: Some(Box::new(process.clone())),
            ..Default::default()
        };
        let mut batch = EncodedBatch::default();
        batch.push(&sent.encode_to_vec());
        let received = ReceivedBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
        let kept = crate::v1::Process {
            user: String::new(),
            comm: String::new(),
            argv: Vec::new(),
            cwd: String::new(),
            cgroup_path: String::new(),
            container_id: String::new(),
            user_sid: String::new(),
            ..process
        };
        assert_eq!(received.events[0].event.process.as_deref(), Some(&kept));
        assert_eq!(
            Event::decode(received.events[0].encoded.clone()).unwrap(),
            sent
        );
    }

    #[test]
    fn the_unread_field_numbers_are_the_process_text_the_schema_numbers_so() {
        let tags = |bytes: &[u8]| {
            let mut buf = bytes;
            let mut tags = Vec::new();
            while !buf.is_empty() {
                let (tag, wire_type) = prost::encoding::decode_key(&mut buf).unwrap();
                skip_field(wire_type, tag, &mut buf, DecodeContext::default()).unwrap();
                tags.push(tag);
            }
            tags
        };
        let unread = crate::v1::Process {
            user: "u".into(),
            comm: "c".into(),
            argv: vec!["a".into()],
            cwd: "/".into(),
            cgroup_path: "/".into(),
            container_id: "c".into(),
            user_sid: "s".into(),
            ..Default::default()
        };
        assert_eq!(tags(&unread.encode_to_vec()), UNREAD_PROCESS_TEXT);
        let event = Event {
            process: Some(Box::default()),
            ..Default::default()
        };
        assert_eq!(tags(&event.encode_to_vec()), [PROCESS_FIELD]);
    }

    #[test]
    fn an_event_whose_unread_text_is_not_utf8_is_refused_as_before() {
        let process = crate::v1::Process {
            argv: vec!["ok".into(), "\u{fffd}".into()],
            ..Default::default()
        };
        let mut bytes = Event {
            process: Some(Box::new(process)),
            ..event(1, "")
        }
        .encode_to_vec();
        // The replacement character's three bytes, made not UTF-8.
        let at = bytes
            .windows(3)
            .position(|w| w == "\u{fffd}".as_bytes())
            .unwrap();
        bytes[at] = 0xff;
        assert!(Event::decode(bytes.as_slice()).is_err());
        let mut batch = EncodedBatch::default();
        batch.push(&bytes);
        assert!(ReceivedBatch::decode(batch.encode_to_vec().as_slice()).is_err());
    }

    #[test]
    fn a_received_batch_refuses_what_is_not_an_event_batch() {
        let mut sent = EncodedBatch::default();
        sent.push(&event(1, "bash").encode_to_vec());
        let wire = sent.encode_to_vec();
        // An event cut short: its length says more than the message holds.
        assert!(ReceivedBatch::decode(&wire[..wire.len() - 1]).is_err());
        // Field 1 as a varint, not a message.
        assert!(ReceivedBatch::decode([0x08_u8, 0x01].as_slice()).is_err());
        // An event whose own bytes are not an Event (field 4 truncated).
        assert!(ReceivedBatch::decode([0x0a_u8, 0x01, 0x20].as_slice()).is_err());
        // Unknown fields of the batch are skipped.
        let mut with_unknown = vec![0x10_u8, 0x05];
        with_unknown.extend_from_slice(&wire);
        assert_eq!(
            ReceivedBatch::decode(with_unknown.as_slice())
                .unwrap()
                .events
                .len(),
            1
        );
    }

    #[test]
    fn the_stream_path_is_the_generated_services() {
        assert_eq!(STREAM_PATH, format!("/{SERVICE_NAME}/Stream"));
    }
}
