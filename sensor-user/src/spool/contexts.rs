//! Process contexts encoded once and reused for each event that shares them.
//!
//! The enrich stage shares one `Arc<Process>` among all the events of a
//! process until its ids or credentials change; encoding it again for every
//! event walked every string of it twice (its length, then its bytes), which
//! under a write storm was a large part of the encode stage.

use std::sync::Arc;

use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};
use sensor_proto::v1::Process;

/// Contexts remembered: a few processes that take turns stay encoded.
const REMEMBERED: usize = 8;

/// `Process.tid`'s field number (events.proto).
const PROCESS_TID_FIELD: u32 = 4;

/// The encoded contexts of the last few processes, each with the context it
/// encodes. Held here, a context cannot change: the enrich stage copies a
/// shared `Arc` before changing it (`Arc::make_mut`), so a pointer that is
/// the same is the same content.
#[derive(Debug, Default)]
pub struct Contexts {
    entries: Vec<(Arc<Process>, Vec<u8>)>,
    /// The entry the next new context replaces, once all are in use.
    next: usize,
}

impl Contexts {
    /// `process` encoded as a message body (no key, no length).
    pub fn encoded(&mut self, process: &Arc<Process>) -> &[u8] {
        let at = match self
            .entries
            .iter()
            .position(|(p, _)| Arc::ptr_eq(p, process))
        {
            Some(at) => at,
            None => {
                let entry = (process.clone(), process.encode_to_vec());
                if self.entries.len() < REMEMBERED {
                    self.entries.push(entry);
                    self.entries.len() - 1
                } else {
                    let at = self.next;
                    self.next = (at + 1) % REMEMBERED;
                    self.entries[at] = entry;
                    at
                }
            }
        };
        &self.entries[at].1
    }
}

/// Appends `Event.process` (field `field`) to `rec`: the encoded context,
/// then, when `tid` is not 0, the field once more holding only the tid. A
/// decoder merges the two (protobuf merges a repeated embedded message), so
/// the event reads as one context whose tid is the event's thread.
pub fn append(rec: &mut Vec<u8>, field: u32, encoded: &[u8], tid: u32) {
    encode_key(field, WireType::LengthDelimited, rec);
    encode_varint(encoded.len() as u64, rec);
    rec.extend_from_slice(encoded);
    if tid != 0 {
        encode_key(field, WireType::LengthDelimited, rec);
        let len = key_len(PROCESS_TID_FIELD) + encoded_len_varint(u64::from(tid));
        encode_varint(len as u64, rec);
        encode_key(PROCESS_TID_FIELD, WireType::Varint, rec);
        encode_varint(u64::from(tid), rec);
    }
}

#[cfg(test)]
mod tests {
    use sensor_proto::v1::Event;

    use super::*;

    fn process(exec_id: &str) -> Arc<Process> {
        Arc::new(Process {
            exec_id: exec_id.into(),
            pid: 7,
            argv: vec!["sh".into(), "-c".into()],
            ..Process::default()
        })
    }

    #[test]
    fn a_context_and_a_tid_decode_as_one_process_of_that_thread() {
        let p = process("e1");
        let mut contexts = Contexts::default();
        let mut rec = Vec::new();
        append(&mut rec, 7, contexts.encoded(&p), 9);
        let event = Event::decode(rec.as_slice()).unwrap();
        let expected = Process {
            tid: 9,
            ..(*p).clone()
        };
        assert_eq!(event.process.as_deref(), Some(&expected));
    }

    #[test]
    fn a_context_is_encoded_once_while_remembered_and_again_once_forgotten() {
        let first = process("e0");
        let mut contexts = Contexts::default();
        let bytes = contexts.encoded(&first).as_ptr();
        // The same Arc: the same bytes, not a new encoding.
        assert_eq!(contexts.encoded(&first.clone()).as_ptr(), bytes);
        // An equal context in another Arc is another entry.
        let twin = Arc::new((*first).clone());
        assert_ne!(contexts.encoded(&twin).as_ptr(), bytes);
        let others: Vec<_> = (1..=REMEMBERED)
            .map(|i| process(&format!("e{i}")))
            .collect();
        for p in &others {
            let _ = contexts.encoded(p);
        }
        assert_eq!(contexts.entries.len(), REMEMBERED);
        assert!(!contexts.entries.iter().any(|(p, _)| Arc::ptr_eq(p, &first)));
        assert_eq!(contexts.encoded(&first), first.encode_to_vec().as_slice());
    }
}
