//! The Windows sensor's capture: ETW event records in, `sensor.v1` events
//! out, with the same bodies the Linux sensor sends (plus `RegistryEvent`).
//!
//! Everything but the session adapter is platform-neutral and tested on
//! Linux; only `adapter` (cfg(windows)) names ferrisetw types.
//!
//! - `record`: the `EtwRecord` seam and JSON fixture records;
//! - `router`: (provider, event id / classic opcode) -> parsed record;
//! - `process`, `file`, `registry`, `network`, `dns`: one provider each;
//! - `decoder`: applies parsed records with the caches (`state`), names
//!   paths and users (`paths`), makes ids (`identity`);
//! - `counters`: every drop and miss, for health events.

pub mod cmdline;
pub mod counters;
pub mod decoder;
pub mod dns;
pub mod file;
pub mod identity;
pub mod network;
pub mod paths;
pub mod process;
pub mod providers;
pub mod record;
pub mod registry;
pub mod router;
pub mod state;

#[cfg(windows)]
mod adapter;

use std::sync::Arc;

use crossbeam_channel::Sender;
use sensor_proto::v1::Event;

pub use counters::EtwCounters;
pub use decoder::{Decoder, DecoderConfig};
pub use paths::{DeviceMap, SidResolver};
pub use record::{EtwRecord, FixtureRecord, Guid};

/// Buffer and flush settings of the ETW sessions, and the decoder's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwOptions {
    /// Size of each session buffer, in KiB.
    pub buffer_kb: u32,
    pub min_buffers: u32,
    pub max_buffers: u32,
    /// Forced flush period of the process and classic sessions, in
    /// milliseconds (delivery otherwise waits for a full buffer or ~1 s).
    pub flush_ms: u32,
    /// Forced flush period of the main session (file, registry, network,
    /// DNS), in milliseconds; skipped while the decode queue is half full.
    pub main_flush_ms: u32,
    /// Records the callbacks may queue for the decoder thread; beyond it
    /// they are dropped and counted (`decode_queue_full_dropped`).
    pub decode_queue: usize,
    /// Decoder settings; set `decoder.boot_id` to the host's boot id.
    pub decoder: DecoderConfig,
}

impl Default for EtwOptions {
    fn default() -> Self {
        Self {
            // 256 KiB x 64–128 lost no process starts in bursts where the
            // 32 KiB defaults lost 12–84% (reference §5.2).
            buffer_kb: 256,
            min_buffers: 64,
            max_buffers: 128,
            flush_ms: 10,
            main_flush_ms: 100,
            decode_queue: 32_768,
            decoder: DecoderConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtwError {
    #[error("ETW capture runs only on Windows")]
    Unsupported,
    /// A session could not start (name, privileges, session limits).
    #[error("ETW session {session} did not start: {reason}")]
    Session { session: String, reason: String },
}

/// The running sessions; dropping them stops them.
pub struct Sessions {
    hooks: Vec<String>,
    #[cfg(windows)]
    running: Option<adapter::Running>,
}

impl Sessions {
    /// What is being consumed (sessions and providers), for health events.
    #[must_use]
    pub fn hooks(&self) -> Vec<String> {
        self.hooks.clone()
    }

    /// Stops the sessions, sends what the decoder still holds and polls the
    /// loss counters one last time.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        #[cfg(windows)]
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the ETW sessions. Events (with `process` filled from the sensor's
/// process cache, `time` and `monotonic_ns` set, envelope and `seq` left to
/// the encoder) go to `out` with `try_send`; a full queue is counted in
/// `counters`, never waited on.
///
/// # Errors
/// `Unsupported` off Windows; `Session` when a session cannot start.
pub fn start(
    options: &EtwOptions,
    out: Sender<Event>,
    counters: Arc<EtwCounters>,
) -> Result<Sessions, EtwError> {
    #[cfg(windows)]
    {
        let (running, hooks) = adapter::start(options, out, counters)?;
        Ok(Sessions {
            hooks,
            running: Some(running),
        })
    }
    #[cfg(not(windows))]
    {
        let _ = (options, out, counters);
        Err(EtwError::Unsupported)
    }
}
