//! The one thread that writes to the database, fed through a channel so
//! SQLite never blocks the async runtime.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sensor_proto::encoded::ReceivedEvent;
use tokio::sync::{mpsc, oneshot};

use crate::store::{InsertOutcome, Store, StoreError};

/// Batches waiting for the writer; senders wait when it is full.
const QUEUE_DEPTH: usize = 64;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database writer has stopped")]
    Stopped,
}

/// What the writer did over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterTotals {
    pub batches: u64,
    pub failed_batches: u64,
    pub inserted: u64,
    pub duplicates: u64,
}

enum Request {
    Insert {
        events: Vec<ReceivedEvent>,
        reply: Reply,
    },
    Stop,
}

/// The writer's answer to one batch, with the batch itself: the sender's
/// thread frees it. Freeing a decoded batch (a dozen allocations per event)
/// was a few percent of the writer's time, and the writer is the one thread
/// the collector's throughput waits on.
#[derive(Debug)]
struct Answer {
    result: Result<InsertOutcome, StoreError>,
    _events: Vec<ReceivedEvent>,
}

type Reply = oneshot::Sender<Answer>;

/// Sends batches to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Insert { events, .. } => write!(f, "Insert({} events)", events.len()),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

impl WriterHandle {
    /// Stores `events` in one transaction and waits until it is committed.
    ///
    /// # Errors
    /// The store refused the batch or the writer has stopped.
    pub async fn insert(&self, events: Vec<ReceivedEvent>) -> Result<InsertOutcome, WriteError> {
        self.submit(events).await?.await
    }

    /// Queues `events` for the writer (waiting only while its queue is
    /// full) and returns the commit to wait for, so a stream can queue its
    /// next batch meanwhile and the writer commits both together.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn submit(&self, events: Vec<ReceivedEvent>) -> Result<Commit, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Insert { events, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(Commit(Some(answer)))
    }
}

/// A queued batch's commit; resolves once it is committed (or refused).
#[derive(Debug)]
pub struct Commit(Option<oneshot::Receiver<Answer>>);

impl Commit {
    /// A commit whose answer is already known.
    #[cfg(test)]
    pub(crate) fn answered(answer: Result<InsertOutcome, WriteError>) -> Self {
        let (reply, receiver) = oneshot::channel();
        let answered = |result| Answer {
            result,
            _events: Vec::new(),
        };
        match answer {
            Ok(outcome) => {
                let _ = reply.send(answered(Ok(outcome)));
            }
            Err(WriteError::Store(error)) => {
                let _ = reply.send(answered(Err(error)));
            }
            // The writer is gone: nobody answers.
            Err(WriteError::Stopped) => drop(reply),
        }
        Self(Some(receiver))
    }
}

impl Future for Commit {
    type Output = Result<InsertOutcome, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Answered once; polled again (a caller's mistake) it says the
        // writer has nothing more to say rather than panic in tokio.
        let Some(receiver) = self.0.as_mut() else {
            return Poll::Ready(Err(WriteError::Stopped));
        };
        let answer = std::task::ready!(Pin::new(receiver).poll(cx));
        self.0 = None;
        Poll::Ready(match answer {
            Ok(answer) => answer.result.map_err(WriteError::from),
            Err(_) => Err(WriteError::Stopped),
        })
    }
}

/// The writer thread; [`Writer::stop`] commits what is queued and ends it.
#[derive(Debug)]
pub struct Writer {
    handle: WriterHandle,
    thread: JoinHandle<WriterTotals>,
    checkpointer: Option<JoinHandle<()>>,
}

/// Rows committed since the last checkpoint before the checkpointer runs
/// one. Counting rows, not time: a checkpoint that finds anything to copy
/// also truncates the database file, which a sensor on the collector's own
/// host records as an event, which the collector stores, which the next
/// checkpoint copies: on a timer, that loop never ends.
const CHECKPOINT_ROWS: u64 = 4096;

/// Least time between two checkpoints under load.
const CHECKPOINT_GAP: Duration = Duration::from_millis(250);

/// Starts the checkpointer thread; returns the channel the writer reports
/// committed rows on (closing it ends the thread) and the thread. Without
/// one (it could not start) the writer checkpoints itself, as SQLite does
/// by default.
fn start_checkpointer(store: &Store) -> Option<(std::sync::mpsc::Sender<u64>, JoinHandle<()>)> {
    let checkpointer = match store.checkpointer() {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(
                error = crate::error_chain(&error),
                "no checkpointer thread; the writer checkpoints"
            );
            return None;
        }
    };
    let (committed, rows) = std::sync::mpsc::channel::<u64>();
    let thread = std::thread::Builder::new()
        .name("collector-ckpt".into())
        .spawn(move || {
            let mut since = 0;
            let mut last = Instant::now();
            while let Ok(n) = rows.recv() {
                since += n;
                if since < CHECKPOINT_ROWS || last.elapsed() < CHECKPOINT_GAP {
                    continue;
                }
                if let Err(error) = checkpointer.checkpoint() {
                    tracing::warn!(%error, "checkpoint failed; the writer checkpoints later");
                }
                since = 0;
                last = Instant::now();
            }
        })
        .map_err(|error| tracing::warn!(%error, "no checkpointer thread; the writer checkpoints"))
        .ok()?;
    Some((committed, thread))
}

impl Writer {
    /// Starts the writer thread, which owns `store`, `priority_boost` nice
    /// levels above the calling thread.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(store: Store, priority_boost: u8) -> std::io::Result<Self> {
        let (committed, checkpointer) = start_checkpointer(&store).unzip();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("collector-writer".into())
            .spawn(move || {
                boost_priority(priority_boost);
                run(store, rx, committed)
            })?;
        Ok(Self {
            handle: WriterHandle { tx },
            thread,
            checkpointer,
        })
    }

    /// A handle for sending batches.
    #[must_use]
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Stores every batch already queued, refuses later ones, closes the
    /// database and returns the totals once the thread has ended.
    pub async fn stop(self) -> WriterTotals {
        // If the thread is gone the send fails; joining still reports it.
        let _ = self.handle.tx.send(Request::Stop).await;
        drop(self.handle);
        let (thread, checkpointer) = (self.thread, self.checkpointer);
        let joined = tokio::task::spawn_blocking(move || {
            let totals = thread.join();
            // The writer's end closed the checkpointer's channel; whichever
            // connection closes last copies the WAL and removes it.
            if checkpointer.is_some_and(|c| c.join().is_err()) {
                tracing::error!("the checkpointer thread panicked");
            }
            totals
        });
        match joined.await {
            Ok(Ok(totals)) => totals,
            Ok(Err(_)) | Err(_) => {
                tracing::error!("the database writer thread panicked");
                WriterTotals::default()
            }
        }
    }
}

/// Lowers the calling thread's nice value by `boost` (on Linux nice is per
/// thread). The writer is the collector's one serial stage: every stream's
/// batches queue for it, so while it waits for a CPU no sensor's acks move
/// and the decoding threads only lengthen its queue. With the sensor and a
/// workload on the same two cores (`sensor-bench workload 5`), the writer
/// spent as long runnable and waiting as running. 4 levels took that load's
/// p99 latency in the benchmark from 286 to 117 ms, for 10% fewer events
/// from the loop (5 levels, by hand: 120 to 85 ms). Without the privilege
/// to raise it, the writer runs at the collector's.
fn boost_priority(boost: u8) {
    if boost == 0 {
        return;
    }
    // SAFETY: errno is this thread's; nice(2) changes only this thread's
    // nice value. -1 is both an error and a valid result, hence errno.
    let failed = unsafe {
        *libc::__errno_location() = 0;
        libc::nice(-i32::from(boost)) == -1 && *libc::__errno_location() != 0
    };
    if failed {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the database writer's priority by {boost} (needs root or CAP_SYS_NICE); it runs at the collector's"
        );
    }
}

/// Most batches committed together.
const GROUP_MAX: usize = 32;

/// Stores a group of batches in one commit and answers each sender; if the
/// group commit fails, each batch is tried alone so each gets its own answer.
fn store_group(
    store: &mut Store,
    group: Vec<(Vec<ReceivedEvent>, Reply)>,
    totals: &mut WriterTotals,
) {
    let slices: Vec<&[ReceivedEvent]> = group.iter().map(|(events, _)| events.as_slice()).collect();
    let results: Vec<Result<InsertOutcome, StoreError>> = match store.insert_batches(&slices) {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect(),
        Err(_) => group
            .iter()
            .map(|(events, _)| store.insert_received(events))
            .collect(),
    };
    for ((events, reply), result) in group.into_iter().zip(results) {
        match &result {
            Ok(outcome) => {
                totals.batches += 1;
                totals.inserted += outcome.inserted;
                totals.duplicates += outcome.duplicates;
            }
            Err(error) => {
                totals.failed_batches += 1;
                tracing::error!(
                    error = crate::error_chain(error),
                    events = events.len(),
                    "storing a batch failed"
                );
            }
        }
        // The stream may have gone away; the batch is stored anyway.
        let _ = reply.send(Answer {
            result,
            _events: events,
        });
    }
}

fn run(
    mut store: Store,
    mut rx: mpsc::Receiver<Request>,
    committed: Option<std::sync::mpsc::Sender<u64>>,
) -> WriterTotals {
    let mut totals = WriterTotals::default();
    let mut stopping = false;
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        // Everything already queued joins this commit.
        while let Some(request) = next.take() {
            match request {
                Request::Insert { events, reply } => group.push((events, reply)),
                Request::Stop => stopping = true,
            }
            if group.len() < GROUP_MAX && !stopping {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let before = totals.inserted;
            store_group(&mut store, group, &mut totals);
            if let Some(committed) = &committed {
                // A checkpointer that has gone leaves it to the writer.
                let _ = committed.send(totals.inserted - before);
            }
        }
        if stopping {
            break;
        }
    }
    // Refuse new batches, but store the ones already queued.
    rx.close();
    let mut rest = Vec::new();
    while let Some(request) = rx.blocking_recv() {
        if let Request::Insert { events, reply } = request {
            rest.push((events, reply));
        }
    }
    if !rest.is_empty() {
        store_group(&mut store, rest, &mut totals);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, as /proc shows it.
    fn own_nice() -> i64 {
        let stat =
            std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
        // The fields after the command name start with the 3rd, the state;
        // nice is the 19th.
        let fields = &stat[stat.rfind(')').expect("comm") + 2..];
        fields
            .split(' ')
            .nth(19 - 3)
            .and_then(|n| n.parse().ok())
            .expect("nice field")
    }

    #[test]
    fn a_boosted_thread_runs_that_many_nice_levels_above_its_starter_and_the_starter_does_not() {
        let starter = own_nice();
        let boosted = std::thread::spawn(|| {
            boost_priority(3);
            own_nice()
        })
        .join()
        .expect("thread");
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        assert_eq!(boosted, if privileged { starter - 3 } else { starter });
        assert_eq!(own_nice(), starter, "nice is per thread on Linux");
        let unboosted = std::thread::spawn(|| {
            boost_priority(0);
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(unboosted, starter);
    }
}
