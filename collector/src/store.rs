//! The SQLite event store: schema, batch inserts and lookups.
//!
//! Every event is one row of `events`. The columns the investigator filters
//! by are copied out of the event; `body` holds the `Event`'s protobuf bytes
//! as the sensor sent them, so nothing it sent is lost, not even fields this
//! collector does not know. `UNIQUE(sensor_id, seq)` with
//! `ON CONFLICT DO NOTHING` makes redelivery harmless. `events_time` walks
//! events in time order (ties, events of the same nanosecond, are put in
//! sensor_id and seq order by a sort of just those).
//!
//! Every other search goes through `keys` ([`crate::keys`]): for each value
//! searched by (host, exec_id, parent_exec_id, pid, exe, and the indicators
//! of file, network and DNS events, see [`crate::indicators`]), the spans of
//! event ids that hold it. A query reads the spans of one value, and the
//! events after `keys_upto` not yet keyed, and checks each event in them.
//!
//! | `type`   | `value`                                                        |
//! |----------|----------------------------------------------------------------|
//! | `host`, `exec_id`, `parent_exec_id`, `exe` | the event's `host_name`, its process's field (text, may be empty) |
//! | `pid`    | the process's pid (integer; 0 without a process)               |
//! | `path`   | file `path`, `old_path`; registry `key` (text)                 |
//! | `ip`     | network `remote_address`, `local_address`; DNS `A`/`AAAA` answer data (16-byte blob, IPv4 v4-mapped) |
//! | `port`   | network `remote_port`, `local_port` (integer, 1-65535)        |
//! | `domain` | DNS `query_name`, answer names, `CNAME`/`DNAME`/`NS`/`PTR` answer data (reversed labels, text) |
//!
//! `events.stored_ns` is when the collector stored the event: wall-clock
//! nanoseconds since the Unix epoch, read once per transaction (one group
//! commit) just before that transaction's inserts, so it is at most the
//! inserts' and the commit's duration before the event became durable. A
//! redelivered event keeps the time it was first stored. 0 means unknown:
//! the event was stored before the column existed.
//!
//! Schema versions (`PRAGMA user_version`): 1 had only `events`, with an
//! index per searched column; 2 adds `indicators` (a row per event and
//! value); 3 adds `events.stored_ns`; 4 makes the indicator indexes partial;
//! 5 replaces the column indexes and `indicators` by `keys`; 6 indexes time by
//! `time_ns` alone (`events_time`, was `events_time_ns` on `time_ns,
//! sensor_id, seq`). [`Store::open`] upgrades an older database in place: it
//! adds `stored_ns`, 0 for the rows already stored (from 1 or 2), drops the
//! old indexes, builds `keys` from the events it holds and replaces the time
//! index.

use std::{
    fs::OpenOptions,
    io,
    ops::ControlFlow,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use prost::Message as _;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params, params_from_iter,
};
use sensor_proto::{encoded::ReceivedEvent, v1::Event};

use crate::{
    keys::KeySpans,
    query::{EventFilter, Schema, keys_tail},
};

/// The writer's page cache, KiB.
const CACHE_KIB: i64 = 64 * 1024;

/// WAL bytes after which the writer checkpoints itself. The checkpointer
/// thread ([`Checkpointer`]) normally copies the WAL long before; this bounds
/// the WAL when it cannot keep up: a passive checkpoint that runs beside a
/// busy writer never finds the WAL all copied, so SQLite never restarts it.
const CHECKPOINT_BYTES: i64 = 128 << 20;

/// The page size of a new database. Every page a commit changes is written
/// whole to the WAL, one write(2) per page, and most of a commit's pages are
/// new rows appended at the end of `events` and its indexes: 16 KiB pages
/// took a tenth off the writer's time per event for 7% more bytes written
/// (4 KiB: SQLite's default). An existing database keeps its page size.
const PAGE_SIZE: i64 = 16 * 1024;

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 6;

/// The first schema version with the `indicators` table.
const INDICATORS_VERSION: i64 = 2;

/// The first schema version with `events.stored_ns`.
const STORED_NS_VERSION: i64 = 3;

/// The first schema version with `keys` instead of an index per column and
/// `indicators`.
const KEYS_VERSION: i64 = 5;

/// The first schema version whose time index is `events_time` on `time_ns`
/// alone.
const TIME_INDEX_VERSION: i64 = 6;

/// Adds `stored_ns` to the `events` table of a database older than
/// [`STORED_NS_VERSION`]; the rows already there get 0 (unknown).
const ADD_STORED_NS: &str = "ALTER TABLE events ADD COLUMN stored_ns INTEGER NOT NULL DEFAULT 0";

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
    stored_ns      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sensor_id, seq)
);
-- time_ns alone: with sensor_id and seq in it, each entry was about three
-- times as large and each insert compared sensor_id text down the tree. A
-- time-ordered query sorts only the events of one nanosecond by sensor_id
-- and seq.
CREATE INDEX IF NOT EXISTS events_time ON events (time_ns);

CREATE TABLE IF NOT EXISTS keys (
    type  TEXT    NOT NULL,
    value         NOT NULL,
    lo    INTEGER NOT NULL,
    hi    INTEGER NOT NULL,
    PRIMARY KEY (type, value, lo)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS keys_upto (upto INTEGER NOT NULL);
INSERT INTO keys_upto (upto) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM keys_upto);
";

/// The time index of versions 1 to 5, which `events_time` replaces.
const DROP_TIME_NS_INDEX: &str = "DROP INDEX IF EXISTS events_time_ns";

/// What versions 1 to 4 indexed, which `keys` replaces.
const DROP_LEGACY_INDEXES: &str = "
DROP INDEX IF EXISTS events_host_name;
DROP INDEX IF EXISTS events_exec_id;
DROP INDEX IF EXISTS events_parent_exec_id;
DROP INDEX IF EXISTS events_pid;
DROP INDEX IF EXISTS events_exe;
DROP TABLE IF EXISTS indicators;
";

const INSERT: &str = "
INSERT INTO events (sensor_id, seq, host_id, host_name, kind, time_ns, exec_id,
                    parent_exec_id, pid, exe, body, stored_ns)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (sensor_id, seq) DO NOTHING
";

const INSERT_KEY: &str = "INSERT INTO keys (type, value, lo, hi) VALUES (?1, ?2, ?3, ?4)";

const SET_KEYS_UPTO: &str = "UPDATE keys_upto SET upto = ?1";

/// The events not yet in `keys`, oldest first.
const SELECT_KEYS_TAIL: &str = "
SELECT id, sensor_id, seq, body FROM events
WHERE id > (SELECT upto FROM keys_upto) ORDER BY id
";

/// The events of the image `?1`, the one that best describes it first.
const FIND_IMAGE: &str = concat!(
    "SELECT e.kind, e.sensor_id, e.seq, e.body
     FROM (SELECT lo, hi FROM keys WHERE type = 'exec_id' AND value = ?1
           UNION ALL ",
    keys_tail!(),
    ") k CROSS JOIN events e ON e.id BETWEEN k.lo AND k.hi
     WHERE e.exec_id = ?1
     ORDER BY CASE e.kind WHEN 'exec' THEN 0 WHEN 'fork' THEN 1 ELSE 2 END,
              e.sensor_id = ?2 DESC, e.time_ns, e.sensor_id, e.seq"
);

/// [`FIND_IMAGE`] on a schema before `keys` (version 1 to 4).
const FIND_IMAGE_LEGACY: &str = "
SELECT kind, sensor_id, seq, body FROM events
WHERE exec_id = ?1
ORDER BY CASE kind WHEN 'exec' THEN 0 WHEN 'fork' THEN 1 ELSE 2 END,
         sensor_id = ?2 DESC, time_ns, sensor_id, seq
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
    #[error(
        "database {} has schema version {found}, without the indicator index that --path, \
         --path-prefix, --ip, --port and --domain search; run `collector serve` on it once to upgrade it",
        path.display()
    )]
    NoIndicators { path: PathBuf, found: i64 },
    #[error("cannot upgrade database {} from schema version {found}", path.display())]
    Upgrade {
        path: PathBuf,
        found: i64,
        source: rusqlite::Error,
    },
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

/// A stored event and when it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    /// The `stored_ns` column: when the collector stored the event (unix ns,
    /// read just before the inserts of its transaction); 0 if unknown (stored
    /// before schema version 3, or the database has not been upgraded yet).
    pub stored_ns: i64,
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
    /// The keys of the events stored since `keys_upto` (writers only): key
    /// rows are written once per [`crate::keys::FLUSH_IDS`] events, not per
    /// commit, so a value seen in several commits costs one row per span.
    spans: KeySpans,
    path: PathBuf,
    /// `PRAGMA user_version` as opened (after any upgrade).
    schema_version: i64,
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
        let mut conn = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(open_err)?;
        // Before WAL mode and the first table, or SQLite ignores it.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), mode, "database is not in WAL mode");
        }
        // FULL: a batch is acknowledged only once its commit is on disk, so
        // an ack survives a power cut, not just a crash. The writer groups
        // queued batches into one commit to pay the fsync once.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // The indexes take inserts all over their B-trees; with SQLite's
        // default 2 MiB page cache nearly every insert re-read its index
        // pages from the OS (pread), which was most of the writer's time.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(open_err)?;
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(open_err)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            CHECKPOINT_BYTES / page_size.max(512),
        )
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
        if version < SCHEMA_VERSION {
            upgrade(&mut conn, version).map_err(|source| StoreError::Upgrade {
                path: path.to_owned(),
                found: version,
                source,
            })?;
        }
        let mut store = Self {
            conn,
            spans: KeySpans::default(),
            path: path.to_owned(),
            schema_version: SCHEMA_VERSION,
        };
        store.reload_spans().map_err(open_err)?;
        Ok(store)
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
        let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_err)?;
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
        let schema_version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(open_err)?;
        Ok(Self {
            conn,
            spans: KeySpans::default(),
            path: path.to_owned(),
            schema_version,
        })
    }

    /// The schema version (`PRAGMA user_version`) of the open database.
    #[must_use]
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second connection to this database that copies the WAL into the
    /// database file, so the writer does not.
    ///
    /// # Errors
    /// The database cannot be opened again.
    pub fn checkpointer(&self) -> Result<Checkpointer, StoreError> {
        let conn = connect(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .and_then(|conn| {
                conn.pragma_update(None, "synchronous", "FULL")?;
                Ok(conn)
            })
            .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })?;
        Ok(Checkpointer { conn })
    }

    /// Stores a batch in one transaction; events already stored are skipped.
    /// Each event is stored encoded as this build encodes it.
    ///
    /// # Errors
    /// An event is invalid (nothing of the batch is stored then) or SQLite
    /// fails.
    pub fn insert_batch(&mut self, events: &[Event]) -> Result<InsertOutcome, StoreError> {
        let received: Vec<ReceivedEvent> =
            events.iter().cloned().map(ReceivedEvent::from).collect();
        self.insert_received(&received)
    }

    /// Stores a received batch in one transaction; events already stored are
    /// skipped. Each event is stored as the bytes it came in.
    ///
    /// # Errors
    /// An event is invalid (nothing of the batch is stored then) or SQLite
    /// fails.
    pub fn insert_received(
        &mut self,
        events: &[ReceivedEvent],
    ) -> Result<InsertOutcome, StoreError> {
        for received in events {
            validate_event(&received.event)?;
        }
        let outcomes = self.insert_valid(&[events])?;
        Ok(outcomes.into_iter().next().unwrap_or_default())
    }

    /// Stores several batches in one transaction (one fsync for all: the
    /// group commit that lets a durable store keep up). A batch with an
    /// invalid event is refused on its own; the others are stored.
    ///
    /// # Errors
    /// SQLite fails: nothing of any batch is stored then.
    pub fn insert_batches(
        &mut self,
        batches: &[&[ReceivedEvent]],
    ) -> Result<Vec<Result<InsertOutcome, InvalidEvent>>, StoreError> {
        let checked: Vec<Result<(), InvalidEvent>> = batches
            .iter()
            .map(|events| events.iter().try_for_each(|e| validate_event(&e.event)))
            .collect();
        let valid: Vec<&[ReceivedEvent]> = batches
            .iter()
            .zip(&checked)
            .filter(|(_, ok)| ok.is_ok())
            .map(|(events, _)| *events)
            .collect();
        let mut stored = self.insert_valid(&valid)?.into_iter();
        Ok(checked
            .into_iter()
            .map(|ok| ok.map(|()| stored.next().unwrap_or_default()))
            .collect())
    }

    /// Inserts validated batches in one transaction.
    fn insert_valid(
        &mut self,
        batches: &[&[ReceivedEvent]],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let stored = self.insert_valid_once(batches);
        if stored.is_err() {
            // The spans may hold events the rollback removed, or have been
            // written by a rolled-back flush: read them again.
            self.spans = KeySpans::default();
            if let Err(error) = self.reload_spans() {
                tracing::warn!(%error, "cannot reread the events not yet in the key index");
            }
        }
        stored
    }

    /// Reads the keys of the events stored after `keys_upto` into the spans.
    fn reload_spans(&mut self) -> rusqlite::Result<()> {
        let mut select = self.conn.prepare(SELECT_KEYS_TAIL)?;
        add_decoded(&mut select, &mut self.spans, |_, _| Ok(()))?;
        Ok(())
    }

    fn insert_valid_once(
        &mut self,
        batches: &[&[ReceivedEvent]],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(batches.len());
        // One clock reading for the whole group commit. We want the time the
        // events became durable, i.e. the commit; but the value is written by
        // the inserts inside the transaction, so it is read here, just before
        // the group's inserts. It therefore precedes the commit by the time
        // the inserts and the fsync take.
        let stored_ns = unix_ns_now();
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            let mut key_stmt = tx.prepare_cached(INSERT_KEY)?;
            let keys = &mut self.spans;
            for events in batches {
                let mut outcome = InsertOutcome::default();
                for ReceivedEvent { event, encoded } in *events {
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
                        encoded.as_ref(),
                        stored_ns,
                    ])?;
                    if changed == 0 {
                        outcome.duplicates += 1;
                    } else {
                        outcome.inserted += 1;
                        let id = tx.last_insert_rowid();
                        keys.add(id, event);
                        if keys.full(id) {
                            keys.flush(&mut key_stmt)?;
                            tx.execute(SET_KEYS_UPTO, [id])?;
                        }
                    }
                }
                outcomes.push(outcome);
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Whether this database can answer `filter`: indicator filters need
    /// schema version 2 (a version-1 database opened read-only has no
    /// `indicators` table until `collector serve` upgrades it).
    ///
    /// # Errors
    /// [`StoreError::NoIndicators`].
    pub fn check_filter(&self, filter: &EventFilter) -> Result<(), StoreError> {
        if filter.uses_indicators() && self.schema_version < INDICATORS_VERSION {
            return Err(StoreError::NoIndicators {
                path: self.path.clone(),
                found: self.schema_version,
            });
        }
        Ok(())
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

    /// Calls `each` with every event matching `filter` and its `stored_ns`,
    /// ordered by time, then sensor_id and seq. `each` can stop the walk by
    /// returning `Break`. Rows whose body does not decode are skipped with a
    /// warning. A database older than schema version 3 (opened read-only, not
    /// upgraded) has no `stored_ns`: every event gets 0.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn query_each<F>(&self, filter: &EventFilter, mut each: F) -> Result<QueryStats, StoreError>
    where
        F: FnMut(StoredEvent) -> ControlFlow<()>,
    {
        self.check_filter(filter)?;
        let (sql, values) = filter.to_sql(self.schema());
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut stats = QueryStats::default();
        let limit = filter.limit.unwrap_or(u64::MAX);
        // The key spans of two matching values may overlap: the same row
        // then comes twice, next to itself (no other row has its sensor_id
        // and seq).
        let mut last: Option<(String, i64)> = None;
        while stats.yielded < limit
            && let Some(row) = rows.next()?
        {
            let sensor_id: String = row.get(0)?;
            let seq: i64 = row.get(1)?;
            if last
                .as_ref()
                .is_some_and(|(s, q)| *q == seq && *s == sensor_id)
            {
                continue;
            }
            let body = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            let stored_ns: i64 = row.get(3)?;
            match Event::decode(body) {
                Ok(event) => {
                    last = Some((sensor_id, seq));
                    if !filter.matches_indicators(&event) {
                        continue;
                    }
                    stats.yielded += 1;
                    if each(StoredEvent { event, stored_ns }).is_break() {
                        break;
                    }
                }
                Err(error) => {
                    stats.corrupt += 1;
                    tracing::warn!(sensor_id, seq, %error, "skipping a stored event whose body does not decode");
                    last = Some((sensor_id, seq));
                }
            }
        }
        Ok(stats)
    }

    /// How this database's schema answers queries.
    fn schema(&self) -> Schema {
        if self.schema_version >= KEYS_VERSION {
            Schema::Keys
        } else {
            Schema::Legacy {
                has_stored_ns: self.schema_version >= STORED_NS_VERSION,
            }
        }
    }

    /// All events matching `filter`, in query order.
    ///
    /// # Errors
    /// SQLite fails.
    pub fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        self.query_each(filter, |stored| {
            events.push(stored.event);
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
        let mut stmt = self.conn.prepare_cached(match self.schema() {
            Schema::Keys => FIND_IMAGE,
            Schema::Legacy { .. } => FIND_IMAGE_LEGACY,
        })?;
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

/// Copies committed WAL frames into the database file from its own
/// connection (and thread): a checkpoint copies and fsyncs pages, which in
/// the writer's thread held up the next commit by up to 100 ms.
#[derive(Debug)]
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// A passive checkpoint: copies what no reader still needs, without
    /// waiting for the writer or readers. Returns the WAL's frames and how
    /// many of them are now in the database file.
    ///
    /// # Errors
    /// SQLite failed the checkpoint.
    pub fn checkpoint(&self) -> Result<(i64, i64), rusqlite::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(1)?, row.get(2)?))
            })
    }
}

/// Creates what is missing of the schema; coming from a version without
/// `stored_ns`, adds it (0 for the rows already stored); coming from a
/// version before `keys`, drops the indexes it replaces and builds it from
/// the events already stored; coming from a version before `events_time`,
/// drops `events_time_ns` (the schema has just built `events_time`). All in
/// one transaction with the version bump.
fn upgrade(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // An existing `events` table is left as it is: it gets its new columns
    // below.
    tx.execute_batch(SCHEMA)?;
    // A fresh database (version 0) has just been created with the column.
    let added_stored_ns = from < STORED_NS_VERSION && !has_column(&tx, "events", "stored_ns")?;
    if added_stored_ns {
        tx.execute_batch(ADD_STORED_NS)?;
    }
    if from > 0 && from < TIME_INDEX_VERSION {
        tx.execute_batch(DROP_TIME_NS_INDEX)?;
    }
    let indexed = if from > 0 && from < KEYS_VERSION {
        tx.execute_batch(DROP_LEGACY_INDEXES)?;
        index_stored_events(&tx)?
    } else {
        0
    };
    if from > 0 {
        tracing::info!(
            from,
            to = SCHEMA_VERSION,
            indexed,
            added_stored_ns,
            "upgraded the database schema"
        );
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// A connection to the database at `path` with `flags` (one connection per
/// thread, so no SQLite mutex), waiting up to 5 s for another connection's
/// lock.
fn connect(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Whether `table` has a column named `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Wall-clock nanoseconds since the Unix epoch; 0 if the clock is before the
/// epoch (as "unknown"), `i64::MAX` past 2262.
fn unix_ns_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Builds `keys` from every stored event; returns how many events were
/// indexed. Bodies that do not decode are skipped (a query skips them too).
fn index_stored_events(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<u64> {
    let mut select = tx.prepare("SELECT id, sensor_id, seq, body FROM events ORDER BY id")?;
    let mut insert = tx.prepare(INSERT_KEY)?;
    let mut keys = KeySpans::default();
    let indexed = add_decoded(&mut select, &mut keys, |keys, id| {
        if keys.full(id) {
            keys.flush(&mut insert)?;
            tx.execute(SET_KEYS_UPTO, [id])?;
        }
        Ok(())
    })?;
    // What is left is the tail, which the writer reads when it opens.
    Ok(indexed)
}

/// Adds the keys of the events `select` yields (`id, sensor_id, seq,
/// body`) to `keys`, calling `after(keys, id)` after each; returns how many
/// were added. Bodies that do not decode are skipped with a warning.
fn add_decoded(
    select: &mut rusqlite::Statement<'_>,
    keys: &mut KeySpans,
    mut after: impl FnMut(&mut KeySpans, i64) -> rusqlite::Result<()>,
) -> rusqlite::Result<u64> {
    let mut rows = select.query([])?;
    let mut added = 0_u64;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let body = row.get_ref(3)?.as_blob()?;
        match Event::decode(body) {
            Ok(event) => {
                keys.add(id, &event);
                added += 1;
                after(keys, id)?;
            }
            Err(error) => {
                let sensor_id: String = row.get(1)?;
                let seq: i64 = row.get(2)?;
                tracing::warn!(sensor_id, seq, %error, "not indexing a stored event whose body does not decode");
            }
        }
    }
    Ok(added)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, indicators::IpRange};

    fn plan(store: &Store, filter: &EventFilter) -> Vec<String> {
        let (sql, values) = filter.to_sql(Schema::Keys);
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_group_commit_stores_the_valid_batches_and_refuses_only_the_invalid_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("events.db")).unwrap();
        let ev = |sensor: &str, seq: u64| {
            ReceivedEvent::from(Event {
                sensor_id: sensor.into(),
                seq,
                ..Event::default()
            })
        };
        let good = [ev("a", 1), ev("a", 2)];
        let bad = [ev("b", 1), ev("", 2)];
        let again = [ev("a", 2), ev("a", 3)];
        let results = store
            .insert_batches(&[&good[..], &bad[..], &again[..]])
            .unwrap();
        assert_eq!(results[0].as_ref().unwrap().inserted, 2);
        assert!(results[1].is_err(), "an event without sensor id");
        let third = results[2].as_ref().unwrap();
        assert_eq!((third.inserted, third.duplicates), (1, 1));
        let stored = store.query(&EventFilter::default()).unwrap();
        assert_eq!(stored.len(), 3, "b's valid event was not stored either");
    }

    #[test]
    fn searches_read_the_spans_of_one_key_and_the_events_in_them_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("events.db")).unwrap();
        let ten = "10.0.0.0/8".parse::<IpRange>().unwrap();
        let cases = [
            (
                EventFilter {
                    path: Some("/etc/passwd".into()),
                    ..EventFilter::default()
                },
                "(type=? AND value=?)",
            ),
            (
                EventFilter {
                    path_prefix: Some("/etc/".into()),
                    ..EventFilter::default()
                },
                "(type=? AND value>? AND value<?)",
            ),
            (
                EventFilter {
                    ip: Some(ten),
                    ..EventFilter::default()
                },
                "(type=? AND value>? AND value<?)",
            ),
            (
                EventFilter {
                    port: Some(443),
                    ..EventFilter::default()
                },
                "(type=? AND value=?)",
            ),
            (
                EventFilter {
                    exec_id: Some("9f2c".into()),
                    ..EventFilter::default()
                },
                "(type=? AND value=?)",
            ),
            (
                EventFilter {
                    domain: Some("example.com".into()),
                    host_name: Some("web-1".into()),
                    sensor_id: Some("sensor-a".into()),
                    kind: Some(Kind::Dns),
                    since_ns: Some(1),
                    until_ns: Some(2),
                    ..EventFilter::default()
                },
                "(type=? AND value>? AND value<?)",
            ),
        ];
        for (filter, search) in cases {
            let plan = plan(&store, &filter);
            // The value's spans, then the tail not yet in `keys` (one row).
            let spans = format!("SEARCH keys USING PRIMARY KEY {search}");
            let by_id = "SEARCH e USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)";
            assert!(plan.contains(&spans), "{filter:?}: {plan:#?}");
            assert!(plan.iter().any(|s| s == by_id), "{filter:?}: {plan:#?}");
            let scans: Vec<&String> = plan.iter().filter(|s| s.starts_with("SCAN")).collect();
            assert_eq!(scans, ["SCAN keys_upto", "SCAN k"], "{filter:?}: {plan:#?}");
        }
        // Without a keyed filter, events are walked in time order.
        let plan = plan(
            &store,
            &EventFilter {
                since_ns: Some(1),
                ..EventFilter::default()
            },
        );
        assert_eq!(
            plan,
            [
                "SEARCH e USING INDEX events_time (time_ns>?)",
                "USE TEMP B-TREE FOR LAST 2 TERMS OF ORDER BY"
            ],
            "{plan:#?}"
        );
    }

    #[test]
    fn a_span_holds_at_most_span_ids_events_and_every_event_is_found_by_its_keys() {
        use sensor_proto::v1::Process;
        let span = crate::keys::SPAN_IDS as u64;
        let flush = crate::keys::FLUSH_IDS as u64;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let event = |seq: u64| Event {
            sensor_id: "a".into(),
            host_name: "web-1".into(),
            seq,
            process: Some(Box::new(Process {
                exec_id: format!("image-{}", seq % 3),
                pid: 7,
                ..Process::default()
            })),
            ..Event::default()
        };
        let found = |store: &Store, filter: EventFilter| store.query(&filter).unwrap().len() as u64;
        let image_1 = || EventFilter {
            exec_id: Some("image-1".into()),
            ..EventFilter::default()
        };
        // Two full flushes and a tail of 10 events not yet in `keys`.
        let n = flush * 2 + 10;
        let mut store = Store::open(&path).unwrap();
        store
            .insert_batch(&(1..=n).map(event).collect::<Vec<_>>())
            .unwrap();
        let keyed = |store: &Store| -> (i64, i64) {
            store
                .conn
                .query_row(
                    "SELECT max(hi - lo + 1), (SELECT upto FROM keys_upto) FROM keys",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        assert_eq!(keyed(&store), (span as i64, flush as i64 * 2));
        // A flush writes a row per span: the pid's events fill every span.
        let pid_rows: u64 = store
            .conn
            .query_row("SELECT count(*) FROM keys WHERE type = 'pid'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(pid_rows, flush * 2 / span);
        assert_eq!(found(&store, image_1()), n.div_ceil(3));
        let host = EventFilter {
            host_name: Some("web-1".into()),
            limit: Some(5),
            ..EventFilter::default()
        };
        assert_eq!(found(&store, host), 5);
        let pid = || EventFilter {
            pid: Some(7),
            ..EventFilter::default()
        };
        assert_eq!(found(&store, pid()), n);

        // A restarted writer reads the tail back: its next span starts with
        // the tail, and every event is still found exactly once.
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let more = flush - 10;
        store
            .insert_batch(&(n + 1..=n + more).map(event).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(keyed(&store), (span as i64, flush as i64 * 3));
        assert_eq!(found(&store, pid()), n + more);
        assert_eq!(found(&store, image_1()), (n + more).div_ceil(3));
    }

    #[test]
    fn a_version_5_database_gets_events_time_and_ties_keep_sensor_and_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let at = |sensor: &str, seq: u64, seconds: i64| Event {
            sensor_id: sensor.into(),
            seq,
            time: Some(sensor_proto::Timestamp { seconds, nanos: 0 }),
            ..Event::default()
        };
        // Stored in an order that is neither time nor sensor order.
        let events = [
            at("b", 2, 7),
            at("a", 9, 7),
            at("b", 1, 7),
            at("a", 1, 8),
            at("c", 1, 6),
        ];
        Store::open(&path).unwrap().insert_batch(&events).unwrap();
        {
            // Back to version 5's time index.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP INDEX events_time;
                 CREATE INDEX events_time_ns ON events (time_ns, sensor_id, seq);
                 PRAGMA user_version = 5;",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version(), SCHEMA_VERSION);
        let indexes: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["events_time", "sqlite_autoindex_events_1"]);
        let order: Vec<(String, u64)> = store
            .query(&EventFilter {
                since_ns: Some(1),
                ..EventFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| (e.sensor_id, e.seq))
            .collect();
        let expected = [("c", 1), ("a", 9), ("b", 1), ("b", 2), ("a", 1)];
        assert_eq!(order, expected.map(|(s, q)| (s.to_owned(), q)));
    }

    #[test]
    fn a_new_database_gets_16_kib_pages_an_existing_one_keeps_its_own_and_the_wal_bound_follows() {
        let dir = tempfile::tempdir().unwrap();
        let pragma = |store: &Store, name: &str| -> i64 {
            store
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        let new = Store::open(&dir.path().join("new.db")).unwrap();
        assert_eq!(pragma(&new, "page_size"), PAGE_SIZE);
        assert_eq!(
            pragma(&new, "wal_autocheckpoint"),
            CHECKPOINT_BYTES / PAGE_SIZE
        );
        let old_path = dir.path().join("old.db");
        Connection::open(&old_path)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE other (x);")
            .unwrap();
        let old = Store::open(&old_path).unwrap();
        assert_eq!(pragma(&old, "page_size"), 4096);
        assert_eq!(pragma(&old, "wal_autocheckpoint"), CHECKPOINT_BYTES / 4096);
    }
}
