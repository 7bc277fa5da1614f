//! The collector: receives sensor event streams over gRPC, stores them in
//! SQLite and answers investigators' queries.
//!
//! - [`store`]: the SQLite schema, batch inserts and lookups.
//! - [`writer`]: the database writer thread the server feeds.
//! - [`server`]: the gRPC `Collector` service and [`serve`]; [`route`]: its
//!   route, which receives each event's bytes with the event.
//! - [`tls`]: mutual TLS for the server; [`certs`]: the test CA and
//!   certificates `collector certs` writes.
//! - [`indicators`]: the paths, addresses, ports and domains events are
//!   searched by, and their index keys.
//! - [`keys`]: the span index that finds the events holding a value.
//! - [`query`]: query filters, the SQL they become and the checks SQL
//!   cannot make.
//! - [`timestamp`]: parsing `--since` / `--until`.
//! - [`tree`]: the ancestry walk behind `collector tree`.
//! - [`output`]: what `query` and `tree` print.

pub mod certs;
pub mod indicators;
pub mod keys;
pub mod output;
pub mod query;
pub mod route;
pub mod server;
pub mod store;
pub mod timestamp;
pub mod tls;
pub mod tree;
pub mod writer;

pub use indicators::IpRange;
pub use query::{EventFilter, Kind};
pub use server::{ServeConfig, ServeError, ServeSummary, Transport, serve};
pub use store::{Store, StoreError};

/// `error: cause: cause ...` in one line, for logs and gRPC statuses.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
