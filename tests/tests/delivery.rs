//! Nothing lost: the collector away, killed or restarted, the sensor killed
//! mid-workload, a spool smaller than the outage, a damaged spool. Every
//! event reaches the store exactly once or is named by an exact gap record.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tests::{Certs, Collector, EventExt, PATIENCE, Sensor, binary};

/// A loopback address nobody listens on yet.
fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A copy of /bin/true under a name only this test runs, so its execs are
/// countable exactly whatever else the host does.
fn unique_true(dir: &Path) -> PathBuf {
    let exe = dir.join("delivery-probe");
    std::fs::copy("/bin/true", &exe).unwrap();
    exe
}

fn run_times(exe: &Path, n: usize) {
    for _ in 0..n {
        assert!(Command::new(exe).status().unwrap().success());
    }
}

struct Outage {
    dir: tempfile::TempDir,
    addr: String,
    sensor_id: String,
    certs: Certs,
}

impl Outage {
    fn new(sensor_id: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            addr: free_addr(),
            sensor_id: sensor_id.to_owned(),
            certs: Certs::generate(),
        }
    }

    /// The collector the sensor expects at `addr` (mutual TLS, same CA).
    fn collector(&self) -> Collector {
        Collector::start_tls(&self.addr, self.certs.copy(), &[])
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// A sensor shipping to `addr`, with its spool in the test's directory.
    fn sensor(&self, extra_config: &str) -> Sensor {
        let config = self.dir.path().join("sensor.toml");
        std::fs::write(
            &config,
            format!(
                "sensor_id = \"{}\"\n[collector]\nurl = \"https://{}\"\nbatch_size = 50\n\
                 max_backoff_ms = 200\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
                 {extra_config}",
                self.sensor_id,
                self.addr,
                self.certs.path("ca.pem"),
                self.certs.path("client.pem"),
                self.certs.path("client.key"),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary("sensor"));
        cmd.args(["run", "--health-interval", "1", "--config"])
            .arg(&config)
            .arg("--spool-dir")
            .arg(self.spool());
        Sensor::spawn(cmd)
    }
}

/// Every stored event of `sensor_id`, by seq.
fn stored(collector: &Collector, sensor_id: &str) -> Vec<Value> {
    let mut all = collector.query(&["--sensor-id", sensor_id]);
    all.sort_by_key(|e| e.u64_at("/seq"));
    all
}

/// Waits until `n` execs of `exe` are stored.
fn wait_for_execs(collector: &Collector, exe: &Path, n: usize) -> Vec<Value> {
    let exe = exe.to_str().unwrap();
    collector.wait_for(&["--kind", "exec", "--exe", exe], |e| e.len() >= n)
}

/// The value of a counter in the newest health event.
fn counter(events: &[Value], stage: &str, name: &str) -> u64 {
    let health = events
        .iter()
        .filter(|e| e.kind() == "health")
        .max_by_key(|e| e.u64_at("/seq"))
        .expect("a health event");
    health["health"]["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stage"] == stage && c["name"] == name)
        .map_or(0, |c| c.u64_at("/value"))
}

/// Every seq from the first stored to the last is stored or inside the
/// range of a stored gap record; returns the gaps' total count.
fn assert_accounted(events: &[Value]) -> u64 {
    let seqs: Vec<u64> = events.iter().map(|e| e.u64_at("/seq")).collect();
    let gaps: Vec<(u64, u64, u64)> = events
        .iter()
        .filter(|e| e.kind() == "gap")
        .map(|e| {
            (
                e.u64_at("/gap/first_seq"),
                e.u64_at("/gap/last_seq"),
                e.u64_at("/gap/count"),
            )
        })
        .collect();
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    let missing: Vec<u64> = (first..=last)
        .filter(|s| seqs.binary_search(s).is_err())
        .filter(|s| !gaps.iter().any(|(a, b, _)| (a..=b).contains(&s)))
        .collect();
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "seqs neither stored nor in a gap"
    );
    gaps.iter().map(|g| g.2).sum()
}

/// Stored seqs form one run: each once, none missing.
fn assert_contiguous(events: &[Value], what: &str) {
    let first = events[0].u64_at("/seq");
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.u64_at("/seq") == first + i as u64),
        "{what}"
    );
}

#[test]
fn events_captured_while_the_collector_is_down_arrive_once_it_is_up() {
    let outage = Outage::new("late-collector");
    let exe = unique_true(outage.dir.path());
    let sensor = outage.sensor("");
    run_times(&exe, 100);
    let collector = outage.collector();
    assert_eq!(wait_for_execs(&collector, &exe, 100).len(), 100);
    sensor.stop();
    let all = stored(&collector, "late-collector");
    eprintln!("late collector: {} events stored", all.len());
    assert_eq!(assert_accounted(&all), 0, "no gaps");
    assert_contiguous(&all, "one contiguous run of seq, each once");
}

#[test]
fn a_collector_killed_mid_workload_loses_nothing_and_stores_each_event_once() {
    let outage = Outage::new("collector-killed");
    let exe = unique_true(outage.dir.path());
    let mut collector = outage.collector();
    let sensor = outage.sensor("");
    run_times(&exe, 100);
    wait_for_execs(&collector, &exe, 100);
    collector.kill();
    run_times(&exe, 200);
    std::thread::sleep(Duration::from_secs(3));
    collector.restart();
    run_times(&exe, 100);
    let execs = wait_for_execs(&collector, &exe, 400);
    assert_eq!(execs.len(), 400, "every exec exactly once");
    let exe_str = exe.to_str().unwrap();
    let exits = collector.wait_for(&["--kind", "exit", "--exe", exe_str], |e| e.len() >= 400);
    assert_eq!(exits.len(), 400);
    sensor.stop();
    let all = stored(&collector, "collector-killed");
    eprintln!(
        "collector killed: {} events stored, reconnects {}",
        all.len(),
        counter(&all, "ship", "reconnects")
    );
    assert_eq!(assert_accounted(&all), 0, "no gaps");
    assert_contiguous(&all, "seqs contiguous and unique");
}

#[test]
fn a_sensor_killed_mid_workload_resumes_from_its_spool_and_seq_continues() {
    let outage = Outage::new("sensor-killed");
    let exe = unique_true(outage.dir.path());
    let sensor = outage.sensor("");
    run_times(&exe, 150);
    // Give the encode stage a moment to append what it has.
    std::thread::sleep(Duration::from_millis(500));
    sensor.kill();
    let collector = outage.collector();
    let sensor = outage.sensor("");
    run_times(&exe, 50);
    assert_eq!(wait_for_execs(&collector, &exe, 200).len(), 200);
    sensor.stop();
    let all = stored(&collector, "sensor-killed");
    eprintln!("sensor killed: {} events stored", all.len());
    assert_eq!(assert_accounted(&all), 0, "no gaps");
    assert_contiguous(
        &all,
        "the restarted sensor continued the seq of the killed one, without duplicates",
    );
}

#[test]
fn a_spool_smaller_than_the_outage_leaves_an_exact_gap_record() {
    let outage = Outage::new("spool-full");
    let exe = unique_true(outage.dir.path());
    let sensor = outage.sensor("[spool]\nmax_bytes = 65536\n");
    run_times(&exe, 400);
    let marker = Command::new("/bin/sh")
        .args(["-c", "exit 9"])
        .spawn()
        .unwrap();
    let marker_pid = marker.id().to_string();
    marker.wait_with_output().unwrap();
    let collector = outage.collector();
    collector.wait_for(&["--pid", &marker_pid, "--kind", "exit"], |e| !e.is_empty());
    sensor.stop();
    let all = stored(&collector, "spool-full");
    let dropped = counter(&all, "spool", "full_dropped");
    eprintln!(
        "spool full: {} events stored, {} dropped, {} gap records",
        all.len(),
        dropped,
        all.iter().filter(|e| e.kind() == "gap").count()
    );
    assert!(dropped > 0, "400 runs overflow a 64 KiB spool");
    assert_eq!(
        assert_accounted(&all),
        dropped,
        "the gap records name exactly the events the spool dropped"
    );
    let gap = all.iter().find(|e| e.kind() == "gap").unwrap();
    assert_eq!(gap.str_at("/gap/reason"), "spool_full_drop_oldest");
}

#[test]
fn a_flipped_byte_in_the_spool_is_detected_counted_and_the_rest_delivered() {
    let outage = Outage::new("spool-damaged");
    let exe = unique_true(outage.dir.path());
    let sensor = outage.sensor("");
    run_times(&exe, 50);
    std::thread::sleep(Duration::from_millis(500));
    sensor.kill();
    // One byte in the middle of the newest segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(outage.spool())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(newest, &bytes).unwrap();

    let collector = outage.collector();
    let sensor = outage.sensor("");
    let start = std::time::Instant::now();
    let all = loop {
        let all = stored(&collector, "spool-damaged");
        if all.iter().any(|e| e.kind() == "gap") && all.iter().any(|e| e.kind() == "health") {
            break all;
        }
        assert!(start.elapsed() < PATIENCE, "no gap record arrived");
        std::thread::sleep(Duration::from_millis(200));
    };
    sensor.stop();
    let gap = all.iter().find(|e| e.kind() == "gap").unwrap();
    assert_eq!(gap.str_at("/gap/reason"), "spool_corrupt");
    assert_eq!(
        gap.u64_at("/gap/count"),
        1,
        "one damaged record, one lost event"
    );
    assert_eq!(counter(&all, "spool", "corrupt_segments_repaired"), 1);
    assert_eq!(counter(&all, "spool", "corrupt_lost"), 1);
    let all = stored(&collector, "spool-damaged");
    eprintln!(
        "spool damaged: {} events stored, 1 lost and named",
        all.len()
    );
    assert_eq!(assert_accounted(&all), 1);
}
