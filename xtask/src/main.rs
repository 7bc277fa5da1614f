//! `cargo xtask`: everything a new machine needs, then build, run, test and fuzz.
//!
//! `setup` is idempotent and is called by `run` and `test`, so a fresh machine
//! needs nothing but this repository and a Rust toolchain.

mod fuzz;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set up, build, run and test the sensor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building needs: nightly rust-src, bpf-linker, Debian packages.
    Setup,
    /// Build the sensor (with its eBPF programs) and the collector.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run a local collector and a sensor feeding it, until Ctrl-C.
    Run {
        /// Address the collector listens on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: String,
        /// The collector's database file.
        #[arg(long, default_value = "sensor-data/events.db")]
        db: PathBuf,
        /// Extra arguments for `sensor run`, after `--`.
        #[arg(last = true)]
        sensor_args: Vec<String>,
    },
    /// Run every test: unit tests, a short fuzz run of every fuzz target,
    /// then the integration tests against the real kernel (as root, one at
    /// a time).
    Test {
        /// Only run tests whose name contains this (and skip fuzzing).
        filter: Option<String>,
    },
    /// Build the cargo-fuzz targets (nightly) and run each on its committed
    /// corpus; fails on the first crash, naming the input that caused it.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Add the run's inputs that reach new coverage to the committed
        /// corpus (fuzz/corpus/<target>).
        #[arg(long)]
        merge: bool,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Lint the crates that build for Windows (clippy -D warnings) and link
    /// the Windows sensor.exe with MinGW.
    Windows {
        #[arg(long)]
        release: bool,
    },
    /// Benchmarks: the sensor against a floor program and auditd, in one
    /// run; writes docs/benchmarks.md and docs/benchmarks.svg (installs
    /// auditd and perf first; needs root).
    Bench {
        /// Seconds instead of minutes: checks the benchmark, not the sensor.
        #[arg(long)]
        quick: bool,
        /// Where the report goes (the chart goes beside it as .svg).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs a command to completion, failing on a non-zero exit.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn is_root() -> bool {
    // /proc/self/status: "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "sensor-user",
        "--package",
        "collector",
    ]);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)
}

fn privileged(program: &Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("-E").arg(program);
        cmd
    }
}

fn wait_for_stop(children: &mut [(&str, Child)]) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }
    loop {
        for (name, child) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                if !stop.load(Ordering::Relaxed) {
                    eprintln!("xtask: {name} exited with {status}");
                }
                stop.store(true, Ordering::Relaxed);
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stop the sensor first so its last events reach the collector.
    for (_, child) in children.iter_mut() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }
    Ok(())
}

fn run(listen: &str, db: &Path, sensor_args: &[String]) -> Result<()> {
    setup::setup()?;
    build(true)?;
    let root = workspace_root();
    let bin = root.join("target/release");
    let db = if db.is_absolute() {
        db.to_path_buf()
    } else {
        root.join(db)
    };
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A test CA and certificates, made once (kept files are reused), so
    // that even the local pair talks mutual TLS as in production.
    let tls = root.join("sensor-data/tls");
    run_cmd(
        Command::new(bin.join("collector"))
            .args(["certs", "--out"])
            .arg(&tls)
            .stdout(std::process::Stdio::null()),
    )?;
    // Its own process group: Ctrl-C reaches the sensor, and the collector
    // stops only after the sensor delivered its last events.
    let collector = Command::new(bin.join("collector"))
        .args(["serve", "--listen", listen, "--db"])
        .arg(&db)
        .arg("--tls-cert")
        .arg(tls.join("server.pem"))
        .arg("--tls-key")
        .arg(tls.join("server.key"))
        .arg("--client-ca")
        .arg(tls.join("ca.pem"))
        .process_group(0)
        .spawn()
        .context("starting the collector")?;
    // The spool sits next to the database, so a local run keeps its state
    // across restarts without touching /var/lib.
    let spool = db.with_file_name("spool");
    let sensor = privileged(&bin.join("sensor"))
        .args(["run", "--collector", &format!("https://{listen}")])
        .arg("--ca-file")
        .arg(tls.join("ca.pem"))
        .arg("--cert-file")
        .arg(tls.join("client.pem"))
        .arg("--key-file")
        .arg(tls.join("client.key"))
        .arg("--spool-dir")
        .arg(&spool)
        .args(sensor_args)
        .spawn()
        .context("starting the sensor")?;
    eprintln!(
        "xtask: sensor -> collector {listen} (mutual TLS, certificates in {}) -> {}\n\
         xtask: search it with e.g. `target/release/collector query --db {} --kind exec --limit 20`\n\
         xtask: Ctrl-C stops both",
        tls.display(),
        db.display(),
        db.display()
    );
    wait_for_stop(&mut [("sensor", sensor), ("collector", collector)])
}

/// The crates of the Windows sensor.
const WINDOWS_CRATES: [&str; 4] = ["sensor-common", "sensor-proto", "sensor-etw", "sensor-user"];

fn windows(release: bool) -> Result<()> {
    let mut lint = cargo();
    lint.args(["clippy", "--target", setup::WINDOWS_TARGET]);
    for krate in WINDOWS_CRATES {
        lint.args(["-p", krate]);
    }
    run_cmd(lint.args(["--", "-D", "warnings"]))?;
    let mut link = cargo();
    link.args([
        "build",
        "--target",
        setup::WINDOWS_TARGET,
        "-p",
        "sensor-user",
        "--bin",
        "sensor",
    ]);
    if release {
        link.arg("--release");
    }
    run_cmd(&mut link)?;
    let exe = workspace_root()
        .join("target")
        .join(setup::WINDOWS_TARGET)
        .join(if release { "release" } else { "debug" })
        .join("sensor.exe");
    eprintln!("xtask: linked {}", exe.display());
    Ok(())
}

/// Builds release binaries and runs tests/src/bin/sensor-bench.
fn bench(quick: bool, out: &Path) -> Result<()> {
    setup::setup()?;
    setup::ensure_bench_tools()?;
    build(true)?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "sensor-bench",
    ]))?;
    let root = workspace_root();
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        root.join(out)
    };
    let mut cmd = privileged(&root.join("target/release/sensor-bench"));
    cmd.current_dir(&root)
        .arg("--out")
        .arg(&out)
        .arg("--chart")
        .arg(out.with_extension("svg"));
    if quick {
        cmd.arg("--quick");
    }
    run_cmd(&mut cmd)
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const TEST_FUZZ_SECONDS: u64 = 10;

fn test(filter: Option<&str>) -> Result<()> {
    setup::setup()?;
    // Unit tests of every crate but the integration suite, in parallel.
    let mut unit = cargo();
    unit.args(["test", "--workspace", "--exclude", "tests"]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    run_cmd(&mut unit)?;
    // The parsers of untrusted bytes, briefly: the committed corpus replays
    // every past crash, and a few seconds of mutation catch shallow ones.
    // A filtered run is after particular tests, not this.
    if filter.is_none() {
        fuzz::fuzz(TEST_FUZZ_SECONDS, &[], false)?;
    }
    // The Windows sensor: linted and linked (ETW itself cannot run here).
    windows(false)?;
    // The integration suite drives the real binaries.
    build(false)?;
    let mut integration = cargo();
    integration.args(["test", "--package", "tests"]);
    if !is_root() {
        eprintln!("xtask: integration tests load eBPF programs; running them with sudo");
        integration.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    integration.arg("--");
    if let Some(f) = filter {
        integration.arg(f);
    }
    // One at a time: they share the kernel's tracepoints and the host's processes.
    integration.arg("--test-threads=1");
    run_cmd(&mut integration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => setup::setup().and_then(|()| build(release)),
        Cmd::Run {
            listen,
            db,
            sensor_args,
        } => run(&listen, &db, &sensor_args),
        Cmd::Test { filter } => test(filter.as_deref()),
        Cmd::Fuzz {
            seconds,
            merge,
            targets,
        } => setup::setup().and_then(|()| fuzz::fuzz(seconds, &targets, merge)),
        Cmd::Windows { release } => setup::setup().and_then(|()| windows(release)),
        Cmd::Bench { quick, out } => bench(quick, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
