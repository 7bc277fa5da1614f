//! `events.stored_ns` (schema version 3): when the collector stored each
//! event, and the upgrade that adds it to a version-2 database.

mod common;

use anyhow::Context as _;
use collector::Store;
use common::{
    Proc, SENSOR, T0, TempDb, exec, path_arg, run_collector, split_stored_ns, stdout_lines,
    unix_ns_now,
};
use sensor_proto::{encoded::ReceivedEvent, v1::Event};

fn sh() -> Proc<'static> {
    Proc {
        exec_id: "e-sh",
        parent_exec_id: "e-init",
        pid: 100,
        exe: "/bin/sh",
        argv: &["sh"],
    }
}

/// The schema of a version-2 database, as the collector created it before
/// `stored_ns` existed.
const SCHEMA_V2: &str = "
CREATE TABLE events (
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
CREATE INDEX events_host_name      ON events (host_name, time_ns);
CREATE INDEX events_exec_id        ON events (exec_id);
CREATE INDEX events_parent_exec_id ON events (parent_exec_id);
CREATE INDEX events_pid            ON events (pid, time_ns);
CREATE INDEX events_exe            ON events (exe);
CREATE INDEX events_time_ns        ON events (time_ns, sensor_id, seq);

CREATE TABLE indicators (
    event_id   INTEGER NOT NULL REFERENCES events (id),
    type       TEXT    NOT NULL,
    value_text TEXT,
    value_ip   BLOB,
    value_int  INTEGER
);
CREATE INDEX indicators_text ON indicators (type, value_text);
CREATE INDEX indicators_ip   ON indicators (type, value_ip);
CREATE INDEX indicators_int  ON indicators (type, value_int);
PRAGMA user_version = 2;
";

/// (seq, time_ns, stored_ns) of every stored event, by seq.
fn stored_times(db: &TempDb) -> anyhow::Result<Vec<(u64, i64, i64)>> {
    let conn = rusqlite::Connection::open(&db.path)?;
    let mut stmt = conn.prepare("SELECT seq, time_ns, stored_ns FROM events ORDER BY seq")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// (seq, stored_ns) of every event `collector query` prints, in order.
fn queried_stored_ns(db: &TempDb) -> anyhow::Result<Vec<(u64, i64)>> {
    let out = run_collector(&["query", "--db", path_arg(&db.path)?])?;
    anyhow::ensure!(
        out.status.code() == Some(0) && out.stderr.is_empty(),
        "query: {out:?}"
    );
    stdout_lines(&out)?
        .iter()
        .map(|line| {
            let (json, stored_ns) = split_stored_ns(line)?;
            let event: serde_json::Value = serde_json::from_str(&json)?;
            let seq = event["seq"].as_str().context("no seq")?.parse()?;
            Ok((seq, stored_ns))
        })
        .collect()
}

/// Events of `sh()` at wall-clock time now, seqs `seqs`.
fn now_events(seqs: impl IntoIterator<Item = u64>) -> anyhow::Result<Vec<Event>> {
    let now = u64::try_from(unix_ns_now()?)?;
    Ok(seqs
        .into_iter()
        .map(|seq| exec(SENSOR, seq, now, &sh()))
        .collect())
}

#[test]
fn a_version_2_database_gets_stored_ns_when_serve_upgrades_it() -> anyhow::Result<()> {
    use prost::Message as _;
    let db = TempDb::new()?;
    let old = [
        exec(SENSOR, 1, T0 + 1_000, &sh()),
        exec(SENSOR, 2, T0 + 2_000, &sh()),
    ];
    {
        let conn = rusqlite::Connection::open(&db.path)?;
        conn.execute_batch(SCHEMA_V2)?;
        for event in &old {
            let process = event.process.clone().unwrap_or_default();
            conn.execute(
                "INSERT INTO events (sensor_id, seq, host_id, host_name, kind, time_ns, exec_id,
                                     parent_exec_id, pid, exe, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                rusqlite::params![
                    event.sensor_id,
                    i64::try_from(event.seq)?,
                    event.host_id,
                    event.host_name,
                    event.kind(),
                    i64::try_from(T0 + event.seq * 1_000)?,
                    process.exec_id,
                    process.parent_exec_id,
                    process.pid,
                    process.exe,
                    event.encode_to_vec(),
                ],
            )?;
        }
    }

    // Read-only, a version-2 database is queried as it is: no stored_ns
    // column, so every event prints "0", unknown.
    assert_eq!(queried_stored_ns(&db)?, [(1, 0), (2, 0)]);

    // Opening it for writing adds the column; the rows it held keep 0.
    let mut store = Store::open(&db.path)?;
    assert_eq!(store.schema_version(), 6);
    {
        let conn = rusqlite::Connection::open(&db.path)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(version, 6);
        // Version 5: `keys` replaced the column indexes and `indicators`;
        // version 6: `events_time` replaced `events_time_ns`.
        let mut names = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
        )?;
        let names: Vec<String> = names
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(
            names,
            [
                "events",
                "events_time",
                "keys",
                "keys_upto",
                "sqlite_autoindex_events_1"
            ]
        );
    }
    // The events already stored are found by their keys (two events are
    // less than a stretch: they are the tail after `keys_upto`).
    let by_exec_id = collector::EventFilter {
        exec_id: Some(old[0].process.as_ref().unwrap().exec_id.clone()),
        ..collector::EventFilter::default()
    };
    assert_eq!(store.query(&by_exec_id)?, old);
    {
        let conn = rusqlite::Connection::open(&db.path)?;
        let column: (String, bool, Option<String>) = conn.query_row(
            "SELECT type, \"notnull\", dflt_value FROM pragma_table_info('events')
             WHERE name = 'stored_ns'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!(column, ("INTEGER".to_owned(), true, Some("0".to_owned())));
    }
    assert_eq!(
        stored_times(&db)?,
        [
            (1, i64::try_from(T0 + 1_000)?, 0),
            (2, i64::try_from(T0 + 2_000)?, 0)
        ]
    );

    // Events stored from now on get the time they were stored: within a few
    // seconds of now, and not before their own time when that is now.
    let fresh = now_events([3, 4])?;
    let before = unix_ns_now()?;
    let outcome = store.insert_batch(&fresh)?;
    let after = unix_ns_now()?;
    assert_eq!(outcome.inserted, 2);
    // A redelivery keeps the time it was first stored.
    store.insert_batch(&fresh[..1])?;
    drop(store);
    let rows = stored_times(&db)?;
    assert_eq!(rows.len(), 4);
    let (_, time_ns, stored_ns) = rows[2];
    assert!((before..=after).contains(&stored_ns), "{rows:?}");
    assert!(after - stored_ns < 5_000_000_000, "{rows:?}");
    assert!(stored_ns >= time_ns, "{rows:?}");
    assert_eq!(rows[3].2, stored_ns, "one batch, one time: {rows:?}");

    // `collector query` prints what is stored.
    assert_eq!(
        queried_stored_ns(&db)?,
        [(1, 0), (2, 0), (3, stored_ns), (4, stored_ns)]
    );

    // Opening it again changes nothing.
    drop(Store::open(&db.path)?);
    assert_eq!(stored_times(&db)?, rows);
    Ok(())
}

#[test]
fn each_group_commit_reads_the_clock_once() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let mut store = Store::open(&db.path)?;
    let received = |events: Vec<Event>| -> Vec<ReceivedEvent> {
        events.into_iter().map(ReceivedEvent::from).collect()
    };
    let first = received(now_events([1, 2])?);
    let second = received(now_events([3])?);
    let before = unix_ns_now()?;
    let results = store.insert_batches(&[&first[..], &second[..]])?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    std::thread::sleep(std::time::Duration::from_millis(2));
    store.insert_batch(&now_events([4])?)?;
    let after = unix_ns_now()?;
    drop(store);
    let rows = stored_times(&db)?;
    let stored: Vec<i64> = rows.iter().map(|&(_, _, ns)| ns).collect();
    assert_eq!(stored[0], stored[1], "{rows:?}");
    assert_eq!(stored[1], stored[2], "one commit, one time: {rows:?}");
    assert!(
        stored[3] > stored[2],
        "a later commit, a later time: {rows:?}"
    );
    assert!(before <= stored[0] && stored[3] <= after, "{rows:?}");
    for (seq, time_ns, stored_ns) in rows {
        assert!(stored_ns >= time_ns, "seq {seq}: {time_ns} > {stored_ns}");
    }
    Ok(())
}
