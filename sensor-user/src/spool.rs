//! The disk spool: every event the sensor encodes is appended here before it
//! is shipped, and stays until the collector acknowledges it. A collector
//! outage, a network break or the sensor's own SIGKILL loses nothing that
//! reached the spool; a restart resumes from it, and `seq` continues.
//!
//! Layout: `DIR/NNNNNNNNNNNNNNNNNNNN.seg` segment files, appended in order,
//! and `DIR/acked` (the highest acknowledged seq). A record is
//! `magic u32 | len u32 | seq u64 | crc32 u32 | payload[len]` (little
//! endian; the CRC covers seq and payload; the payload is the prost-encoded
//! `Event`). A damaged record is found by its CRC at start-up, cut out and
//! counted; scanning resumes at the next magic, so one bad byte costs one
//! record, and a `DeliveryGap` names the seqs lost.
//!
//! The size bound applies to the segments on disk. When it is hit, the
//! configured policy drops the oldest undelivered segment or the newest
//! events, and a `DeliveryGap` with the exact count and seq range follows.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use prost::Message as _;
use sensor_proto::{
    encoded::EncodedBatch,
    v1::{DeliveryGap, Event, event::Body},
};

use self::{contexts::Contexts, tail::Tail};
use crate::{encode::Context, stats::Stats};

mod contexts;
mod tail;

const MAGIC: u32 = 0x4c4f_5053; // "SPOL"
/// A `DeliveryGap` record: marked so a segment's gaps are known without
/// decoding its events (dropping the segment must carry them forward).
const MAGIC_GAP: u32 = 0x4750_5053; // "SPGP"
const HEADER: usize = 20;
/// Larger records are not events this sensor writes: treated as damage.
const MAX_RECORD: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to drop when the spool is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// The oldest undelivered events (a drive recorder keeps the latest).
    DropOldest,
    /// The events that do not fit.
    DropNewest,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub policy: FullPolicy,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
    records: u64,
    bytes: u64,
    /// The gap records it holds: events they name, and how many records.
    gap_events: u64,
    gap_records: u64,
}

/// Where a reader is: the next record to read, by segment and offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    segment: u64,
    offset: u64,
    /// Records with seq at or below this are skipped (already acknowledged).
    skip_through: u64,
    /// The last seq read.
    pub last_seq: u64,
}

/// One valid record found by a scan.
struct Found {
    offset: u64,
    len: usize,
    seq: u64,
    gap: bool,
}

/// Scans a segment's bytes: the valid records, and whether damage was found.
fn scan(bytes: &[u8]) -> (Vec<Found>, bool) {
    let mut found = Vec::new();
    let mut damaged = false;
    let mut at = 0usize;
    while at + HEADER <= bytes.len() {
        match record_at(bytes, at) {
            Some((len, seq, gap)) => {
                found.push(Found {
                    offset: at as u64,
                    len: HEADER + len,
                    seq,
                    gap,
                });
                at += HEADER + len;
            }
            None => {
                damaged = true;
                at += 1;
            }
        }
    }
    if at < bytes.len() {
        damaged = true;
    }
    (found, damaged)
}

/// How many valid records a scan of `bytes` finds: the scanner's way in for
/// the fuzz targets, which cannot reach the private `scan`.
#[must_use]
pub fn scan_records(bytes: &[u8]) -> usize {
    scan(bytes).0.len()
}

/// The (payload length, seq, is a gap record) of a valid record at `at`.
fn record_at(bytes: &[u8], at: usize) -> Option<(usize, u64, bool)> {
    let (len, seq, gap, crc) = record_head(bytes, at)?;
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((len, seq, gap))
}

/// The (payload length, seq, is a gap record, CRC) in a record's header at
/// `at`, if it is one; the CRC is not checked.
fn record_head(bytes: &[u8], at: usize) -> Option<(usize, u64, bool, u32)> {
    let word = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(at + o..at + o + 4)?.try_into().ok()?,
        ))
    };
    let magic = word(0)?;
    if magic != MAGIC && magic != MAGIC_GAP {
        return None;
    }
    let len = word(4)? as usize;
    if len > MAX_RECORD {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?);
    // The collector refuses seqs above i64::MAX, so no sensor writes one;
    // refusing them here keeps every `seq + 1` below from overflowing.
    if i64::try_from(seq).is_err() {
        return None;
    }
    Some((len, seq, magic == MAGIC_GAP, word(16)?))
}

/// Where [`take_records`] stopped in a chunk.
enum Taken {
    /// At its end, or with the batch full.
    All,
    /// At a record (of this payload length) that runs past the chunk.
    Split(usize),
    /// At something that is not a valid record: the segment ends here.
    Bad,
}

/// Hands on the records in `chunk`, the bytes of the cursor's segment from
/// `cursor.offset`, up to `max` in all (`read` counts them), advancing the
/// cursor past each and skipping those acknowledged. `verify`: check each
/// record's CRC (bytes read back from the file).
fn take_records(
    chunk: &[u8],
    verify: bool,
    readable: u64,
    max: usize,
    cursor: &mut Cursor,
    read: &mut usize,
    each: &mut impl FnMut(&[u8]),
) -> Taken {
    let mut at = 0;
    while *read < max && at + HEADER <= chunk.len() {
        let len = u32::from_le_bytes([chunk[at + 4], chunk[at + 5], chunk[at + 6], chunk[at + 7]])
            as usize;
        if len > MAX_RECORD || cursor.offset + (HEADER + len) as u64 > readable {
            return Taken::Bad;
        }
        if at + HEADER + len > chunk.len() {
            return Taken::Split(len);
        }
        let record = &chunk[at..at + HEADER + len];
        let seq = if verify {
            record_at(record, 0).map(|(_, seq, _)| seq)
        } else {
            record_head(record, 0).map(|(_, seq, _, _)| seq)
        };
        let Some(seq) = seq else {
            return Taken::Bad;
        };
        at += HEADER + len;
        cursor.offset += (HEADER + len) as u64;
        if seq <= cursor.skip_through {
            continue;
        }
        each(&record[HEADER..]);
        *read += 1;
        cursor.last_seq = seq;
    }
    Taken::All
}

/// `Event.process`'s field number (events.proto).
const EVENT_PROCESS_FIELD: u32 = 7;

/// Whether `event` carries its own envelope (sensor id, host).
fn has_envelope(event: &Event) -> bool {
    !(event.sensor_id.is_empty() && event.host_id.is_empty() && event.host_name.is_empty())
}

/// A process context held apart from its event, encoded (`Contexts`), and
/// the thread the event is of.
#[derive(Clone, Copy)]
struct EncodedContext<'a> {
    process: &'a [u8],
    tid: u32,
}

/// Encodes `envelope` (encoded envelope fields, or nothing), then `event`
/// with `process` as its process context, as one record into `rec`, which
/// is reused from record to record (no allocation per event once it has
/// grown).
fn encode_record(
    rec: &mut Vec<u8>,
    magic: u32,
    seq: u64,
    envelope: &[u8],
    event: &Event,
    process: Option<EncodedContext<'_>>,
) {
    rec.clear();
    rec.resize(HEADER, 0);
    rec.extend_from_slice(envelope);
    // Encoding into a Vec only fails for want of capacity, which a Vec grows.
    let _ = event.encode(rec);
    if let Some(c) = process {
        // Protobuf fields may come in any order: `Event.process` after the
        // body decodes as if it were in its place.
        contexts::append(rec, EVENT_PROCESS_FIELD, c.process, c.tid);
    }
    let len = u32::try_from(rec.len() - HEADER).unwrap_or(u32::MAX);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&rec[HEADER..]);
    rec[0..4].copy_from_slice(&magic.to_le_bytes());
    rec[4..8].copy_from_slice(&len.to_le_bytes());
    rec[8..16].copy_from_slice(&seq.to_le_bytes());
    rec[16..20].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Replaces the small state file `name` in `dir` atomically (write, rename),
/// mode 0600 like everything in the spool.
fn write_state(dir: &Path, name: &str, value: u64) -> Result<(), SpoolError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut opts = OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(&tmp)
        .and_then(|mut f| f.write_all(value.to_string().as_bytes()))
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Creates `path` for writing with mode 0600 (events are sensitive).
fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

pub struct Spool {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The last segment's file, written at each flush from `tail`.
    writer: Option<File>,
    /// The last segment's newest bytes: unflushed, and recently flushed for
    /// the shipper.
    tail: Tail,
    /// Bytes of the last segment that were flushed and may be read.
    flushed_bytes: u64,
    segment_limit: u64,
    total_bytes: u64,
    next_seq: u64,
    /// Highest seq appended and flushed.
    flushed_seq: u64,
    acked: u64,
    /// The ack last written to `DIR/acked`, and when.
    persisted_ack: (u64, Option<Instant>),
    /// Seqs dropped by drop-newest, waiting for room for their gap record.
    pending_gap: Option<DeliveryGap>,
    /// The envelope (sensor id, host) encoded once: the fields every record
    /// carries, written before each event that comes without its own.
    envelope: Vec<u8>,
    /// Persisted bound above every seq handed out.
    seq_floor: u64,
    /// The record being written, kept for its capacity.
    record: Vec<u8>,
    /// The process contexts of the last events, encoded.
    contexts: Contexts,
    /// The segment the shipper reads, kept open between batches.
    reader: Option<(u64, File)>,
    /// What the shipper last read, kept for its capacity.
    read_buf: Vec<u8>,
    /// Bytes of the last batch `read_encoded` built: the next one starts
    /// that large instead of growing (and copying) its way there.
    batch_bytes: usize,
}

/// Bytes read at a time for the shipper: a batch of typical events in one
/// read. Opening the segment and reading it through a fresh 256 KiB buffer
/// for every batch was a tenth of the shipping thread's CPU.
const READ_CHUNK: usize = 128 << 10;

/// Seqs reserved at a time in `seq_floor`. Each reservation writes and
/// renames a state file: at 4,096 that was 2% of the sensor's CPU at
/// 400,000 events/s. A damaged tail reports its gap up to the floor, so
/// that gap may name up to this many seqs that were never used.
const SEQ_RESERVE: u64 = 1 << 15;

/// How often, at most, an ack is written to `DIR/acked`. Writing it on every
/// ack (a file write and a rename per batch, 20 a second with 50 ms batches)
/// was a third of the sensor's CPU at 100 exec/s: ext4 starts writeback of
/// the replaced file on rename (`auto_da_alloc`). An ack that did not reach
/// the disk costs a restart at most this much resending, which the collector
/// takes as duplicates (it stores each (sensor_id, seq) once).
const ACK_PERSIST_EVERY: Duration = Duration::from_secs(1);

impl Spool {
    /// Opens (or creates) the spool. Damaged records are cut out and
    /// counted; the gaps they leave are appended as `DeliveryGap` records.
    /// An empty spool starts its seq at `first_seq`.
    ///
    /// # Errors
    /// The directory or a segment cannot be read or written.
    pub fn open(
        cfg: SpoolConfig,
        first_seq: u64,
        envelope: Event,
        stats: &Stats,
    ) -> Result<Self, SpoolError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        }
        let acked_path = dir.join("acked");
        let acked = fs::read_to_string(&acked_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut spool = Self {
            segment_limit: (cfg.max_bytes / 8).clamp(4096, 8 << 20),
            cfg,
            segments: VecDeque::new(),
            writer: None,
            tail: Tail::default(),
            flushed_bytes: 0,
            total_bytes: 0,
            next_seq: first_seq,
            flushed_seq: 0,
            acked,
            persisted_ack: (acked, None),
            pending_gap: None,
            envelope: envelope.encode_to_vec(),
            seq_floor: 0,
            record: Vec::new(),
            contexts: Contexts::default(),
            reader: None,
            read_buf: Vec::new(),
            batch_bytes: 0,
        };
        let floor_path = dir.join("seq_floor");
        let floor: u64 = fs::read_to_string(&floor_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut gaps = Vec::new();
        let mut last_seq: Option<u64> = None;
        let mut prev_damaged = false;
        let mut tail_damaged = false;
        for id in ids {
            let path = dir.join(format!("{id:020}.seg"));
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let (found, damaged) = scan(&bytes);
            if damaged {
                Stats::inc(&stats.spool_corrupt);
                // Keep only the valid records: rewrite the segment.
                let mut clean = Vec::with_capacity(bytes.len());
                for f in &found {
                    let at = f.offset as usize;
                    clean.extend_from_slice(&bytes[at..at + f.len]);
                }
                let tmp = path.with_extension("tmp");
                let _ = fs::remove_file(&tmp);
                create_private(&tmp)
                    .and_then(|mut f| f.write_all(&clean))
                    .map_err(io_err(&tmp))?;
                fs::rename(&tmp, &path).map_err(io_err(&path))?;
            }
            for f in &found {
                // Drop-newest leaves holes too (named by their own gap
                // record); only a hole next to damage is a corruption loss.
                if let Some(prev) = last_seq
                    && f.seq > prev + 1
                    && (damaged || prev_damaged)
                {
                    gaps.push((prev + 1, f.seq - 1));
                }
                last_seq = Some(f.seq);
            }
            prev_damaged = damaged;
            // Bytes after the last valid record: a write cut short.
            tail_damaged = !bytes.is_empty()
                && found
                    .last()
                    .is_none_or(|f| f.offset as usize + f.len < bytes.len());
            let (Some(first), Some(last)) = (found.first(), found.last()) else {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            };
            let size = found.iter().map(|f| f.len as u64).sum();
            let mut gap_events = 0;
            let mut gap_records = 0;
            for f in found.iter().filter(|f| f.gap) {
                let at = f.offset as usize;
                if let Ok(Event {
                    body: Some(Body::Gap(g)),
                    ..
                }) = Event::decode(&bytes[at + HEADER..at + f.len])
                {
                    // Counts read from disk: saturate rather than overflow.
                    gap_events = g.count.saturating_add(gap_events);
                    gap_records += 1;
                }
            }
            spool.total_bytes += size;
            spool.segments.push_back(Segment {
                id,
                path,
                first_seq: first.seq,
                last_seq: last.seq,
                records: found.len() as u64,
                bytes: size,
                gap_events,
                gap_records,
            });
        }
        if let Some(last) = last_seq {
            spool.next_seq = last + 1;
            spool.flushed_seq = last;
            if tail_damaged && floor > last + 1 {
                // Records past the last valid one were lost with the tail;
                // some may have reached the collector already, so their seqs
                // are not reused: everything up to the floor is a gap.
                gaps.push((last + 1, floor - 1));
                spool.next_seq = floor;
            }
        }
        spool.flushed_bytes = spool.segments.back().map_or(0, |s| s.bytes);
        spool.drop_acked_segments();
        spool.seq_floor = floor;
        for (first, last) in gaps {
            Stats::add(&stats.spool_corrupt_lost, last - first + 1);
            spool.append_gap(DeliveryGap {
                first_seq: first,
                last_seq: last,
                count: last - first + 1,
                reason: "spool_corrupt".into(),
            })?;
        }
        spool.flush()?;
        Ok(spool)
    }

    /// The seq the next event will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether everything appended has been acknowledged.
    #[must_use]
    pub fn all_acked(&self) -> bool {
        self.pending_gap.is_none() && self.acked >= self.next_seq.saturating_sub(1)
    }

    /// Highest acknowledged seq.
    #[must_use]
    pub fn acked(&self) -> u64 {
        self.acked
    }

    fn append_gap(&mut self, gap: DeliveryGap) -> Result<(), SpoolError> {
        let count = gap.count;
        let event = Event {
            body: Some(Body::Gap(gap)),
            ..Event::default()
        };
        self.write(event)?;
        if let Some(seg) = self.segments.back_mut() {
            seg.gap_events = seg.gap_events.saturating_add(count);
            seg.gap_records += 1;
        }
        Ok(())
    }

    /// Appends `event` with the next seq, applying the full policy. Returns
    /// the seq it got (dropped or not).
    ///
    /// # Errors
    /// A segment cannot be written.
    pub fn append(&mut self, event: Event, stats: &Stats) -> Result<u64, SpoolError> {
        self.append_with(event, None, stats)
    }

    /// [`Spool::append`] for an event whose process context is held apart
    /// (`event.process` empty): the record holds both, as one `Event`.
    ///
    /// # Errors
    /// A segment cannot be written.
    pub fn append_with(
        &mut self,
        mut event: Event,
        process: Option<&Context>,
        stats: &Stats,
    ) -> Result<u64, SpoolError> {
        if let Some(gap) = self.pending_gap.take() {
            // Drop-newest: the gap record goes first, once there is room.
            if self.room_for(256) {
                self.append_gap(gap)?;
            } else {
                self.pending_gap = Some(gap);
            }
        }
        let seq = self.next_seq;
        if self.pending_gap.is_some() {
            self.drop_newest(seq, stats);
            self.next_seq += 1;
            return Ok(seq);
        }
        // Encoded, then sized: measuring first walked every field of the
        // event and its process context a second time. Dropping the oldest
        // segment may write gap records, so the event is encoded again at
        // the seq that is then next.
        let mut rec = std::mem::take(&mut self.record);
        let mut contexts = std::mem::take(&mut self.contexts);
        let process = process.map(|c| EncodedContext {
            process: contexts.encoded(&c.process),
            tid: c.tid,
        });
        let written = loop {
            let seq = self.next_seq;
            self.encode(&mut rec, &mut event, process);
            if self.room_for(rec.len() as u64) {
                break self.write_encoded(&rec);
            }
            match self.cfg.policy {
                FullPolicy::DropOldest if self.segments.len() > 1 => {
                    if let Err(e) = self.drop_oldest_segment(stats) {
                        break Err(e);
                    }
                }
                _ => {
                    self.drop_newest(seq, stats);
                    self.next_seq += 1;
                    break Ok(seq);
                }
            }
        };
        self.record = rec;
        self.contexts = contexts;
        written
    }

    fn room_for(&self, size: u64) -> bool {
        self.total_bytes + size <= self.cfg.max_bytes
    }

    fn drop_newest(&mut self, seq: u64, stats: &Stats) {
        Stats::inc(&stats.spool_dropped);
        let gap = self.pending_gap.get_or_insert_with(|| DeliveryGap {
            first_seq: seq,
            last_seq: seq,
            count: 0,
            reason: "spool_full_drop_newest".into(),
        });
        gap.last_seq = seq;
        gap.count += 1;
    }

    /// Drop-oldest: the oldest segment goes, undelivered records and all;
    /// a gap record names them. Gap records in the segment are carried into
    /// the new one, so the chain of gaps stays exact through a long outage.
    fn drop_oldest_segment(&mut self, stats: &Stats) -> Result<(), SpoolError> {
        let Some(seg) = self.pop_segment() else {
            return Ok(());
        };
        let carried = self.carried_gap(&seg);
        fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        self.total_bytes -= seg.bytes;
        if seg.last_seq <= self.acked {
            return Ok(());
        }
        // Records at or below the ack were delivered; a segment is only
        // partly acknowledged when it is the oldest, so those come first.
        let delivered = self
            .acked
            .saturating_sub(seg.first_seq.saturating_sub(1))
            .min(seg.records);
        let events = (seg.records - delivered).saturating_sub(seg.gap_records);
        Stats::add(&stats.spool_dropped, events);
        let mut gap = DeliveryGap {
            first_seq: seg.first_seq.max(self.acked.saturating_add(1)),
            last_seq: seg.last_seq,
            count: events.saturating_add(seg.gap_events),
            reason: "spool_full_drop_oldest".into(),
        };
        if let Some(prev) = carried {
            gap.first_seq = gap.first_seq.min(prev);
        }
        self.append_gap(gap)
    }

    /// The first seq named by the gap records of a segment being dropped.
    fn carried_gap(&self, seg: &Segment) -> Option<u64> {
        if seg.gap_records == 0 {
            return None;
        }
        let bytes = fs::read(&seg.path).ok()?;
        let (found, _) = scan(&bytes);
        found
            .iter()
            .filter(|f| f.gap)
            .filter_map(|f| {
                let at = f.offset as usize;
                match Event::decode(&bytes[at + HEADER..at + f.len]).ok()?.body {
                    Some(Body::Gap(g)) => Some(g.first_seq),
                    _ => None,
                }
            })
            .min()
    }

    fn write(&mut self, mut event: Event) -> Result<u64, SpoolError> {
        let mut rec = std::mem::take(&mut self.record);
        self.encode(&mut rec, &mut event, None);
        let written = self.write_encoded(&rec);
        self.record = rec;
        written
    }

    /// Encodes `event` as the record of the next seq into `rec`.
    fn encode(&self, rec: &mut Vec<u8>, event: &mut Event, process: Option<EncodedContext<'_>>) {
        let seq = self.next_seq;
        event.seq = seq;
        let magic = if matches!(event.body, Some(Body::Gap(_))) {
            MAGIC_GAP
        } else {
            MAGIC
        };
        encode_record(rec, magic, seq, self.envelope_for(event), event, process);
    }

    /// Writes `rec`, encoded by [`Spool::encode`] as the record of the next
    /// seq, first moving the seq floor past that seq when it reaches it.
    fn write_encoded(&mut self, rec: &[u8]) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        if seq >= self.seq_floor {
            // Seqs below the floor may be in use; a restart that finds a
            // damaged tail resumes above it rather than reuse one.
            self.seq_floor = seq + SEQ_RESERVE;
            write_state(&self.cfg.dir, "seq_floor", self.seq_floor)?;
        }
        self.write_record(rec, seq)
    }

    /// The encoded envelope `event`'s record starts with: the spool's, unless
    /// the event carries its own.
    fn envelope_for(&self, event: &Event) -> &[u8] {
        if has_envelope(event) {
            &[]
        } else {
            &self.envelope
        }
    }

    /// Appends one encoded record with `seq` to the last segment, rotating
    /// to a new segment when it would grow past its limit.
    fn write_record(&mut self, rec: &[u8], seq: u64) -> Result<u64, SpoolError> {
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.bytes + rec.len() as u64 > self.segment_limit);
        if rotate {
            self.flush()?;
            let id = self.segments.back().map_or(1, |s| s.id + 1);
            let path = self.cfg.dir.join(format!("{id:020}.seg"));
            self.writer = Some(create_private(&path).map_err(io_err(&path))?);
            self.tail.reset(id, 0);
            self.segments.push_back(Segment {
                id,
                path,
                first_seq: seq,
                last_seq: seq,
                records: 0,
                bytes: 0,
                gap_events: 0,
                gap_records: 0,
            });
            self.flushed_bytes = 0;
        }
        if self.writer.is_none()
            && let Some(seg) = self.segments.back()
        {
            // Reopened spool: append to its last segment.
            self.writer = Some(create_private(&seg.path).map_err(io_err(&seg.path))?);
            self.tail.reset(seg.id, seg.bytes);
        }
        let Some(seg) = self.segments.back_mut() else {
            // Unreachable: rotation above made one.
            return Ok(seq);
        };
        self.tail.append(rec);
        seg.last_seq = seq;
        seg.records += 1;
        seg.bytes += rec.len() as u64;
        self.total_bytes += rec.len() as u64;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes everything appended readable (to this process; the page cache
    /// keeps it across a SIGKILL of the sensor).
    ///
    /// # Errors
    /// The segment cannot be written.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if let (Some(file), Some(seg)) = (self.writer.as_mut(), self.segments.back()) {
            self.tail.flush(file).map_err(io_err(&seg.path))?;
        }
        if let Some(seg) = self.segments.back() {
            self.flushed_bytes = seg.bytes;
            self.flushed_seq = seg.last_seq;
        }
        Ok(())
    }

    /// A cursor at the first record not yet acknowledged.
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor {
            segment: self.segments.front().map_or(0, |s| s.id),
            offset: 0,
            skip_through: self.acked,
            last_seq: self.acked,
        }
    }

    /// Whether records past `cursor` are readable.
    #[must_use]
    pub fn unsent(&self, cursor: &Cursor) -> u64 {
        self.flushed_seq.saturating_sub(cursor.last_seq)
    }

    /// Reads up to `max` events past `cursor`, advancing it.
    ///
    /// # Errors
    /// A segment cannot be read.
    pub fn read(&mut self, cursor: &mut Cursor, max: usize) -> Result<Vec<Event>, SpoolError> {
        let mut out = Vec::new();
        self.read_each(cursor, max, |payload| {
            if let Ok(event) = Event::decode(payload) {
                out.push(event);
            }
        })?;
        Ok(out)
    }

    /// Reads up to `max` events past `cursor` as they are stored (encoded,
    /// each checked by its CRC), advancing it: what the shipper sends.
    ///
    /// # Errors
    /// A segment cannot be read.
    pub fn read_encoded(
        &mut self,
        cursor: &mut Cursor,
        max: usize,
    ) -> Result<EncodedBatch, SpoolError> {
        let mut batch = EncodedBatch::with_capacity(self.batch_bytes);
        self.read_each(cursor, max, |payload| batch.push(payload))?;
        self.batch_bytes = batch.encoded_len();
        Ok(batch)
    }

    /// Hands the payload of each of up to `max` records past `cursor` to
    /// `each`, advancing the cursor.
    fn read_each(
        &mut self,
        cursor: &mut Cursor,
        max: usize,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), SpoolError> {
        let mut read = 0;
        let mut buf = std::mem::take(&mut self.read_buf);
        let last = self.segments.len();
        for i in 0..last {
            let seg = &self.segments[i];
            if read >= max {
                break;
            }
            if seg.id < cursor.segment {
                continue;
            }
            if seg.id > cursor.segment {
                // The cursor's segment is gone (dropped) or done: move on.
                cursor.segment = seg.id;
                cursor.offset = 0;
            }
            let readable = if i + 1 == last {
                self.flushed_bytes
            } else {
                seg.bytes
            };
            if cursor.offset >= readable {
                continue;
            }
            let (id, path) = (seg.id, seg.path.clone());
            let file = match &mut self.reader {
                Some((open, file)) if *open == id => file,
                reader => {
                    &mut reader
                        .insert((id, File::open(&path).map_err(io_err(&path))?))
                        .1
                }
            };
            // What is flushed, in chunks: from memory while the tail still
            // holds it, else from the file, no more than the batch needs
            // beyond one chunk, and one read per chunk, not per record.
            let mut want = READ_CHUNK;
            while read < max && cursor.offset + HEADER as u64 <= readable {
                let (chunk, on_disk) = match self.tail.get(id, cursor.offset, readable) {
                    Some(bytes) => (bytes, false),
                    None => {
                        let n =
                            usize::try_from(readable - cursor.offset).map_or(want, |a| a.min(want));
                        buf.resize(n, 0);
                        file.seek(SeekFrom::Start(cursor.offset))
                            .and_then(|_| file.read_exact(&mut buf))
                            .map_err(io_err(&path))?;
                        (&buf[..], true)
                    }
                };
                want = READ_CHUNK;
                let before = cursor.offset;
                match take_records(chunk, on_disk, readable, max, cursor, &mut read, &mut each) {
                    Taken::Bad => break,
                    // A record longer than a chunk is read whole next time.
                    Taken::Split(len) if on_disk && cursor.offset == before => want = HEADER + len,
                    // The tail holds whole records, so this cannot happen
                    // there; stop rather than spin.
                    Taken::All | Taken::Split(_) if cursor.offset == before && read < max => break,
                    Taken::All | Taken::Split(_) => {}
                }
            }
        }
        self.read_buf = buf;
        Ok(())
    }

    /// Records the collector's acknowledgement: fully acknowledged segments
    /// are deleted, and the ack is kept on disk for a restart at most every
    /// [`ACK_PERSIST_EVERY`] (and by [`Spool::persist_ack`]).
    ///
    /// # Errors
    /// The ack file cannot be written.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        self.drop_acked_segments();
        match self.persisted_ack.1 {
            Some(at) if at.elapsed() < ACK_PERSIST_EVERY => Ok(()),
            _ => self.persist_ack(),
        }
    }

    /// Writes the latest ack to disk now, if it is not there yet: when the
    /// shipper stops, so a restart resends nothing that was acknowledged.
    ///
    /// # Errors
    /// The ack file cannot be written.
    pub fn persist_ack(&mut self) -> Result<(), SpoolError> {
        if self.persisted_ack.0 == self.acked {
            return Ok(());
        }
        write_state(&self.cfg.dir, "acked", self.acked)?;
        self.persisted_ack = (self.acked, Some(Instant::now()));
        Ok(())
    }

    /// Takes the oldest segment off the list, closing it if the shipper
    /// holds it open (Windows deletes an open file only when it is closed).
    fn pop_segment(&mut self) -> Option<Segment> {
        let seg = self.segments.pop_front()?;
        if self.reader.as_ref().is_some_and(|(id, _)| *id == seg.id) {
            self.reader = None;
        }
        Some(seg)
    }

    fn drop_acked_segments(&mut self) {
        // The last segment stays: it is being written.
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.last_seq <= self.acked)
        {
            if let Some(seg) = self.pop_segment() {
                let _ = fs::remove_file(&seg.path);
                self.total_bytes -= seg.bytes;
            }
        }
    }
}

impl Drop for Spool {
    /// What was appended and not flushed goes to the file (as the file's
    /// write buffer did when this held one).
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sensor_proto::v1::Process;

    use super::*;

    fn cfg(dir: &Path, max_bytes: u64, policy: FullPolicy) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
            policy,
        }
    }

    fn event(n: u64) -> Event {
        Event {
            monotonic_ns: n,
            ..Event::default()
        }
    }

    fn open(dir: &Path, max_bytes: u64, policy: FullPolicy, stats: &Stats) -> Spool {
        Spool::open(cfg(dir, max_bytes, policy), 1, Event::default(), stats).unwrap()
    }

    /// The first segment file of a spool directory.
    fn segment(dir: &Path) -> PathBuf {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .unwrap()
            .path()
    }

    /// Appends 1000 events of ~70 bytes on disk: far more than 16 KiB holds.
    fn overfill(spool: &mut Spool, stats: &Stats) {
        for n in 0..1000 {
            let padded = Event {
                host_name: "x".repeat(40),
                ..event(n)
            };
            spool.append(padded, stats).unwrap();
        }
    }

    /// A new spool in `dir` holding `n` flushed events, seqs 1..=n.
    fn filled(dir: &Path, n: u64, stats: &Stats) -> Spool {
        let mut spool = open(dir, 1 << 20, FullPolicy::DropOldest, stats);
        for i in 0..n {
            spool.append(event(i), stats).unwrap();
        }
        spool.flush().unwrap();
        spool
    }

    fn read_all(spool: &mut Spool) -> Vec<Event> {
        let mut cursor = spool.cursor();
        spool.read(&mut cursor, usize::MAX).unwrap()
    }

    fn gaps(events: &[Event]) -> Vec<DeliveryGap> {
        events
            .iter()
            .filter_map(|e| match &e.body {
                Some(Body::Gap(g)) => Some(g.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reader_gets_the_same_records_from_memory_as_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = open(dir.path(), 1 << 30, FullPolicy::DropOldest, &stats);
        // ~3 MiB in flushes of 100 events: the tail turns over, so the
        // oldest records are only in the file.
        for n in 0..30_000 {
            let padded = Event {
                host_name: "x".repeat(80),
                ..event(n)
            };
            spool.append(padded, &stats).unwrap();
            if n % 100 == 99 {
                spool.flush().unwrap();
            }
        }
        spool.flush().unwrap();
        let mut cursor = spool.cursor();
        let mut live = Vec::new();
        // In batches, as the shipper reads.
        loop {
            let batch = spool.read(&mut cursor, 512).unwrap();
            if batch.is_empty() {
                break;
            }
            live.extend(batch);
        }
        drop(spool);
        let mut reopened = open(dir.path(), 1 << 30, FullPolicy::DropOldest, &stats);
        let from_disk = read_all(&mut reopened);
        assert_eq!(live.len(), 30_000);
        assert_eq!(live, from_disk);
        assert!(live.iter().zip(1..).all(|(e, seq)| e.seq == seq));
    }

    #[test]
    fn events_survive_a_reopen_and_seq_continues() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = Spool::open(
            cfg(dir.path(), 1 << 20, FullPolicy::DropOldest),
            100,
            Event::default(),
            &stats,
        )
        .unwrap();
        for n in 0..10 {
            assert_eq!(spool.append(event(n), &stats).unwrap(), 100 + n);
        }
        spool.flush().unwrap();
        spool.ack(104).unwrap();
        drop(spool);
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let seqs: Vec<u64> = read_all(&mut spool).iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            [105, 106, 107, 108, 109],
            "acknowledged events are not resent"
        );
        assert_eq!(spool.append(event(10), &stats).unwrap(), 110);
    }

    #[test]
    fn acks_reach_the_disk_at_most_once_a_second_and_the_last_one_when_shipping_stops() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = filled(dir.path(), 10, &stats);
        let on_disk = || fs::read_to_string(dir.path().join("acked")).unwrap();
        spool.ack(2).unwrap();
        spool.ack(6).unwrap();
        assert_eq!(on_disk(), "2", "the second ack within a second waits");
        assert_eq!(spool.acked(), 6, "but counts at once");
        spool.persist_ack().unwrap();
        assert_eq!(on_disk(), "6");
        drop(spool);
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let seqs: Vec<u64> = read_all(&mut spool).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [7, 8, 9, 10]);
    }

    #[test]
    fn events_without_an_envelope_are_written_with_the_spools() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let envelope = Event {
            sensor_id: "s1".into(),
            host_id: "h1".into(),
            host_name: "web".into(),
            ..Event::default()
        };
        let cfg = cfg(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let mut spool = Spool::open(cfg, 1, envelope, &stats).unwrap();
        spool.append(event(1), &stats).unwrap();
        let own = Event {
            sensor_id: "s2".into(),
            ..event(2)
        };
        spool.append(own, &stats).unwrap();
        spool.flush().unwrap();
        let envelopes: Vec<_> = read_all(&mut spool)
            .into_iter()
            .map(|e| (e.sensor_id, e.host_id, e.host_name))
            .collect();
        let owned = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
        assert_eq!(envelopes, [owned("s1", "h1", "web"), owned("s2", "", "")]);
    }

    #[test]
    fn a_process_context_held_apart_is_read_back_inside_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let process = Process {
            exec_id: "e1".into(),
            pid: 7,
            argv: vec!["sh".into(), "-c".into()],
            ..Process::default()
        };
        let mut file = event(1);
        file.body = Some(Body::File(sensor_proto::v1::FileEvent {
            path: "/etc/passwd".into(),
            ..Default::default()
        }));
        let context = Context {
            process: Arc::new(process.clone()),
            tid: 9,
        };
        spool
            .append_with(file.clone(), Some(&context), &stats)
            .unwrap();
        spool.append(event(2), &stats).unwrap();
        spool.flush().unwrap();
        let read = read_all(&mut spool);
        file.process = Some(Box::new(Process { tid: 9, ..process }));
        file.seq = 1;
        assert_eq!(read, vec![file, Event { seq: 2, ..event(2) }]);
    }

    #[test]
    fn a_reader_sees_only_flushed_records_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let mut cursor = spool.cursor();
        spool.append(event(1), &stats).unwrap();
        assert!(spool.read(&mut cursor, 10).unwrap().is_empty());
        spool.flush().unwrap();
        assert_eq!(spool.unsent(&cursor), 1);
        spool.append(event(2), &stats).unwrap();
        spool.append(event(3), &stats).unwrap();
        spool.flush().unwrap();
        assert_eq!(spool.read(&mut cursor, 2).unwrap().len(), 2);
        assert_eq!(spool.read(&mut cursor, 2).unwrap()[0].seq, 3);
        assert_eq!(spool.unsent(&cursor), 0);
    }

    #[test]
    fn records_larger_than_a_read_and_records_split_between_reads_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        // 2 MiB segments.
        let mut spool = open(dir.path(), 16 << 20, FullPolicy::DropOldest, &stats);
        // Sizes around and beyond READ_CHUNK, so records start and end at
        // every kind of place relative to a read.
        let sizes: Vec<usize> = (0..60u64)
            .map(|i| match i % 5 {
                0 => READ_CHUNK * 2 + i as usize,
                1 => READ_CHUNK - 7,
                2 => 10,
                3 => READ_CHUNK / 3 + i as usize,
                _ => 1,
            })
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            let mut e = event(i as u64);
            e.host_name = "x".repeat(*size);
            spool.append(e, &stats).unwrap();
        }
        spool.flush().unwrap();
        let mut cursor = spool.cursor();
        let mut got = Vec::new();
        loop {
            let batch = spool.read(&mut cursor, 7).unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(
                batch
                    .into_iter()
                    .map(|e| (e.monotonic_ns, e.host_name.len())),
            );
        }
        let want: Vec<(u64, usize)> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, *s))
            .collect();
        assert_eq!(got, want);
        assert!(spool.segments.len() > 1, "the reads crossed segments too");
    }

    #[test]
    fn drop_oldest_removes_whole_segments_and_names_the_exact_gap() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        // 4 KiB segments, 16 KiB in all; each event ~70 bytes on disk.
        let mut spool = open(dir.path(), 16 << 10, FullPolicy::DropOldest, &stats);
        overfill(&mut spool, &stats);
        spool.flush().unwrap();
        let events = read_all(&mut spool);
        let gaps = gaps(&events);
        let dropped: u64 = gaps.iter().map(|g| g.count).sum();
        assert_eq!(dropped, Stats::get(&stats.spool_dropped));
        assert!(dropped > 0);
        // Everything appended is either readable or inside a gap.
        let plain = events
            .iter()
            .filter(|e| !matches!(e.body, Some(Body::Gap(_))))
            .count() as u64;
        assert_eq!(plain + dropped, 1000);
        let mut covered: Vec<u64> = gaps.iter().flat_map(|g| g.first_seq..=g.last_seq).collect();
        covered.extend(events.iter().map(|e| e.seq));
        covered.sort_unstable();
        covered.dedup();
        assert_eq!(
            covered,
            (1..=covered.len() as u64).collect::<Vec<_>>(),
            "no seq unaccounted for"
        );
    }

    #[test]
    fn drop_newest_keeps_the_oldest_and_reports_the_dropped_run_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = open(dir.path(), 16 << 10, FullPolicy::DropNewest, &stats);
        overfill(&mut spool, &stats);
        spool.flush().unwrap();
        let kept = read_all(&mut spool);
        assert_eq!(kept[0].seq, 1);
        let dropped = Stats::get(&stats.spool_dropped);
        assert_eq!(kept.len() as u64 + dropped, 1000);
        // The collector catches up: room frees and the gap record follows.
        let last = kept.last().unwrap().seq;
        spool.ack(last).unwrap();
        spool.append(event(1000), &stats).unwrap();
        spool.flush().unwrap();
        let mut cursor = spool.cursor();
        let after = spool.read(&mut cursor, 10).unwrap();
        let gap = &gaps(&after)[0];
        assert_eq!(
            (gap.first_seq, gap.last_seq, gap.count),
            (last + 1, 1000, dropped)
        );
    }

    #[test]
    fn a_flipped_byte_costs_one_record_which_is_counted_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        for n in 0..10 {
            spool
                .append(
                    Event {
                        host_name: "host".into(),
                        ..event(n)
                    },
                    &stats,
                )
                .unwrap();
        }
        spool.flush().unwrap();
        drop(spool);
        let seg = segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let record = bytes.len() / 10;
        bytes[record * 7 + HEADER + 2] ^= 0x40; // inside the 8th record's payload
        fs::write(&seg, &bytes).unwrap();
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let events = read_all(&mut spool);
        let seqs: Vec<u64> = events
            .iter()
            .filter(|e| e.body.is_none())
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 9, 10]);
        let gap = &gaps(&events)[0];
        assert_eq!(
            (gap.first_seq, gap.last_seq, gap.count, gap.reason.as_str()),
            (8, 8, 1, "spool_corrupt")
        );
        assert_eq!(Stats::get(&stats.spool_corrupt), 1);
        assert_eq!(Stats::get(&stats.spool_corrupt_lost), 1);
    }

    #[cfg(unix)]
    #[test]
    fn every_spool_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let spool_dir = dir.path().join("spool");
        let mut spool = open(&spool_dir, 1 << 20, FullPolicy::DropOldest, &stats);
        spool.append(event(1), &stats).unwrap();
        spool.flush().unwrap();
        spool.ack(1).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        for entry in fs::read_dir(&spool_dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    #[test]
    fn a_torn_tail_does_not_reuse_seqs_that_may_have_been_sent() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let spool = filled(dir.path(), 5, &stats);
        drop(spool);
        let seg = segment(dir.path());
        let bytes = fs::read(&seg).unwrap();
        fs::write(&seg, &bytes[..bytes.len() - 3]).unwrap();
        let mut spool = open(dir.path(), 1 << 20, FullPolicy::DropOldest, &stats);
        let next = spool.append(event(9), &stats).unwrap();
        assert!(next > 5, "seq 5 may have reached the collector: {next}");
    }
}
