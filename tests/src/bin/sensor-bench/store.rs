//! Reads the collector's database (read-only, beside the running collector):
//! what was stored, how late, and what the sensor said it dropped.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use prost::Message as _;
use rusqlite::{Connection, OpenFlags};
use sensor_common::kind;
use sensor_proto::v1::{Event, SensorHealth, event::Body};
use sensor_user::loader::ring_full_counter;

pub struct Store(Connection);

impl Store {
    pub fn open(db: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Self(conn))
    }

    /// The highest row id of an event other than a health report (rows
    /// are stored in id order; health reports arrive every second).
    pub fn last_id(&self) -> Result<i64> {
        Ok(self
            .0
            .query_row(
                "SELECT id FROM events WHERE kind != 'health' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0))
    }

    /// Events stored after row `after`, health and gap records excluded.
    pub fn count_after(&self, after: i64) -> Result<u64> {
        Ok(self.0.query_row(
            "SELECT count(*) FROM events WHERE id > ?1 AND kind NOT IN ('health', 'gap')",
            [after],
            |r| r.get(0),
        )?)
    }

    /// File events of sensor `sensor_id` whose path starts with `prefix`,
    /// read from the stored events themselves (the collector's key index
    /// only narrows a search; it does not say which event holds a value).
    pub fn files_of(&self, sensor_id: &str, prefix: &str) -> Result<u64> {
        let mut stmt = self
            .0
            .prepare("SELECT body FROM events WHERE sensor_id = ?1 AND kind = 'file'")?;
        let mut rows = stmt.query([sensor_id])?;
        let mut found = 0;
        while let Some(row) = rows.next()? {
            let event = Event::decode(row.get_ref(0)?.as_blob()?)
                .context("decoding a stored file event")?;
            if let Some(Body::File(file)) = &event.body
                && file.path.starts_with(prefix)
            {
                found += 1;
            }
        }
        Ok(found)
    }

    /// Waits until no row has arrived for `quiet` (at most `limit`), and
    /// returns the last row id.
    pub fn settle(&self, quiet: Duration, limit: Duration) -> Result<i64> {
        let start = Instant::now();
        let mut last = self.last_id()?;
        let mut since = Instant::now();
        while start.elapsed() < limit {
            thread::sleep(Duration::from_millis(200));
            let now = self.last_id()?;
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        Ok(last)
    }

    /// Milliseconds from each event's kernel time to its commit, for events
    /// stored in `(after, upto]`, sorted.
    pub fn latencies_ms(&self, after: i64, upto: i64) -> Result<Vec<f64>> {
        let mut stmt = self.0.prepare(
            "SELECT stored_ns - time_ns FROM events
             WHERE id > ?1 AND id <= ?2 AND kind NOT IN ('health', 'gap') AND stored_ns > 0",
        )?;
        let mut all: Vec<f64> = stmt
            .query_map([after, upto], |r| r.get::<_, i64>(0))?
            .filter_map(Result::ok)
            .map(|ns| ns as f64 / 1e6)
            .collect();
        all.sort_by(f64::total_cmp);
        Ok(all)
    }

    /// The newest health report of `sensor_id`.
    pub fn last_health(&self, sensor_id: &str) -> Result<Option<SensorHealth>> {
        let body: Option<Vec<u8>> = self
            .0
            .query_row(
                "SELECT body FROM events WHERE kind = 'health' AND sensor_id = ?1
                 ORDER BY seq DESC LIMIT 1",
                [sensor_id],
                |r| r.get(0),
            )
            .ok();
        let Some(body) = body else { return Ok(None) };
        let event = Event::decode(body.as_slice()).context("decoding a stored health event")?;
        Ok(match event.body {
            Some(Body::Health(h)) => Some(h),
            _ => None,
        })
    }
}

/// The `q` quantile (0..=1) of sorted values, 0 for none.
#[must_use]
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The drops a health report counts that can be file events: every stage's
/// (`dropped_total`) but the kernel's ring-full drops of other record kinds.
/// The host's own execs, exits and connections go through the same ring:
/// under overload one of theirs dropped would otherwise count as one of the
/// workload's file events.
#[must_use]
pub fn file_event_drops(health: &SensorHealth) -> u64 {
    let other_kinds: u64 = (1..kind::COUNT)
        .filter(|&k| k != kind::FILE)
        .map(ring_full_counter)
        .flat_map(|name| {
            health
                .counters
                .iter()
                .filter(move |c| c.stage == "kernel" && c.name == name)
        })
        .map(|c| c.value)
        .sum();
    health.dropped_total.saturating_sub(other_kinds)
}

/// A capacity step's drops from the sensor's last health report: those
/// that can be file events, and where (every nonzero drop counter).
#[must_use]
pub fn step_drops(health: &SensorHealth) -> (u64, String) {
    (file_event_drops(health), drops(health))
}

/// Where a health report says events were dropped: its nonzero drop
/// counters (named `..._dropped`), as "stage/name N", comma-separated.
#[must_use]
pub fn drops(health: &SensorHealth) -> String {
    health
        .counters
        .iter()
        .filter(|c| c.name.ends_with("dropped") && c.value > 0)
        .map(|c| format!("{}/{} {}", c.stage, c.name, c.value))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{drops, file_event_drops, quantile};
    use sensor_proto::v1::{SensorHealth, StageCounter};

    #[test]
    fn quantiles_of_a_hundred_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn drops_name_the_counters_that_dropped_and_only_those() {
        let counter = |stage: &str, name: &str, value| StageCounter {
            stage: stage.into(),
            name: name.into(),
            value,
        };
        let health = SensorHealth {
            counters: vec![
                counter("kernel", "exec_ring_full_dropped", 1),
                counter("kernel", "file_ring_full_dropped", 7),
                counter("capture", "queue_full_dropped", 0),
                counter("decode", "decoded", 99),
                counter("spool", "full_dropped", 2),
            ],
            dropped_total: 10,
            ..SensorHealth::default()
        };
        assert_eq!(
            drops(&health),
            "kernel/exec_ring_full_dropped 1, kernel/file_ring_full_dropped 7, spool/full_dropped 2"
        );
        assert_eq!(
            file_event_drops(&health),
            9,
            "the file kind's and the later stages', not the exec kind's"
        );
    }
}
