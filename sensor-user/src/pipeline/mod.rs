//! Wires the stages: capture -> decode -> enrich -> encode -> ship, each on
//! its own thread with a bounded queue between them. Only capture must never
//! block (it faces the kernel or ETW); later stages pass backpressure
//! upstream, where capture sheds and counts.
//!
//! The sources differ by platform (`linux`: eBPF ring buffer, decode and
//! enrich here; `windows`: ETW sessions in sensor-etw, which decode and
//! enrich in their own cache); encoding, health and shipping are shared.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};
use crossbeam_channel::{Receiver, Sender};
use sensor_proto::v1::Event;
use tokio::sync::mpsc;

use crate::{
    config::Config,
    encode::Encoder,
    ship::{ShipConfig, Shipper, print_json},
    stats::Stats,
};

/// Where events go.
#[derive(Clone, Debug)]
pub enum Output {
    Collector(crate::tls::CollectorUrl),
    Stdout,
}

/// Everything `sensor run` needs.
pub struct Settings {
    pub config: Config,
    pub output: Output,
    /// Kernel BTF to read struct offsets from (Linux).
    pub btf: PathBuf,
}

/// Runs until `stop` is set, then flushes and returns.
///
/// # Errors
/// When capture cannot start (privileges, missing kernel support).
pub fn run(settings: Settings, stop: Arc<AtomicBool>) -> Result<()> {
    #[cfg(target_os = "linux")]
    return linux::run(settings, stop);
    #[cfg(windows)]
    return windows::run(settings, stop);
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (settings, stop);
        anyhow::bail!("the sensor captures on Linux and Windows only")
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("spawning the {name} thread"))
}

/// Encodes until every upstream stage is done, then adds the last health
/// report, so its counters cover every event before it.
fn encode_stage(
    mut encoder: Encoder,
    input: &Receiver<Event>,
    out: &mpsc::Sender<Event>,
    stats: &Stats,
    last_report: impl FnOnce() -> Event,
) {
    for event in input {
        Stats::inc(&stats.encoded);
        if out.blocking_send(encoder.encode(event)).is_err() {
            return;
        }
    }
    let _ = out.blocking_send(encoder.encode(last_report()));
}

/// Sends a health report every `interval` until `stop`.
fn health_stage(
    report: &dyn Fn() -> Event,
    interval: Option<Duration>,
    out: &Sender<Event>,
    stop: &AtomicBool,
) {
    let mut last = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(every) = interval
            && last.elapsed() >= every
        {
            last = std::time::Instant::now();
            if out.send(report()).is_err() {
                return;
            }
        }
    }
}

/// The health interval from the config (`None`: only the last report).
fn health_interval(cfg: &Config) -> Option<Duration> {
    (cfg.health.interval_secs > 0).then(|| Duration::from_secs(cfg.health.interval_secs))
}

/// `sensor_id` and `host_name` from the config, else the host's own.
fn identity(cfg: &Config, host_id: &str, host_name: &str) -> (String, String) {
    let pick = |configured: &str, detected: &str| {
        if configured.is_empty() {
            detected.to_owned()
        } else {
            configured.to_owned()
        }
    };
    (
        pick(&cfg.sensor_id, host_id),
        pick(&cfg.host_name, host_name),
    )
}

/// Ships (or prints) until `stop`, then gives the shipper a bounded time to
/// deliver what is left.
fn deliver(
    output: Output,
    cfg: &Config,
    ship_rx: mpsc::Receiver<Event>,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match output {
            Output::Stdout => print_json(ship_rx, stats.clone()).await,
            Output::Collector(url) => {
                let ship_cfg = ShipConfig {
                    url,
                    batch_size: cfg.collector.batch_size,
                    batch_timeout: Duration::from_millis(cfg.collector.batch_timeout_ms),
                    buffer_events: cfg.collector.buffer_events,
                    max_backoff: Duration::from_millis(cfg.collector.max_backoff_ms),
                };
                let shipper = Shipper::new(ship_cfg, ship_rx, stats.clone());
                let ship = tokio::spawn(shipper.run());
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if tokio::time::timeout(Duration::from_secs(10), ship)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "collector did not acknowledge everything within 10 s of shutdown"
                    );
                }
            }
        }
    });
    Ok(())
}
