//! Stage 1: drains the kernel ring buffer. Never blocks on the next stage: a
//! full queue drops the record and counts it.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::maps::{MapData, RingBuf};
use crossbeam_channel::Sender;

use crate::stats::Stats;

/// Longest wait for records between kernel wakeups. Each poll that finds
/// records wakes every later stage and costs the shipper and the collector
/// a batch. With `sensor-bench workload 3` (1,600 exec/s) a 50 ms poll plus
/// the shipper's own 50 ms batch timer cost the sensor 3.4% of a core, a
/// 100 ms poll shipped at once 2.9%; p99 latency stayed near 100 ms.
const POLL_MS: i32 = 100;

/// Records handed on together: one queue operation (and at most one wakeup
/// of the next stage) per batch rather than per record, which under light
/// load was most of the sensor's CPU (context switches between stages).
/// At 1,600 exec/s a 100 ms poll finds about 480 records: with 256 a drain
/// was two batches, two spool flushes and two shipments; one batch of up to
/// 1,024 took the sensor from 41 to 36 clock ticks over 20 s (3 runs each).
/// The stage queues are sized in records (`capture.queue_capacity`), so
/// this does not change how many records they hold.
pub const BATCH: usize = 1024;

/// The records of one batch, copied back to back into one buffer: two
/// allocations a batch instead of one a record, and one copy of each record
/// out of the ring. Per-record vectors, allocated here and freed by the
/// decode thread, kept glibc's arenas busy (malloc, free, consolidation) in
/// every stage.
#[derive(Debug, Default)]
pub struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RawBatch {
    #[must_use]
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    pub fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = &self.bytes[start..end];
            start = end;
            record
        })
    }
}

/// Reads records until `stop` is set, then drains what is left. Each drain
/// of the ring goes on in batches of at most [`BATCH`] records.
///
/// When the next stage has no room, capture waits for it and reads no more:
/// the records wait in the kernel ring, which is the sensor's largest buffer
/// (`capture.ring_buffer_bytes`, 8 MiB by default: tens of thousands of
/// records, several times the stage queues), and the kernel drops and counts
/// what does not fit (kernel/ring_full_dropped). The kernel itself never
/// waits for us; Falco's consumer reads its ring the same way. Dropping the
/// batch instead threw away records already read whenever decode fell a few
/// batches behind, e.g. for one scheduling slice on a busy host. A batch is
/// dropped and its records counted only when the next stage is gone.
pub fn run(mut ring: RingBuf<MapData>, out: &Sender<RawBatch>, stats: &Stats, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    let send = |batch: RawBatch| {
        let n = batch.len() as u64;
        Stats::add(&stats.captured, n);
        if out.send(batch).is_err() {
            Stats::add(&stats.capture_dropped, n);
        }
    };
    // A batch reserves as many bytes as the last one used, so a steady load
    // fills its buffer without growing it; an empty poll allocates nothing.
    let mut bytes_hint = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut batch = RawBatch::default();
        while let Some(item) = ring.next() {
            if batch.is_empty() {
                batch = RawBatch::with_capacity(BATCH, bytes_hint);
            }
            batch.push(&item);
            if batch.len() == BATCH {
                bytes_hint = batch.bytes.len();
                send(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            bytes_hint = batch.bytes.len();
            send(batch);
        }
        if stopping {
            return;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. The kernel wakes us only as the ring
        // fills past each `wakeup_bytes` (see sensor_common::Config), so the timeout
        // is what bounds the latency of a quiet host's events.
        unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) };
    }
}

pub fn spawn(
    ring: RingBuf<MapData>,
    out: Sender<RawBatch>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, &out, &stats, &stop))
}

#[cfg(test)]
mod tests {
    use super::RawBatch;

    #[test]
    fn a_batch_gives_back_each_record_whole_and_in_order() {
        let records: Vec<Vec<u8>> = vec![vec![1; 16], vec![2; 4200], vec![3], vec![4; 300]];
        // Less room reserved than the records need: the buffer grows.
        let mut batch = RawBatch::with_capacity(2, 64);
        for r in &records {
            batch.push(r);
        }
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.iter().collect::<Vec<_>>(), records);
        assert!(RawBatch::default().iter().next().is_none());
    }
}
