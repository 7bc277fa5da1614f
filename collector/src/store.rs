//! The SQLite event store: schema, batch inserts and lookups.
//!
//! Every event is one row of `events`. The columns the investigator filters
//! by are copied out of the event; `body` holds the whole prost-encoded
//! `Event`, so nothing the sensor sent is lost. `UNIQUE(sensor_id, seq)` with
//! `ON CONFLICT DO NOTHING` makes redelivery harmless.

use std::{
    fs::OpenOptions,
    io,
    ops::ControlFlow,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use prost::Message as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params, params_from_iter};
use sensor_proto::v1::Event;

use crate::query::EventFilter;

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id             INTEGER PRIMARY KEY,
    sensor_id      TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    host_id        TEXT    NOT NULL,
    host_name      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    time_ns        INTEGER NOT NULL,
    exec_id        TEXT    NOT NULL,
    parent_exec_id TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    exe            TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    UNIQUE (sensor_id, seq)
);
CREATE INDEX IF NOT EXISTS events_host_name      ON events (host_name, time_ns);
CREATE INDEX IF NOT EXISTS events_exec_id        ON events (exec_id);
CREATE INDEX IF NOT EXISTS events_parent_exec_id ON events (parent_exec_id);
CREATE INDEX IF NOT EXISTS events_pid            ON events (pid, time_ns);
CREATE INDEX IF NOT EXISTS events_exe            ON events (exe);
CREATE INDEX IF NOT EXISTS events_time_ns        ON events (time_ns, sensor_id, seq);
";

const INSERT: &str = "
INSERT INTO events (sensor_id, seq, host_id, host_name, kind, time_ns, exec_id,
                    parent_exec_id, pid, exe, body)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
ON CONFLICT (sensor_id, seq) DO NOTHING
";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("database {} is not a file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot create database {}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot open database {}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {} has no events table; is it a collector database?", path.display())]
    NotACollectorDb { path: PathBuf },
    #[error(
        "database {} has schema version {found}, this collector understands up to {SCHEMA_VERSION}",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// An event the store refuses, before anything of its batch is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("event seq {seq} has no sensor_id")]
    MissingSensorId { seq: u64 },
    #[error(
        "event of sensor {sensor_id:?} has seq {seq}, above the largest storable {}",
        i64::MAX
    )]
    SeqOutOfRange { sensor_id: String, seq: u64 },
}

/// Checks what the store needs of an event: a sensor id and a seq that fits
/// SQLite's signed 64-bit integers.
///
/// # Errors
/// The first problem found.
pub fn validate_event(event: &Event) -> Result<(), InvalidEvent> {
    if event.sensor_id.is_empty() {
        return Err(InvalidEvent::MissingSensorId { seq: event.seq });
    }
    if i64::try_from(event.seq).is_err() {
        return Err(InvalidEvent::SeqOutOfRange {
            sensor_id: event.sensor_id.clone(),
            seq: event.seq,
        });
    }
    Ok(())
}

/// What one batch insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Rows written.
    pub inserted: u64,
    /// Events already stored (same sensor_id and seq), skipped.
    pub duplicates: u64,
}

/// What a query walk saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Events handed to the callback.
    pub yielded: u64,
    /// Rows whose body did not decode; skipped with a warning.
    pub corrupt: u64,
}

/// The event that best describes one process image, as [`Store::find_image`]
/// finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEvent {
    /// The `kind` column: "exec", "fork", "exit", ...
    pub kind: String,
    pub event: Event,
}

/// One SQLite database of events.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating it with mode 0600 if needed) the database for writing,
    /// in WAL mode, and creates the schema.
    ///
    /// # Errors
    /// The file cannot be created or opened, is not an SQLite database, or has
    /// a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Create the file ourselves so it is private from the start; SQLite
        // gives the -wal and -shm files the database file's permissions.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Create {
                path: path.to_owned(),
                source,
            })?;
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), mode, "database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Opens an existing database read-only, for queries.
    ///
    /// # Errors
    /// The file does not exist, cannot be opened, or has no `events` table.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        if !path.is_file() {
            return Err(StoreError::NotAFile {
                path: path.to_owned(),
            });
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        let has_events: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(open_err)?;
        if has_events.is_none() {
            return Err(StoreError::NotACollectorDb {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a batch in one transaction; events already stored are skipped.
    ///
    /// # Errors
    /// An event is invalid (nothing of the batch is stored then) or SQLite
    /// fails.
    pub fn insert_batch(&mut self, events: &[Event]) -> Result<InsertOutcome, StoreError> {
        for event in events {
            validate_event(event)?;
        }
        let tx = self.conn.transaction()?;
        let mut outcome = InsertOutcome::default();
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for event in events {
                let row = Row::of(event)?;
                let changed = stmt.execute(params![
                    event.sensor_id,
                    row.seq,
                    event.host_id,
                    event.host_name,
                    event.kind(),
                    row.time_ns,
                    row.exec_id,
                    row.parent_exec_id,
                    row.pid,
                    row.exe,
                    event.encode_to_vec(),
                ])?;
                if changed == 0 {
                    outcome.duplicates += 1;
                } else {
                    outcome.inserted += 1;
                }
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Number of stored events.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Calls `each` with every event matching `filter`, ordered by time, then
    /// sensor_id and seq. `each` can stop the walk by returning `Break`.
    /// Rows whose body does not decode are skipped with a warning.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn query_each<F>(&self, filter: &EventFilter, mut each: F) -> Result<QueryStats, StoreError>
    where
        F: FnMut(Event) -> ControlFlow<()>,
    {
        let (sql, values) = filter.to_sql();
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut stats = QueryStats::default();
        while let Some(row) = rows.next()? {
            let sensor_id: String = row.get(0)?;
            let seq: i64 = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            match Event::decode(body.as_slice()) {
                Ok(event) => {
                    stats.yielded += 1;
                    if each(event).is_break() {
                        break;
                    }
                }
                Err(error) => {
                    stats.corrupt += 1;
                    tracing::warn!(sensor_id, seq, %error, "skipping a stored event whose body does not decode");
                }
            }
        }
        Ok(stats)
    }

    /// All events matching `filter`, in query order.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        self.query_each(filter, |event| {
            events.push(event);
            ControlFlow::Continue(())
        })?;
        Ok(events)
    }

    /// The event that best describes the process image `exec_id`: the exec
    /// that began it; else the fork that began it (a fork event's process is
    /// the new child); else any event about it (e.g. its exit). Among equals,
    /// events of `prefer_sensor` come first, then the earliest.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn find_image(
        &self,
        exec_id: &str,
        prefer_sensor: Option<&str>,
    ) -> Result<Option<ImageEvent>, StoreError> {
        if exec_id.is_empty() {
            return Ok(None);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, sensor_id, seq, body FROM events
             WHERE exec_id = ?1
             ORDER BY CASE kind WHEN 'exec' THEN 0 WHEN 'fork' THEN 1 ELSE 2 END,
                      sensor_id = ?2 DESC, time_ns, sensor_id, seq",
        )?;
        let mut rows = stmt.query(params![exec_id, prefer_sensor.unwrap_or("")])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let sensor_id: String = row.get(1)?;
            let seq: i64 = row.get(2)?;
            let body: Vec<u8> = row.get(3)?;
            match Event::decode(body.as_slice()) {
                Ok(event) => return Ok(Some(ImageEvent { kind, event })),
                Err(error) => {
                    tracing::warn!(sensor_id, seq, %error, "skipping a stored event whose body does not decode");
                }
            }
        }
        Ok(None)
    }
}

/// The columns copied out of an event.
struct Row<'a> {
    seq: i64,
    time_ns: i64,
    exec_id: &'a str,
    parent_exec_id: &'a str,
    pid: i64,
    exe: &'a str,
}

impl<'a> Row<'a> {
    fn of(event: &'a Event) -> Result<Self, InvalidEvent> {
        let seq = i64::try_from(event.seq).map_err(|_| InvalidEvent::SeqOutOfRange {
            sensor_id: event.sensor_id.clone(),
            seq: event.seq,
        })?;
        let time_ns = event.time.as_ref().map_or(0, |ts| {
            i64::try_from(sensor_proto::unix_ns_from_timestamp(ts)).unwrap_or(i64::MAX)
        });
        let process = event.process.as_ref();
        Ok(Self {
            seq,
            time_ns,
            exec_id: process.map_or("", |p| p.exec_id.as_str()),
            parent_exec_id: process.map_or("", |p| p.parent_exec_id.as_str()),
            pid: process.map_or(0, |p| i64::from(p.pid)),
            exe: process.map_or("", |p| p.exe.as_str()),
        })
    }
}
