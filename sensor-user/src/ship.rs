//! Stage 5: sends events to the collector in batches over one bidirectional
//! gRPC stream, or prints them as JSON lines.
//!
//! Events come from the disk spool, where the encode stage appended them,
//! and stay there until the collector acknowledges them by seq (it stores a
//! batch durably before it acks, and each (sensor_id, seq) once). On a broken
//! stream the shipper reconnects with exponential backoff and resends from
//! the first unacknowledged event. Memory holds one batch at a time; an
//! outage only grows the spool, whose bound and policy decide what goes.

use std::{
    collections::VecDeque,
    io::Write as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sensor_proto::{
    encoded::{self, EncodedBatch},
    v1::{Ack, Event},
};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{spool::Spool, stats::Stats};

#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// The collector's URL and TLS settings (see `crate::tls`).
    pub url: crate::tls::CollectorUrl,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub max_backoff: Duration,
}

/// Batches sent and not yet acknowledged, at most: bounds memory in the
/// transport as the spool bounds the disk.
const WINDOW_BATCHES: u64 = 8;

/// The spool, shared by the encode stage (appends) and the shipper.
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Locks the spool; a panic elsewhere must not stop delivery.
pub fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the encode stage tells the shipper about new events and the end.
#[derive(Debug, Default)]
pub struct Feed {
    pub wake: Notify,
    /// Set after the last event was appended and flushed.
    pub closed: AtomicBool,
}

enum StreamEnd {
    /// Input closed and every event was acknowledged.
    Done,
    /// The stream broke; reconnect.
    Broken(String),
}

pub struct Shipper {
    cfg: ShipConfig,
    stats: Arc<Stats>,
    spool: SharedSpool,
    feed: Arc<Feed>,
}

impl Shipper {
    #[must_use]
    pub fn new(cfg: ShipConfig, spool: SharedSpool, feed: Arc<Feed>, stats: Arc<Stats>) -> Self {
        Self {
            cfg,
            stats,
            spool,
            feed,
        }
    }

    fn finished(&self) -> bool {
        self.feed.closed.load(Ordering::Acquire) && lock(&self.spool).all_acked()
    }

    /// Runs until the input closes and everything is acknowledged.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.finished() {
                break;
            }
            match self.stream_once().await {
                StreamEnd::Done => break,
                StreamEnd::Broken(why) => {
                    Stats::inc(&self.stats.reconnects);
                    self.persist_ack();
                    let acked = lock(&self.spool).acked();
                    tracing::warn!(
                        "collector {}: {why}; events after seq {acked} wait in the spool, retrying in {backoff:?}",
                        self.cfg.url,
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
        self.persist_ack();
    }

    /// Puts the latest ack on disk (acks are written at most once a second).
    fn persist_ack(&self) {
        if let Err(e) = lock(&self.spool).persist_ack() {
            tracing::warn!("{e}");
        }
    }

    async fn stream_once(&self) -> StreamEnd {
        let channel = match self.cfg.url.connect().await {
            Ok(c) => c,
            Err(e) => return StreamEnd::Broken(format!("connect failed: {e}")),
        };
        let (batches, batch_rx) = mpsc::channel::<EncodedBatch>(4);
        // Batches go out as the spool holds them (encoded events), not
        // decoded and encoded again.
        let mut acks = match encoded::stream(channel, ReceiverStream::new(batch_rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return StreamEnd::Broken(format!("stream refused: {status}")),
        };
        tracing::info!("connected to collector {}", self.cfg.url);
        // Everything unacknowledged is resent on the new stream.
        let mut cursor = lock(&self.spool).cursor();
        let mut sent_seq = cursor.last_seq;
        // (last seq, events) of each batch in flight, to count what acks cover.
        let mut inflight: VecDeque<(u64, u64)> = VecDeque::new();
        let window = WINDOW_BATCHES * self.cfg.batch_size as u64;
        let mut last_send = Instant::now();
        loop {
            let closed = self.feed.closed.load(Ordering::Acquire);
            let (unsent, acked, all_acked) = {
                let spool = lock(&self.spool);
                (spool.unsent(&cursor), spool.acked(), spool.all_acked())
            };
            if closed && all_acked {
                return StreamEnd::Done;
            }
            let room = unsent > 0 && sent_seq.saturating_sub(acked) < window;
            let due = last_send + self.cfg.batch_timeout;
            let ready =
                room && (unsent >= self.cfg.batch_size as u64 || closed || Instant::now() >= due);
            // A partial batch waits for its timeout; with nothing to send the
            // shipper sleeps until the encode stage or the collector wakes it.
            let partial = room && !ready;
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(Ack { acked_seq })) => {
                        while inflight.front().is_some_and(|(last, _)| *last <= acked_seq) {
                            if let Some((_, n)) = inflight.pop_front() {
                                Stats::add(&self.stats.acked, n);
                            }
                        }
                        if let Err(e) = lock(&self.spool).ack(acked_seq) {
                            tracing::warn!("{e}");
                        }
                    }
                    Ok(None) => return StreamEnd::Broken("collector closed the stream".into()),
                    Err(status) => return StreamEnd::Broken(format!("stream failed: {status}")),
                },
                permit = batches.reserve(), if ready => {
                    let Ok(permit) = permit else {
                        return StreamEnd::Broken("request stream closed".into());
                    };
                    let batch = match lock(&self.spool).read_encoded(&mut cursor, self.cfg.batch_size) {
                        Ok(batch) => batch,
                        Err(e) => return StreamEnd::Broken(e.to_string()),
                    };
                    sent_seq = cursor.last_seq;
                    inflight.push_back((sent_seq, batch.len()));
                    Stats::add(&self.stats.shipped, batch.len());
                    permit.send(batch);
                    last_send = Instant::now();
                },
                () = self.feed.wake.notified() => {},
                () = tokio::time::sleep_until(due), if partial => {},
            }
        }
    }
}

/// `--stdout`: one JSON object per line, keyed by proto field names.
pub async fn print_json(mut input: mpsc::Receiver<Event>, stats: Arc<Stats>) {
    let mut out = std::io::stdout().lock();
    while let Some(event) = input.recv().await {
        match event.to_json() {
            Ok(line) => {
                if writeln!(out, "{line}").is_err() {
                    Stats::inc(&stats.ship_dropped);
                }
            }
            Err(_) => Stats::inc(&stats.ship_dropped),
        }
        Stats::inc(&stats.shipped);
        if input.is_empty() {
            let _ = out.flush();
        }
    }
    let _ = out.flush();
}
