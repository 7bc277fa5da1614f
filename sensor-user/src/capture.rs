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

/// Longest wait for records between kernel wakeups.
const POLL_MS: i32 = 10;

/// Reads records until `stop` is set, then drains what is left.
pub fn run(mut ring: RingBuf<MapData>, out: &Sender<Vec<u8>>, stats: &Stats, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(item) = ring.next() {
            Stats::inc(&stats.captured);
            if out.try_send(item.to_vec()).is_err() {
                Stats::inc(&stats.capture_dropped);
            }
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

/// Spawns the capture thread.
pub fn spawn(
    ring: RingBuf<MapData>,
    out: Sender<Vec<u8>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, &out, &stats, &stop))
}
