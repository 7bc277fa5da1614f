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
        Arc, Mutex,
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
    config::{Config, FullPolicyConfig},
    encode::{Context, Encoder, Enriched},
    ship::{Feed, SharedSpool, ShipConfig, Shipper, lock, print_json},
    spool::{FullPolicy, Spool, SpoolConfig},
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

/// Where the encode stage puts events.
enum Sink {
    /// `--stdout`: straight to the printer, seq from the encoder.
    Stdout(mpsc::Sender<Event>),
    /// The disk spool, which assigns seq; the shipper reads it.
    Spool(SharedSpool, Arc<Feed>),
}

/// What reads what the encode stage wrote.
enum Delivery {
    Stdout(mpsc::Receiver<Event>),
    Collector(crate::tls::CollectorUrl, SharedSpool, Arc<Feed>),
}

/// Opens the spool (collector output) or the stdout queue.
fn open_sink(
    output: Output,
    cfg: &Config,
    envelope: Event,
    first_seq: u64,
    stats: &Stats,
) -> Result<(Sink, Delivery)> {
    match output {
        Output::Stdout => {
            let (tx, rx) = mpsc::channel(cfg.capture.queue_capacity);
            Ok((Sink::Stdout(tx), Delivery::Stdout(rx)))
        }
        Output::Collector(url) => {
            let spool = Spool::open(
                SpoolConfig {
                    dir: cfg.spool.dir.clone(),
                    max_bytes: cfg.spool.max_bytes,
                    policy: match cfg.spool.full_policy {
                        FullPolicyConfig::DropOldest => FullPolicy::DropOldest,
                        FullPolicyConfig::DropNewest => FullPolicy::DropNewest,
                    },
                },
                first_seq,
                envelope,
                stats,
            )
            .context("opening the spool")?;
            let spool = Arc::new(Mutex::new(spool));
            let feed = Arc::new(Feed::default());
            Ok((
                Sink::Spool(spool.clone(), feed.clone()),
                Delivery::Collector(url, spool, feed),
            ))
        }
    }
}

/// Appends to the spool; a failed write is a counted loss.
fn append(spool: &mut Spool, event: Event, process: Option<&Context>, stats: &Stats) {
    if let Err(e) = spool.append_with(event, process, stats) {
        Stats::inc(&stats.spool_write_failed);
        tracing::error!("{e}");
    }
}

/// What the encode stage receives: one event at a time (ETW callbacks) or
/// a batch (the Linux stages pass one per ring drain).
trait Events: Send + 'static {
    fn one(event: Event) -> Self;
    fn each(self, f: impl FnMut(Enriched));
}

impl Events for Event {
    fn one(event: Event) -> Self {
        event
    }
    fn each(self, mut f: impl FnMut(Enriched)) {
        f(Enriched::whole(self));
    }
}

impl Events for Vec<Enriched> {
    fn one(event: Event) -> Self {
        vec![Enriched::whole(event)]
    }
    fn each(self, f: impl FnMut(Enriched)) {
        self.into_iter().for_each(f);
    }
}

/// Encodes until every upstream stage is done, then adds the last health
/// report, so its counters cover every event before it.
fn encode_stage<E: Events>(
    mut encoder: Encoder,
    input: &Receiver<E>,
    sink: Sink,
    stats: &Stats,
    last_report: impl FnOnce() -> Event,
) {
    match sink {
        Sink::Stdout(out) => {
            for batch in input {
                let mut open = true;
                batch.each(|item| {
                    Stats::inc(&stats.encoded);
                    open = open && out.blocking_send(encoder.encode(item.into_event())).is_ok();
                });
                if !open {
                    return;
                }
            }
            let _ = out.blocking_send(encoder.encode(last_report()));
        }
        Sink::Spool(spool, feed) => {
            let flush = |spool: &mut Spool| {
                if let Err(e) = spool.flush() {
                    tracing::error!("{e}");
                }
                feed.wake.notify_one();
            };
            let mut unflushed = 0;
            for batch in input {
                let mut s = lock(&spool);
                let mut encoded = 0;
                batch.each(|item| {
                    // The spool writes the envelope: no copy of it per event.
                    append(&mut s, item.event, item.process.as_ref(), stats);
                    encoded += 1;
                });
                // Counted once a batch: the counters share cache lines with
                // the other stages' counters.
                Stats::add(&stats.encoded, encoded);
                unflushed += encoded;
                // Flush when the queue runs dry (latency) or every 256
                // events (a reader never waits long under load).
                if input.is_empty() || unflushed >= 256 {
                    flush(&mut s);
                    unflushed = 0;
                }
            }
            let report = last_report();
            let mut s = lock(&spool);
            append(&mut s, report, None, stats);
            flush(&mut s);
            feed.closed.store(true, Ordering::Release);
            feed.wake.notify_one();
        }
    }
}

/// How often idle loops look at the stop flag: often enough that a stop is
/// prompt, rarely enough that an idle sensor is not woken for nothing (each
/// timer wakeup is a VM exit on a virtual machine).
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Sends a health report every `interval` until `stop`.
fn health_stage<E: Events>(
    report: &dyn Fn() -> Event,
    interval: Option<Duration>,
    out: &Sender<E>,
    stop: &AtomicBool,
) {
    let mut last = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(STOP_CHECK);
        if let Some(every) = interval
            && last.elapsed() >= every
        {
            last = std::time::Instant::now();
            if out.send(E::one(report())).is_err() {
                return;
            }
        }
    }
}

/// The health interval from the config (`None`: only the last report).
fn health_interval(cfg: &Config) -> Option<Duration> {
    (cfg.health.interval_secs > 0).then(|| Duration::from_secs(cfg.health.interval_secs))
}

/// The encoder, and where it writes and what reads it, for this run.
/// `first_seq` starts the seq of a sensor without a spool yet.
fn output_path(
    output: Output,
    cfg: &Config,
    host_id: &str,
    host_name: &str,
    first_seq: u64,
    stats: &Stats,
) -> Result<(Encoder, Sink, Delivery)> {
    let (sensor_id, host_name) = identity(cfg, host_id, host_name);
    let encoder = Encoder::new(sensor_id, host_id.to_owned(), host_name, first_seq);
    let envelope = encoder.stamp(Event::default());
    let (sink, delivery) = open_sink(output, cfg, envelope, first_seq, stats)?;
    Ok((encoder, sink, delivery))
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
/// deliver what is left (the spool keeps the rest for the next start).
fn deliver(
    delivery: Delivery,
    cfg: &Config,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match delivery {
            Delivery::Stdout(rx) => print_json(rx, stats.clone()).await,
            Delivery::Collector(url, spool, feed) => {
                let ship_cfg = ShipConfig {
                    url,
                    batch_size: cfg.collector.batch_size,
                    batch_timeout: Duration::from_millis(cfg.collector.batch_timeout_ms),
                    max_backoff: Duration::from_millis(cfg.collector.max_backoff_ms),
                };
                let shipper = Shipper::new(ship_cfg, spool, feed, stats.clone());
                let ship = tokio::spawn(shipper.run());
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(STOP_CHECK).await;
                }
                if tokio::time::timeout(Duration::from_secs(10), ship)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "collector did not acknowledge everything within 10 s of shutdown; \
                         the rest stays in the spool"
                    );
                }
            }
        }
    });
    Ok(())
}
