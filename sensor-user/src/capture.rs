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

/// Reads records until `stop` is set, then drains what is left. Each drain
/// of the ring goes on in batches of at most [`BATCH`] records; a batch the
/// next stage has no room for is dropped and each of its records counted.
pub fn run(
    mut ring: RingBuf<MapData>,
    out: &Sender<Vec<Vec<u8>>>,
    stats: &Stats,
    stop: &AtomicBool,
) {
    let fd = ring.as_raw_fd();
    let send = |batch: Vec<Vec<u8>>| {
        let n = batch.len() as u64;
        Stats::add(&stats.captured, n);
        if out.try_send(batch).is_err() {
            Stats::add(&stats.capture_dropped, n);
        }
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.push(item.to_vec());
            if batch.len() == BATCH {
                send(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
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
        // SAFETY: one valid pollfd. The kernel wakes us only once the ring
        // holds `wakeup_bytes` (see sensor_common::Config), so the timeout
        // is what bounds the latency of a quiet host's events.
        unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) };
    }
}

pub fn spawn(
    ring: RingBuf<MapData>,
    out: Sender<Vec<Vec<u8>>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, &out, &stats, &stop))
}
