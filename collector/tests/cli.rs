//! The `collector` binary: `query`, `tree` and `serve`, with a real SQLite
//! file and a real gRPC client.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use common::{
    Proc, SENSOR, SensorStream, T0, TempDb, exec, execs, fork, path_arg, run_collector,
    sensor_seqs, stdout_lines,
};
use sensor_proto::v1::{Event, collector_client::CollectorClient};

fn init() -> Proc<'static> {
    Proc {
        exec_id: "e-init",
        parent_exec_id: "",
        pid: 1,
        exe: "/sbin/init",
        argv: &["/sbin/init"],
    }
}

fn sh() -> Proc<'static> {
    Proc {
        exec_id: "e-sh",
        parent_exec_id: "e-init",
        pid: 100,
        exe: "/bin/sh",
        argv: &["sh", "-c", "echo hi"],
    }
}

fn echo() -> Proc<'static> {
    Proc {
        exec_id: "e-echo",
        parent_exec_id: "e-sh",
        pid: 101,
        exe: "/bin/echo",
        argv: &["echo", "hi"],
    }
}

/// init -> sh -> echo, stored out of order, plus an exit of echo.
fn family() -> Vec<Event> {
    vec![
        exec(SENSOR, 3, T0 + 3_000, &echo()),
        common::exit(SENSOR, 4, T0 + 4_000, &echo(), 0),
        exec(SENSOR, 1, T0 + 1_000, &init()),
        exec(SENSOR, 2, T0 + 2_000, &sh()),
    ]
}

fn query(db: &TempDb, filters: &[&str]) -> anyhow::Result<Vec<(String, u64)>> {
    let mut args = vec!["query", "--db", path_arg(&db.path)?];
    args.extend_from_slice(filters);
    let out = run_collector(&args)?;
    if !out.status.success() {
        bail!(
            "query {filters:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sensor_seqs(&stdout_lines(&out)?)
}

fn seqs(pairs: &[(String, u64)]) -> Vec<u64> {
    pairs.iter().map(|(_, seq)| *seq).collect()
}

#[test]
fn tree_walks_from_echo_back_to_init() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&family())?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "e-echo"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout)?,
        concat!(
            "e-init pid=1 exe=/sbin/init argv=/sbin/init\n",
            "  e-sh pid=100 exe=/bin/sh argv=sh -c \"echo hi\"\n",
            "    e-echo pid=101 exe=/bin/echo argv=echo hi\n",
        )
    );
    assert_eq!(String::from_utf8(out.stderr)?, "");
    Ok(())
}

#[test]
fn tree_json_prints_each_ancestors_event_root_first() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events = family();
    db.fill(&events)?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "--json", "e-echo"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let expected: Vec<String> = [&events[2], &events[3], &events[0]]
        .iter()
        .map(|e| e.to_json())
        .collect::<Result<_, _>>()?;
    assert_eq!(stdout_lines(&out)?, expected);
    Ok(())
}

#[test]
fn tree_follows_a_process_that_forked_without_exec() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    // sh forks a subshell (same exe and argv, new exec_id) which execs echo.
    let subshell = Proc {
        exec_id: "e-subshell",
        parent_exec_id: "e-sh",
        pid: 150,
        exe: "/bin/sh",
        argv: &["sh", "-c", "echo hi"],
    };
    let echo_in_subshell = Proc {
        exec_id: "e-echo2",
        parent_exec_id: "e-subshell",
        pid: 150,
        exe: "/bin/echo",
        argv: &["echo", "hi"],
    };
    db.fill(&[
        exec(SENSOR, 1, T0 + 1_000, &init()),
        exec(SENSOR, 2, T0 + 2_000, &sh()),
        fork(SENSOR, 3, T0 + 3_000, &subshell),
        exec(SENSOR, 4, T0 + 4_000, &echo_in_subshell),
    ])?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "e-echo2"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout)?,
        concat!(
            "e-init pid=1 exe=/sbin/init argv=/sbin/init\n",
            "  e-sh pid=100 exe=/bin/sh argv=sh -c \"echo hi\"\n",
            "    e-subshell pid=150 exe=/bin/sh argv=sh -c \"echo hi\"\n",
            "      e-echo2 pid=150 exe=/bin/echo argv=echo hi\n",
        )
    );
    Ok(())
}

#[test]
fn tree_stops_where_the_parent_is_not_stored() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&[exec(SENSOR, 2, T0, &sh()), exec(SENSOR, 3, T0, &echo())])?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "e-echo"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "e-sh pid=100 exe=/bin/sh argv=sh -c \"echo hi\"\n  e-echo pid=101 exe=/bin/echo argv=echo hi\n"
    );
    Ok(())
}

#[test]
fn tree_stops_at_a_cycle_and_says_so() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let a = Proc {
        exec_id: "e-a",
        parent_exec_id: "e-b",
        pid: 10,
        exe: "/bin/a",
        argv: &["a"],
    };
    let b = Proc {
        exec_id: "e-b",
        parent_exec_id: "e-a",
        pid: 11,
        exe: "/bin/b",
        argv: &["b"],
    };
    db.fill(&[exec(SENSOR, 1, T0, &a), exec(SENSOR, 2, T0, &b)])?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "e-a"])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "e-b pid=11 exe=/bin/b argv=b\n  e-a pid=10 exe=/bin/a argv=a\n"
    );
    assert_eq!(
        String::from_utf8(out.stderr)?,
        "collector: warning: the ancestry loops back to e-a; stopped there\n"
    );
    Ok(())
}

#[test]
fn tree_of_an_unknown_exec_id_fails_with_exit_code_1() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&family())?;
    let out = run_collector(&["tree", "--db", path_arg(&db.path)?, "e-nope"])?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8(out.stderr)?,
        "collector: error: no event for exec_id \"e-nope\" is stored\n"
    );
    Ok(())
}

#[test]
fn query_prints_every_event_as_json_lines_in_time_order() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let events = family();
    let before = common::unix_ns_now()?;
    db.fill(&events)?;
    let after = common::unix_ns_now()?;
    let out = run_collector(&["query", "--db", path_arg(&db.path)?])?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let expected: Vec<String> = [&events[2], &events[3], &events[0], &events[1]]
        .iter()
        .map(|e| e.to_json())
        .collect::<Result<_, _>>()?;
    // Each event's own JSON, then when it was stored (one batch, one time).
    let (printed, stored_ns): (Vec<String>, Vec<i64>) = stdout_lines(&out)?
        .iter()
        .map(|line| common::split_stored_ns(line))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    assert_eq!(printed, expected);
    assert!(
        stored_ns.iter().all(|&ns| ns == stored_ns[0]),
        "{stored_ns:?}"
    );
    assert!((before..=after).contains(&stored_ns[0]), "{stored_ns:?}");
    // Proto field names, uint64 as strings, RFC 3339 time.
    let first: serde_json::Value = serde_json::from_str(&expected[0])?;
    assert_eq!(first["sensor_id"], "sensor-a");
    assert_eq!(first["seq"], "1");
    assert_eq!(first["time"], "2023-11-14T22:13:20.000001+00:00");
    assert_eq!(first["process"]["exec_id"], "e-init");
    Ok(())
}

#[test]
fn query_filters_by_exe_prefix_and_pid() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let ls = |exec_id, pid, exe| Proc {
        exec_id,
        parent_exec_id: "e-sh",
        pid,
        exe,
        argv: &["x"],
    };
    db.fill(&[
        exec(SENSOR, 1, T0 + 1, &ls("e1", 42, "/usr/bin/ls")),
        exec(SENSOR, 2, T0 + 2, &ls("e2", 42, "/usr/sbin/sshd")),
        exec(SENSOR, 3, T0 + 3, &ls("e3", 43, "/usr/bin/cat")),
        exec(SENSOR, 4, T0 + 4, &ls("e4", 42, "/usr/bin/id")),
        exec(SENSOR, 5, T0 + 5, &ls("e5", 42, "/USR/BIN/ls")),
        exec(SENSOR, 6, T0 + 6, &ls("e6", 42, "/usr/bin[x]/ls")),
    ])?;
    assert_eq!(
        seqs(&query(&db, &["--exe-prefix", "/usr/bin/", "--pid", "42"])?),
        [1, 4]
    );
    assert_eq!(
        seqs(&query(&db, &["--exe-prefix", "/usr/bin/"])?),
        [1, 3, 4]
    );
    assert_eq!(seqs(&query(&db, &["--exe-prefix", "/usr/bin["])?), [6]);
    assert_eq!(seqs(&query(&db, &["--pid", "43"])?), [3]);
    assert_eq!(seqs(&query(&db, &["--exe", "/usr/bin/ls"])?), [1]);
    assert_eq!(seqs(&query(&db, &["--pid", "44"])?), Vec::<u64>::new());
    Ok(())
}

#[test]
fn query_filters_by_host_sensor_exec_ids_and_kind() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let mut other_host = exec("sensor-b", 1, T0 + 5_000, &sh());
    other_host.host_name = "db-1".into();
    let mut events = family();
    events.push(other_host);
    db.fill(&events)?;
    assert_eq!(
        query(&db, &["--host", "db-1"])?,
        [("sensor-b".to_owned(), 1)]
    );
    assert_eq!(seqs(&query(&db, &["--sensor-id", SENSOR])?), [1, 2, 3, 4]);
    assert_eq!(seqs(&query(&db, &["--exec-id", "e-echo"])?), [3, 4]);
    assert_eq!(
        seqs(&query(&db, &["--exec-id", "e-echo", "--kind", "exit"])?),
        [4]
    );
    assert_eq!(
        query(&db, &["--parent-exec-id", "e-init"])?,
        [(SENSOR.to_owned(), 2), ("sensor-b".to_owned(), 1)]
    );
    assert_eq!(seqs(&query(&db, &["--kind", "health"])?), Vec::<u64>::new());
    Ok(())
}

#[test]
fn query_filters_by_time_range_and_limits() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&execs(SENSOR, 1..=10))?; // seq n at T0 + n µs
    let at = |seq: u64| (T0 + seq * 1000).to_string();
    assert_eq!(
        seqs(&query(&db, &["--since", &at(3), "--until", &at(6)])?),
        [3, 4, 5]
    );
    assert_eq!(
        seqs(&query(
            &db,
            &[
                "--since",
                "2023-11-14T22:13:20.000008Z",
                "--until",
                "2023-11-15T00:13:20.00001+02:00",
            ]
        )?),
        [8, 9]
    );
    assert_eq!(seqs(&query(&db, &["--limit", "2"])?), [1, 2]);
    assert_eq!(
        seqs(&query(&db, &["--since", &at(5), "--limit", "3"])?),
        [5, 6, 7]
    );
    Ok(())
}

#[test]
fn query_of_a_missing_database_fails_with_exit_code_2() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let out = run_collector(&["query", "--db", path_arg(&db.path)?])?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8(out.stderr)?,
        format!(
            "collector: error: database {} does not exist\n",
            db.path.display()
        )
    );
    assert!(!db.path.exists(), "query created the database");
    Ok(())
}

#[test]
fn bad_flags_exit_with_code_2() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&family())?;
    let path = path_arg(&db.path)?;
    for args in [
        vec!["query", "--db", path, "--kind", "open"],
        vec!["query", "--db", path, "--since", "last tuesday"],
        vec!["query", "--db", path, "--pid", "-1"],
        vec!["tree", "--db", path],
        vec!["serve"],
        vec!["frobnicate"],
    ] {
        let out = run_collector(&args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(out.stdout, b"", "{args:?}");
    }
    Ok(())
}

/// `collector serve` as a child process, with its stderr read line by line.
struct ServeProcess {
    child: std::process::Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl ServeProcess {
    fn start(db: &TempDb) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
            .args([
                "serve",
                "--plaintext",
                "--listen",
                "127.0.0.1:0",
                "--db",
                path_arg(&db.path)?,
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let prefix = "collector listening on ";
        let expected_suffix = format!(" (PLAINTEXT), db {}", db.path.display());
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .context("collector serve did not print its startup line")?;
            if let Some(rest) = line.strip_prefix(prefix) {
                let addr = rest
                    .strip_suffix(&expected_suffix)
                    .with_context(|| format!("unexpected startup line {line:?}"))?;
                let addr: SocketAddr = addr.parse()?;
                return Ok(Self {
                    child,
                    addr,
                    stderr: rx,
                });
            }
        }
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill failed: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the process to exit; its exit code and remaining stderr.
    fn wait(mut self) -> anyhow::Result<(Option<i32>, Vec<String>)> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                let rest = self.stderr.try_iter().collect();
                return Ok((status.code(), rest));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("collector serve did not exit within 15 s")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_prints_its_port_stores_batches_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let server = ServeProcess::start(&db)?;
    assert_ne!(server.addr.port(), 0);
    // Worker threads keep driving the client's connection between block_on
    // calls, as a sensor's runtime would (hyper's graceful shutdown waits for
    // the client to answer a PING).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let url = format!("http://{}", server.addr);
    let mut stream = runtime.block_on(async {
        let mut client = CollectorClient::connect(url).await?;
        let mut stream = SensorStream::open(&mut client).await?;
        let ack = stream.send(family()).await?;
        assert_eq!(ack.acked_seq, 4);
        anyhow::Ok(stream)
    })?;

    // SIGTERM while the sensor's stream is still open.
    server.signal(libc::SIGTERM)?;
    let end = runtime.block_on(stream.end());
    assert_eq!(end.err().map(|s| s.code()), Some(tonic::Code::Unavailable));
    let (code, _stderr) = server.wait()?;
    assert_eq!(code, Some(0));

    assert_eq!(seqs(&query(&db, &[])?), [1, 2, 3, 4]);
    Ok(())
}

#[test]
fn serve_exits_2_when_the_address_is_taken() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let db = TempDb::new()?;
    let out = run_collector(&[
        "serve",
        "--plaintext",
        "--listen",
        &addr,
        "--db",
        path_arg(&db.path)?,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.starts_with(&format!("collector: error: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    Ok(())
}

#[test]
fn serve_exits_2_when_the_database_cannot_be_opened() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    std::fs::write(
        &db.path,
        b"this is not an SQLite database, it is a text file\n",
    )?;
    let out = run_collector(&[
        "serve",
        "--plaintext",
        "--listen",
        "127.0.0.1:0",
        "--db",
        path_arg(&db.path)?,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.starts_with(&format!(
            "collector: error: cannot open database {}: file is not a database",
            db.path.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let missing_dir = db.dir.path().join("no/such/dir/events.db");
    let out = run_collector(&[
        "serve",
        "--plaintext",
        "--listen",
        "127.0.0.1:0",
        "--db",
        path_arg(&missing_dir)?,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr)?,
        format!(
            "collector: error: cannot create database {}: No such file or directory (os error 2)\n",
            missing_dir.display()
        )
    );
    Ok(())
}

#[test]
fn query_stops_quietly_when_its_reader_goes_away() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    db.fill(&execs(SENSOR, 1..=20_000))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["query", "--db", path_arg(&db.path)?])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?; // then drops the pipe
    assert!(first.contains("\"seq\":\"1\""), "{first}");
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stderr)?, "");
    Ok(())
}

#[test]
fn query_of_a_directory_fails_with_exit_code_2() -> anyhow::Result<()> {
    let db = TempDb::new()?;
    let dir = path_arg(db.dir.path())?;
    let out = run_collector(&["query", "--db", dir])?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr)?,
        format!("collector: error: database {dir} is not a file\n")
    );
    Ok(())
}
