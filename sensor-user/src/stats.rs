//! Counters every stage keeps. Nothing is lost silently: each drop has a
//! counter here, and the health reporter sends them all to the collector.
//! A capture source's own counters (the kernel's, ETW's) come from the
//! source itself: see `loader::kernel_snapshot` and `EtwCounters`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => ($stage:literal, $name:literal, $is_drop:literal)),* $(,)?) => {
        /// Cumulative counters since start, shared by all stages.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(pub $field: AtomicU64,)*
        }

        impl Stats {
            /// Every counter as (stage, name, value, counts a drop).
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64, bool)> {
                vec![$(($stage, $name, self.$field.load(Ordering::Relaxed), $is_drop),)*]
            }
        }
    };
}

counters! {
    captured => ("capture", "records", false),
    capture_dropped => ("capture", "queue_full_dropped", true),
    decoded => ("decode", "records", false),
    malformed => ("decode", "malformed_dropped", true),
    dns_malformed => ("decode", "dns_malformed_dropped", true),
    enriched => ("enrich", "events", false),
    procfs_seen => ("enrich", "procfs_processes", false),
    table_evicted => ("enrich", "table_evicted", false),
    unknown_parent => ("enrich", "unknown_parent", false),
    argv_limited => ("enrich", "argv_over_max_args", false),
    file_ignored => ("enrich", "file_ignored_prefix", false),
    file_failed => ("enrich", "file_failed_not_reported", false),
    file_result_lost => ("enrich", "file_result_lost", true),
    close_unreported => ("enrich", "tcp_close_not_reported", false),
    connections_forgotten => ("enrich", "tcp_connections_forgotten", true),
    encoded => ("encode", "events", false),
    spool_dropped => ("spool", "full_dropped", true),
    spool_corrupt => ("spool", "corrupt_segments_repaired", false),
    spool_corrupt_lost => ("spool", "corrupt_lost", true),
    spool_write_failed => ("spool", "write_failed_dropped", true),
    shipped => ("ship", "sent", false),
    acked => ("ship", "acked", false),
    ship_dropped => ("ship", "buffer_full_dropped", true),
    reconnects => ("ship", "reconnects", false),
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
