//! Query filters, the SQL they become and the checks SQL cannot make.

use rusqlite::types::Value;
use sensor_proto::v1::Event;

use crate::{
    indicators::{IndicatorType, IndicatorValue, IpRange, domain_key, indicators_of},
    keys::{KeyType, prefix_upper_bound},
};

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

/// Which schema a query is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Version 5 on: the `keys` span index ([`crate::keys`]).
    Keys,
    /// Versions 1 to 4 (a database opened read-only, not upgraded): an index
    /// per column and the `indicators` table (from version 2); without
    /// `has_stored_ns` (before version 3) the stored time reads as 0.
    Legacy { has_stored_ns: bool },
}

/// The span of the events not yet in `keys`, as a `(lo, hi)` row; a macro
/// so that the store's fixed statements can `concat!` it.
macro_rules! keys_tail {
    () => {
        "SELECT upto + 1, 9223372036854775807 FROM keys_upto"
    };
}
pub(crate) use keys_tail;

/// [`keys_tail!`] as a string.
pub const KEYS_TAIL: &str = keys_tail!();

/// How a key row's value is matched.
enum KeyMatch {
    Equals(Value),
    /// `lo <= value < hi` (no upper bound without `hi`): a text prefix.
    Prefix(String),
    /// `lo <= value <= hi`.
    Between(Value, Value),
}

impl EventFilter {
    /// The `SELECT sensor_id, seq, body, stored_ns ...` statement and its
    /// parameters, ordered by time_ns, sensor_id, seq.
    ///
    /// The statement is exact for every filter but the indicator ones
    /// (`path`, `path_prefix`, `ip`, `port`, `domain`) under [`Schema::Keys`]:
    /// there it selects the events in the key spans of one of them, and
    /// [`EventFilter::matches_indicators`] decides. The same event can come
    /// twice (two matching values whose spans overlap), next to itself in
    /// that order. `limit` is left to the caller, who counts what it keeps.
    #[must_use]
    pub fn to_sql(&self, schema: Schema) -> (String, Vec<Value>) {
        let mut values: Vec<Value> = Vec::new();
        let mut sql = String::from(match schema {
            Schema::Legacy {
                has_stored_ns: false,
            } => "SELECT e.sensor_id, e.seq, e.body, 0 FROM ",
            _ => "SELECT e.sensor_id, e.seq, e.body, e.stored_ns FROM ",
        });
        let by_key = match schema {
            Schema::Keys => self.driving_key(),
            Schema::Legacy { .. } => None,
        };
        let keyed = by_key.is_some();
        let mut conditions: Vec<String> = Vec::new();
        if let Some((kind, matching)) = by_key {
            let mut on_key = vec!["type = ?"];
            values.push(Value::Text(kind.as_str().to_owned()));
            match matching {
                KeyMatch::Equals(value) => {
                    on_key.push("value = ?");
                    values.push(value);
                }
                KeyMatch::Prefix(prefix) => {
                    on_key.push("value >= ?");
                    if let Some(upper) = prefix_upper_bound(&prefix) {
                        on_key.push("value < ?");
                        values.push(Value::Text(prefix));
                        values.push(Value::Text(upper));
                    } else {
                        values.push(Value::Text(prefix));
                    }
                }
                KeyMatch::Between(lo, hi) => {
                    on_key.push("value BETWEEN ? AND ?");
                    values.push(lo);
                    values.push(hi);
                }
            }
            // The value's spans, and the events not yet in `keys` (at most
            // FLUSH_IDS of them). CROSS JOIN: SQLite keeps the spans as the
            // outer loop and reads each span of `events` by rowid.
            sql.push_str(&format!(
                "(SELECT lo, hi FROM keys WHERE {} UNION ALL {KEYS_TAIL}) k \
                 CROSS JOIN events e ON e.id BETWEEN k.lo AND k.hi",
                on_key.join(" AND ")
            ));
        } else {
            sql.push_str("events e");
        }
        // A key's spans, or under the legacy schema an indicator, are far
        // more selective than a sensor, a host or a time range, but without
        // table statistics SQLite would rather walk the sensor's events, or
        // the host's, in order, or even build a temporary index of a column
        // for each query. `+column` keeps it off those indexes.
        let off_index = keyed || self.uses_indicators();
        let pick = |indexed: &'static str, unindexed: &'static str| {
            if off_index { unindexed } else { indexed }
        };
        let mut text = |column: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                conditions.push(column.into());
                values.push(Value::Text(v.clone()));
            }
        };
        text(pick("e.host_name = ?", "+e.host_name = ?"), &self.host_name);
        text(pick("e.sensor_id = ?", "+e.sensor_id = ?"), &self.sensor_id);
        text(pick("e.exec_id = ?", "+e.exec_id = ?"), &self.exec_id);
        text(
            pick("e.parent_exec_id = ?", "+e.parent_exec_id = ?"),
            &self.parent_exec_id,
        );
        text(pick("e.exe = ?", "+e.exe = ?"), &self.exe);
        if let Some(prefix) = &self.exe_prefix {
            // GLOB is case-sensitive (LIKE is not) and can use an exe index.
            conditions.push(pick("e.exe GLOB ?", "+e.exe GLOB ?").into());
            values.push(Value::Text(format!("{}*", glob_escape(prefix))));
        }
        if let Some(kind) = self.kind {
            conditions.push(pick("e.kind = ?", "+e.kind = ?").into());
            values.push(Value::Text(kind.as_str().to_owned()));
        }
        if let Some(pid) = self.pid {
            conditions.push(pick("e.pid = ?", "+e.pid = ?").into());
            values.push(Value::Integer(i64::from(pid)));
        }
        if let Some(since) = self.since_ns {
            conditions.push(pick("e.time_ns >= ?", "+e.time_ns >= ?").into());
            values.push(Value::Integer(since));
        }
        if let Some(until) = self.until_ns {
            conditions.push(pick("e.time_ns < ?", "+e.time_ns < ?").into());
            values.push(Value::Integer(until));
        }
        if matches!(schema, Schema::Legacy { .. }) {
            self.legacy_indicator_conditions(&mut conditions, &mut values);
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY e.time_ns, e.sensor_id, e.seq");
        (sql, values)
    }

    /// The key whose spans select the candidates, the most selective first:
    /// an exec_id is one process image; a path, a domain or an address a
    /// few events; a parent or an executable a few processes; a pid, a port
    /// or a host many.
    fn driving_key(&self) -> Option<(KeyType, KeyMatch)> {
        let text = |v: &String| KeyMatch::Equals(Value::Text(v.clone()));
        let indicator = KeyType::Indicator;
        if let Some(v) = &self.exec_id {
            return Some((KeyType::ExecId, text(v)));
        }
        if let Some(v) = &self.path {
            return Some((indicator(IndicatorType::Path), text(v)));
        }
        if let Some(domain) = &self.domain {
            let key = domain_key(domain).unwrap_or_default();
            return Some((indicator(IndicatorType::Domain), KeyMatch::Prefix(key)));
        }
        if let Some(range) = &self.ip {
            let (lo, hi) = (range.lo().to_vec(), range.hi().to_vec());
            let between = KeyMatch::Between(Value::Blob(lo), Value::Blob(hi));
            return Some((indicator(IndicatorType::Ip), between));
        }
        if let Some(v) = &self.parent_exec_id {
            return Some((KeyType::ParentExecId, text(v)));
        }
        if let Some(v) = &self.exe {
            return Some((KeyType::Exe, text(v)));
        }
        if let Some(v) = &self.path_prefix {
            return Some((indicator(IndicatorType::Path), KeyMatch::Prefix(v.clone())));
        }
        if let Some(v) = &self.exe_prefix {
            return Some((KeyType::Exe, KeyMatch::Prefix(v.clone())));
        }
        if let Some(pid) = self.pid {
            return Some((KeyType::Pid, KeyMatch::Equals(Value::Integer(pid.into()))));
        }
        if let Some(port) = self.port {
            let port = KeyMatch::Equals(Value::Integer(port.into()));
            return Some((indicator(IndicatorType::Port), port));
        }
        self.host_name.as_ref().map(|v| (KeyType::Host, text(v)))
    }

    /// Each indicator filter as a set of event ids from an index of the
    /// legacy `indicators` table.
    fn legacy_indicator_conditions(&self, conditions: &mut Vec<String>, values: &mut Vec<Value>) {
        if let Some(path) = &self.path {
            conditions.push(PATH_EQUALS.into());
            values.push(Value::Text(path.clone()));
        }
        if let Some(prefix) = &self.path_prefix {
            conditions.push(PATH_GLOB.into());
            values.push(Value::Text(format!("{}*", glob_escape(prefix))));
        }
        if let Some(range) = &self.ip {
            conditions.push(IP_BETWEEN.into());
            values.push(Value::Blob(range.lo().to_vec()));
            values.push(Value::Blob(range.hi().to_vec()));
        }
        if let Some(port) = self.port {
            conditions.push(PORT_EQUALS.into());
            values.push(Value::Integer(i64::from(port)));
        }
        if let Some(domain) = &self.domain {
            conditions.push(DOMAIN_GLOB.into());
            let pattern = domain_key(domain).map_or_else(String::new, |key| glob_escape(&key));
            values.push(Value::Text(format!("{pattern}*")));
        }
    }

    /// Whether `event` has the indicators every indicator filter asks for
    /// (true when there is none).
    #[must_use]
    pub fn matches_indicators(&self, event: &Event) -> bool {
        if !self.uses_indicators() {
            return true;
        }
        let found = indicators_of(event);
        let any = |kind: IndicatorType, test: &dyn Fn(&IndicatorValue) -> bool| {
            found.iter().any(|i| i.kind == kind && test(&i.value))
        };
        fn text(v: &IndicatorValue) -> Option<&str> {
            match v {
                IndicatorValue::Text(t) => Some(t),
                _ => None,
            }
        }
        self.path
            .as_ref()
            .is_none_or(|p| any(IndicatorType::Path, &|v| text(v) == Some(p.as_str())))
            && self.path_prefix.as_ref().is_none_or(|p| {
                any(IndicatorType::Path, &|v| {
                    text(v).is_some_and(|t| t.starts_with(p.as_str()))
                })
            })
            && self.ip.as_ref().is_none_or(|range| {
                any(
                    IndicatorType::Ip,
                    &|v| matches!(v, IndicatorValue::Ip(ip) if range.contains_key(ip)),
                )
            })
            && self.port.is_none_or(|port| {
                any(IndicatorType::Port, &|v| {
                    *v == IndicatorValue::Int(i64::from(port))
                })
            })
            && self.domain.as_ref().is_none_or(|domain| {
                let key = domain_key(domain).unwrap_or_default();
                any(IndicatorType::Domain, &|v| {
                    text(v).is_some_and(|t| t.starts_with(key.as_str()))
                })
            })
    }

    /// Whether the filter searches indicators (which databases of schema
    /// version 1 lack).
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
            "e.id IN (SELECT event_id FROM indicators WHERE type = '",
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
        let (sql, values) = EventFilter::default().to_sql(Schema::Keys);
        assert_eq!(
            sql,
            "SELECT e.sensor_id, e.seq, e.body, e.stored_ns FROM events e \
             ORDER BY e.time_ns, e.sensor_id, e.seq"
        );
        assert!(values.is_empty());
        let legacy = Schema::Legacy {
            has_stored_ns: false,
        };
        let (sql, _) = EventFilter::default().to_sql(legacy);
        assert_eq!(
            sql,
            "SELECT e.sensor_id, e.seq, e.body, 0 FROM events e \
             ORDER BY e.time_ns, e.sensor_id, e.seq"
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
    fn a_domain_becomes_a_range_of_its_reversed_labels_and_a_legacy_glob() {
        let filter = |domain: &str| EventFilter {
            domain: Some(domain.into()),
            ..EventFilter::default()
        };
        let keyed = |domain: &str| filter(domain).to_sql(Schema::Keys).1;
        let text = |t: &str| Value::Text(t.into());
        assert_eq!(
            keyed("A.Example.com."),
            [
                text("domain"),
                text("com.example.a."),
                text("com.example.a/")
            ]
        );
        assert_eq!(keyed("."), [text("domain"), text("")]);
        let legacy = |domain: &str| {
            filter(domain)
                .to_sql(Schema::Legacy {
                    has_stored_ns: true,
                })
                .1
        };
        assert_eq!(legacy("A.Example.com."), [text("com.example.a.*")]);
        assert_eq!(legacy("we*ird[.com"), [text("com.we[*]ird[[].*")]);
        assert_eq!(legacy("."), [text("*")]);
    }

    #[test]
    fn indicators_are_checked_exactly_on_the_event() {
        use sensor_proto::v1::{DnsEvent, FileEvent, event::Body};
        let file = |path: &str| Event {
            body: Some(Body::File(FileEvent {
                path: path.into(),
                ..FileEvent::default()
            })),
            ..Event::default()
        };
        let dns = |name: &str| Event {
            body: Some(Body::Dns(DnsEvent {
                query_name: name.into(),
                ..DnsEvent::default()
            })),
            ..Event::default()
        };
        let prefix = EventFilter {
            path_prefix: Some("/etc/cron.".into()),
            ..EventFilter::default()
        };
        assert!(prefix.matches_indicators(&file("/etc/cron.d/evil")));
        assert!(!prefix.matches_indicators(&file("/etc/crontab")));
        assert!(!prefix.matches_indicators(&dns("etc.cron.example")));
        let domain = EventFilter {
            domain: Some("Example.com".into()),
            ..EventFilter::default()
        };
        assert!(domain.matches_indicators(&dns("a.example.com")));
        assert!(!domain.matches_indicators(&dns("badexample.com")));
        assert!(EventFilter::default().matches_indicators(&file("/x")));
    }

    #[test]
    fn glob_metacharacters_in_a_prefix_match_literally() {
        assert_eq!(glob_escape("/tmp/a*b?[c]"), "/tmp/a[*]b[?][[]c]");
    }
}
