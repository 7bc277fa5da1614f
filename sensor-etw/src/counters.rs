//! Health counters of the Windows capture path. Every drop, miss and
//! eviction has one; the sensor sends them in its health events.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $field:ident : $name:literal, $drop:literal; )*) => {
        /// Counters of the Windows capture path; the sensor sends them in
        /// health events with its own.
        #[derive(Debug, Default)]
        pub struct EtwCounters {
            $( $(#[doc = $doc])* pub $field: AtomicU64, )*
        }

        impl EtwCounters {
            /// Every counter as (stage, name, value, counts a drop).
            #[must_use]
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64, bool)> {
                vec![ $( ("etw", $name, self.$field.load(Ordering::Relaxed), $drop), )* ]
            }
        }
    };
}

counters! {
    /// Records the callbacks saw.
    records: "records", false;
    /// Records whose (provider, id/opcode) no decoder handles.
    unrouted: "unrouted", false;
    /// Events dropped because the sensor's queue was full.
    queue_dropped: "queue_full_dropped", true;
    /// Records dropped because the decoder's own queue (callbacks -> decoder
    /// thread) was full.
    decode_queue_dropped: "decode_queue_full_dropped", true;
    /// Records missing a property the decoder needs, or with a property of
    /// an unexpected type or width, per provider.
    malformed_process: "malformed_process", true;
    malformed_file: "malformed_file", true;
    malformed_registry: "malformed_registry", true;
    malformed_network: "malformed_network", true;
    malformed_dns: "malformed_dns", true;
    /// Kernel-Process image loads: routed and counted; sensor.v1 has no body.
    image_loads: "image_loads", false;
    /// Processes evicted from the bounded process table.
    process_table_evicted: "process_table_evicted", true;
    /// Events of a process the table did not know (context is minimal).
    process_unknown: "process_unknown", false;
    /// Process starts whose parent the table did not know.
    parent_unknown: "parent_unknown", false;
    /// Process starts for a pid still in the table (its stop was lost).
    process_replaced: "process_replaced", true;
    /// Process starts joined with a classic Process Start (command line, SID).
    cmdline_joined: "cmdline_joined", false;
    /// Process starts sent without a command line: no classic start matched
    /// in time.
    cmdline_missing: "cmdline_missing", true;
    /// Classic starts that never met their Kernel-Process start (evicted).
    classic_unmatched: "classic_unmatched", true;
    /// FileObject/FileKey -> path entries evicted by the bound.
    file_names_evicted: "file_names_evicted", true;
    /// Writes held because their FileObject had no name yet.
    file_write_held: "file_write_held", false;
    /// Held writes named by a later create.
    file_write_late_resolved: "file_write_late_resolved", false;
    /// File events sent with an empty path: the name never arrived.
    file_path_unresolved: "file_path_unresolved", true;
    /// Held writes dropped because the hold table was full.
    file_write_hold_dropped: "file_write_hold_dropped", true;
    /// KeyObject -> key path entries evicted by the bound.
    registry_keys_evicted: "registry_keys_evicted", true;
    /// Registry events whose KeyObject the cache did not know.
    registry_key_unresolved: "registry_key_unresolved", true;
    /// Failed registry operations (Status != 0) not reported.
    registry_failed_ignored: "registry_failed_ignored", false;
    /// UDP peers evicted from the first-datagram table (a peer may repeat).
    udp_peers_evicted: "udp_peers_evicted", false;
    /// NT device paths no drive letter maps (sent in device form).
    device_path_unmapped: "device_path_unmapped", false;
    /// SIDs the host could not name.
    sid_unresolved: "sid_unresolved", false;
    /// Session losses from ControlTraceW(QUERY): EventsLost and
    /// RealTimeBuffersLost of each session (the session's own totals).
    process_session_events_lost: "process_session_events_lost", true;
    process_session_buffers_lost: "process_session_realtime_buffers_lost", true;
    main_session_events_lost: "main_session_events_lost", true;
    main_session_buffers_lost: "main_session_realtime_buffers_lost", true;
    classic_session_events_lost: "classic_session_events_lost", true;
    classic_session_buffers_lost: "classic_session_realtime_buffers_lost", true;
    /// ControlTraceW QUERY/FLUSH or CAPTURE_STATE calls that failed.
    session_control_failed: "session_control_failed", false;
}

impl EtwCounters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_unique_and_reported_under_etw() {
        let c = EtwCounters::default();
        EtwCounters::inc(&c.queue_dropped);
        let snap = c.snapshot();
        let mut names: Vec<_> = snap.iter().map(|s| s.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), snap.len());
        assert!(snap.iter().all(|s| s.0 == "etw"));
        assert!(snap.contains(&("etw", "queue_full_dropped", 1, true)));
    }
}
