//! Stage 5: sends events to the collector in batches over one bidirectional
//! gRPC stream, or prints them as JSON lines.
//!
//! Events stay in a bounded in-memory buffer until the collector acknowledges
//! them by seq. On a broken stream the shipper reconnects with exponential
//! backoff and resends everything unacknowledged (the collector stores each
//! (sensor_id, seq) once). While the collector is away the input keeps being
//! drained, so nothing upstream stalls: beyond the bound the oldest events are
//! dropped and counted.

use std::{collections::VecDeque, io::Write as _, sync::Arc, time::Duration};

use sensor_proto::v1::{Ack, Event, EventBatch, collector_client::CollectorClient};
use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};
use tokio_stream::wrappers::ReceiverStream;

use crate::stats::Stats;

#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// The collector's URL and TLS settings (see `crate::tls`).
    pub url: crate::tls::CollectorUrl,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub buffer_events: usize,
    pub max_backoff: Duration,
}

/// Unacknowledged events, oldest first, and how many of them were sent on
/// the current stream.
struct Unacked {
    events: VecDeque<Event>,
    sent: usize,
    cap: usize,
}

impl Unacked {
    /// Adds an event; when full, drops the oldest event not yet sent on the
    /// current stream. Events in flight are never the ones dropped: the
    /// collector may store them, and a counted drop must be a real loss.
    fn push(&mut self, event: Event, stats: &Stats) {
        if self.events.len() >= self.cap && self.events.remove(self.sent).is_some() {
            Stats::inc(&stats.ship_dropped);
        }
        self.events.push_back(event);
    }

    /// Whether `push` can take an event without dropping one in flight.
    fn can_take(&self) -> bool {
        self.events.len() < self.cap || self.unsent() > 0
    }

    fn ack(&mut self, acked_seq: u64, stats: &Stats) {
        while self.events.front().is_some_and(|e| e.seq <= acked_seq) {
            self.events.pop_front();
            self.sent = self.sent.saturating_sub(1);
            Stats::inc(&stats.acked);
        }
    }

    fn unsent(&self) -> usize {
        self.events.len() - self.sent
    }

    fn next_batch(&mut self, max: usize) -> EventBatch {
        let n = self.unsent().min(max);
        let events = self
            .events
            .range(self.sent..self.sent + n)
            .cloned()
            .collect();
        self.sent += n;
        EventBatch { events }
    }
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
    input: mpsc::Receiver<Event>,
    input_open: bool,
    unacked: Unacked,
}

impl Shipper {
    #[must_use]
    pub fn new(cfg: ShipConfig, input: mpsc::Receiver<Event>, stats: Arc<Stats>) -> Self {
        let cap = cfg.buffer_events;
        Self {
            cfg,
            stats,
            input,
            input_open: true,
            unacked: Unacked {
                events: VecDeque::new(),
                sent: 0,
                cap,
            },
        }
    }

    fn take(&mut self, event: Option<Event>) {
        match event {
            Some(e) => self.unacked.push(e, &self.stats),
            None => self.input_open = false,
        }
    }

    /// Waits `delay` while still draining the input into the buffer.
    async fn wait_draining(&mut self, delay: Duration) {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                e = self.input.recv(), if self.input_open => self.take(e),
            }
            if !self.input_open {
                tokio::time::sleep_until(deadline).await;
                return;
            }
        }
    }

    /// Runs until the input closes and everything is acknowledged.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if !self.input_open && self.unacked.events.is_empty() {
                return;
            }
            match self.stream_once().await {
                StreamEnd::Done => return,
                StreamEnd::Broken(why) => {
                    // Nothing is in flight any more: all of it is resent.
                    self.unacked.sent = 0;
                    Stats::inc(&self.stats.reconnects);
                    tracing::warn!(
                        "collector {}: {why}; {} events waiting, retrying in {backoff:?}",
                        self.cfg.url,
                        self.unacked.events.len()
                    );
                    self.wait_draining(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
            if self.unacked.events.is_empty() {
                backoff = Duration::from_millis(100);
            }
        }
    }

    async fn stream_once(&mut self) -> StreamEnd {
        let channel = match self.cfg.url.connect().await {
            Ok(c) => c,
            Err(e) => return StreamEnd::Broken(format!("connect failed: {e}")),
        };
        let mut client = CollectorClient::new(channel);
        let (batches, batch_rx) = mpsc::channel::<EventBatch>(4);
        let mut acks = match client.stream(ReceiverStream::new(batch_rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return StreamEnd::Broken(format!("stream refused: {status}")),
        };
        tracing::info!("connected to collector {}", self.cfg.url);
        // Everything unacknowledged is resent on the new stream.
        self.unacked.sent = 0;
        let mut last_send = Instant::now();
        let mut tick = tokio::time::interval(self.cfg.batch_timeout.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if !self.input_open && self.unacked.events.is_empty() {
                return StreamEnd::Done;
            }
            let unsent = self.unacked.unsent();
            let ready = unsent >= self.cfg.batch_size
                || (unsent > 0
                    && (!self.input_open || last_send.elapsed() >= self.cfg.batch_timeout));
            tokio::select! {
                e = self.input.recv(), if self.input_open
                    && unsent < self.cfg.batch_size
                    && self.unacked.can_take() => self.take(e),
                ack = acks.message() => match ack {
                    Ok(Some(Ack { acked_seq })) => self.unacked.ack(acked_seq, &self.stats),
                    Ok(None) => return StreamEnd::Broken("collector closed the stream".into()),
                    Err(status) => return StreamEnd::Broken(format!("stream failed: {status}")),
                },
                permit = batches.reserve(), if ready => {
                    let Ok(permit) = permit else {
                        return StreamEnd::Broken("request stream closed".into());
                    };
                    let batch = self.unacked.next_batch(self.cfg.batch_size);
                    Stats::add(&self.stats.shipped, batch.events.len() as u64);
                    permit.send(batch);
                    last_send = Instant::now();
                },
                _ = tick.tick() => {},
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            ..Event::default()
        }
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it() {
        let stats = Stats::default();
        let mut u = Unacked {
            events: VecDeque::new(),
            sent: 0,
            cap: 3,
        };
        for seq in 1..=5 {
            u.push(ev(seq), &stats);
        }
        let seqs: Vec<u64> = u.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(
            stats
                .ship_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn a_full_buffer_keeps_events_in_flight_and_drops_the_oldest_unsent() {
        let stats = Stats::default();
        let mut u = Unacked {
            events: (1..=4).map(ev).collect(),
            sent: 0,
            cap: 4,
        };
        assert_eq!(u.next_batch(2).events.len(), 2);
        u.push(ev(5), &stats);
        let seqs: Vec<u64> = u.events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 4, 5],
            "1 and 2 are in flight; 3 is dropped"
        );
        assert_eq!(u.sent, 2);
        assert_eq!(
            stats
                .ship_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        u.next_batch(2);
        assert!(!u.can_take(), "everything is in flight: wait for acks");
    }

    #[test]
    fn acks_release_events_up_to_their_seq() {
        let stats = Stats::default();
        let mut u = Unacked {
            events: (1..=5).map(ev).collect(),
            sent: 0,
            cap: 10,
        };
        let batch = u.next_batch(4);
        assert_eq!(batch.events.len(), 4);
        u.ack(3, &stats);
        assert_eq!(u.events.front().map(|e| e.seq), Some(4));
        assert_eq!(u.sent, 1);
        assert_eq!(u.unsent(), 1);
        assert_eq!(u.next_batch(10).events[0].seq, 5);
    }
}
