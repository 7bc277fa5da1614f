//! Periodic SensorHealth events: every stage's counters, drops first among
//! them, so the collector sees what was lost and where.

use sensor_proto::v1::{Event, SensorHealth, StageCounter, event::Body};

use crate::stats::Stats;

/// A health event from the current counters and the capture source's own
/// (stage, name, value, counts a drop): the kernel's ring-full drops per
/// record kind, ETW's lost events.
#[must_use]
pub fn health_event(
    stats: &Stats,
    source: &[(&'static str, &'static str, u64, bool)],
    hooks: &[String],
    time: sensor_proto::Timestamp,
    boot_ns: u64,
) -> Event {
    let mut snapshot = source.to_vec();
    snapshot.extend(stats.snapshot());
    let dropped_total = snapshot
        .iter()
        .filter(|(_, _, _, is_drop)| *is_drop)
        .map(|(_, _, v, _)| v)
        .sum();
    let counters = snapshot
        .into_iter()
        .map(|(stage, name, value, _)| StageCounter {
            stage: stage.to_owned(),
            name: name.to_owned(),
            value,
        })
        .collect();
    Event {
        time: Some(time),
        monotonic_ns: boot_ns,
        body: Some(Body::Health(SensorHealth {
            counters,
            dropped_total,
            hooks: hooks.to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_of_every_stage_add_up_to_the_total() {
        let stats = Stats::default();
        Stats::add(&stats.capture_dropped, 3);
        Stats::add(&stats.ship_dropped, 5);
        Stats::add(&stats.captured, 100);
        let source = [
            ("kernel", "exec_ring_full_dropped", 2, true),
            ("kernel", "opens_folded", 7, false),
        ];
        let ev = health_event(
            &stats,
            &source,
            &["raw_tp/x".into()],
            sensor_proto::Timestamp::default(),
            1,
        );
        let Some(Body::Health(h)) = ev.body else {
            panic!("not health")
        };
        assert_eq!(h.dropped_total, 10);
        assert!(
            h.counters
                .iter()
                .any(|c| c.stage == "capture" && c.name == "records" && c.value == 100)
        );
        assert_eq!(
            (h.counters[0].stage.as_str(), h.counters[0].name.as_str()),
            ("kernel", "exec_ring_full_dropped"),
            "the source's counters come first"
        );
        assert_eq!(h.hooks, vec!["raw_tp/x".to_owned()]);
    }
}
