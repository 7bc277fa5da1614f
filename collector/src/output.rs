//! What `collector query` and `collector tree` print.

use std::{io, io::Write, ops::ControlFlow};

use sensor_proto::v1::Event;

use crate::{
    query::EventFilter,
    store::{QueryStats, Store, StoreError},
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
/// timestamps in RFC 3339), ordered by time, then sensor_id and seq.
///
/// # Errors
/// The query or a write fails.
pub fn write_events_json<W: Write>(
    store: &Store,
    filter: &EventFilter,
    out: &mut W,
) -> Result<QueryStats, OutputError> {
    let mut failure: Option<OutputError> = None;
    let stats = store.query_each(filter, |event| match write_json_line(out, &event) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            failure = Some(e);
            ControlFlow::Break(())
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

impl OutputError {
    /// The reader of the output went away (`collector query | head`).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}
