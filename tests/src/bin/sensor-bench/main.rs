//! `cargo xtask bench`: what the sensor costs a host, beside a floor program
//! and beside auditd, measured in one run on this machine. Writes
//! docs/benchmarks.md and docs/benchmarks.svg.
//!
//! Modes: bare (nothing attached), floor (see floor.rs), sensor (the real
//! sensor shipping to a real collector over mTLS), auditd (auditd.rs). Each
//! mode runs the same workloads (workload.rs); bpf_stats give each program's
//! in-kernel cost. Then the capacity ramp, the collector alone, memory with
//! 10,000 live processes, and latency from the collector's commit times.

mod auditd;
mod capacity;
mod floor;
mod kprofile;
mod kstats;
mod load;
mod procstat;
mod report;
mod sink;
mod store;
mod workload;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tests::{Collector, Sensor};

use crate::{
    report::{CpuRow, KernelRow, Latency, Memory, Report, WorkloadRow},
    store::Store,
    workload::{Run, Scratch},
};

#[derive(Parser)]
#[command(about = "Benchmarks the sensor against a floor program and auditd")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Short runs (seconds, not minutes) to check the benchmark itself.
    #[arg(long)]
    quick: bool,
    /// The markdown report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The chart (SVG); the report links it by file name.
    #[arg(long, default_value = "docs/benchmarks.svg")]
    chart: PathBuf,
    /// Skip auditd (e.g. where it cannot be installed).
    #[arg(long)]
    no_auditd: bool,
    /// Run only these parts (repeatable), print the report and write no
    /// files: for profiling one part without the whole run.
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Capacity: these steps (events/s, 0 = as fast as possible, repeatable)
    /// instead of the ramp, to the sink only: for A/B runs of the pipeline.
    #[arg(long)]
    rate: Vec<u64>,
}

/// The benchmark's parts, in the order a full run takes them.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// bare / floor / sensor / auditd over the workloads (and kernel cost, CPU, latency).
    Modes,
    /// The sensor pipeline's lossless rate and its loss accounting.
    Capacity,
    /// The collector alone.
    Collector,
    /// Sensor RSS with many live processes.
    Memory,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) Load the floor programs and drain their ring until killed.
    Floor {
        #[arg(long, default_value_t = 8 << 20)]
        ring_bytes: u32,
    },
    /// Run one workload alone (0-5, in the report's order) for some seconds,
    /// e.g. to profile a sensor started by hand.
    Workload {
        index: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// (internal) Print the run as `run <iterations> <wall ns> <cpu ns>`
        /// for the benchmark that spawned this process.
        #[arg(long, hide = true)]
        raw: bool,
    },
    /// (internal) Acknowledge a sensor's batches without storing them, for
    /// the sensor-alone capacity run; counts file events under `prefix`.
    Sink {
        #[arg(long)]
        certs: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        state: PathBuf,
    },
}

/// How long each measurement runs.
struct Durations {
    loop_time: Duration,
    exec_time: Duration,
    /// The fixed-rate exec loops, longer: they decide the sensor's CPU
    /// figure, which the sensor's periodic work (a health report every 10 s)
    /// swung by a point in 8-s windows.
    rate_time: Duration,
    step_time: Duration,
    confirm_time: Duration,
    collector_time: Duration,
    processes: usize,
}

impl Durations {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                loop_time: Duration::from_secs(1),
                exec_time: Duration::from_secs(1),
                rate_time: Duration::from_secs(1),
                step_time: Duration::from_secs(2),
                confirm_time: Duration::from_secs(3),
                collector_time: Duration::from_secs(2),
                processes: 500,
            }
        } else {
            Self {
                loop_time: Duration::from_secs(4),
                exec_time: Duration::from_secs(8),
                rate_time: Duration::from_secs(20),
                step_time: Duration::from_secs(10),
                confirm_time: Duration::from_secs(30),
                collector_time: Duration::from_secs(15),
                processes: 10_000,
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Floor,
    Sensor,
    Auditd,
}

const WORKLOADS: [&str; 6] = [
    "open/write/close (tmpfs)",
    "TCP connect+accept (loopback)",
    "exec /bin/true, 100/s",
    "exec /bin/true, 1600/s",
    "exec /bin/true, as fast as possible",
    "rename, chmod, bind+listen (tmpfs, loopback)",
];

/// The auditd rule key each workload's events must show up under.
const AUDIT_KEYS: [&str; 6] = [
    "bench-open",
    "bench-net",
    "bench-exec",
    "bench-exec",
    "bench-exec",
    "bench-file",
];

/// How long workload `i` runs.
fn workload_time(i: usize, d: &Durations) -> Duration {
    match i {
        0 | 1 | 5 => d.loop_time,
        2 | 3 => d.rate_time,
        _ => d.exec_time,
    }
}

/// Runs workload `i` in this process for `time`.
fn run_workload(i: usize, time: Duration) -> Result<Run> {
    match i {
        0 => workload::open_write_close(&Scratch::new("loop")?, time),
        1 => workload::tcp_connect(time),
        2 => workload::exec_loop(Some(100), time),
        3 => workload::exec_loop(Some(1600), time),
        4 => workload::exec_loop(None, time),
        _ => workload::renames_and_listens(&Scratch::new("changes")?, time),
    }
}

/// Runs workload `i` in a process of its own, started after the mode is in
/// place. auditd needs that: the kernel gives a task an audit context only
/// when it is created after auditing was first enabled since boot
/// (`audit_alloc` in kernel/auditsc.c returns early while
/// `audit_ever_enabled` is false), so on a fresh boot a loop in this process
/// would run unaudited and auditd would look free.
fn run_workload_apart(i: usize, d: &Durations) -> Result<Run> {
    let exe = std::env::current_exe().context("locating sensor-bench")?;
    let out = Command::new(exe)
        .args(["workload", &i.to_string(), "--raw", "--seconds"])
        .arg(workload_time(i, d).as_secs().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a workload process")?;
    if !out.status.success() {
        bail!("workload {} failed ({})", WORKLOADS[i], out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .with_context(|| format!("workload {} printed no run: {text:?}", WORKLOADS[i]))?;
    let n: Vec<u64> = line
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("workload run line {line:?}"))?;
    let [iterations, wall_ns, cpu_ns] = n[..] else {
        bail!("workload run line {line:?} has not three numbers");
    };
    Ok(Run {
        iterations,
        elapsed: Duration::from_nanos(wall_ns),
        cpu: Duration::from_nanos(cpu_ns),
    })
}

/// Everything the sensor mode learns beside the workload runs.
#[derive(Default)]
struct SensorSide {
    cpu: Vec<CpuRow>,
    latency: Vec<Latency>,
    rest_kib: u64,
}

/// A sensor config file that outlives the sensor reading it.
fn config_file(toml: &str) -> Result<tempfile::NamedTempFile> {
    let file = tempfile::NamedTempFile::new().context("config file")?;
    std::fs::write(file.path(), toml).context("writing the config")?;
    Ok(file)
}

fn cpu_ms(pid: u32) -> f64 {
    procstat::cpu(pid).unwrap_or_default().as_secs_f64() * 1e3
}

/// The workloads under one mode; the sensor mode also measures CPU, latency
/// and memory at rest.
fn run_mode(
    mode: Mode,
    d: &Durations,
    side: &mut SensorSide,
    notes: &mut Vec<String>,
) -> Result<(Vec<Option<Run>>, kstats::Snapshot)> {
    let _floor = match mode {
        Mode::Floor => Some(floor::Floor::start(8 << 20)?),
        _ => None,
    };
    let _auditd = match mode {
        Mode::Auditd => Some(auditd::Auditd::start()?),
        _ => None,
    };
    let rig = match mode {
        Mode::Sensor => {
            let collector = Collector::start();
            // The default config, health interval included: what users run.
            let sensor = Sensor::start_as_configured(&collector, &["--sensor-id", "bench-modes"]);
            std::thread::sleep(Duration::from_secs(3));
            side.rest_kib = procstat::rss_kib(sensor.pid()).unwrap_or(0);
            Some((collector, sensor))
        }
        _ => None,
    };
    let db = match &rig {
        Some((c, _)) => {
            let store = Store::open(&c.db)?;
            store.settle(Duration::from_secs(2), Duration::from_secs(60))?;
            Some(store)
        }
        None => None,
    };
    let before = kstats::snapshot();
    let mut runs = Vec::new();
    for (i, name) in WORKLOADS.iter().enumerate() {
        eprintln!("bench: {name} ...");
        let pids = rig.as_ref().map(|(c, s)| (c.pid(), s.pid()));
        let cpu0 = pids.map(|(c, s)| (cpu_ms(c), cpu_ms(s)));
        let first = match &db {
            Some(db) => db.last_id()?,
            None => 0,
        };
        let mark = (mode == Mode::Auditd).then(auditd::LogMark::now);
        let ticks0 = procstat::machine_ticks();
        let run = run_workload_apart(i, d)?;
        let machine_busy = procstat::busy_between(ticks0, procstat::machine_ticks());
        if let Some(mark) = mark {
            let key = AUDIT_KEYS[i];
            if !mark.recorded_since(key) {
                notes.push(format!(
                    "auditd logged no `{key}` record during \"{name}\": that run was not audited, \
                     so its auditd figure is left out."
                ));
                runs.push(None);
                continue;
            }
        }
        let during = pids.map(|(_, s)| cpu_ms(s));
        eprintln!(
            "bench:   {} iterations, {:.2} µs each, {:.2} CPU µs each",
            run.iterations,
            run.us_per_iteration(),
            run.cpu_us_per_iteration()
        );
        if let (Some(db), Some((c, s)), Some((c0, s0)), Some(during)) = (&db, pids, cpu0, during) {
            let last = db.settle(Duration::from_secs(2), Duration::from_secs(120))?;
            let events = db.count_after(first)?;
            side.cpu.push(CpuRow {
                workload: (*name).to_owned(),
                events,
                seconds: run.elapsed.as_secs_f64(),
                sensor_window_ms: during - s0,
                sensor_ms: cpu_ms(s) - s0,
                collector_ms: cpu_ms(c) - c0,
            });
            let lat = db.latencies_ms(first, last)?;
            side.latency.push(Latency {
                label: (*name).to_owned(),
                events: lat.len(),
                events_per_s: events as f64 / run.elapsed.as_secs_f64().max(1e-9),
                machine_busy,
                p50_ms: store::quantile(&lat, 0.5),
                p99_ms: store::quantile(&lat, 0.99),
            });
        }
        runs.push(Some(run));
    }
    let after = kstats::snapshot();
    Ok((runs, kstats::delta(&before, &after)))
}

/// The capacity ramp: a sensor and a collector per step (so the sensor's
/// final health report covers exactly that step).
/// A tmpfs mounted for the benchmark; unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: &str) -> Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g", "sensor-bench", path])
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t tmpfs {path} failed");
        }
        Ok(Self(PathBuf::from(path)))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `perf record -g` in the background, until [`Perf::finish`] or
/// [`Perf::stop`].
struct Perf {
    child: Option<std::process::Child>,
    out: PathBuf,
}

impl Perf {
    /// Records one process.
    fn start(pid: u32, out: &Path) -> Self {
        Self::record(&["-F", "499", "-p", &pid.to_string()], out)
    }

    /// Records with these further `perf record` arguments (e.g. `-a`).
    fn record(args: &[&str], out: &Path) -> Self {
        let child = Command::new("perf")
            .args(["record", "-g", "-o"])
            .arg(out)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        Self {
            child,
            out: out.to_owned(),
        }
    }

    /// Whether perf started.
    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Ends the recording; `None` when perf never started, an error when it
    /// failed. SIGINT: perf writes its file and exits by raising the signal
    /// it caught again.
    fn stop(&mut self) -> Option<Result<()>> {
        let child = self.child.as_mut()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        Some(match child.wait() {
            Ok(status)
                if status.success()
                    || std::os::unix::process::ExitStatusExt::signal(&status)
                        == Some(libc::SIGINT) =>
            {
                Ok(())
            }
            Ok(status) => Err(anyhow::anyhow!("perf record failed ({status})")),
            Err(e) => Err(anyhow::Error::new(e).context("waiting for perf record")),
        })
    }

    /// Stops the recording and returns its top symbols, by thread; `during`
    /// says what ran.
    fn finish(mut self, during: &str) -> String {
        if self.stop().is_none() {
            return "perf is not available on this machine".into();
        }
        perf_report(&self.out, during)
    }
}

fn perf_report(data: &Path, during: &str) -> String {
    match Command::new("perf")
        .args(["report", "-i"])
        .arg(data)
        .args([
            "--stdio",
            "--no-children",
            "--sort",
            "comm,dso,symbol",
            "--percent-limit",
            "1.5",
            "-g",
            "none",
        ])
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty() && (!l.starts_with('#') || l.contains("Samples")))
                .take(30)
                .map(|l| l.trim_end_matches([' ', '-']))
                .collect();
            format!(
                "perf record -F 499 -g -p <pid> {during} (top symbols by thread, self time):\n{}",
                lines.join("\n")
            )
        }
        Ok(out) => format!(
            "perf report failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("perf report failed: {e}"),
    }
}

/// Sensors streaming to the collector at once when it is measured alone: a
/// collector serves many sensors, and one sensor keeps only 8 batches in
/// flight, so one stream alone measures its round trips more than the
/// collector (its writer idled a fifth to a third of the time).
pub const COLLECTOR_SENSORS: usize = 4;

/// The collector alone under its sensors' load.
fn collector_capacity(d: &Durations, report: &mut Report) -> Result<()> {
    let collector = Collector::start();
    let certs = collector
        .certs
        .as_ref()
        .context("a TLS collector")?
        .dir
        .clone();
    let pid = collector.pid();
    let cpu0 = cpu_ms(pid);
    let rt = tokio::runtime::Runtime::new()?;
    let perf = Perf::start(pid, Path::new("/tmp/sensor-bench-collector.perf"));
    let run = rt.block_on(load::flood(
        &collector.url,
        &certs,
        "client",
        COLLECTOR_SENSORS,
        d.collector_time,
        512,
    ))?;
    let cpu = cpu_ms(pid) - cpu0;
    report.collector_profile = perf.finish("of the collector under the client's load");
    let store = Store::open(&collector.db)?;
    report.collector_events = run.acked;
    report.collector_stored = store.count_after(0)?;
    report.collector_rate = run.acked as f64 / run.elapsed.as_secs_f64();
    report.collector_cpu_percent = cpu / 10.0 / run.elapsed.as_secs_f64();
    eprintln!(
        "bench: collector stored {:.0} events/s ({} acked, {} in the database)",
        report.collector_rate, run.acked, report.collector_stored
    );
    Ok(())
}

/// Sensor RSS with many live processes it tracks.
fn memory(d: &Durations, report: &mut Report) -> Result<()> {
    let collector = Collector::start();
    let sensor = Sensor::start(&collector, &["--sensor-id", "bench-memory"]);
    let store = Store::open(&collector.db)?;
    store.settle(Duration::from_secs(2), Duration::from_secs(60))?;
    eprintln!("bench: spawning {} sleeping processes", d.processes);
    let sleepers = workload::Sleepers::spawn(d.processes)?;
    store.settle(Duration::from_secs(3), Duration::from_secs(300))?;
    report.memory.processes = sleepers.len();
    report.memory.processes_kib = procstat::rss_kib(sensor.pid()).unwrap_or(0);
    report.memory.processes_peak_kib = procstat::peak_rss_kib(sensor.pid()).unwrap_or(0);
    drop(sleepers);
    eprintln!(
        "bench: sensor RSS {} KiB with {} processes (peak {} KiB)",
        report.memory.processes_kib, report.memory.processes, report.memory.processes_peak_kib
    );
    Ok(())
}

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .map_or_else(String::new, |k| format!("{:.1} GiB", k as f64 / 1048576.0));
    let cmd = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    vec![
        ("Date (UTC)".into(), cmd("date", &["-u", "+%Y-%m-%d %H:%M"])),
        ("Kernel".into(), cmd("uname", &["-rm"])),
        ("CPU".into(), format!("{model}, {cores} logical cores")),
        ("Memory".into(), mem),
        (
            "Commit".into(),
            cmd("git", &["rev-parse", "--short", "HEAD"]),
        ),
        (
            "auditd".into(),
            cmd("sh", &["-c", "auditctl -v 2>/dev/null"]),
        ),
    ]
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Floor { ring_bytes }) => return floor::run(ring_bytes),
        Some(Cmd::Sink {
            certs,
            prefix,
            state,
        }) => return sink::run(&certs, prefix, state),
        Some(Cmd::Workload {
            index,
            seconds,
            raw,
        }) => {
            let name = WORKLOADS.get(index).context("no such workload")?;
            let run = run_workload(index, Duration::from_secs(seconds))?;
            if raw {
                println!(
                    "run {} {} {}",
                    run.iterations,
                    run.elapsed.as_nanos(),
                    run.cpu.as_nanos()
                );
                return Ok(());
            }
            println!(
                "{name}: {} iterations, {:.2} µs each, {:.2} CPU µs each",
                run.iterations,
                run.us_per_iteration(),
                run.cpu_us_per_iteration()
            );
            return Ok(());
        }
        None => {}
    }
    // SAFETY: `geteuid` has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and runs auditd: run it as root");
    }
    point_at_release_binaries();
    let d = Durations::new(cli.quick);
    let auditd_ok = !cli.no_auditd && auditd::installed();
    let _stats = kstats::enable()?;
    let mut report = Report {
        machine: machine(),
        kernel: Vec::new(),
        kernel_profile: std::collections::BTreeMap::new(),
        workloads: WORKLOADS
            .iter()
            .enumerate()
            .map(|(i, n)| WorkloadRow {
                name: (*n).to_owned(),
                by_cpu: i == 2 || i == 3,
                bare: None,
                floor: None,
                sensor: None,
                auditd: None,
            })
            .collect(),
        cpu: Vec::new(),
        capacity: Vec::new(),
        capacity_alone: Vec::new(),
        capacity_bare: None,
        collector_rate: 0.0,
        collector_cpu_percent: 0.0,
        collector_events: 0,
        collector_stored: 0,
        memory: Memory {
            rest_kib: 0,
            load_peak_kib: 0,
            processes: 0,
            processes_kib: 0,
            processes_peak_kib: 0,
        },
        latency: Vec::new(),
        profile: String::new(),
        collector_profile: String::new(),
        auditd_rules: auditd::RULES.iter().map(|r| (*r).to_owned()).collect(),
        auditd_lost: 0,
        notes: Vec::new(),
    };
    let started = Instant::now();
    let runs = |part| cli.only.is_empty() || cli.only.contains(&part);
    let mut side = SensorSide::default();
    let mut floor_stats = kstats::Snapshot::new();
    let mut sensor_stats = kstats::Snapshot::new();
    let modes: &[Mode] = if runs(Part::Modes) {
        &[Mode::Bare, Mode::Floor, Mode::Sensor, Mode::Auditd]
    } else {
        &[]
    };
    for &mode in modes {
        if mode == Mode::Auditd && !auditd_ok {
            report
                .notes
                .push("auditd was not run (not installed or --no-auditd).".into());
            continue;
        }
        eprintln!("bench: mode {}", mode_name(mode));
        let (runs, stats) = run_mode(mode, &d, &mut side, &mut report.notes)?;
        for (row, run) in report.workloads.iter_mut().zip(runs) {
            let cell = match mode {
                Mode::Bare => &mut row.bare,
                Mode::Floor => &mut row.floor,
                Mode::Sensor => &mut row.sensor,
                Mode::Auditd => &mut row.auditd,
            };
            *cell = run;
        }
        match mode {
            Mode::Floor => floor_stats = stats,
            Mode::Sensor => sensor_stats = stats,
            Mode::Auditd => report.auditd_lost = auditd::Auditd::lost(),
            Mode::Bare => {}
        }
    }
    for (program, floor) in sensor_user::loader::floor_pairs(false)? {
        let s = sensor_stats.get(&kstats::kernel_name(program)).copied();
        let f = floor_stats.get(&kstats::kernel_name(floor)).copied();
        if let (Some((ns, runs)), Some((fns, fruns))) = (s, f) {
            report.kernel.push(KernelRow {
                program: program.to_owned(),
                runs,
                ns: ns as f64 / runs as f64,
                floor_runs: fruns,
                floor_ns: fns as f64 / fruns as f64,
            });
        }
    }
    if runs(Part::Modes) {
        match kprofile::run(&d) {
            Ok(profile) => report.kernel_profile = profile,
            Err(e) => report
                .notes
                .push(format!("The programs were not profiled: {e:#}.")),
        }
    }
    report.cpu = std::mem::take(&mut side.cpu);
    report.latency = std::mem::take(&mut side.latency);
    report.memory.rest_kib = side.rest_kib;
    if runs(Part::Capacity) {
        let steps = (!cli.rate.is_empty())
            .then(|| cli.rate.iter().map(|&r| (r > 0).then_some(r)).collect());
        capacity::run(
            &d,
            cli.quick,
            capacity::Receiver::Sink,
            steps.clone(),
            &mut report,
        )?;
        if steps.is_none() {
            capacity::run(
                &d,
                cli.quick,
                capacity::Receiver::Collector,
                None,
                &mut report,
            )?;
        }
    }
    if runs(Part::Collector) {
        collector_capacity(&d, &mut report)?;
    }
    if runs(Part::Memory) {
        memory(&d, &mut report)?;
    }
    if cli.quick {
        report
            .notes
            .push("`--quick` run: short durations and 500 processes; not for comparison.".into());
    }
    report.notes.push(format!(
        "The whole benchmark took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));

    let chart_name = cli
        .chart
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("benchmarks.svg")
        .to_owned();
    let markdown = report.markdown(&chart_name);
    if !cli.only.is_empty() {
        println!("{markdown}");
        return Ok(());
    }
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&cli.out, &markdown)
        .with_context(|| format!("writing {}", cli.out.display()))?;
    std::fs::write(&cli.chart, report.svg())
        .with_context(|| format!("writing {}", cli.chart.display()))?;
    println!("{markdown}");
    eprintln!(
        "bench: wrote {} and {}",
        cli.out.display(),
        cli.chart.display()
    );
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Bare => "bare",
        Mode::Floor => "floor",
        Mode::Sensor => "sensor",
        Mode::Auditd => "auditd",
    }
}

/// The harness runs `$SENSOR_BIN` / `$COLLECTOR_BIN`, else debug builds; the
/// benchmark measures the release builds beside it.
fn point_at_release_binaries() {
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let Some(dir) = me.parent() else { return };
    for name in ["sensor", "collector"] {
        let var = format!("{}_BIN", name.to_uppercase());
        if std::env::var_os(&var).is_none() {
            // SAFETY: single-threaded here, before any thread starts.
            unsafe { std::env::set_var(&var, dir.join(name)) };
        }
    }
}
