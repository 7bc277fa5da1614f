//! Wires the stages: capture -> decode -> enrich -> encode -> ship, each on
//! its own thread with a bounded queue between them. Only capture must never
//! block (it faces the kernel); later stages pass backpressure upstream,
//! where capture sheds and counts.

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
use crossbeam_channel::{Receiver, Sender, bounded};
use sensor_common::file_writes;
use sensor_proto::v1::Event;
use tokio::sync::mpsc;

use crate::{
    capture,
    config::{Config, WriteEvents},
    decode::{self, Record},
    encode::Encoder,
    enrich::{EnrichConfig, Enricher},
    health::health_event,
    host::{HostInfo, boottime_ns},
    loader::{self, KernelSettings, Loaded},
    mounts,
    ship::{ShipConfig, Shipper, print_json},
    stats::Stats,
};

/// Where events go.
#[derive(Clone, Debug)]
pub enum Output {
    Collector(String),
    Stdout,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("spawning the {name} thread"))
}

fn decode_stage(input: &Receiver<Vec<u8>>, out: &Sender<Record>, stats: &Stats) {
    for bytes in input {
        match decode::decode(&bytes) {
            Ok(record) => {
                Stats::inc(&stats.decoded);
                if out.send(record).is_err() {
                    return;
                }
            }
            Err(e) => {
                // A DNS message is the traffic of whoever sent it, not a
                // kernel record gone wrong: it has its own counter.
                let counter = match e {
                    decode::DecodeError::Dns(_) => &stats.dns_malformed,
                    _ => &stats.malformed,
                };
                Stats::inc(counter);
                tracing::debug!("malformed record: {e}");
            }
        }
    }
}

fn enrich_stage(mut enricher: Enricher, input: &Receiver<Record>, out: &Sender<Event>) {
    for event in enricher.scan_procfs(boottime_ns()) {
        if out.send(event).is_err() {
            return;
        }
    }
    for record in input {
        let Some(event) = enricher.enrich(record) else {
            continue;
        };
        if out.send(event).is_err() {
            return;
        }
    }
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

/// Health reports from the counters, the kernel's drop map read first.
struct Reporter {
    drops: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    hooks: Vec<String>,
    host: HostInfo,
    stats: Arc<Stats>,
}

impl Reporter {
    fn report(&self) -> Event {
        self.stats
            .kernel_dropped
            .store(loader::kernel_drops(&self.drops), Ordering::Relaxed);
        let now = boottime_ns();
        let time = sensor_proto::timestamp_from_unix_ns(self.host.unix_ns(now));
        health_event(&self.stats, &self.hooks, time, now)
    }
}

/// Sends a health report every `interval` until `stop`.
fn health_stage(
    reporter: &Reporter,
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
            if out.send(reporter.report()).is_err() {
                return;
            }
        }
    }
}

/// Everything `sensor run` needs.
pub struct Settings {
    pub config: Config,
    pub output: Output,
    pub btf: PathBuf,
}

/// Runs until `stop` is set, then flushes and returns.
pub fn run(settings: Settings, stop: Arc<AtomicBool>) -> Result<()> {
    let cfg = settings.config;
    let Loaded {
        ebpf,
        events,
        drops,
        hooks,
    } = loader::load(
        &KernelSettings {
            ring_bytes: cfg.capture.ring_buffer_bytes,
            file_writes: match cfg.files.writes {
                WriteEvents::None => file_writes::NONE,
                WriteEvents::First => file_writes::FIRST,
                WriteEvents::All => file_writes::ALL,
            },
            report_failed: cfg.files.report_failed,
            ignored_mounts: mounts::host_ignored_mount_ids(&cfg.files.ignore_prefixes),
            dns_ports: cfg.network.dns_ports.clone(),
        },
        &settings.btf,
    )?;
    let host = HostInfo::detect();
    let stats = Arc::new(Stats::default());
    let cap = cfg.capture.queue_capacity;
    let (raw_tx, raw_rx) = bounded::<Vec<u8>>(cap);
    let (rec_tx, rec_rx) = bounded::<Record>(cap);
    let (ev_tx, ev_rx) = bounded::<Event>(cap);
    let (ship_tx, ship_rx) = mpsc::channel::<Event>(cap);

    let mut threads = vec![
        capture::spawn(events, raw_tx, stats.clone(), stop.clone())
            .context("spawning the capture thread")?,
    ];
    let s = stats.clone();
    threads.push(spawn("decode", move || decode_stage(&raw_rx, &rec_tx, &s))?);
    let enricher = Enricher::new(
        EnrichConfig {
            max_args: cfg.process.max_args,
            table_capacity: cfg.process.table_capacity,
            ignore_prefixes: cfg.files.ignore_prefixes.clone(),
            report_failed: cfg.files.report_failed,
            ..EnrichConfig::default()
        },
        host.clone(),
        stats.clone(),
    );
    let out = ev_tx.clone();
    threads.push(spawn("enrich", move || {
        enrich_stage(enricher, &rec_rx, &out)
    })?);
    let sensor_id = if cfg.sensor_id.is_empty() {
        host.host_id.clone()
    } else {
        cfg.sensor_id.clone()
    };
    let host_name = if cfg.host_name.is_empty() {
        host.host_name.clone()
    } else {
        cfg.host_name.clone()
    };
    let first_seq = host.unix_ns(boottime_ns());
    let encoder = Encoder::new(sensor_id, host.host_id.clone(), host_name, first_seq);
    let reporter = Arc::new(Reporter {
        drops,
        hooks: hooks.clone(),
        host: host.clone(),
        stats: stats.clone(),
    });
    let (s, r) = (stats.clone(), reporter.clone());
    threads.push(spawn("encode", move || {
        encode_stage(encoder, &ev_rx, &ship_tx, &s, || r.report());
    })?);
    let interval =
        (cfg.health.interval_secs > 0).then(|| Duration::from_secs(cfg.health.interval_secs));
    let st = stop.clone();
    threads.push(spawn("health", move || {
        health_stage(&reporter, interval, &ev_tx, &st)
    })?);

    eprintln!("sensor: capturing, hooks {}", hooks.join(", "));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match settings.output {
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
                let stop_flag = stop.clone();
                let ship = tokio::spawn(shipper.run());
                // After stop, give the shipper a bounded time to deliver.
                while !stop_flag.load(Ordering::Relaxed) {
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
    for t in threads {
        let _ = t.join();
    }
    drop(ebpf);
    Ok(())
}
