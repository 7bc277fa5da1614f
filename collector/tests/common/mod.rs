//! Shared by the collector's integration tests: event builders, a real
//! collector server on 127.0.0.1:0, a real gRPC client, the real binary.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail};
use collector::{ServeConfig, ServeError, ServeSummary, Store};
use sensor_proto::v1::{
    Ack, Event, EventBatch, Process, ProcessExec, ProcessExit, ProcessFork,
    collector_client::CollectorClient, event::Body,
};
use tempfile::TempDir;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming, transport::Channel};

pub const HOST_NAME: &str = "web-1";
pub const HOST_ID: &str = "host-id-1";
pub const SENSOR: &str = "sensor-a";

/// 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000_000_000_000;

/// The process an event is about.
#[derive(Debug, Clone)]
pub struct Proc<'a> {
    pub exec_id: &'a str,
    pub parent_exec_id: &'a str,
    pub pid: u32,
    pub exe: &'a str,
    pub argv: &'a [&'a str],
}

impl Proc<'_> {
    pub fn to_process(&self) -> Process {
        Process {
            exec_id: self.exec_id.to_owned(),
            parent_exec_id: self.parent_exec_id.to_owned(),
            pid: self.pid,
            tid: self.pid,
            exe: self.exe.to_owned(),
            argv: self.argv.iter().map(|a| (*a).to_owned()).collect(),
            comm: self
                .exe
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(15)
                .collect(),
            cwd: "/".to_owned(),
            ..Process::default()
        }
    }
}

pub fn envelope(sensor: &str, seq: u64, time_ns: u64, process: Process, body: Body) -> Event {
    Event {
        sensor_id: sensor.to_owned(),
        host_id: HOST_ID.to_owned(),
        host_name: HOST_NAME.to_owned(),
        seq,
        time: Some(sensor_proto::timestamp_from_unix_ns(time_ns)),
        monotonic_ns: time_ns / 1000,
        process: Some(Box::new(process)),
        body: Some(body),
    }
}

pub fn exec(sensor: &str, seq: u64, time_ns: u64, p: &Proc<'_>) -> Event {
    let argc = u32::try_from(p.argv.len()).unwrap_or(u32::MAX);
    envelope(
        sensor,
        seq,
        time_ns,
        p.to_process(),
        Body::Exec(ProcessExec {
            argc,
            ..ProcessExec::default()
        }),
    )
}

/// A fork: the event's process is the new child.
pub fn fork(sensor: &str, seq: u64, time_ns: u64, child: &Proc<'_>) -> Event {
    envelope(
        sensor,
        seq,
        time_ns,
        child.to_process(),
        Body::Fork(ProcessFork { parent_tid: 1 }),
    )
}

pub fn exit(sensor: &str, seq: u64, time_ns: u64, p: &Proc<'_>, code: i32) -> Event {
    envelope(
        sensor,
        seq,
        time_ns,
        p.to_process(),
        Body::Exit(ProcessExit {
            exit_code: code,
            status: u32::try_from(code).unwrap_or(0) << 8,
            ..ProcessExit::default()
        }),
    )
}

/// Small exec events of one process, seqs `seqs`, one microsecond apart.
pub fn execs(sensor: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Event> {
    let p = Proc {
        exec_id: "e-true",
        parent_exec_id: "e-sh",
        pid: 200,
        exe: "/usr/bin/true",
        argv: &["true"],
    };
    seqs.into_iter()
        .map(|seq| exec(sensor, seq, T0.saturating_add(seq.saturating_mul(1000)), &p))
        .collect()
}

/// A database in its own temporary directory.
pub struct TempDb {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        Ok(Self { dir, path })
    }

    /// Stores `events` directly through the library.
    pub fn fill(&self, events: &[Event]) -> anyhow::Result<()> {
        let mut store = Store::open(&self.path)?;
        store.insert_batch(events)?;
        Ok(())
    }
}

/// A real collector server on 127.0.0.1:0 storing into a temporary database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: TempDb,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ServeSummary, ServeError>>,
}

impl TestServer {
    pub async fn start(config: ServeConfig) -> anyhow::Result<Self> {
        let db = TempDb::new()?;
        let store = Store::open(&db.path)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(collector::serve(
            listener,
            collector::Transport::Plaintext,
            store,
            config,
            async move {
                let _ = stop.await;
            },
        ));
        Ok(Self {
            addr,
            db,
            shutdown: Some(shutdown),
            task,
        })
    }

    pub async fn client(&self) -> anyhow::Result<CollectorClient<Channel>> {
        Ok(CollectorClient::connect(format!("http://{}", self.addr)).await?)
    }

    /// Asks the server to shut down and waits until it has.
    pub async fn stop(mut self) -> anyhow::Result<(ServeSummary, TempDb)> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let summary = self.task.await??;
        Ok((summary, self.db))
    }
}

/// One open `Stream` call: batches go out, acks come back.
pub struct SensorStream {
    batches: Option<mpsc::Sender<EventBatch>>,
    acks: Streaming<Ack>,
}

impl SensorStream {
    pub async fn open(client: &mut CollectorClient<Channel>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(4);
        let acks = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self {
            batches: Some(tx),
            acks,
        })
    }

    /// Sends a batch and waits for the collector's answer to it.
    pub async fn send(&mut self, events: Vec<Event>) -> Result<Ack, Status> {
        let tx = self
            .batches
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("stream closed by the test"))?;
        if tx.send(EventBatch { events }).await.is_err() {
            // The call ended; its status says why.
            return Err(self.next_status().await);
        }
        self.next_ack().await
    }

    /// Sends a batch without waiting for its answer, as a sensor with
    /// batches in flight does.
    pub async fn queue(&mut self, events: Vec<Event>) -> anyhow::Result<()> {
        let tx = self
            .batches
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("stream closed by the test"))?;
        tx.send(EventBatch { events })
            .await
            .map_err(|_| anyhow::anyhow!("the call ended"))
    }

    pub async fn next_ack(&mut self) -> Result<Ack, Status> {
        match self.acks.message().await {
            Ok(Some(ack)) => Ok(ack),
            Ok(None) => Err(Status::unknown("the ack stream ended without a status")),
            Err(status) => Err(status),
        }
    }

    async fn next_status(&mut self) -> Status {
        match self.acks.message().await {
            Ok(_) => Status::unknown("the batch could not be sent but the call went on"),
            Err(status) => status,
        }
    }

    /// Ends the sending side, as a sensor does when it stops.
    pub fn close(&mut self) {
        self.batches = None;
    }

    /// What comes after the last ack: Ok(()) for a clean end, or the status.
    pub async fn end(&mut self) -> Result<(), Status> {
        match self.acks.message().await {
            Ok(None) => Ok(()),
            Ok(Some(ack)) => Err(Status::unknown(format!("unexpected ack {ack:?}"))),
            Err(status) => Err(status),
        }
    }
}

/// Runs the real `collector` binary to completion.
pub fn run_collector(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .context("cannot run the collector binary")
}

pub fn stdout_lines(output: &Output) -> anyhow::Result<Vec<String>> {
    let text = String::from_utf8(output.stdout.clone())?;
    Ok(text.lines().map(str::to_owned).collect())
}

pub fn path_arg(path: &Path) -> anyhow::Result<&str> {
    match path.to_str() {
        Some(s) => Ok(s),
        None => bail!("temporary path {} is not UTF-8", path.display()),
    }
}

/// Parses `collector query` output into (sensor_id, seq) pairs.
pub fn sensor_seqs(lines: &[String]) -> anyhow::Result<Vec<(String, u64)>> {
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let sensor = v["sensor_id"].as_str().context("no sensor_id")?.to_owned();
            // pbjson writes uint64 as a JSON string.
            let seq = v["seq"]
                .as_str()
                .context("seq is not a string")?
                .parse::<u64>()?;
            Ok((sensor, seq))
        })
        .collect()
}

/// The key `collector query` appends to each event's JSON object.
const STORED_NS_KEY: &str = ",\"stored_ns\":\"";

/// Splits a `collector query` line into the event's own JSON (what
/// `Event::to_json` gives) and its `stored_ns`, which must be the last key.
pub fn split_stored_ns(line: &str) -> anyhow::Result<(String, i64)> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let stored_ns = value["stored_ns"]
        .as_str()
        .context("stored_ns is not a string")?
        .parse::<i64>()?;
    let Some(at) = line.rfind(STORED_NS_KEY) else {
        bail!("stored_ns is not the last key of {line}");
    };
    let suffix = format!("{STORED_NS_KEY}{stored_ns}\"}}");
    if line[at..] != suffix {
        bail!("stored_ns is not the last key of {line}");
    }
    Ok((format!("{}}}", &line[..at]), stored_ns))
}

/// `collector query` lines without their `stored_ns`: the events' own JSON.
pub fn without_stored_ns(lines: &[String]) -> anyhow::Result<Vec<String>> {
    lines
        .iter()
        .map(|line| split_stored_ns(line).map(|(json, _)| json))
        .collect()
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn unix_ns_now() -> anyhow::Result<i64> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(i64::try_from(since.as_nanos())?)
}
