//! Replays fixture scenarios through the real router and decoder.

#![allow(dead_code)] // each test binary uses its own part

use std::{collections::BTreeMap, sync::Arc};

use sensor_etw::{
    Decoder, DecoderConfig, DeviceMap, EtwCounters, FixtureRecord,
    identity::{exec_id, filetime_to_unix_ns},
    paths::StaticNames,
};
use sensor_proto::{
    timestamp_from_unix_ns,
    v1::{Event, Process, event::Body},
};
use serde::Deserialize;

/// 2026-01-01T00:00:00Z as a FILETIME: the fixtures' time origin.
pub const T0: i64 = 134_116_992_000_000_000;
/// The test host booted two hours before T0.
pub const BOOT_UNIX_NS: u64 = 1_767_225_600_000_000_000 - 7_200_000_000_000;
pub const BOOT_ID: &str = "boot-1";
pub const ALICE_SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";
pub const ALICE: &str = r"DESKTOP-1\alice";

/// FILETIME `ms` milliseconds after T0.
#[must_use]
pub fn t(ms: i64) -> i64 {
    T0 + ms * 10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    source: String,
    scenarios: BTreeMap<String, Vec<Step>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Step {
    Tick { tick: i64 },
    Record(Box<FixtureRecord>),
}

fn load(file: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every scenario name of a fixture file, and its `source` note.
#[must_use]
pub fn scenarios(file: &str) -> (String, Vec<String>) {
    let f = load(file);
    (f.source, f.scenarios.into_keys().collect())
}

#[must_use]
pub fn decoder() -> (Decoder, Arc<EtwCounters>) {
    let counters = Arc::new(EtwCounters::default());
    let mut devices = DeviceMap::new();
    devices.insert(r"\Device\HarddiskVolume3", "C:");
    let names = StaticNames(vec![(ALICE_SID.to_owned(), ALICE.to_owned())]);
    let cfg = DecoderConfig {
        boot_id: BOOT_ID.to_owned(),
        boot_unix_ns: BOOT_UNIX_NS,
        ..DecoderConfig::default()
    };
    (
        Decoder::new(cfg, devices, Box::new(names), Arc::clone(&counters)),
        counters,
    )
}

/// The events each step of a scenario produced, step by step.
#[must_use]
pub fn run(file: &str, scenario: &str) -> (Vec<Vec<Event>>, Arc<EtwCounters>) {
    let mut f = load(file);
    let steps = f
        .scenarios
        .remove(scenario)
        .unwrap_or_else(|| panic!("{file} has no scenario {scenario}"));
    let (mut d, counters) = decoder();
    let out = steps
        .into_iter()
        .map(|step| {
            let mut out = Vec::new();
            match step {
                Step::Tick { tick } => d.tick(tick, &mut out),
                Step::Record(r) => d.feed(r.as_ref(), &mut out),
            }
            out
        })
        .collect();
    (out, counters)
}

/// A counter's value by its health name.
#[must_use]
pub fn count(c: &EtwCounters, name: &str) -> u64 {
    c.snapshot()
        .into_iter()
        .find(|s| s.1 == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .2
}

/// Every counter that is not zero, by name.
#[must_use]
pub fn nonzero(c: &EtwCounters) -> BTreeMap<&'static str, u64> {
    c.snapshot()
        .into_iter()
        .filter(|s| s.2 != 0)
        .map(|s| (s.1, s.2))
        .collect()
}

#[must_use]
pub fn event(ft: i64, process: Process, body: Body) -> Event {
    let ns = filetime_to_unix_ns(ft);
    Event {
        time: Some(timestamp_from_unix_ns(ns)),
        monotonic_ns: ns - BOOT_UNIX_NS,
        process: Some(Box::new(process)),
        body: Some(body),
        ..Event::default()
    }
}

/// The context of a process the decoder never saw start.
#[must_use]
pub fn unknown(pid: u32, tid: u32) -> Process {
    Process {
        pid,
        tid,
        login_uid: u32::MAX,
        session_id: u32::MAX,
        ..Process::default()
    }
}

/// A process the decoder saw start (`create_ms` after T0), before any
/// join with its classic start.
#[must_use]
pub fn started(pid: u32, ppid: u32, create_ms: i64, exe: &str) -> Process {
    Process {
        exec_id: exec_id(BOOT_ID, pid, t(create_ms)),
        pid,
        ppid,
        login_uid: u32::MAX,
        session_id: 1,
        comm: exe.rsplit('\\').next().unwrap_or_default().to_owned(),
        exe: exe.to_owned(),
        start_time: Some(timestamp_from_unix_ns(filetime_to_unix_ns(t(create_ms)))),
        ..Process::default()
    }
}

/// `p` after its classic start named alice as the user and gave `argv`.
#[must_use]
pub fn joined(mut p: Process, argv: &[&str]) -> Process {
    p.argv = argv.iter().map(|a| (*a).to_owned()).collect();
    p.user_sid = ALICE_SID.to_owned();
    p.user = ALICE.to_owned();
    p
}
