//! The key index: which rows of `events` hold a searchable value.
//!
//! One row of `keys` says "the events with ids `lo..=hi` include every event
//! stored with this value", for one value and one span of at most
//! [`SPAN_IDS`] consecutive ids. A query reads the spans of the value it
//! looks for and then checks each event in them exactly (the columns in SQL,
//! indicators in Rust), so a span may include events without the value.
//!
//! The writer keeps the spans of the last events in memory and writes them
//! once [`FLUSH_IDS`] events have been stored since it last did, not at every
//! commit, so a value seen in several commits costs one row per span;
//! `keys_upto` says which events are in `keys`, and queries read the events
//! after it (at most [`FLUSH_IDS`]) whole.
//!
//! Why a flush holds many spans: `keys` is ordered by value, so a flush
//! inserts its rows all over the table, one leaf page per value, and SQLite
//! writes each page it changed whole to the WAL (and later into the database
//! file). With a flush per span, a stream of file events with a thousand
//! distinct paths rewrote a thousand pages every 4,096 events: more bytes
//! than the events themselves, and most of the writer's time. A flush of 16
//! spans puts each value's 16 rows side by side on one page: the same rows,
//! a sixteenth of the pages. (Longer spans would also write fewer rows, but
//! every lookup would read more events that lack its value.)
//!
//! Why spans and not one row per event: an index row per event and per
//! searchable column (host, exec_id, parent_exec_id, pid, exe, then the
//! indicators) made ten B-tree inserts of every stored event, scattered over
//! the indexes; the collector stored 35,000 events/s, nearly all of its time
//! in SQLite's index inserts. A batch's events share their host and mostly
//! their process, so one key row per value and span replaces hundreds of
//! index rows. Back to back, `sensor-bench --only collector` went from 35,000
//! to about 110,000 events/s.

// foldhash, not std's SipHash: the writer hashes every key of every event
// it stores (about 4% of its time with SipHash); the values come from
// authenticated sensors, and foldhash's per-map random seed still keeps
// them from choosing collisions.
use foldhash::HashMap;

use rusqlite::{Statement, params};
use sensor_proto::v1::Event;

use crate::indicators::{IndicatorType, IndicatorValue, indicators_of};

/// Ids a key row spans at most: bounds the events a lookup reads that do not
/// hold the value (the query checks each one).
pub const SPAN_IDS: i64 = 4096;

/// Ids whose key rows are written together ([`KeySpans::full`]): 16 spans.
pub const FLUSH_IDS: i64 = 16 * SPAN_IDS;

/// Bytes of values held since the last flush after which the spans are
/// written early: what the collector holds for key values is bounded by
/// this, however large the values a client sends.
const FLUSH_VALUE_BYTES: usize = 64 << 20;

/// What a key row holds; the `type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyType {
    /// `host_name`.
    Host,
    /// `process.exec_id`.
    ExecId,
    /// `process.parent_exec_id`.
    ParentExecId,
    /// `process.pid` (0 for events without a process).
    Pid,
    /// `process.exe`.
    Exe,
    /// An indicator ([`crate::indicators`]).
    Indicator(IndicatorType),
}

impl KeyType {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ExecId => "exec_id",
            Self::ParentExecId => "parent_exec_id",
            Self::Pid => "pid",
            Self::Exe => "exe",
            Self::Indicator(kind) => kind.as_str(),
        }
    }
}

/// An id span: the first and last event id holding a value.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: i64,
    hi: i64,
}

/// One value's spans since the last flush, oldest first; each lies within
/// one window of [`SPAN_IDS`] ids.
type Spans = Vec<Span>;

/// Adds `id` to `spans`: to the last span if it began in `window` (the
/// first id of `id`'s window), else as a new span.
fn extend(spans: &mut Spans, id: i64, window: i64) {
    match spans.last_mut() {
        Some(span) if span.lo >= window => span.hi = id,
        _ => spans.push(Span { lo: id, hi: id }),
    }
}

/// The process fields that are keyed as text, in [`KeySpans::text`] order.
const TEXT_KEYS: [KeyType; 4] = [
    KeyType::Host,
    KeyType::ExecId,
    KeyType::ParentExecId,
    KeyType::Exe,
];

/// The key spans of the events stored since the last [`KeySpans::flush`].
///
/// The text maps are looked up by `&str`, so a value seen again (a batch's
/// host, its processes) costs no allocation.
#[derive(Debug, Default)]
pub struct KeySpans {
    text: [HashMap<String, Spans>; TEXT_KEYS.len()],
    pids: HashMap<u32, Spans>,
    indicators: HashMap<(IndicatorType, IndicatorValue), Spans>,
    /// The first id since the last flush.
    first: Option<i64>,
    /// Bytes of the values held (text and addresses).
    value_bytes: usize,
}

impl KeySpans {
    /// Adds the keys of `event`, stored as row `id` (ids only grow).
    pub fn add(&mut self, id: i64, event: &Event) {
        let first = *self.first.get_or_insert(id);
        let window = first + (id - first) / SPAN_IDS * SPAN_IDS;
        let process = event.process.as_ref();
        let texts = [
            event.host_name.as_str(),
            process.map_or("", |p| p.exec_id.as_str()),
            process.map_or("", |p| p.parent_exec_id.as_str()),
            process.map_or("", |p| p.exe.as_str()),
        ];
        for (spans, value) in self.text.iter_mut().zip(texts) {
            match spans.get_mut(value) {
                Some(spans) => extend(spans, id, window),
                None => {
                    self.value_bytes += value.len();
                    spans.insert(value.to_owned(), vec![Span { lo: id, hi: id }]);
                }
            }
        }
        extend(
            self.pids.entry(process.map_or(0, |p| p.pid)).or_default(),
            id,
            window,
        );
        for indicator in indicators_of(event) {
            let bytes = match &indicator.value {
                IndicatorValue::Text(text) => text.len(),
                IndicatorValue::Ip(ip) => ip.len(),
                IndicatorValue::Int(_) => 0,
            };
            let spans = self
                .indicators
                .entry((indicator.kind, indicator.value))
                .or_insert_with(|| {
                    self.value_bytes += bytes;
                    Vec::new()
                });
            extend(spans, id, window);
        }
    }

    /// Whether the spans reach [`FLUSH_IDS`] ids past `id`, or hold
    /// [`FLUSH_VALUE_BYTES`] of values, and should be written before more
    /// are added.
    #[must_use]
    pub fn full(&self, id: i64) -> bool {
        self.first.is_some_and(|first| id - first >= FLUSH_IDS - 1)
            || self.value_bytes >= FLUSH_VALUE_BYTES
    }

    /// Writes one key row per value and span through `insert` (`INSERT INTO
    /// keys (type, value, lo, hi)`), sorted so the inserts walk the index in
    /// order, and starts over.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn flush(&mut self, insert: &mut Statement<'_>) -> rusqlite::Result<()> {
        let mut rows: Vec<(KeyType, IndicatorValue, Spans)> = Vec::new();
        for (kind, spans) in TEXT_KEYS.iter().zip(&mut self.text) {
            rows.extend(
                spans
                    .drain()
                    .map(|(value, spans)| (*kind, IndicatorValue::Text(value), spans)),
            );
        }
        rows.extend(
            self.pids
                .drain()
                .map(|(pid, spans)| (KeyType::Pid, IndicatorValue::Int(i64::from(pid)), spans)),
        );
        rows.extend(
            self.indicators
                .drain()
                .map(|((kind, value), spans)| (KeyType::Indicator(kind), value, spans)),
        );
        rows.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        for (kind, value, spans) in rows {
            let kind = kind.as_str();
            for span in spans {
                match &value {
                    IndicatorValue::Text(text) => {
                        insert.execute(params![kind, text, span.lo, span.hi])
                    }
                    IndicatorValue::Ip(ip) => {
                        insert.execute(params![kind, ip.as_slice(), span.lo, span.hi])
                    }
                    IndicatorValue::Int(n) => insert.execute(params![kind, n, span.lo, span.hi]),
                }?;
            }
        }
        self.first = None;
        self.value_bytes = 0;
        Ok(())
    }
}

/// The smallest string above every string that starts with `prefix`, for
/// `value >= prefix AND value < upper` on an index (SQLite compares text
/// byte by byte, and UTF-8's byte order is code point order); `None` when
/// there is none (`prefix` is empty or all U+10FFFF).
#[must_use]
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            // The surrogates are not chars; the next one is U+E000.
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_are_written_early_so_the_spans_held_stay_bounded() {
        use sensor_proto::v1::{FileEvent, event::Body};
        let file = |i: usize| Event {
            body: Some(Body::File(FileEvent {
                path: format!("/{i}/{}", "x".repeat(1 << 20)),
                ..FileEvent::default()
            })),
            ..Event::default()
        };
        let mut spans = KeySpans::default();
        let n = FLUSH_VALUE_BYTES >> 20;
        for i in 1..n {
            spans.add(i as i64, &file(i));
            assert!(!spans.full(i as i64), "after {i} MiB");
        }
        spans.add(n as i64, &file(n));
        assert!(spans.full(n as i64), "{n} distinct paths of 1 MiB");
        // A value seen again adds no bytes.
        let mut again = KeySpans::default();
        for i in 1..=n {
            again.add(i as i64, &file(1));
        }
        assert!(!again.full(n as i64));
    }

    #[test]
    fn a_prefix_upper_bound_is_above_every_extension_and_below_the_next_prefix() {
        assert_eq!(prefix_upper_bound("/etc/"), Some("/etc0".into()));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        let upper = prefix_upper_bound("/tmp/x").unwrap();
        for inside in ["/tmp/x", "/tmp/xyz", "/tmp/x\u{10FFFF}"] {
            assert!(inside.as_bytes() < upper.as_bytes(), "{inside}");
        }
        assert!("/tmp/y".as_bytes() >= upper.as_bytes());
    }
}
