//! The collector's capacity: clients with a sensor's certificate, each as one
//! sensor, stream batches of realistic file events as fast as the collector
//! acknowledges them (a window of batches in flight, as the sensor keeps),
//! for a while.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow};
use prost::{Message as _, encoding};
use sensor_proto::{
    encoded::{self, EncodedBatch},
    v1::{Event, FileEvent, FileOp, Process, event::Body},
};
use sensor_user::{config::CollectorConfig, tls::CollectorUrl};
use tokio_stream::wrappers::ReceiverStream;

/// Batches in flight, like the sensor's shipper.
const WINDOW: u64 = 8;

pub struct LoadRun {
    pub acked: u64,
    pub elapsed: Duration,
}

/// Distinct processes and paths in the load, as a busy host's file events
/// repeat them.
const PROCESSES: u64 = 50;
const PATHS: u64 = 1000;

/// The load's events, encoded once but for what changes from one event to
/// the next, as the sensor ships events its encode stage has already turned
/// into bytes ([`EncodedBatch`]). The client shares the machine's 2 cores
/// with the collector it measures: building and encoding every `Event`
/// (formatting two 64-digit exec_ids each time, above all) cost it 3.3 µs of
/// CPU per event, about 40% of what the collector spent.
struct Templates {
    /// An event for each `seq % PATHS` (which also picks the process, since
    /// `PROCESSES` divides `PATHS`) without `seq`, `time` and `monotonic_ns`.
    encoded: Vec<Vec<u8>>,
    /// One event's bytes, reused.
    scratch: Vec<u8>,
}

impl Templates {
    fn new(sensor_id: &str) -> Self {
        let encoded = (0..PATHS)
            .map(|n| {
                Event {
                    seq: 0,
                    time: None,
                    monotonic_ns: 0,
                    ..event(sensor_id, n, Duration::ZERO)
                }
                .encode_to_vec()
            })
            .collect();
        Self {
            encoded,
            scratch: Vec::new(),
        }
    }

    /// Adds [`event`]`(sensor_id, seq, now)` to `batch`: its template, then
    /// the fields that change (protobuf takes fields in any order).
    fn push(&mut self, batch: &mut EncodedBatch, seq: u64, now: Duration) {
        let time = sensor_proto::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        };
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.encoded[(seq % PATHS) as usize]);
        encoding::uint64::encode(SEQ_FIELD, &seq, &mut self.scratch);
        encoding::message::encode(TIME_FIELD, &time, &mut self.scratch);
        encoding::uint64::encode(MONOTONIC_FIELD, &seq, &mut self.scratch);
        batch.push(&self.scratch);
    }
}

/// `Event.seq`, `Event.time`, `Event.monotonic_ns`.
const SEQ_FIELD: u32 = 4;
const TIME_FIELD: u32 = 5;
const MONOTONIC_FIELD: u32 = 6;

/// The load's event `seq` of `sensor_id`, at `now` since the epoch.
fn event(sensor_id: &str, seq: u64, now: Duration) -> Event {
    let pid = 4000 + (seq % PROCESSES) as u32;
    Event {
        sensor_id: sensor_id.to_owned(),
        host_id: "bench-host-id".into(),
        host_name: "bench-host".into(),
        seq,
        time: Some(sensor_proto::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        monotonic_ns: seq,
        process: Some(Box::new(Process {
            exec_id: format!("{:064x}", u64::from(pid)),
            parent_exec_id: format!("{:064x}", 1),
            pid,
            tid: pid,
            ppid: 1,
            comm: "bench-writer".into(),
            exe: "/usr/local/bin/bench-writer".into(),
            argv: vec!["bench-writer".into(), "--fast".into()],
            cwd: "/var/lib/bench".into(),
            user: "root".into(),
            ..Process::default()
        })),
        body: Some(Body::File(FileEvent {
            op: FileOp::Write.into(),
            path: format!("/var/lib/bench/data/file-{}.log", seq % PATHS),
            inode: seq % PATHS,
            device: 2049,
            ..FileEvent::default()
        })),
    }
}

/// Streams events for `time` to the collector at `url` from `sensors`
/// connections at once, each as its own sensor with client certificate
/// `client` of the CA in `certs`; returns what was acknowledged (stored
/// durably) in all, and the longest stream's time.
pub async fn flood(
    url: &str,
    certs: &Path,
    client: &str,
    sensors: usize,
    time: Duration,
    batch: u64,
) -> Result<LoadRun> {
    let mut streams = tokio::task::JoinSet::new();
    for n in 0..sensors {
        let (url, certs, client) = (url.to_owned(), certs.to_owned(), client.to_owned());
        let sensor_id = format!("bench-load-{}-{n}", std::process::id());
        streams
            .spawn(async move { flood_one(&url, &certs, &client, &sensor_id, time, batch).await });
    }
    let mut all = LoadRun {
        acked: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(run) = streams.join_next().await {
        let run = run.context("a load stream panicked")??;
        all.acked += run.acked;
        all.elapsed = all.elapsed.max(run.elapsed);
    }
    Ok(all)
}

/// One sensor's stream of [`flood`].
async fn flood_one(
    url: &str,
    certs: &Path,
    client: &str,
    sensor_id: &str,
    time: Duration,
    batch: u64,
) -> Result<LoadRun> {
    let target = CollectorUrl::from_config(&CollectorConfig {
        url: url.to_owned(),
        ca_file: Some(certs.join("ca.pem")),
        cert_file: Some(certs.join(format!("{client}.pem"))),
        key_file: Some(certs.join(format!("{client}.key"))),
        ..CollectorConfig::default()
    })
    .map_err(|e| anyhow!("{e}"))?;
    let channel = target
        .connect()
        .await
        .map_err(|e| anyhow!("connecting: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<EncodedBatch>(WINDOW as usize);
    let mut acks = encoded::stream(channel, ReceiverStream::new(rx))
        .await
        .context("opening the stream")?
        .into_inner();
    let mut templates = Templates::new(sensor_id);
    let start = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut sending = true;
    loop {
        if sending && start.elapsed() >= time {
            sending = false;
        }
        let in_flight = (sent - acked) / batch;
        if sending && in_flight < WINDOW {
            // One clock reading per batch, the events a nanosecond apart.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut events = EncodedBatch::default();
            for s in sent + 1..=sent + batch {
                templates.push(&mut events, s, now + Duration::from_nanos(s - sent));
            }
            tx.send(events).await.context("sending a batch")?;
            sent += batch;
            continue;
        }
        if !sending && acked >= sent {
            break;
        }
        match acks.message().await.context("reading an ack")? {
            Some(ack) => acked = acked.max(ack.acked_seq),
            None => return Err(anyhow!("the collector closed the stream")),
        }
    }
    Ok(LoadRun {
        acked,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templated_event_decodes_to_the_event_it_stands_for() {
        let mut templates = Templates::new("bench-load-1-0");
        let now = Duration::new(1_700_000_000, 123_456_789);
        for seq in [1, 49, 50, 999, 1000, 123_457] {
            let mut batch = EncodedBatch::default();
            templates.push(&mut batch, seq, now);
            let decoded = sensor_proto::v1::EventBatch::decode(batch.encode_to_vec().as_slice())
                .unwrap()
                .events;
            assert_eq!(
                decoded,
                vec![event("bench-load-1-0", seq, now)],
                "seq {seq}"
            );
        }
    }
}
