//! Facts about this host the events carry: ids, name, boot clock.

#[cfg(target_os = "linux")]
use std::fs;

#[derive(Clone, Debug)]
pub struct HostInfo {
    /// /proc/sys/kernel/random/boot_id: changes every boot, so exec ids from
    /// different boots never collide.
    pub boot_id: String,
    /// /etc/machine-id, or the boot id where there is none.
    pub host_id: String,
    pub host_name: String,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME, to turn kernel timestamps into wall time.
    pub boot_to_unix_ns: i128,
    /// Nanoseconds per clock tick (USER_HZ), the unit of /proc/PID/stat start times.
    pub tick_ns: u64,
}

#[cfg(target_os = "linux")]
fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(target_os = "linux")]
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Nanoseconds on CLOCK_BOOTTIME, the clock of `bpf_ktime_get_boot_ns`.
#[cfg(target_os = "linux")]
#[must_use]
pub fn boottime_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// Nanoseconds since the sensor started: Windows events carry their own
/// wall-clock times, so this clock only orders the sensor's health reports.
#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn boottime_ns() -> u64 {
    u64::try_from(started().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(not(target_os = "linux"))]
fn started() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// The machine GUID Windows keeps in the registry, by way of `reg query`
/// (no registry API needed in this crate for one value read once).
#[cfg(windows)]
fn machine_guid() -> Option<String> {
    let out = std::process::Command::new("reg")
        .args([
            "query",
            r"HKLM\SOFTWARE\Microsoft\Cryptography",
            "/v",
            "MachineGuid",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("MachineGuid"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
}

#[cfg(not(target_os = "linux"))]
impl HostInfo {
    #[must_use]
    pub fn detect() -> Self {
        #[cfg(windows)]
        let host_id = machine_guid().unwrap_or_default();
        #[cfg(not(windows))]
        let host_id = String::new();
        let host_name = std::env::var("COMPUTERNAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            boot_id: host_id.clone(),
            host_id,
            host_name,
            boot_to_unix_ns: i128::try_from(now_unix).unwrap_or(0) - i128::from(boottime_ns()),
            tick_ns: 100,
        }
    }
}

impl HostInfo {
    /// Wall-clock nanoseconds since the Unix epoch of a boot-time stamp.
    #[must_use]
    pub fn unix_ns(&self, boot_ns: u64) -> u64 {
        u64::try_from(i128::from(boot_ns) + self.boot_to_unix_ns).unwrap_or(0)
    }
}

#[cfg(target_os = "linux")]
impl HostInfo {
    #[must_use]
    pub fn detect() -> Self {
        let boot_id = read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let host_id = read_trimmed("/etc/machine-id").unwrap_or_else(|| boot_id.clone());
        let host_name = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
        Self {
            boot_id,
            host_id,
            host_name,
            boot_to_unix_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME),
            tick_ns: 1_000_000_000 / hz,
        }
    }
}
