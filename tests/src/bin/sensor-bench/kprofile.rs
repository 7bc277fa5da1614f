//! Where each sensor program's in-kernel time goes: `perf record -a -g`
//! while the workloads run with the sensor, each sample taken inside a
//! JIT'd program counted as the program's own (its instructions and the
//! loads they wait for) or as the helper it had called. bpf_stats say how
//! long a program takes; this says on what.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use ::tests::{Collector, Sensor};
use anyhow::{Context as _, Result, bail};

use crate::{Durations, Perf, run_workload, workload_time};

/// The workloads profiled: one of each kind (the fixed-rate exec loops add
/// nothing the fastest one lacks).
const WORKLOADS: [usize; 4] = [0, 1, 4, 5];

/// Samples per second per CPU: a program that runs ~500 ns per event gets
/// a few hundred samples in seconds of a workload.
const FREQUENCY: &str = "9999";

/// One program's samples.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProgramProfile {
    pub samples: u64,
    /// In the program's own instructions.
    pub own: u64,
    /// In a function it called (a helper, or what the helper tail-called),
    /// by the function's name, most first.
    pub callees: Vec<(String, u64)>,
}

/// The program a symbol names: `bpf_prog_<tag>_<name>` (kernel/bpf/core.c,
/// bpf_get_prog_name: the name is the BTF function name when the program
/// has one, as the sensor's do).
fn program_of(symbol: &str) -> Option<&str> {
    let rest = symbol.strip_prefix("bpf_prog_")?;
    let (tag, name) = rest.split_once('_')?;
    (tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Attributes the samples of `perf script -F ip,sym` (callchains, leaf
/// first, one blank line after each sample) to the programs they ran in.
#[must_use]
pub fn attribute(script: &str) -> BTreeMap<String, ProgramProfile> {
    let mut callees: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut out: BTreeMap<String, ProgramProfile> = BTreeMap::new();
    let mut chain: Vec<&str> = Vec::new();
    let mut take = |chain: &[&str]| {
        let Some(depth) = chain.iter().position(|s| program_of(s).is_some()) else {
            return;
        };
        let program = program_of(chain[depth]).unwrap_or_default().to_owned();
        let p = out.entry(program.clone()).or_default();
        p.samples += 1;
        if depth == 0 {
            p.own += 1;
        } else {
            *callees
                .entry(program)
                .or_default()
                .entry(chain[depth - 1].to_owned())
                .or_default() += 1;
        }
    };
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() {
            take(&chain);
            chain.clear();
            continue;
        }
        // "<ip> <symbol>" (or "<ip> [unknown]").
        chain.push(line.split_once(' ').map_or("", |(_, sym)| sym.trim()));
    }
    take(&chain);
    for (program, by_name) in callees {
        let mut list: Vec<(String, u64)> = by_name.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(p) = out.get_mut(&program) {
            p.callees = list;
        }
    }
    out
}

/// Runs the workloads with the sensor (default config, shipping to a
/// collector) under `perf record -a -g` and attributes the samples.
pub fn run(d: &Durations) -> Result<BTreeMap<String, ProgramProfile>> {
    let collector = Collector::start();
    let _sensor = Sensor::start_as_configured(&collector, &["--sensor-id", "bench-profile"]);
    std::thread::sleep(Duration::from_secs(3));
    let data = Path::new("/tmp/sensor-bench-kernel.perf");
    let mut perf = Perf::record(&["-a", "-F", FREQUENCY], data);
    if !perf.running() {
        bail!("perf record did not start (is perf installed?)");
    }
    let ran = WORKLOADS.iter().try_for_each(|&i| {
        eprintln!("bench: profiling the programs: workload {i} ...");
        // The exec loop runs longest: its events are the fewest per second.
        let cap = Duration::from_secs(if i == 4 { 10 } else { 5 });
        run_workload(i, workload_time(i, d).min(cap)).map(drop)
    });
    let stopped = perf.stop().unwrap_or(Ok(()));
    ran?;
    stopped?;
    let out = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script")?;
    if !out.status.success() {
        bail!("perf script failed ({})", out.status);
    }
    let _ = std::fs::remove_file(data);
    Ok(attribute(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_go_to_the_program_they_ran_in_own_or_in_the_called_helper() {
        let script = "\
\tffffffffc0026a18 bpf_prog_3296accf7bfb278d_proc_exec
\tffffffff814c1e3f trace_call_bpf
\tffffffff81000000 do_syscall_64

\tffffffff8153b4f8 __bpf_ringbuf_reserve
\tffffffff8153b600 bpf_ringbuf_output
\tffffffffc0026b00 bpf_prog_3296accf7bfb278d_proc_exec
\tffffffff814c1e3f trace_call_bpf

\tffffffff8153b4f8 read_tsc
\tffffffff8153b600 ktime_get_boot_fast_ns
\tffffffffc0026b00 bpf_prog_3296accf7bfb278d_proc_exec

\tffffffff8153b4f8 ktime_get_boot_fast_ns
\tffffffffc0026b00 bpf_prog_0123456789abcdef_sys_exit_listen

\tffffffff81000000 do_syscall_64
\t    7f3129ddd08b [unknown]
";
        let p = attribute(script);
        assert_eq!(p.len(), 2, "{p:?}");
        let exec = &p["proc_exec"];
        assert_eq!((exec.samples, exec.own), (3, 1));
        assert_eq!(
            exec.callees,
            vec![
                ("bpf_ringbuf_output".to_owned(), 1),
                ("ktime_get_boot_fast_ns".to_owned(), 1)
            ]
        );
        let listen = &p["sys_exit_listen"];
        assert_eq!((listen.samples, listen.own), (1, 0));
    }

    #[test]
    fn only_bpf_prog_symbols_with_a_tag_name_programs() {
        assert_eq!(
            program_of("bpf_prog_3296accf7bfb278d_proc_exec"),
            Some("proc_exec")
        );
        assert_eq!(
            program_of("bpf_prog_3296accf7bfb278d_inet_sock_set_state"),
            Some("inet_sock_set_state")
        );
        assert_eq!(program_of("bpf_prog_run"), None);
        assert_eq!(program_of("bpf_prog_xyz_proc_exec"), None);
        assert_eq!(program_of("bpf_probe_read_user"), None);
    }
}
