//! What `collector query` and `collector tree` print.

use std::{io, io::Write, ops::ControlFlow};

use sensor_proto::v1::Event;

use crate::{
    query::EventFilter,
    store::{QueryStats, Store, StoreError, StoredEvent},
    tree::{Ancestry, format_line},
};

/// Why printing stopped.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the output")]
    Write(#[from] io::Error),
    #[error("cannot encode an event as JSON")]
    Json(#[from] serde_json::Error),
}

/// Writes every event matching `filter` as one JSON object per line
/// (`Event::to_json`: proto field names, 64-bit integers as strings,
/// timestamps in RFC 3339), ordered by time, then sensor_id and seq. Each
/// object ends with one key that is not an `Event` field: `stored_ns`, when
/// the collector stored the event (unix ns as a string, like the other 64-bit
/// integers; `"0"` if unknown, see [`StoredEvent::stored_ns`]).
///
/// # Errors
/// The query or a write fails.
pub fn write_events_json<W: Write>(
    store: &Store,
    filter: &EventFilter,
    out: &mut W,
) -> Result<QueryStats, OutputError> {
    let mut failure: Option<OutputError> = None;
    let stats = store.query_each(filter, |stored| {
        match write_stored_json_line(out, &stored) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    out.flush()?;
    Ok(stats)
}

/// Writes the chain root first, one line per image, indented two spaces per
/// depth (see [`format_line`]).
///
/// # Errors
/// A write fails.
pub fn write_tree_text<W: Write>(ancestry: &Ancestry, out: &mut W) -> Result<(), OutputError> {
    for (depth, ancestor) in ancestry.chain.iter().enumerate() {
        writeln!(out, "{}", format_line(depth, ancestor))?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the event of every image of the chain, root first, one JSON object
/// per line.
///
/// # Errors
/// A write fails.
pub fn write_tree_json<W: Write>(ancestry: &Ancestry, out: &mut W) -> Result<(), OutputError> {
    for ancestor in &ancestry.chain {
        write_json_line(out, &ancestor.event)?;
    }
    out.flush()?;
    Ok(())
}

fn write_json_line<W: Write>(out: &mut W, event: &Event) -> Result<(), OutputError> {
    let json = event.to_json()?;
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// `Event::to_json` with `"stored_ns":"<n>"` appended as its last key.
fn write_stored_json_line<W: Write>(out: &mut W, stored: &StoredEvent) -> Result<(), OutputError> {
    let json = with_stored_ns(stored.event.to_json()?, stored.stored_ns);
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Appends the `stored_ns` key to a serialised JSON object. Splicing keeps
/// the keys in `Event::to_json`'s (proto field) order, which a round trip
/// through `serde_json::Value` would sort.
fn with_stored_ns(mut json: String, stored_ns: i64) -> String {
    debug_assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    json.pop();
    if json != "{" {
        json.push(',');
    }
    json.push_str(&format!("\"stored_ns\":\"{stored_ns}\"}}"));
    json
}

impl OutputError {
    /// The reader of the output went away (`collector query | head`).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ns_is_the_last_key_of_the_object() {
        let event = Event {
            sensor_id: "s".into(),
            seq: 7,
            ..Event::default()
        };
        let json = with_stored_ns(event.to_json().unwrap(), 1_700_000_000_123_456_789);
        assert!(
            json.ends_with(r#","stored_ns":"1700000000123456789"}"#),
            "{json}"
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["sensor_id"], "s");
        assert_eq!(value["seq"], "7");
        assert_eq!(value["stored_ns"], "1700000000123456789");

        // Event::to_json writes the scalar fields even when they are
        // default, but an empty object would still come out well-formed.
        assert_eq!(with_stored_ns("{}".into(), 0), r#"{"stored_ns":"0"}"#);
    }
}
