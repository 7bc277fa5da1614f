//! What a process costs, from /proc: CPU time (user + system, all threads,
//! including exited ones) and resident memory.

use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat's times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100).max(1)
}

/// User + system CPU time of `pid` so far (all its threads, live or exited).
#[must_use]
pub fn cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at `state`,
    // field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = ticks_per_second();
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// A `kB` line of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident memory now, KiB.
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Highest resident memory since start, KiB.
#[must_use]
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// The machine's CPU time so far, summed over its CPUs: (busy, all), in
/// clock ticks (/proc/stat's first line; idle and iowait are not busy).
#[must_use]
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")) else {
        return (0, 0);
    };
    let t: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let all: u64 = t.iter().sum();
    let idle = t.get(3).copied().unwrap_or(0) + t.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

/// The share of all CPUs busy between two `machine_ticks` readings.
#[must_use]
pub fn busy_between(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let all = after.1.saturating_sub(before.1) as f64;
    if all > 0.0 { busy / all } else { 0.0 }
}

/// CPU time this process and its waited-for children used so far.
#[must_use]
pub fn own_and_children_cpu() -> Duration {
    let usage = |who| {
        // SAFETY: `ru` is a valid out-pointer.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &raw mut ru) };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(cpu(me).is_some_and(|t| t > Duration::ZERO));
        assert!(rss_kib(me).is_some_and(|k| k > 100));
        assert!(peak_rss_kib(me) >= rss_kib(me));
    }
}
