//! `sensor-bench sink`: a gRPC endpoint that acknowledges every batch as it
//! arrives and stores nothing, for the sensor-alone capacity run. It serves
//! the collector's own route and mutual TLS, so the sensor ships exactly as
//! to a collector; only the database is left out. It counts the events whose
//! file path starts with the step's prefix and keeps the last health report,
//! both written to a state file for the benchmark to read.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use collector::{
    route::{CollectorRoute, StreamHandler},
    server::AckStream,
    tls::{self, ServerTls},
};
use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{DecodeContext, WireType},
};
use sensor_proto::{
    encoded::merge_event_bytes,
    v1::{Ack, SensorHealth},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Streaming};

/// The parts of an `Event` the sink reads; prost skips the others.
#[derive(Clone, PartialEq, Message)]
struct EventPeek {
    #[prost(uint64, tag = "4")]
    seq: u64,
    #[prost(message, optional, tag = "13")]
    health: Option<SensorHealth>,
    #[prost(message, optional, tag = "14")]
    file: Option<FilePeek>,
}

#[derive(Clone, PartialEq, Message)]
struct FilePeek {
    #[prost(string, tag = "2")]
    path: String,
}

/// Bytes of the state line (padded with spaces), so that each rewrite
/// covers the last.
const STATE_LINE: usize = 512;

/// The path prefix of the workload's files (one sink per capacity step).
static PREFIX: OnceLock<String> = OnceLock::new();

/// What one `EventBatch` held, as far as the sink cares.
#[derive(Debug, Default)]
struct SinkBatch {
    matched: u64,
    highest_seq: u64,
    health: Option<SensorHealth>,
}

impl Message for SinkBatch {
    fn encode_raw(&self, _buf: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let Some(encoded) = merge_event_bytes(tag, wire_type, buf, ctx)? else {
            return Ok(());
        };
        let event = EventPeek::decode(encoded)?;
        self.highest_seq = self.highest_seq.max(event.seq);
        let prefix = PREFIX.get().map_or("", String::as_str);
        if event.file.is_some_and(|f| f.path.starts_with(prefix)) {
            self.matched += 1;
        }
        if event.health.is_some() {
            self.health = event.health;
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug, Default)]
struct Counts {
    matched: AtomicU64,
    health: Mutex<Option<SensorHealth>>,
}

#[derive(Debug, Clone, Default)]
struct Sink(Arc<Counts>);

impl StreamHandler for Sink {
    type Batch = SinkBatch;

    fn stream(&self, request: Request<Streaming<SinkBatch>>) -> Response<AckStream> {
        let mut inbound = request.into_inner();
        let (acks, rx) = tokio::sync::mpsc::channel(64);
        let counts = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                counts.matched.fetch_add(batch.matched, Ordering::Relaxed);
                if let Some(h) = batch.health {
                    *counts.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
                }
                let ack = Ack {
                    acked_seq: batch.highest_seq,
                };
                if acks.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Response::new(ReceiverStream::new(rx))
    }
}

/// What the sink saw, as its state file says: events on the prefix, and the
/// last health report's drops (those that can be file events, and where).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SinkState {
    pub matched: u64,
    pub health: Option<(u64, String)>,
}

impl SinkState {
    fn line(&self) -> String {
        match &self.health {
            Some((total, at)) => format!("{} {total} {at}\n", self.matched),
            None => format!("{}\n", self.matched),
        }
    }

    /// Reads a state file the sink wrote.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).context("reading the sink's state")?;
        let mut parts = text.trim_end().splitn(3, ' ');
        // A read racing a rewrite may see a torn line: the caller reads again.
        let matched = parts.next().unwrap_or("").parse().context("sink state")?;
        let health = match parts.next() {
            Some(total) => Some((
                total.parse().context("sink state")?,
                parts.next().unwrap_or("").to_owned(),
            )),
            None => None,
        };
        Ok(Self { matched, health })
    }
}

/// Serves until killed: prints `listening ADDR` once ready, rewrites
/// `state` every 100 ms.
pub fn run(certs: &Path, prefix: String, state: PathBuf) -> Result<()> {
    let _ = PREFIX.set(prefix);
    let server_tls = ServerTls::load(
        &certs.join("server.pem"),
        &certs.join("server.key"),
        &certs.join("ca.pem"),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let sink = Sink::default();
        let counts = sink.0.clone();
        // Written in place, one fixed-width line: a write to the ignored
        // mount is no event, while a rename would be one, and the sensor's
        // drops of it would mix into the step's accounting under overload.
        let file = std::fs::File::create(&state)?;
        tokio::spawn(async move {
            loop {
                let health = counts
                    .health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(crate::store::step_drops);
                let now = SinkState {
                    matched: counts.matched.load(Ordering::Relaxed),
                    health,
                };
                let line = format!("{:<STATE_LINE$}", now.line().trim_end());
                let _ = std::os::unix::fs::FileExt::write_all_at(&file, line.as_bytes(), 0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        tonic::transport::Server::builder()
            .add_service(CollectorRoute::new(sink, 64 << 20))
            .serve_with_incoming(ReceiverStream::new(tls::accept_tls(
                listener,
                &server_tls,
                tls::HANDSHAKE_TIMEOUT,
            )))
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_line_reads_back_with_and_without_health() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        for state in [
            SinkState {
                matched: 7,
                health: None,
            },
            SinkState {
                matched: 9,
                health: Some((3, "kernel/file_ring_full_dropped 3".into())),
            },
        ] {
            std::fs::write(&path, state.line()).unwrap();
            assert_eq!(SinkState::read(&path).unwrap(), state);
        }
    }
}
