//! Stage 4: gives each event the sensor's envelope (sensor id, host) and its
//! `seq`. With the disk spool (collector output) the spool writes both into
//! each record, the envelope as bytes encoded once; `--stdout` stamps here.

use std::sync::Arc;

use sensor_proto::v1::{Event, Process};

/// An event on its way to the spool. The Linux enrich stage leaves the
/// process context shared with its process table (`process`) instead of
/// copying it into every event, and the spool encodes it from there:
/// `event.process` is then empty. An event that holds its own context (ETW,
/// health) has `process: None`.
#[derive(Debug)]
pub struct Enriched {
    pub event: Event,
    pub process: Option<Context>,
}

/// A process context shared by the events of all the process's threads:
/// its `tid` is 0, and the thread that caused the event is `tid` here. Kept
/// apart, the threads of one process share one context (and its encoding,
/// `spool::Contexts`) instead of each event copying it to change the tid.
#[derive(Debug, Clone)]
pub struct Context {
    pub process: Arc<Process>,
    pub tid: u32,
}

impl Enriched {
    /// An event that holds its own process context, if any.
    #[must_use]
    pub fn whole(event: Event) -> Self {
        Self {
            event,
            process: None,
        }
    }

    /// The event with its process context in it (JSON output, tests).
    #[must_use]
    pub fn into_event(self) -> Event {
        let mut event = self.event;
        if let Some(c) = self.process {
            let mut p = Arc::unwrap_or_clone(c.process);
            p.tid = c.tid;
            event.process = Some(Box::new(p));
        }
        event
    }
}

pub struct Encoder {
    sensor_id: String,
    host_id: String,
    host_name: String,
    next_seq: u64,
}

impl Encoder {
    /// `first_seq` is where this run's sequence starts. The sensor starts it at
    /// the wall-clock nanosecond it started, so `seq` keeps increasing across
    /// restarts without any state on disk (the collector stores each
    /// (sensor_id, seq) once, so a reused seq would be taken for a duplicate).
    #[must_use]
    pub fn new(sensor_id: String, host_id: String, host_name: String, first_seq: u64) -> Self {
        Self {
            sensor_id,
            host_id,
            host_name,
            next_seq: first_seq,
        }
    }

    /// The envelope alone (the spool assigns seq when it appends).
    #[must_use]
    pub fn stamp(&self, mut event: Event) -> Event {
        event.sensor_id.clone_from(&self.sensor_id);
        event.host_id.clone_from(&self.host_id);
        event.host_name.clone_from(&self.host_name);
        event
    }

    /// The envelope and the next seq (`--stdout`, which has no spool).
    pub fn encode(&mut self, event: Event) -> Event {
        let mut event = self.stamp(event);
        event.seq = self.next_seq;
        self.next_seq += 1;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_increases_by_one_and_the_envelope_is_stamped() {
        let mut enc = Encoder::new("s".into(), "h".into(), "n".into(), 100);
        let a = enc.encode(Event::default());
        let b = enc.encode(Event::default());
        assert_eq!((a.seq, b.seq), (100, 101));
        assert_eq!(
            (
                a.sensor_id.as_str(),
                a.host_id.as_str(),
                a.host_name.as_str()
            ),
            ("s", "h", "n")
        );
    }
}
