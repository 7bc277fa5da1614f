//! The gRPC `Collector` service: receive batches, store them, acknowledge.

use std::{collections::VecDeque, future::Future, io, net::SocketAddr, pin::Pin, time::Duration};

use sensor_proto::{
    encoded::{ReceivedBatch, ReceivedEvent},
    v1::Ack,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming, transport::Server};

use crate::{
    route::CollectorRoute,
    store::{Store, validate_event},
    tls::{self, ServerTls},
    writer::{Commit, WriteError, Writer, WriterHandle, WriterTotals},
};

/// Most events one batch may carry.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 10_000;
/// Largest encoded batch message accepted, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long, after shutdown is asked for, streams get to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Nice levels the database writer runs above the rest of the collector,
/// as auditd's `priority_boost` (4 by default) raises auditd.
pub const DEFAULT_WRITER_PRIORITY_BOOST: u8 = 4;

/// Acks waiting to be sent on one stream.
const ACK_QUEUE_DEPTH: usize = 16;

/// Streams one connection may have open at once. A sensor uses one; the
/// bound keeps one client from holding many message buffers.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;

/// Largest header block a client may send. gRPC's request headers are a few
/// hundred bytes.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How sensors' connections are secured.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Mutual TLS: only clients with a certificate from the client CA.
    Tls(ServerTls),
    /// No encryption, no authentication: for loopback only, which the
    /// command line enforces.
    Plaintext,
}

/// Limits and timing of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// A batch with more events is refused (RESOURCE_EXHAUSTED).
    pub max_batch_events: usize,
    /// A batch message larger than this is refused (RESOURCE_EXHAUSTED).
    pub max_message_bytes: usize,
    /// After shutdown is asked for: how long to wait for streams to end
    /// before closing connections anyway.
    pub shutdown_grace: Duration,
    /// Nice levels the database writer thread runs above the collector's
    /// own (0: none); see [`crate::writer::Writer::start`].
    pub writer_priority_boost: u8,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            writer_priority_boost: DEFAULT_WRITER_PRIORITY_BOOST,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the database writer thread")]
    Writer(#[source] io::Error),
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// What a server did, reported when it has shut down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    pub writer: WriterTotals,
    /// Streams were still open when the shutdown grace ran out.
    pub forced: bool,
}

/// Serves the `Collector` service on `listener`, storing into `store`, until
/// `shutdown` completes. Then open streams are ended (each after its current
/// batch is committed and acknowledged), every batch received is committed,
/// and the database is closed.
///
/// # Errors
/// The writer thread cannot start or the transport fails.
pub async fn serve<F>(
    listener: TcpListener,
    transport: Transport,
    store: Store,
    config: ServeConfig,
    shutdown: F,
) -> Result<ServeSummary, ServeError>
where
    F: Future<Output = ()>,
{
    let writer = Writer::start(store, config.writer_priority_boost).map_err(ServeError::Writer)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = CollectorService {
        writer: writer.handle(),
        config,
        stop: stop_rx.clone(),
    };
    let server_stop = {
        let mut stop = stop_rx;
        async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }
    };
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .add_service(CollectorRoute::new(service, config.max_message_bytes));
    // The two kinds of connection are different types; box the futures.
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match transport {
            Transport::Plaintext => Box::pin(router.serve_with_incoming_shutdown(
                ReceiverStream::new(tls::accept_plaintext(listener)),
                server_stop,
            )),
            Transport::Tls(server_tls) => Box::pin(router.serve_with_incoming_shutdown(
                ReceiverStream::new(tls::accept_tls(
                    listener,
                    &server_tls,
                    tls::HANDSHAKE_TIMEOUT,
                )),
                server_stop,
            )),
        };
    tokio::pin!(server);

    let mut forced = false;
    let served = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            tracing::info!("shutting down: ending streams after their current batch");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    forced = true;
                    tracing::warn!(grace = ?config.shutdown_grace, "streams did not end in time; closing them");
                    Ok(())
                }
            }
        }
    };
    // Stop the streams in every case, so that none keeps waiting for the
    // writer, then commit whatever is queued.
    let _ = stop_tx.send(true);
    let totals = writer.stop().await;
    tracing::info!(
        batches = totals.batches,
        inserted = totals.inserted,
        duplicates = totals.duplicates,
        failed_batches = totals.failed_batches,
        "database closed"
    );
    served?;
    Ok(ServeSummary {
        writer: totals,
        forced,
    })
}

/// The `Collector` gRPC service. Each stream is served by its own task that
/// queues its batches for the writer and acks them in order as they commit.
#[derive(Debug, Clone)]
pub struct CollectorService {
    writer: WriterHandle,
    config: ServeConfig,
    stop: watch::Receiver<bool>,
}

/// The acks of one stream, as the client reads them.
pub type AckStream = ReceiverStream<Result<Ack, Status>>;

impl CollectorService {
    /// Serves one `Collector.Stream` call: its task stores the batches and
    /// sends their acks to the stream returned.
    pub fn stream(&self, request: Request<Streaming<ReceivedBatch>>) -> Response<AckStream> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (acks, ack_rx) = mpsc::channel(ACK_QUEUE_DEPTH);
        let stream = StreamTask {
            inbound,
            acks,
            writer: self.writer.clone(),
            config: self.config,
            stop: self.stop.clone(),
            peer,
        };
        tokio::spawn(stream.run());
        Response::new(ReceiverStream::new(ack_rx))
    }
}

struct StreamTask {
    inbound: Streaming<ReceivedBatch>,
    acks: mpsc::Sender<Result<Ack, Status>>,
    writer: WriterHandle,
    config: ServeConfig,
    stop: watch::Receiver<bool>,
    peer: Option<SocketAddr>,
}

/// A batch of this stream queued for the writer, not yet acknowledged.
struct InFlight {
    /// Its highest seq; None for an empty batch.
    highest: Option<u64>,
    /// None for an empty batch, which has nothing to commit.
    commit: Option<Commit>,
}

/// What one turn of a stream's loop saw.
enum Step {
    Committed(Result<Option<u64>, Status>),
    Received(Result<Option<ReceivedBatch>, Status>),
}

/// How one stream ended.
enum End {
    /// The client closed its side; everything it sent gets its ack.
    Finished,
    /// Nobody reads the acks any more.
    Gone,
    /// The stream ends with this status, after the acks of batches before it.
    Failed(Status),
}

impl StreamTask {
    async fn run(mut self) {
        let peer = self
            .peer
            .map_or_else(|| "unknown peer".to_owned(), |p| p.to_string());
        tracing::info!(%peer, "stream opened");
        let mut last_acked = 0_u64;
        // Batches are queued for the writer as they arrive and acknowledged
        // in order as they commit: one stream's batches then share commits
        // (and their fsync) instead of each waiting for the one before.
        let mut pending: VecDeque<InFlight> = VecDeque::new();
        let mut end = loop {
            let step = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stopping| *stopping) => {
                    break End::Failed(shutting_down());
                }
                () = self.acks.closed() => break End::Gone,
                done = next_commit(&mut pending) => Step::Committed(done),
                received = self.inbound.message(), if pending.len() < PIPELINE_BATCHES => Step::Received(received),
            };
            match step {
                Step::Committed(Ok(highest)) => {
                    last_acked = highest.unwrap_or(last_acked);
                    if !self.ack(last_acked).await {
                        break End::Gone;
                    }
                }
                Step::Committed(Err(status)) => break End::Failed(status),
                Step::Received(Ok(Some(batch))) => match self.submit(batch).await {
                    Ok(queued) => pending.push_back(queued),
                    Err(status) => break End::Failed(status),
                },
                Step::Received(Ok(None)) => break End::Finished,
                Step::Received(Err(status)) => break End::Failed(inbound_error(&status)),
            }
        };
        // Acknowledge what was queued before the end, in order, so a client
        // resends only what was not stored.
        if !matches!(end, End::Gone) {
            while !pending.is_empty() {
                match next_commit(&mut pending).await {
                    Ok(highest) => {
                        last_acked = highest.unwrap_or(last_acked);
                        if !self.ack(last_acked).await {
                            end = End::Gone;
                            break;
                        }
                    }
                    Err(status) => {
                        end = End::Failed(status);
                        break;
                    }
                }
            }
        }
        match end {
            End::Finished | End::Gone => tracing::info!(%peer, last_acked, "stream closed"),
            End::Failed(status) => {
                tracing::warn!(%peer, last_acked, code = ?status.code(), message = status.message(), "stream ended with an error");
                let _ = self.acks.send(Err(status)).await;
            }
        }
    }

    /// Sends an ack; false when nobody reads them any more.
    async fn ack(&self, acked_seq: u64) -> bool {
        self.acks.send(Ok(Ack { acked_seq })).await.is_ok()
    }

    /// Checks one batch and queues it for the writer.
    async fn submit(&self, batch: ReceivedBatch) -> Result<InFlight, Status> {
        let events = batch.events;
        if events.len() > self.config.max_batch_events {
            return Err(Status::resource_exhausted(format!(
                "batch of {} events refused: at most {} events per batch",
                events.len(),
                self.config.max_batch_events
            )));
        }
        for ReceivedEvent { event, .. } in &events {
            validate_event(event)
                .map_err(|e| Status::invalid_argument(format!("batch refused: {e}")))?;
        }
        let highest = events.iter().map(|e| e.event.seq).max();
        if events.is_empty() {
            return Ok(InFlight {
                highest,
                commit: None,
            });
        }
        let commit = self.writer.submit(events).await.map_err(write_error)?;
        Ok(InFlight {
            highest,
            commit: Some(commit),
        })
    }
}

/// Batches of one stream queued for the writer at once. The sensor keeps 8
/// in flight; more lets a client with a wider window fill bigger commits.
const PIPELINE_BATCHES: usize = 16;

/// Waits for the oldest queued batch to commit and removes it; returns its
/// highest seq. Never resolves while nothing is queued.
async fn next_commit(pending: &mut VecDeque<InFlight>) -> Result<Option<u64>, Status> {
    let Some(front) = pending.front_mut() else {
        return std::future::pending().await;
    };
    let answer = match front.commit.as_mut() {
        Some(commit) => Some(commit.await),
        None => None,
    };
    // Removed before its answer is looked at: a failed commit must not stay
    // at the front to be waited for again.
    let highest = front.highest;
    pending.pop_front();
    if let Some(outcome) = answer.transpose().map_err(write_error)? {
        tracing::debug!(
            inserted = outcome.inserted,
            duplicates = outcome.duplicates,
            acked_seq = highest,
            "batch stored"
        );
    }
    Ok(highest)
}

/// What a stream ends with when the collector stops.
fn shutting_down() -> Status {
    Status::unavailable("collector is shutting down; reconnect and resend unacknowledged events")
}

fn write_error(error: WriteError) -> Status {
    match error {
        WriteError::Stopped => shutting_down(),
        WriteError::Store(e) => Status::internal(format!(
            "storing the batch failed: {}",
            crate::error_chain(&e)
        )),
    }
}

/// The status to answer a stream whose next message could not be read.
/// tonic reports an over-size message as OUT_OF_RANGE; gRPC's own code for
/// that is RESOURCE_EXHAUSTED. A message that is not an `EventBatch` (bad
/// protobuf, a bad compression flag, a truncated frame) tonic reports as
/// INTERNAL, which would blame the collector: it is the client's input.
fn inbound_error(status: &Status) -> Status {
    match status.code() {
        Code::OutOfRange => {
            Status::resource_exhausted(format!("batch message refused: {}", status.message()))
        }
        Code::Internal => {
            Status::invalid_argument(format!("batch message refused: {}", status.message()))
        }
        code => Status::new(
            code,
            format!("reading the batch stream failed: {}", status.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(highest: u64, commit: Commit) -> InFlight {
        InFlight {
            highest: Some(highest),
            commit: Some(commit),
        }
    }

    #[tokio::test]
    async fn a_failed_commit_is_answered_once_and_the_next_one_still_counts() {
        let mut pending = VecDeque::from([
            queued(5, Commit::answered(Err(WriteError::Stopped))),
            queued(
                9,
                Commit::answered(Ok(crate::store::InsertOutcome::default())),
            ),
        ]);
        let failed = next_commit(&mut pending).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable);
        assert_eq!(next_commit(&mut pending).await.unwrap(), Some(9));
        assert!(pending.is_empty());
    }
}
