//! Indicator search: "which process on which host touched this file /
//! resolved this domain / connected to this IP" is one `collector query`.
//! A real SQLite file, the real binary, and a real gRPC server for ingest.

mod common;

use anyhow::bail;
use collector::{ServeConfig, Store};
use common::{
    HOST_NAME, Proc, SENSOR, SensorStream, T0, TempDb, TestServer, envelope, path_arg,
    run_collector, stdout_lines,
};
use sensor_proto::v1::{
    DnsAnswer, DnsEvent, Event, FileEvent, FileOp, NetworkEvent, NetworkOp, event::Body,
};

fn curl() -> Proc<'static> {
    Proc {
        exec_id: "e-curl",
        parent_exec_id: "e-sh",
        pid: 300,
        exe: "/usr/bin/curl",
        argv: &["curl", "https://example.com/x.sh"],
    }
}

fn at(seq: u64) -> u64 {
    T0 + seq * 1_000
}

/// An event of `curl()` on host `host`, seq `seq`, at `at(seq)`.
fn on(host: &str, seq: u64, body: Body) -> Event {
    let mut event = envelope(SENSOR, seq, at(seq), curl().to_process(), body);
    if host != HOST_NAME {
        event.sensor_id = format!("sensor-{host}");
        event.host_name = host.to_owned();
    }
    event
}

fn file(seq: u64, op: FileOp, path: &str, old_path: &str) -> Event {
    on(
        HOST_NAME,
        seq,
        Body::File(FileEvent {
            op: op.into(),
            path: path.to_owned(),
            old_path: old_path.to_owned(),
            inode: 1000 + seq,
            device: 2049,
            file_mode: 0o100_644,
            ..FileEvent::default()
        }),
    )
}

fn connection(op: NetworkOp, local: (&str, u32), remote: (&str, u32)) -> Body {
    let family = if remote.0.contains(':') { 10 } else { 2 };
    Body::Network(NetworkEvent {
        op: op.into(),
        protocol: "tcp".to_owned(),
        family,
        local_address: local.0.to_owned(),
        local_port: local.1,
        remote_address: remote.0.to_owned(),
        remote_port: remote.1,
        socket_inode: 77,
        ..NetworkEvent::default()
    })
}

fn connect(seq: u64, local: (&str, u32), remote: (&str, u32)) -> Event {
    on(
        HOST_NAME,
        seq,
        connection(NetworkOp::Connect, local, remote),
    )
}

fn answer(name: &str, kind: &str, data: &str) -> DnsAnswer {
    DnsAnswer {
        name: name.to_owned(),
        r#type: kind.to_owned(),
        data: data.to_owned(),
        ttl: 300,
    }
}

fn dns_body(query_name: &str, answers: Vec<DnsAnswer>) -> Body {
    Body::Dns(DnsEvent {
        response: !answers.is_empty(),
        id: 4242,
        query_name: query_name.to_owned(),
        query_type: "A".to_owned(),
        protocol: "udp".to_owned(),
        server_address: "127.0.0.53".to_owned(),
        server_port: 53,
        rcode: 0,
        answers,
    })
}

fn dns(seq: u64, query_name: &str, answers: Vec<DnsAnswer>) -> Event {
    on(HOST_NAME, seq, dns_body(query_name, answers))
}

fn run_query(db: &TempDb, filters: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut args = vec!["query", "--db", path_arg(&db.path)?];
    args.extend_from_slice(filters);
    let out = run_collector(&args)?;
    if out.status.code() != Some(0) || !out.stderr.is_empty() {
        bail!("query {filters:?}: {out:?}");
    }
    stdout_lines(&out)
}

/// `collector query` with `filters` prints exactly `expected`, in order.
fn assert_finds(db: &TempDb, filters: &[&str], expected: &[&Event]) -> anyhow::Result<()> {
    let lines = run_query(db, filters)?;
    let expected: Vec<String> = expected
        .iter()
        .map(|e| e.to_json())
        .collect::<Result<_, _>>()?;
    assert_eq!(
        common::without_stored_ns(&lines)?,
        expected,
        "query {filters:?}"
    );
    Ok(())
}

/// The seqs `collector query` with `filters` prints, in order.
fn seqs(db: &TempDb, filters: &[&str]) -> anyhow::Result<Vec<u64>> {
    common::sensor_seqs(&run_query(db, filters)?)
        .map(|pairs| pairs.into_iter().map(|(_, seq)| seq).collect())
}

#[test]
fn a_file_is_found_by_exact_path_and_by_prefix() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events = [
        file(1, FileOp::Create, "/tmp/x", ""),
        file(2, FileOp::Create, "/tmp/xyz", ""),
        // Moved into place: found by both its old and its new path.
        file(3, FileOp::Rename, "/etc/cron.d/evil", "/tmp/x"),
        file(4, FileOp::Unlink, "/etc/passwd-", ""),
        // An exec of /tmp/x is not a file event: --path does not search exe.
        common::exec(
            SENSOR,
            5,
            at(5),
            &Proc {
                exe: "/tmp/x",
                ..curl()
            },
        ),
        file(6, FileOp::OpenWrite, "/tmp/a*b?[c]", ""),
        file(7, FileOp::Create, "/TMP/X", ""),
        file(8, FileOp::Link, "/home/u/.hidden", "/usr/bin/passwd"),
    ];
    db.fill(&events)?;
    let [create_x, create_xyz, rename, unlink, _, glob, upper, link] = &events;

    assert_finds(&db, &["--path", "/tmp/x"], &[create_x, rename])?;
    assert_finds(&db, &["--path", "/etc/cron.d/evil"], &[rename])?;
    assert_finds(&db, &["--path", "/usr/bin/passwd"], &[link])?;
    assert_finds(&db, &["--path", "/tmp"], &[])?;
    assert_finds(&db, &["--path", "/tmp/X"], &[])?;
    // A plain string prefix: /tmp/x also matches /tmp/xyz.
    assert_finds(
        &db,
        &["--path-prefix", "/tmp/x"],
        &[create_x, create_xyz, rename],
    )?;
    assert_finds(
        &db,
        &["--path-prefix", "/tmp/"],
        &[create_x, create_xyz, rename, glob],
    )?;
    assert_finds(&db, &["--path-prefix", "/etc/"], &[rename, unlink])?;
    // GLOB characters in the prefix match literally.
    assert_finds(&db, &["--path-prefix", "/tmp/a*b?["], &[glob])?;
    assert_finds(&db, &["--path-prefix", "/tmp/a*c"], &[])?;
    assert_finds(&db, &["--path-prefix", "/TMP/"], &[upper])?;
    // Both path filters together: each must match (path or old_path).
    assert_finds(
        &db,
        &["--path-prefix", "/etc/cron.d/", "--path", "/tmp/x"],
        &[rename],
    )?;
    Ok(())
}

#[test]
fn an_ip_is_found_in_connections_and_in_dns_answers() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let v6 = "2606:2800:220:1:248:1893:25c8:1946";
    let events = [
        connect(1, ("10.0.0.5", 50_000), ("93.184.216.34", 443)),
        dns(
            2,
            "example.com",
            vec![
                answer("example.com", "A", "93.184.216.34"),
                answer("example.com", "AAAA", v6),
            ],
        ),
        connect(3, ("2001:db8::5", 50_001), (v6, 443)),
        // An accept on a dual-stack socket: v4-mapped IPv6 text.
        on(
            HOST_NAME,
            4,
            connection(
                NetworkOp::Accept,
                ("::ffff:10.0.0.5", 22),
                ("::ffff:93.184.216.34", 40_000),
            ),
        ),
        connect(5, ("10.0.0.5", 50_002), ("1.1.1.1", 53)),
        // A query to a resolver at that address: the server is not searched.
        on(HOST_NAME, 6, {
            let mut body = dns_body("example.org", Vec::new());
            if let Body::Dns(d) = &mut body {
                d.server_address = "93.184.216.34".to_owned();
            }
            body
        }),
        // TXT data that looks like an address is not an address answer.
        dns(
            7,
            "txt.example.com",
            vec![answer("txt.example.com", "TXT", v6)],
        ),
    ];
    db.fill(&events)?;
    let [c1, d2, c3, a4, c5, _, _] = &events;

    assert_finds(&db, &["--ip", "93.184.216.34"], &[c1, d2, a4])?;
    assert_finds(&db, &["--ip", "::ffff:93.184.216.34"], &[c1, d2, a4])?;
    assert_finds(&db, &["--ip", "::FFFF:5db8:d822"], &[c1, d2, a4])?;
    assert_finds(&db, &["--ip", v6], &[d2, c3])?;
    assert_finds(
        &db,
        &["--ip", "2606:2800:220:1:248:1893:25C8:1946/128"],
        &[d2, c3],
    )?;
    // Local addresses are searched too.
    assert_finds(&db, &["--ip", "10.0.0.5"], &[c1, a4, c5])?;
    assert_finds(&db, &["--ip", "2001:db8::5"], &[c3])?;
    assert_finds(&db, &["--ip", "1.1.1.2"], &[])?;
    assert_finds(&db, &["--ip", "::1"], &[])?;
    Ok(())
}

#[test]
fn a_cidr_matches_only_addresses_inside_it() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events: Vec<Event> = [
        "10.1.2.3",
        "11.0.0.1",
        "9.255.255.255",
        "10.255.255.255",
        "10.0.0.0",
        "2001:db8::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db9::1",
        "2001:db7:ffff::1",
        "::ffff:10.9.9.9",
    ]
    .into_iter()
    .zip(1..)
    .map(|(remote, seq)| connect(seq, ("", 0), (remote, 443)))
    .collect();
    db.fill(&events)?;

    assert_eq!(seqs(&db, &["--ip", "10.0.0.0/8"])?, [1, 4, 5, 10]);
    assert_eq!(seqs(&db, &["--ip", "::ffff:10.0.0.0/104"])?, [1, 4, 5, 10]);
    // Host bits under the prefix are ignored.
    assert_eq!(seqs(&db, &["--ip", "10.200.0.1/8"])?, [1, 4, 5, 10]);
    assert_eq!(seqs(&db, &["--ip", "10.1.2.0/24"])?, [1]);
    assert_eq!(seqs(&db, &["--ip", "10.1.2.3/32"])?, [1]);
    assert_eq!(seqs(&db, &["--ip", "11.0.0.0/8"])?, [2]);
    assert_eq!(seqs(&db, &["--ip", "0.0.0.0/0"])?, [1, 2, 3, 4, 5, 10]);
    assert_eq!(seqs(&db, &["--ip", "2001:db8::/32"])?, [6, 7]);
    assert_eq!(seqs(&db, &["--ip", "2001:db8::/33"])?, [6]);
    assert_eq!(seqs(&db, &["--ip", "2001:db8::1/128"])?, [6]);
    assert_eq!(
        seqs(&db, &["--ip", "::/0"])?,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(seqs(&db, &["--ip", "::1/128"])?, Vec::<u64>::new());
    Ok(())
}

#[test]
fn a_domain_suffix_matches_subdomains_but_not_lookalikes() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events = [
        dns(1, "example.com", Vec::new()),
        dns(2, "a.example.com", Vec::new()),
        dns(3, "badexample.com", Vec::new()),
        // Not lower-cased by whoever sent it: matched case-insensitively.
        dns(4, "X.Y.Example.COM.", Vec::new()),
        dns(5, "example.com.evil.net", Vec::new()),
        dns(6, "example.co", Vec::new()),
        // Found through an answer: the name a CNAME points to.
        dns(
            7,
            "cdn.test",
            vec![
                answer("cdn.test", "CNAME", "Edge.Example.com."),
                answer("edge.example.com", "A", "192.0.2.7"),
            ],
        ),
        // Found through an answer's own name.
        dns(
            8,
            "www.other.org",
            vec![answer("WWW.EXAMPLE.COM", "A", "192.0.2.8")],
        ),
        dns(9, "xample.com", Vec::new()),
        // Lookalikes that extend a label rather than prefix the name.
        dns(10, "examples.com", Vec::new()),
        dns(11, "example.community", Vec::new()),
        dns(12, "a.example.com-evil.net", Vec::new()),
    ];
    db.fill(&events)?;
    let [e1, e2, _bad, e4, _, _, e7, e8, _, _, _, _] = &events;

    assert_finds(&db, &["--domain", "example.com"], &[e1, e2, e4, e7, e8])?;
    assert_finds(&db, &["--domain", "EXAMPLE.Com."], &[e1, e2, e4, e7, e8])?;
    assert_finds(&db, &["--domain", "a.example.com"], &[e2])?;
    assert_finds(&db, &["--domain", "y.example.com"], &[e4])?;
    assert_eq!(seqs(&db, &["--domain", "badexample.com"])?, [3]);
    assert_eq!(seqs(&db, &["--domain", "evil.net"])?, [5]);
    assert_eq!(seqs(&db, &["--domain", "com"])?, [1, 2, 3, 4, 7, 8, 9, 10]);
    assert_eq!(seqs(&db, &["--domain", "example.community"])?, [11]);
    assert_eq!(seqs(&db, &["--domain", "ample.com"])?, Vec::<u64>::new());
    assert_eq!(seqs(&db, &["--domain", "*.com"])?, Vec::<u64>::new());
    assert_eq!(seqs(&db, &["--domain", "cdn.test"])?, [7]);
    Ok(())
}

#[test]
fn a_bad_ip_filter_is_refused_with_exit_2() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&[connect(1, ("10.0.0.5", 1), ("10.1.2.3", 443))])?;
    let path = path_arg(&db.path)?;
    let refused = |args: &[&str]| -> anyhow::Result<String> {
        let out = run_collector(args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(out.stdout, b"", "{args:?}");
        Ok(String::from_utf8(out.stderr)?)
    };
    for (ip, why) in [
        (
            "10.0.0.256",
            "\"10.0.0.256\" is not an IPv4 or IPv6 address",
        ),
        (
            "example.com",
            "\"example.com\" is not an IPv4 or IPv6 address",
        ),
        ("", "\"\" is not an IPv4 or IPv6 address"),
        (
            "10.0.0.0/",
            "\"\" is not a prefix length (a number of bits)",
        ),
        (
            "10.0.0.0/x",
            "\"x\" is not a prefix length (a number of bits)",
        ),
        (
            "10.0.0.0/8/8",
            "\"8/8\" is not a prefix length (a number of bits)",
        ),
        (
            "10.0.0.0/33",
            "prefix length 33 is longer than the 32 bits of an IPv4 address",
        ),
        (
            "::1/129",
            "prefix length 129 is longer than the 128 bits of an IPv6 address",
        ),
    ] {
        assert_eq!(
            refused(&["query", "--db", path, "--ip", ip])?,
            format!("collector: error: invalid --ip {ip:?}: {why}\n")
        );
    }
    // The flag is checked before the database is opened.
    let missing = db.dir.path().join("missing.db");
    assert_eq!(
        refused(&["query", "--db", path_arg(&missing)?, "--ip", "10.0.0.0/99"])?,
        "collector: error: invalid --ip \"10.0.0.0/99\": \
         prefix length 99 is longer than the 32 bits of an IPv4 address\n"
    );
    assert_eq!(
        refused(&["query", "--db", path, "--domain", "."])?,
        "collector: error: invalid --domain \".\": it names no domain\n"
    );
    // Ports are 1-65535 (clap's own usage error).
    for port in ["0", "65536", "-1", "https"] {
        refused(&["query", "--db", path, "--port", port])?;
    }
    Ok(())
}

#[test]
fn indicator_filters_combine_with_host_and_kind() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events = [
        connect(1, ("10.0.0.5", 50_000), ("203.0.113.9", 443)),
        dns(
            2,
            "c2.example.net",
            vec![answer("c2.example.net", "A", "203.0.113.9")],
        ),
        on(
            "db-1",
            3,
            connection(
                NetworkOp::Connect,
                ("10.0.0.6", 50_000),
                ("203.0.113.9", 8443),
            ),
        ),
        on("db-1", 4, dns_body("c2.example.net", Vec::new())),
        on(
            "db-1",
            5,
            Body::File(FileEvent {
                op: FileOp::Create.into(),
                path: "/var/tmp/implant".to_owned(),
                ..FileEvent::default()
            }),
        ),
        file(6, FileOp::Create, "/var/tmp/implant", ""),
        connect(7, ("10.0.0.5", 50_001), ("198.51.100.1", 443)),
    ];
    db.fill(&events)?;
    let [
        web_conn,
        web_dns,
        db_conn,
        db_dns,
        db_file,
        web_file,
        web_other,
    ] = &events;

    assert_finds(&db, &["--ip", "203.0.113.9"], &[web_conn, web_dns, db_conn])?;
    assert_finds(&db, &["--ip", "203.0.113.9", "--host", "db-1"], &[db_conn])?;
    assert_finds(&db, &["--ip", "203.0.113.9", "--kind", "dns"], &[web_dns])?;
    assert_finds(
        &db,
        &[
            "--ip",
            "203.0.113.0/24",
            "--kind",
            "network",
            "--host",
            "web-1",
        ],
        &[web_conn],
    )?;
    assert_finds(&db, &["--ip", "203.0.113.9", "--port", "443"], &[web_conn])?;
    assert_finds(&db, &["--port", "443"], &[web_conn, web_other])?;
    assert_finds(&db, &["--port", "50000"], &[web_conn, db_conn])?;
    assert_finds(&db, &["--port", "443", "--kind", "dns"], &[])?;
    assert_finds(&db, &["--domain", "example.net"], &[web_dns, db_dns])?;
    assert_finds(
        &db,
        &["--domain", "example.net", "--sensor-id", "sensor-db-1"],
        &[db_dns],
    )?;
    assert_finds(&db, &["--path", "/var/tmp/implant"], &[db_file, web_file])?;
    assert_finds(
        &db,
        &[
            "--path",
            "/var/tmp/implant",
            "--host",
            "web-1",
            "--kind",
            "file",
        ],
        &[web_file],
    )?;
    assert_finds(
        &db,
        &["--path", "/var/tmp/implant", "--kind", "network"],
        &[],
    )?;
    assert_finds(
        &db,
        &[
            "--ip",
            "203.0.113.9",
            "--since",
            &at(2).to_string(),
            "--until",
            &at(4).to_string(),
        ],
        &[web_dns, db_conn],
    )?;
    assert_finds(
        &db,
        &[
            "--domain",
            "example.net",
            "--exe",
            "/usr/bin/curl",
            "--limit",
            "1",
        ],
        &[web_dns],
    )?;
    assert_finds(&db, &["--kind", "file"], &[db_file, web_file])?;
    assert_finds(
        &db,
        &["--kind", "network", "--host", "web-1"],
        &[web_conn, web_other],
    )?;
    Ok(())
}

/// The schema of a version-1 database, as the collector created it before
/// indicators existed.
const SCHEMA_V1: &str = "
CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    sensor_id      TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    host_id        TEXT    NOT NULL,
    host_name      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    time_ns        INTEGER NOT NULL,
    exec_id        TEXT    NOT NULL,
    parent_exec_id TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    exe            TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    UNIQUE (sensor_id, seq)
);
CREATE INDEX events_host_name      ON events (host_name, time_ns);
CREATE INDEX events_exec_id        ON events (exec_id);
CREATE INDEX events_parent_exec_id ON events (parent_exec_id);
CREATE INDEX events_pid            ON events (pid, time_ns);
CREATE INDEX events_exe            ON events (exe);
CREATE INDEX events_time_ns        ON events (time_ns, sensor_id, seq);
PRAGMA user_version = 1;
";

#[test]
fn a_version_1_database_is_indexed_when_serve_upgrades_it() -> anyhow::Result<()> {
    use prost::Message as _;
    let db = TempDb::new()?;
    let old = [
        file(1, FileOp::Create, "/tmp/dropper", ""),
        connect(2, ("10.0.0.5", 50_000), ("203.0.113.9", 443)),
        dns(3, "c2.example.net", Vec::new()),
        common::exec(SENSOR, 4, at(4), &curl()),
    ];
    {
        let conn = rusqlite::Connection::open(&db.path)?;
        conn.execute_batch(SCHEMA_V1)?;
        for event in &old {
            let process = event.process.clone().unwrap_or_default();
            conn.execute(
                "INSERT INTO events (sensor_id, seq, host_id, host_name, kind, time_ns, exec_id,
                                     parent_exec_id, pid, exe, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                rusqlite::params![
                    event.sensor_id,
                    i64::try_from(event.seq)?,
                    event.host_id,
                    event.host_name,
                    event.kind(),
                    i64::try_from(at(event.seq))?,
                    process.exec_id,
                    process.parent_exec_id,
                    process.pid,
                    process.exe,
                    event.encode_to_vec(),
                ],
            )?;
        }
    }

    // Read-only, a version-1 database answers the old filters...
    assert_eq!(seqs(&db, &["--kind", "file"])?, [1]);
    // ...but not the indicator ones, and says what to do.
    let out = run_collector(&[
        "query",
        "--db",
        path_arg(&db.path)?,
        "--path",
        "/tmp/dropper",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8(out.stderr)?,
        format!(
            "collector: error: database {} has schema version 1, without the indicator index \
             that --path, --path-prefix, --ip, --port and --domain search; run `collector serve` \
             on it once to upgrade it\n",
            db.path.display()
        )
    );

    // Opening it for writing upgrades it and indexes what it holds.
    let mut store = Store::open(&db.path)?;
    assert_eq!(store.schema_version(), 6);
    store.insert_batch(&[file(5, FileOp::Unlink, "/tmp/dropper", "")])?;
    drop(store);
    let conn = rusqlite::Connection::open(&db.path)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    assert_eq!(version, 6);
    // It also gets stored_ns (schema version 3): 0 for what it held.
    let unknown: i64 =
        conn.query_row("SELECT count(*) FROM events WHERE stored_ns = 0", [], |r| {
            r.get(0)
        })?;
    assert_eq!(unknown, 4);
    drop(conn);
    assert_eq!(seqs(&db, &["--path", "/tmp/dropper"])?, [1, 5]);
    assert_eq!(seqs(&db, &["--ip", "203.0.113.9"])?, [2]);
    assert_eq!(seqs(&db, &["--domain", "example.net"])?, [3]);
    // Opening it again changes nothing.
    drop(Store::open(&db.path)?);
    assert_eq!(seqs(&db, &["--path", "/tmp/dropper"])?, [1, 5]);
    Ok(())
}

/// The indicators the collector keys the stored event `(sensor, seq)` by:
/// (type, text, ip, int).
type IndicatorRow = (String, Option<String>, Option<Vec<u8>>, Option<i64>);

fn indicator_rows(db: &TempDb, sensor: &str, seq: u64) -> anyhow::Result<Vec<IndicatorRow>> {
    use collector::indicators::{IndicatorValue, indicators_of};
    let stored = Store::open_read_only(&db.path)?.query(&collector::EventFilter {
        sensor_id: Some(sensor.to_owned()),
        ..collector::EventFilter::default()
    })?;
    let event = stored
        .iter()
        .find(|e| e.seq == seq)
        .ok_or_else(|| anyhow::anyhow!("seq {seq} is not stored"))?;
    Ok(indicators_of(event)
        .into_iter()
        .map(|i| {
            let kind = i.kind.as_str().to_owned();
            match i.value {
                IndicatorValue::Text(t) => (kind, Some(t), None, None),
                IndicatorValue::Ip(ip) => (kind, None, Some(ip.to_vec()), None),
                IndicatorValue::Int(n) => (kind, None, None, Some(n)),
            }
        })
        .collect())
}

#[tokio::test]
async fn hostile_indicator_values_are_stored_without_crashing() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;

    let huge_path = format!("/tmp/{}", "p".repeat(1024 * 1024));
    let many_labels = vec!["a"; 100_000].join(".");
    let many_answers: Vec<DnsAnswer> = (0..5_000)
        .map(|n| {
            answer(
                &format!("h{n}.flood.example"),
                "A",
                &format!("10.0.{}.{}", n / 256, n % 256),
            )
        })
        .collect();
    let batch = vec![
        // Addresses that are not addresses: stored, not IP-indexed.
        connect(1, ("localhost", 70_000), ("999.1.1.1", 443)),
        connect(2, ("", 0), ("10.0.0.1:443", 0)),
        file(3, FileOp::Create, &huge_path, &"\u{0}".repeat(1000)),
        dns(4, &many_labels, Vec::new()),
        dns(5, "flood.example", many_answers),
        dns(
            6,
            "",
            vec![answer("", "A", ""), answer(".", "AAAA", "::1::2")],
        ),
        file(7, FileOp::Create, "", ""),
    ];
    let ack = stream.send(batch.clone()).await?;
    assert_eq!(ack.acked_seq, 7);
    stream.close();
    stream.end().await?;
    let (summary, db) = server.stop().await?;
    assert_eq!(summary.writer.inserted, 7);

    // Every event is stored whole.
    let stored = Store::open_read_only(&db.path)?.query(&collector::EventFilter::default())?;
    assert_eq!(stored, batch);

    let port = |n: i64| ("port".to_owned(), None, None, Some(n));
    assert_eq!(indicator_rows(&db, SENSOR, 1)?, [port(443)]);
    assert_eq!(indicator_rows(&db, SENSOR, 2)?, []);
    assert_eq!(indicator_rows(&db, SENSOR, 6)?, []);
    assert_eq!(indicator_rows(&db, SENSOR, 7)?, []);
    assert_eq!(seqs(&db, &["--kind", "network"])?, [1, 2]);
    assert_eq!(seqs(&db, &["--ip", "::/0"])?, [5]);

    assert_eq!(seqs(&db, &["--path-prefix", "/tmp/ppp"])?, [3]);
    assert_eq!(indicator_rows(&db, SENSOR, 3)?.len(), 2);
    assert_eq!(seqs(&db, &["--domain", "a.a.a"])?, [4]);

    // At most 1024 answers of one event are indexed: the query name, 1024
    // answer names and 1024 addresses.
    let rows = indicator_rows(&db, SENSOR, 5)?;
    let count = |kind: &str| rows.iter().filter(|r| r.0 == kind).count();
    assert_eq!((count("domain"), count("ip")), (1 + 1024, 1024));
    assert_eq!(seqs(&db, &["--domain", "h1023.flood.example"])?, [5]);
    assert_eq!(
        seqs(&db, &["--domain", "h1024.flood.example"])?,
        Vec::<u64>::new()
    );
    assert_eq!(seqs(&db, &["--ip", "10.0.3.255"])?, [5]);
    assert_eq!(seqs(&db, &["--ip", "10.0.4.0"])?, Vec::<u64>::new());
    assert_eq!(seqs(&db, &["--domain", "flood.example"])?, [5]);
    Ok(())
}
