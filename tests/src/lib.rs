//! Test harness: a real collector on a loopback port with a real database
//! file, and a real sensor (real eBPF programs in the running kernel)
//! shipping to it over gRPC with mutual TLS, as in production (certificates
//! from `collector certs`). Assertions read the store through
//! `collector query`, as an investigator would.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a test waits for an event to reach the store.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A built binary of this workspace: `$NAME_BIN`, else target/debug/NAME
/// (which `cargo xtask test` builds first).
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(p);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debug")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// Every stderr line a child printed so far.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Spawns `cmd` and waits for a stderr line containing `marker`; the rest of
/// stderr keeps being echoed so failures show the child's logs, and kept.
///
/// # Panics
/// The child does not start or print `marker` within [`PATIENCE`].
#[must_use]
pub fn spawn_until(
    mut cmd: Command,
    stdout: Stdio,
    marker: &'static str,
    what: &str,
) -> (Child, String, Log) {
    cmd.stderr(Stdio::piped()).stdout(stdout);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let label = what.to_owned();
    let log = Log::default();
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{label}] {line}");
            kept.lock().expect("log lock").push(line.clone());
            if line.contains(marker)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(line) => (child, line, log),
        Err(_) => {
            let _ = child.kill();
            panic!("{what} did not print {marker:?} within {PATIENCE:?}");
        }
    }
}

/// Waits until a line of `log` contains `text`, and returns that line.
///
/// # Panics
/// None does within [`PATIENCE`].
pub fn wait_for_line(log: &Log, text: &str) -> String {
    wait_for_lines(log, text, 1).swap_remove(0)
}

/// Waits until at least `n` lines of `log` contain `text`, and returns them.
///
/// # Panics
/// Fewer do within [`PATIENCE`].
pub fn wait_for_lines(log: &Log, text: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines: Vec<String> = log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "after {PATIENCE:?}, {} log lines contain {text:?}, not {n}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test CA with a server certificate and client certificates, made by
/// `collector certs` in a temporary directory.
pub struct Certs {
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Certs {
    /// A CA, a server certificate for 127.0.0.1 and a client `client`.
    #[must_use]
    pub fn generate() -> Self {
        Self::generate_for(&["client"])
    }

    /// Like `generate`, with a client certificate for each name.
    #[must_use]
    pub fn generate_for(clients: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("tls");
        let mut cmd = Command::new(binary("collector"));
        cmd.args(["certs", "--out"]).arg(&out);
        for client in clients {
            cmd.args(["--client", client]);
        }
        let done = cmd.output().expect("run collector certs");
        assert!(
            done.status.success(),
            "collector certs failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        Self {
            dir: out,
            _dir: dir,
        }
    }

    /// The same CA, keys and certificates in a directory of their own (a
    /// collector keeps its copy while the test's sensors use the original).
    #[must_use]
    pub fn copy(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(&self.dir).expect("certs dir") {
            let path = entry.expect("certs entry").path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, dir.path().join(name)).expect("copy a cert file");
            }
        }
        Self {
            dir: dir.path().to_owned(),
            _dir: dir,
        }
    }

    #[must_use]
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// `sensor run` flags for client `name` of this CA.
    #[must_use]
    pub fn sensor_args(&self, name: &str) -> Vec<String> {
        let arg = |file: String| self.path(&file).to_str().expect("UTF-8 path").to_owned();
        vec![
            "--ca-file".into(),
            arg("ca.pem".into()),
            "--cert-file".into(),
            arg(format!("{name}.pem")),
            "--key-file".into(),
            arg(format!("{name}.key")),
        ]
    }
}

/// `collector serve` flags for `certs`' server identity, clients of its CA only.
fn tls_args(certs: &Certs) -> Vec<String> {
    let path = |file: &str| certs.path(file).to_str().expect("UTF-8 path").to_owned();
    vec![
        "--tls-cert".into(),
        path("server.pem"),
        "--tls-key".into(),
        path("server.key"),
        "--client-ca".into(),
        path("ca.pem"),
    ]
}

/// A collector with its database in a temporary directory.
pub struct Collector {
    child: Child,
    pub url: String,
    pub db: PathBuf,
    /// Its CA and certificates; None when it serves plaintext.
    pub certs: Option<Certs>,
    pub log: Log,
    /// The `serve` flags it was started with, for a restart.
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// A collector with mutual TLS on a free loopback port.
    #[must_use]
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// A collector with mutual TLS and fresh certificates on `listen`.
    #[must_use]
    pub fn start_on(listen: &str) -> Self {
        Self::start_tls(listen, Certs::generate(), &[])
    }

    /// A collector with mutual TLS: `certs`' server identity, clients of
    /// `certs`' CA only; `extra` arguments for `collector serve`.
    #[must_use]
    pub fn start_tls(listen: &str, certs: Certs, extra: &[&str]) -> Self {
        let mut args = tls_args(&certs);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Self::spawn(listen, "https", &args, Some(certs))
    }

    /// A collector without TLS (loopback only).
    #[must_use]
    pub fn start_plaintext(listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--plaintext".to_owned()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Self::spawn(listen, "http", &args, None)
    }

    /// A collector with mutual TLS on a free loopback port whose database
    /// lives in a new directory under `base`.
    #[must_use]
    pub fn start_in(base: &Path) -> Self {
        let certs = Certs::generate();
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        Self::spawn_in(dir, "127.0.0.1:0", "https", &tls_args(&certs), Some(certs))
    }

    fn spawn(listen: &str, scheme: &str, args: &[String], certs: Option<Certs>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_in(dir, listen, scheme, args, certs)
    }

    fn spawn_in(
        dir: tempfile::TempDir,
        listen: &str,
        scheme: &str,
        args: &[String],
        certs: Option<Certs>,
    ) -> Self {
        let db = dir.path().join("events.db");
        let mut cmd = Command::new(binary("collector"));
        cmd.args(["serve", "--listen", listen, "--db"])
            .arg(&db)
            .args(args);
        let (child, line, log) = spawn_until(cmd, Stdio::null(), "listening on", "collector");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self {
            child,
            url: format!("{scheme}://{addr}"),
            db,
            certs,
            log,
            args: args.to_vec(),
            _dir: dir,
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on, `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> &str {
        self.url.split("://").nth(1).expect("URL with a scheme")
    }

    /// `sensor run` flags that reach this collector as client `client`.
    #[must_use]
    pub fn sensor_args(&self) -> Vec<String> {
        let mut args = vec!["--collector".to_owned(), self.url.clone()];
        match &self.certs {
            Some(certs) => args.extend(certs.sensor_args("client")),
            None => args.push("--plaintext".into()),
        }
        args
    }

    /// Runs `collector ARGS --db DB` and returns its output.
    #[must_use]
    pub fn cli(&self, sub: &str, args: &[&str]) -> Output {
        Command::new(binary("collector"))
            .arg(sub)
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .output()
            .expect("run collector")
    }

    /// Events matching `collector query` filters, as JSON objects.
    #[must_use]
    pub fn query(&self, filters: &[&str]) -> Vec<Value> {
        let out = self.cli("query", filters);
        assert!(
            out.status.success(),
            "collector query {filters:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    /// Polls `query` until `done` accepts what it returns.
    pub fn wait_for(&self, filters: &[&str], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.query(filters);
            if done(&events) {
                return events;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "after {PATIENCE:?}, query {filters:?} still returns {events:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Collector {
    /// Kills the collector with SIGKILL: no shutdown, no last commit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address, database and flags.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(binary("collector"));
        cmd.args(["serve", "--listen", self.addr(), "--db"])
            .arg(&self.db)
            .args(&self.args);
        let (child, _, log) = spawn_until(cmd, Stdio::null(), "listening on", "collector");
        self.child = child;
        self.log = log;
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    // Already reaped (stopped before, then dropped): its pid may be another
    // process's by now.
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A sensor shipping to a collector.
pub struct Sensor {
    child: Child,
    /// Its own spool unless the command named one: a spool left by another
    /// test must never be replayed into this test's collector.
    _spool: Option<tempfile::TempDir>,
    pub log: Log,
}

impl Sensor {
    #[must_use]
    pub fn start(collector: &Collector, extra: &[&str]) -> Self {
        Self::start_as_configured(collector, &[&["--health-interval", "1"], extra].concat())
    }

    /// Like `start`, with the sensor's own health interval (the default
    /// config's) rather than one a second: what a user runs, for measuring.
    #[must_use]
    pub fn start_as_configured(collector: &Collector, extra: &[&str]) -> Self {
        let mut cmd = Command::new(binary("sensor"));
        cmd.arg("run").args(collector.sensor_args()).args(extra);
        Self::spawn(cmd)
    }

    /// Runs a prepared `sensor run` command until its programs are attached.
    #[must_use]
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with_stdout(cmd, Stdio::null())
    }

    /// Like `spawn`, with the sensor's stdout (where `--stdout` writes) going
    /// to `stdout`.
    #[must_use]
    pub fn spawn_with_stdout(mut cmd: Command, stdout: impl Into<Stdio>) -> Self {
        let names_spool = cmd.get_args().any(|a| a == "--spool-dir");
        let spool = (!names_spool).then(|| tempfile::tempdir().expect("spool dir"));
        if let Some(dir) = &spool {
            cmd.arg("--spool-dir").arg(dir.path());
        }
        let (child, _, log) = spawn_until(cmd, stdout.into(), "sensor: capturing", "sensor");
        Self {
            child,
            _spool: spool,
            log,
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the sensor (SIGTERM) and waits for it, keeping the value.
    pub fn stop_now(&mut self) {
        stop(&mut self.child);
    }

    /// Kills the sensor (SIGKILL) without letting it flush: for sensors
    /// whose delivery does not matter, which would wait for acks otherwise.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the sensor as an operator would (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        stop(&mut self.child);
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A collector and a sensor feeding it, with the sensor's own procfs events
/// (processes already running) stored before the test begins.
pub struct Rig {
    pub sensor: Sensor,
    pub collector: Collector,
    _config: Option<tempfile::NamedTempFile>,
}

impl Rig {
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A rig whose sensor reads `toml` as its config file.
    #[must_use]
    pub fn with_config(toml: &str) -> Self {
        let file = tempfile::NamedTempFile::new().expect("config file");
        std::fs::write(file.path(), toml).expect("write config");
        let path = file.path().to_str().expect("UTF-8 temp path").to_owned();
        let mut rig = Self::start_with(&["--config", &path]);
        rig._config = Some(file);
        rig
    }

    /// A rig whose kernel programs copy every kernel object with
    /// `bpf_probe_read_kernel`, as on kernels without plain loads of them
    /// (`capture.direct_kernel_reads = false`).
    #[must_use]
    pub fn with_helper_reads() -> Self {
        Self::with_config("[capture]\ndirect_kernel_reads = false\n")
    }

    /// A rig whose sensor gets `extra` arguments (e.g. `--config PATH`).
    #[must_use]
    pub fn start_with(extra: &[&str]) -> Self {
        Self::with_collector(Collector::start(), extra)
    }

    /// A rig around a collector started by the caller.
    #[must_use]
    pub fn with_collector(collector: Collector, extra: &[&str]) -> Self {
        let sensor = Sensor::start(&collector, extra);
        let me = std::process::id().to_string();
        // This test process was running before the sensor: its procfs record
        // marks the end of the start-up scan.
        collector.wait_for(&["--pid", &me, "--kind", "exec"], |e| !e.is_empty());
        Self {
            sensor,
            collector,
            _config: None,
        }
    }

    /// Every event of `pid`, oldest first, once `done` accepts them.
    pub fn events_of(&self, pid: u32, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.collector.wait_for(&["--pid", &pid.to_string()], done)
    }
}

/// Field accessors that read like the proto.
pub trait EventExt {
    fn kind(&self) -> &'static str;
    fn process(&self) -> &Value;
    fn str_at(&self, pointer: &str) -> &str;
    fn u64_at(&self, pointer: &str) -> u64;
    fn i64_at(&self, pointer: &str) -> i64;
    fn argv(&self) -> Vec<String>;
}

impl EventExt for Value {
    fn kind(&self) -> &'static str {
        [
            "exec", "fork", "exit", "health", "file", "network", "dns", "registry", "gap",
        ]
        .into_iter()
        .find(|k| self.get(k).is_some())
        .unwrap_or("unknown")
    }

    fn process(&self) -> &Value {
        &self["process"]
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }

    /// Numbers, and 64-bit numbers that proto JSON writes as strings.
    fn u64_at(&self, pointer: &str) -> u64 {
        match self.pointer(pointer) {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// Signed numbers, and 64-bit ones written as strings.
    fn i64_at(&self, pointer: &str) -> i64 {
        match self.pointer(pointer) {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    fn argv(&self) -> Vec<String> {
        self.pointer("/process/argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The events of one kind.
#[must_use]
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e.kind() == kind).collect()
}
