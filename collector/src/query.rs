//! Query filters and the SQL they become.

use rusqlite::types::Value;

use crate::indicators::{IpRange, domain_key};

/// The kind of an event body, as stored in the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Health,
    File,
    Network,
    Dns,
    Registry,
    Gap,
}

impl Kind {
    /// The stored name, the same as `Event::kind()`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Health => "health",
            Self::File => "file",
            Self::Network => "network",
            Self::Dns => "dns",
            Self::Registry => "registry",
            Self::Gap => "gap",
        }
    }
}

/// Which events to select. Every field set narrows the selection (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exact `host_name`.
    pub host_name: Option<String>,
    /// Exact `sensor_id`.
    pub sensor_id: Option<String>,
    /// Exact `process.exec_id`.
    pub exec_id: Option<String>,
    /// Exact `process.parent_exec_id`.
    pub parent_exec_id: Option<String>,
    /// `process.pid`.
    pub pid: Option<u32>,
    /// Exact `process.exe`.
    pub exe: Option<String>,
    /// `process.exe` starts with this (case-sensitive).
    pub exe_prefix: Option<String>,
    pub kind: Option<Kind>,
    /// Events at or after this wall-clock time (unix ns).
    pub since_ns: Option<i64>,
    /// Events strictly before this wall-clock time (unix ns).
    pub until_ns: Option<i64>,
    /// File events whose `path` or `old_path` is exactly this.
    pub path: Option<String>,
    /// File events whose `path` or `old_path` starts with this (a plain,
    /// case-sensitive string prefix: `/tmp/x` matches `/tmp/xyz`).
    pub path_prefix: Option<String>,
    /// Network events whose remote or local address is in this block, and
    /// DNS events with an `A`/`AAAA` answer in it.
    pub ip: Option<IpRange>,
    /// Network events whose remote or local port is this.
    pub port: Option<u16>,
    /// DNS events whose query name or an answer name is this domain or a
    /// subdomain of it (case-insensitive; trailing dots ignored; the root,
    /// `""` or `"."`, matches every name).
    pub domain: Option<String>,
    /// At most this many events (the earliest ones).
    pub limit: Option<u64>,
}

impl EventFilter {
    /// The `SELECT sensor_id, seq, body, stored_ns ...` statement and its
    /// parameters, ordered by time_ns, sensor_id, seq. Without
    /// `has_stored_ns` (a database older than schema version 3 lacks the
    /// column) the fourth column is a constant 0, "unknown".
    #[must_use]
    pub fn to_sql(&self, has_stored_ns: bool) -> (String, Vec<Value>) {
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        // An indicator is far more selective than a host, a sensor or a time
        // range, but without table statistics SQLite would rather walk the
        // host's events in time order. `+column` keeps it off those indexes.
        let by_indicator = self.uses_indicators();
        let pick = |indexed: &'static str, unindexed: &'static str| {
            if by_indicator { unindexed } else { indexed }
        };
        let mut text = |column: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                conditions.push(column);
                values.push(Value::Text(v.clone()));
            }
        };
        text(pick("host_name = ?", "+host_name = ?"), &self.host_name);
        text(pick("sensor_id = ?", "+sensor_id = ?"), &self.sensor_id);
        text("exec_id = ?", &self.exec_id);
        text("parent_exec_id = ?", &self.parent_exec_id);
        text("exe = ?", &self.exe);
        if let Some(prefix) = &self.exe_prefix {
            // GLOB is case-sensitive (LIKE is not) and can use the exe index.
            conditions.push("exe GLOB ?");
            values.push(Value::Text(format!("{}*", glob_escape(prefix))));
        }
        if let Some(kind) = self.kind {
            conditions.push("kind = ?");
            values.push(Value::Text(kind.as_str().to_owned()));
        }
        if let Some(pid) = self.pid {
            conditions.push("pid = ?");
            values.push(Value::Integer(i64::from(pid)));
        }
        if let Some(since) = self.since_ns {
            conditions.push(pick("time_ns >= ?", "+time_ns >= ?"));
            values.push(Value::Integer(since));
        }
        if let Some(until) = self.until_ns {
            conditions.push(pick("time_ns < ?", "+time_ns < ?"));
            values.push(Value::Integer(until));
        }
        // Each indicator filter selects event ids through an index of the
        // indicators table; SQLite then reads those events by rowid.
        if let Some(path) = &self.path {
            conditions.push(PATH_EQUALS);
            values.push(Value::Text(path.clone()));
        }
        if let Some(prefix) = &self.path_prefix {
            conditions.push(PATH_GLOB);
            values.push(Value::Text(format!("{}*", glob_escape(prefix))));
        }
        if let Some(range) = &self.ip {
            conditions.push(IP_BETWEEN);
            values.push(Value::Blob(range.lo().to_vec()));
            values.push(Value::Blob(range.hi().to_vec()));
        }
        if let Some(port) = self.port {
            conditions.push(PORT_EQUALS);
            values.push(Value::Integer(i64::from(port)));
        }
        if let Some(domain) = &self.domain {
            conditions.push(DOMAIN_GLOB);
            let pattern = domain_key(domain).map_or_else(String::new, |key| glob_escape(&key));
            values.push(Value::Text(format!("{pattern}*")));
        }
        let mut sql = String::from(if has_stored_ns {
            "SELECT sensor_id, seq, body, stored_ns FROM events"
        } else {
            "SELECT sensor_id, seq, body, 0 FROM events"
        });
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY time_ns, sensor_id, seq");
        if let Some(limit) = self.limit {
            sql.push_str(" LIMIT ?");
            values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        (sql, values)
    }

    /// Whether the filter searches the `indicators` table (which databases of
    /// schema version 1 lack).
    #[must_use]
    pub fn uses_indicators(&self) -> bool {
        self.path.is_some()
            || self.path_prefix.is_some()
            || self.ip.is_some()
            || self.port.is_some()
            || self.domain.is_some()
    }
}

macro_rules! indicator_condition {
    ($type:literal, $test:literal) => {
        concat!(
            "id IN (SELECT event_id FROM indicators WHERE type = '",
            $type,
            "' AND ",
            $test,
            ")"
        )
    };
}

const PATH_EQUALS: &str = indicator_condition!("path", "value_text = ?");
const PATH_GLOB: &str = indicator_condition!("path", "value_text GLOB ?");
const IP_BETWEEN: &str = indicator_condition!("ip", "value_ip BETWEEN ? AND ?");
const PORT_EQUALS: &str = indicator_condition!("port", "value_int = ?");
const DOMAIN_GLOB: &str = indicator_condition!("domain", "value_text GLOB ?");

/// Makes `s` match itself literally in a GLOB pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_selects_everything_in_time_order() {
        let (sql, values) = EventFilter::default().to_sql(true);
        assert_eq!(
            sql,
            "SELECT sensor_id, seq, body, stored_ns FROM events ORDER BY time_ns, sensor_id, seq"
        );
        assert!(values.is_empty());
        let (sql, _) = EventFilter::default().to_sql(false);
        assert_eq!(
            sql,
            "SELECT sensor_id, seq, body, 0 FROM events ORDER BY time_ns, sensor_id, seq"
        );
    }

    #[test]
    fn indicator_conditions_name_the_stored_types() {
        use crate::indicators::IndicatorType;
        for (condition, kind) in [
            (PATH_EQUALS, IndicatorType::Path),
            (PATH_GLOB, IndicatorType::Path),
            (IP_BETWEEN, IndicatorType::Ip),
            (PORT_EQUALS, IndicatorType::Port),
            (DOMAIN_GLOB, IndicatorType::Domain),
        ] {
            assert!(
                condition.contains(&format!("type = '{}' AND", kind.as_str())),
                "{condition}"
            );
        }
    }

    #[test]
    fn a_domain_becomes_a_glob_over_its_reversed_labels() {
        let filter = |domain: &str| EventFilter {
            domain: Some(domain.into()),
            ..EventFilter::default()
        };
        assert_eq!(
            filter("A.Example.com.").to_sql(true).1,
            [Value::Text("com.example.a.*".into())]
        );
        assert_eq!(
            filter("we*ird[.com").to_sql(true).1,
            [Value::Text("com.we[*]ird[[].*".into())]
        );
        assert_eq!(filter(".").to_sql(true).1, [Value::Text("*".into())]);
    }

    #[test]
    fn glob_metacharacters_in_a_prefix_match_literally() {
        assert_eq!(glob_escape("/tmp/a*b?[c]"), "/tmp/a[*]b[?][[]c]");
    }
}
