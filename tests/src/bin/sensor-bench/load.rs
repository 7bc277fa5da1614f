//! The collector's capacity: clients with a sensor's certificate, each as one
//! sensor, stream batches of realistic file events as fast as the collector
//! acknowledges them (a window of batches in flight, as the sensor keeps),
//! for a while.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow};
use sensor_proto::v1::{
    Event, EventBatch, FileEvent, FileOp, Process, collector_client::CollectorClient, event::Body,
};
use sensor_user::{config::CollectorConfig, tls::CollectorUrl};
use tokio_stream::wrappers::ReceiverStream;

/// Batches in flight, like the sensor's shipper.
const WINDOW: u64 = 8;

pub struct LoadRun {
    pub acked: u64,
    pub elapsed: Duration,
}

fn event(sensor_id: &str, seq: u64) -> Event {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let pid = 4000 + (seq % 50) as u32;
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
        process: Some(Process {
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
        }),
        body: Some(Body::File(FileEvent {
            op: FileOp::Write.into(),
            path: format!("/var/lib/bench/data/file-{}.log", seq % 1000),
            inode: seq % 1000,
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
    let mut client = CollectorClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(WINDOW as usize);
    let mut acks = client
        .stream(ReceiverStream::new(rx))
        .await
        .context("opening the stream")?
        .into_inner();
    let start = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut sending = true;
    loop {
        if sending && start.elapsed() >= time {
            sending = false;
        }
        let in_flight = (sent - acked) / batch;
        if sending && in_flight < WINDOW {
            let events = (sent + 1..=sent + batch)
                .map(|s| event(sensor_id, s))
                .collect();
            tx.send(EventBatch { events })
                .await
                .context("sending a batch")?;
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
