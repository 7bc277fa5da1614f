//! The Linux source: the eBPF ring buffer, decoded and enriched here.

use std::sync::{Arc, atomic::AtomicBool};

use anyhow::{Context as _, Result};
use crossbeam_channel::{Receiver, Sender, bounded};
use sensor_common::file_writes;
use sensor_proto::v1::Event;

use super::{Settings, deliver, encode_stage, health_interval, health_stage, output_path, spawn};
use crate::{
    capture::{self, RawBatch},
    config::WriteEvents,
    decode::{self, Record},
    encode::Enriched,
    enrich::{EnrichConfig, Enricher},
    health::health_event,
    host::{HostInfo, boottime_ns},
    loader::{self, KernelSettings, Loaded},
    mounts,
    stats::Stats,
};

fn decode_stage(input: &Receiver<RawBatch>, out: &Sender<Vec<Record>>, stats: &Stats) {
    for batch in input {
        let mut records = Vec::with_capacity(batch.len());
        for bytes in batch.iter() {
            match decode::decode(bytes) {
                Ok(record) => records.push(record),
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
        Stats::add(&stats.decoded, records.len() as u64);
        if !records.is_empty() && out.send(records).is_err() {
            return;
        }
    }
}

fn enrich_stage(
    mut enricher: Enricher,
    input: &Receiver<Vec<Record>>,
    out: &Sender<Vec<Enriched>>,
) {
    let mut scanned = enricher.scan_procfs(boottime_ns()).into_iter();
    loop {
        let chunk: Vec<Enriched> = scanned.by_ref().take(capture::BATCH).collect();
        if chunk.is_empty() {
            break;
        }
        if out.send(chunk).is_err() {
            return;
        }
    }
    for batch in input {
        // Sized up front: a collected Vec grew by doubling, moving every
        // 600-byte event it held again at each step.
        let mut events = Vec::with_capacity(batch.len());
        events.extend(batch.into_iter().filter_map(|r| enricher.enrich(r)));
        if !events.is_empty() && out.send(events).is_err() {
            return;
        }
    }
}

/// Health reports from the counters, the kernel's drop map read first.
struct Reporter {
    drops: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    counters: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    hooks: Vec<String>,
    host: HostInfo,
    stats: Arc<Stats>,
}

impl Reporter {
    fn report(&self) -> Event {
        let kernel = loader::kernel_snapshot(&self.drops, &self.counters);
        let now = boottime_ns();
        let time = sensor_proto::timestamp_from_unix_ns(self.host.unix_ns(now));
        health_event(&self.stats, &kernel, &self.hooks, time, now)
    }
}

/// Runs until `stop` is set, then flushes and returns.
pub(super) fn run(settings: Settings, stop: Arc<AtomicBool>) -> Result<()> {
    let cfg = settings.config;
    let Loaded {
        ebpf,
        events,
        drops,
        counters,
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
            open_repeat_window_ms: cfg.files.open_repeat_window_ms,
            ignored_mounts: mounts::host_ignored_mount_ids(&cfg.files.ignore_prefixes),
            dns_ports: cfg.network.dns_ports.clone(),
            direct_kernel_reads: cfg.capture.direct_kernel_reads,
        },
        &settings.btf,
    )?;
    let host = HostInfo::detect();
    let stats = Arc::new(Stats::default());
    // Queues hold batches of at most capture::BATCH records, so at most
    // `queue_capacity` records each, as before batching.
    let batches = cfg.capture.queue_capacity.div_ceil(capture::BATCH).max(2);
    let (raw_tx, raw_rx) = bounded::<RawBatch>(batches);
    let (rec_tx, rec_rx) = bounded::<Vec<Record>>(batches);
    let (ev_tx, ev_rx) = bounded::<Vec<Enriched>>(batches);

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
    let (encoder, sink, delivery) = output_path(
        settings.output,
        &cfg,
        &host.host_id,
        &host.host_name,
        host.unix_ns(boottime_ns()),
        &stats,
    )?;
    let reporter = Arc::new(Reporter {
        drops,
        counters,
        hooks: hooks.clone(),
        host: host.clone(),
        stats: stats.clone(),
    });
    let (s, r) = (stats.clone(), reporter.clone());
    threads.push(spawn("encode", move || {
        encode_stage(encoder, &ev_rx, sink, &s, || r.report());
    })?);
    let interval = health_interval(&cfg);
    let st = stop.clone();
    threads.push(spawn("health", move || {
        health_stage(&|| reporter.report(), interval, &ev_tx, &st);
    })?);

    eprintln!("sensor: capturing, hooks {}", hooks.join(", "));
    deliver(delivery, &cfg, &stats, &stop)?;
    for t in threads {
        let _ = t.join();
    }
    drop(ebpf);
    Ok(())
}
