//! The `sensor.v1` wire format shared by the sensor and the collector.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.serde.rs"));
}

pub mod encoded;

pub use pbjson_types::Timestamp;

/// Builds a protobuf timestamp from nanoseconds since the Unix epoch.
#[must_use]
pub fn timestamp_from_unix_ns(ns: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(ns % 1_000_000_000).unwrap_or(0),
    }
}

/// Nanoseconds since the Unix epoch of a protobuf timestamp (0 before 1970).
#[must_use]
pub fn unix_ns_from_timestamp(ts: &Timestamp) -> u64 {
    u64::try_from(ts.seconds)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.nanos).unwrap_or(0))
}

impl v1::Event {
    /// The name of the body kind, as the collector stores and filters it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Some(v1::event::Body::Exec(_)) => "exec",
            Some(v1::event::Body::Fork(_)) => "fork",
            Some(v1::event::Body::Exit(_)) => "exit",
            Some(v1::event::Body::Health(_)) => "health",
            Some(v1::event::Body::File(_)) => "file",
            Some(v1::event::Body::Network(_)) => "network",
            Some(v1::event::Body::Dns(_)) => "dns",
            Some(v1::event::Body::Registry(_)) => "registry",
            Some(v1::event::Body::Gap(_)) => "gap",
            None => "unknown",
        }
    }

    /// The event as one JSON object keyed by proto field names.
    ///
    /// # Errors
    /// Fails only if serialisation fails, which the generated code does not do
    /// for well-formed messages.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}
