//! The Windows source: ETW sessions (sensor-etw), whose callbacks decode
//! and enrich from their own process, file and key caches and hand over
//! finished events with `try_send`.

use std::sync::{Arc, atomic::AtomicBool};

use anyhow::{Context as _, Result};
use crossbeam_channel::bounded;
use sensor_etw::{EtwCounters, EtwOptions};
use sensor_proto::v1::Event;

use super::{Settings, deliver, encode_stage, health_interval, health_stage, output_path, spawn};
use crate::{
    health::health_event,
    host::{HostInfo, boottime_ns},
    stats::Stats,
};

pub(super) fn run(settings: Settings, stop: Arc<AtomicBool>) -> Result<()> {
    let cfg = settings.config;
    let host = HostInfo::detect();
    let stats = Arc::new(Stats::default());
    let counters = Arc::new(EtwCounters::default());
    let cap = cfg.capture.queue_capacity;
    let (ev_tx, ev_rx) = bounded::<Event>(cap);
    let mut options = EtwOptions {
        buffer_kb: cfg.windows.buffer_kb,
        min_buffers: cfg.windows.min_buffers,
        max_buffers: cfg.windows.max_buffers,
        flush_ms: cfg.windows.flush_ms,
        ..EtwOptions::default()
    };
    // The boot id is left to the adapter, which derives it from the boot
    // time: the machine GUID would not change across reboots.
    options.decoder.report_failed = cfg.files.report_failed;
    let sessions = sensor_etw::start(&options, ev_tx.clone(), counters.clone())
        .context("starting the ETW sessions")?;
    let hooks = sessions.hooks();

    let (encoder, sink, delivery) = output_path(
        settings.output,
        &cfg,
        &host.host_id,
        &host.host_name,
        host.unix_ns(boottime_ns()),
        &stats,
    )?;
    let report = {
        let (stats, counters, host) = (stats.clone(), counters.clone(), host.clone());
        move || {
            let now = boottime_ns();
            let time = sensor_proto::timestamp_from_unix_ns(host.unix_ns(now));
            health_event(&stats, &counters.snapshot(), &hooks, time, now)
        }
    };
    let report = Arc::new(report);
    let mut threads = Vec::new();
    let (s, r) = (stats.clone(), report.clone());
    threads.push(spawn("encode", move || {
        encode_stage(encoder, &ev_rx, sink, &s, || r());
    })?);
    let interval = health_interval(&cfg);
    let st = stop.clone();
    threads.push(spawn("health", move || {
        health_stage(&*report, interval, &ev_tx, &st);
    })?);
    eprintln!("sensor: capturing, hooks {}", sessions.hooks().join(", "));
    deliver(delivery, &cfg, &stats, &stop)?;
    // Stopping the sessions ends their callbacks, the last senders of events.
    drop(sessions);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
