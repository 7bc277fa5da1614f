//! Query filters and the SQL they become.

use rusqlite::types::Value;

/// The kind of an event body, as stored in the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Health,
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
    /// At most this many events (the earliest ones).
    pub limit: Option<u64>,
}

impl EventFilter {
    /// The `SELECT sensor_id, seq, body ...` statement and its parameters,
    /// ordered by time_ns, sensor_id, seq.
    #[must_use]
    pub fn to_sql(&self) -> (String, Vec<Value>) {
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut text = |column: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                conditions.push(column);
                values.push(Value::Text(v.clone()));
            }
        };
        text("host_name = ?", &self.host_name);
        text("sensor_id = ?", &self.sensor_id);
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
            conditions.push("time_ns >= ?");
            values.push(Value::Integer(since));
        }
        if let Some(until) = self.until_ns {
            conditions.push("time_ns < ?");
            values.push(Value::Integer(until));
        }
        let mut sql = String::from("SELECT sensor_id, seq, body FROM events");
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
}

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
        let (sql, values) = EventFilter::default().to_sql();
        assert_eq!(
            sql,
            "SELECT sensor_id, seq, body FROM events ORDER BY time_ns, sensor_id, seq"
        );
        assert!(values.is_empty());
    }

    #[test]
    fn glob_metacharacters_in_a_prefix_match_literally() {
        assert_eq!(glob_escape("/tmp/a*b?[c]"), "/tmp/a[*]b[?][[]c]");
    }
}
