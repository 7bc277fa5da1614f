//! The key index: which rows of `events` hold a searchable value.
//!
//! One row of `keys` says "the events with ids `lo..=hi` include every event
//! stored with this value", for one value and one span of at most
//! [`SPAN_IDS`] consecutive ids. A query reads the spans of the value it
//! looks for and then checks each event in them exactly (the columns in SQL,
//! indicators in Rust), so a span may include events without the value.
//!
//! The writer writes the rows of a stretch once it is full, not at every
//! commit, so a value seen in several commits costs one row; `keys_upto`
//! says which events are in `keys`, and queries read the events after it
//! (at most [`SPAN_IDS`]) whole.
//!
//! Why spans and not one row per event: an index row per event and per
//! searchable column (host, exec_id, parent_exec_id, pid, exe, then the
//! indicators) made ten B-tree inserts of every stored event, scattered over
//! the indexes; the collector stored 35,000 events/s, nearly all of its time
//! in SQLite's index inserts. A batch's events share their host and mostly
//! their process, so one key row per value and span replaces hundreds of
//! index rows. Back to back, `sensor-bench --only collector` went from 35,000
//! to about 110,000 events/s.

use std::collections::HashMap;

use rusqlite::{Statement, params};
use sensor_proto::v1::Event;

use crate::indicators::{IndicatorType, IndicatorValue, indicators_of};

/// Ids a key row spans at most: bounds the events a lookup reads that do not
/// hold the value (the query checks each one).
pub const SPAN_IDS: i64 = 4096;

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
    text: [HashMap<String, Span>; TEXT_KEYS.len()],
    pids: HashMap<u32, Span>,
    indicators: HashMap<(IndicatorType, IndicatorValue), Span>,
    /// The first id since the last flush.
    first: Option<i64>,
}

fn extend(spans: &mut HashMap<String, Span>, value: &str, id: i64) {
    match spans.get_mut(value) {
        Some(span) => span.hi = id,
        None => {
            spans.insert(value.to_owned(), Span { lo: id, hi: id });
        }
    }
}

impl KeySpans {
    /// Adds the keys of `event`, stored as row `id` (ids only grow).
    pub fn add(&mut self, id: i64, event: &Event) {
        self.first.get_or_insert(id);
        let process = event.process.as_ref();
        let texts = [
            event.host_name.as_str(),
            process.map_or("", |p| p.exec_id.as_str()),
            process.map_or("", |p| p.parent_exec_id.as_str()),
            process.map_or("", |p| p.exe.as_str()),
        ];
        for (spans, value) in self.text.iter_mut().zip(texts) {
            extend(spans, value, id);
        }
        self.pids
            .entry(process.map_or(0, |p| p.pid))
            .and_modify(|span| span.hi = id)
            .or_insert(Span { lo: id, hi: id });
        for indicator in indicators_of(event) {
            self.indicators
                .entry((indicator.kind, indicator.value))
                .and_modify(|span| span.hi = id)
                .or_insert(Span { lo: id, hi: id });
        }
    }

    /// Whether the spans reach [`SPAN_IDS`] ids past `id` and should be
    /// written before more are added.
    #[must_use]
    pub fn full(&self, id: i64) -> bool {
        self.first.is_some_and(|first| id - first >= SPAN_IDS - 1)
    }

    /// Writes one key row per value through `insert` (`INSERT INTO keys
    /// (type, value, lo, hi)`), sorted so the inserts walk the index in
    /// order, and starts over.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn flush(&mut self, insert: &mut Statement<'_>) -> rusqlite::Result<()> {
        let mut rows: Vec<(KeyType, IndicatorValue, Span)> = Vec::new();
        for (kind, spans) in TEXT_KEYS.iter().zip(&mut self.text) {
            rows.extend(
                spans
                    .drain()
                    .map(|(value, span)| (*kind, IndicatorValue::Text(value), span)),
            );
        }
        rows.extend(
            self.pids
                .drain()
                .map(|(pid, span)| (KeyType::Pid, IndicatorValue::Int(i64::from(pid)), span)),
        );
        rows.extend(
            self.indicators
                .drain()
                .map(|((kind, value), span)| (KeyType::Indicator(kind), value, span)),
        );
        rows.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        for (kind, value, span) in rows {
            let kind = kind.as_str();
            match value {
                IndicatorValue::Text(text) => insert.execute(params![kind, text, span.lo, span.hi]),
                IndicatorValue::Ip(ip) => {
                    insert.execute(params![kind, ip.as_slice(), span.lo, span.hi])
                }
                IndicatorValue::Int(n) => insert.execute(params![kind, n, span.lo, span.hi]),
            }?;
        }
        self.first = None;
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
