//! The collector is away when the sensor starts: the sensor keeps capturing
//! into its bounded buffer, reconnects, delivers, and counts exactly what the
//! bound made it drop.

use std::{net::TcpListener, process::Command};

use tests::{Certs, Collector, EventExt, Sensor, binary, of_kind};

#[test]
fn events_captured_while_the_collector_is_down_arrive_and_overflow_is_counted_exactly() {
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    let certs = Certs::generate();
    std::fs::write(
        &config,
        format!(
            "sensor_id = \"outage-test\"\n[collector]\nurl = \"https://127.0.0.1:{port}\"\n\
             ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
             buffer_events = 200\nbatch_size = 50\nmax_backoff_ms = 200\n",
            certs.path("ca.pem"),
            certs.path("client.pem"),
            certs.path("client.key"),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary("sensor"));
    cmd.arg("run").arg("--config").arg(&config);
    let sensor = Sensor::spawn(cmd);
    // ~3 events per run (fork, exec, exit), far more than the buffer holds.
    for _ in 0..150 {
        Command::new("/bin/true").status().unwrap();
    }
    let marker = Command::new("/bin/sh")
        .args(["-c", "exit 9"])
        .spawn()
        .unwrap();
    let marker_pid = marker.id();
    marker.wait_with_output().unwrap();

    let collector = Collector::start_tls(&format!("127.0.0.1:{port}"), certs, &[]);
    let events = collector.wait_for(&["--pid", &marker_pid.to_string()], |e| {
        !of_kind(e, "exit").is_empty()
    });
    assert_eq!(of_kind(&events, "exit")[0]["exit"]["exit_code"], 9);

    sensor.stop();
    let all = collector.query(&["--sensor-id", "outage-test"]);
    let last_health = all
        .iter()
        .filter(|e| e.kind() == "health")
        .max_by_key(|e| e.u64_at("/seq"))
        .expect("a final health event");
    let counter = |stage: &str, name: &str| {
        last_health["health"]["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["stage"] == stage && c["name"] == name)
            .map(|c| c.u64_at("/value"))
            .unwrap()
    };
    let encoded = counter("encode", "events");
    let dropped = counter("ship", "buffer_full_dropped");
    assert!(dropped > 0, "the outage overflowed a 200-event buffer");
    // Every event encoded before the last report was stored or counted as
    // dropped; the last report itself is stored too.
    assert_eq!(all.len() as u64, encoded - dropped + 1);
    // Drop-oldest: what is stored is the newest events, one contiguous run
    // of seq with neither gaps nor duplicates.
    let mut seqs: Vec<u64> = all.iter().map(|e| e.u64_at("/seq")).collect();
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "stored seqs are contiguous"
    );
}
