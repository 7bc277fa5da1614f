//! The sensor's TOML configuration. Every key is documented here and in
//! docs/configuration.md; unknown keys are refused so a typo is not silently
//! ignored. Command-line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error(
        "refusing config {path}: {problem}; whoever can change it can redirect or silence the sensor"
    )]
    Insecure { path: PathBuf, problem: String },
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity of this sensor in the stream; empty means the host id
    /// (/etc/machine-id).
    pub sensor_id: String,
    /// Host name reported with every event; empty means the kernel's hostname.
    pub host_name: String,
    pub collector: CollectorConfig,
    pub capture: CaptureConfig,
    pub process: ProcessConfig,
    pub files: FilesConfig,
    pub health: HealthConfig,
    pub network: NetworkConfig,
    pub windows: WindowsConfig,
    pub spool: SpoolSection,
}

/// What the spool drops when it is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicyConfig {
    /// The oldest undelivered events: the recorder keeps the latest.
    #[default]
    DropOldest,
    /// The events that no longer fit.
    DropNewest,
}

/// The disk spool every event passes through on its way to the collector.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSection {
    /// Directory of the spool (created 0700; files 0600). One sensor per
    /// directory: a restart resumes from what it finds there.
    pub dir: PathBuf,
    /// Most bytes on disk; beyond it `full_policy` drops and a gap record
    /// names exactly what was dropped.
    pub max_bytes: u64,
    /// `"drop_oldest"` (default) or `"drop_newest"`.
    pub full_policy: FullPolicyConfig,
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(if cfg!(windows) {
                r"C:\ProgramData\sensor\spool"
            } else {
                "/var/lib/sensor/spool"
            }),
            max_bytes: 256 << 20,
            full_policy: FullPolicyConfig::DropOldest,
        }
    }
}

/// The ETW sessions of the Windows sensor (ignored on Linux).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowsConfig {
    /// Size of each ETW session buffer in KiB (4..=16384).
    pub buffer_kb: u32,
    /// Buffers each session keeps at least.
    pub min_buffers: u32,
    /// Buffers each session may grow to; events beyond are lost and counted.
    pub max_buffers: u32,
    /// Forced flush period in milliseconds: how long an event may wait in a
    /// buffer that is not full (latency on a quiet host).
    pub flush_ms: u32,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        let etw = sensor_etw::EtwOptions::default();
        Self {
            buffer_kb: etw.buffer_kb,
            min_buffers: etw.min_buffers,
            max_buffers: etw.max_buffers,
            flush_ms: etw.flush_ms,
        }
    }
}

/// Which writes become `FILE_OP_WRITE` events.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WriteEvents {
    /// None (opens for writing are still reported).
    None,
    /// The first write of each process to each file.
    #[default]
    First,
    /// Every write: for audits of quiet hosts; a write storm floods the pipeline.
    All,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// `"first"` (default), `"all"` or `"none"`.
    pub writes: WriteEvents,
    /// Report file operations that failed (with their -errno) too.
    pub report_failed: bool,
    /// A process's repeated opens for writing of one file, with the same
    /// flags, within this many milliseconds of the last one reported are
    /// counted instead of reported; the next report carries the count
    /// (`repeats`). 0 reports every open.
    pub open_repeat_window_ms: u32,
    /// Absolute paths whose files (at or under them) are never reported.
    /// Mounts at or under a prefix are discarded in the kernel.
    pub ignore_prefixes: Vec<String>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            writes: WriteEvents::First,
            report_failed: false,
            open_repeat_window_ms: 1000,
            ignore_prefixes: ["/proc", "/sys", "/dev/pts"].map(String::from).to_vec(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// gRPC endpoint of the collector: `https://HOST:PORT` (mutual TLS), or
    /// `http://` to a loopback address with `plaintext = true`.
    pub url: String,
    /// CA certificate(s), PEM, that the collector's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// This sensor's client certificate chain, PEM.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`, PEM.
    pub key_file: Option<PathBuf>,
    /// Name the collector's certificate must carry; empty means the URL's host.
    pub server_name: String,
    /// Allows an `http://` URL (no encryption, no authentication), and only
    /// to a loopback address.
    pub plaintext: bool,
    /// Events per batch sent to the collector.
    pub batch_size: usize,
    /// A partial batch waits until this many milliseconds after the previous
    /// send (0: sent as soon as it is spooled).
    pub batch_timeout_ms: u64,
    /// Longest wait between reconnection attempts (the backoff doubles up to it).
    pub max_backoff_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Size of the kernel ring buffer in bytes: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Capacity of each queue between pipeline stages, in records (held as
    /// batches of up to `capture::BATCH`). Capture waits on a full first
    /// queue, leaving records in the kernel ring.
    pub queue_capacity: usize,
    /// Let the programs read kernel objects with plain loads where the
    /// kernel allows it (Linux 6.17+: the `bpf_rdonly_cast` kfunc); false
    /// copies each with `bpf_probe_read_kernel`, as on older kernels.
    pub direct_kernel_reads: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Arguments kept per exec; argv beyond it is cut and flagged truncated.
    pub max_args: usize,
    /// Most processes in the process table.
    pub table_capacity: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between SensorHealth events (0 disables them).
    pub interval_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Ports whose UDP and TCP messages are parsed as DNS (at most
    /// `sensor_common::DNS_PORTS`; empty turns DNS capture off).
    pub dns_ports: Vec<u16>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            dns_ports: vec![53],
        }
    }
}

/// Refuses a config file that group or others may write, or that belongs
/// to someone other than root or the user running the sensor.
#[cfg(target_os = "linux")]
fn check_private(path: &Path, file: &std::fs::File) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let insecure = |problem: String| {
        Err(ConfigError::Insecure {
            path: path.to_owned(),
            problem,
        })
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return insecure(format!(
            "it is writable by {} (mode {mode:04o}); chmod go-w it",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            }
        ));
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return insecure(format!(
            "it belongs to uid {}, neither root nor this user (uid {me})",
            meta.uid()
        ));
    }
    Ok(())
}

/// The kernel's fixed array of DNS ports (0: unused slot).
#[must_use]
pub fn kernel_dns_ports(ports: &[u16]) -> [u16; sensor_common::DNS_PORTS] {
    let mut out = [0; sensor_common::DNS_PORTS];
    for (slot, port) in out.iter_mut().zip(ports) {
        *slot = *port;
    }
    out
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:50051".to_owned(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: String::new(),
            plaintext: false,
            batch_size: 512,
            batch_timeout_ms: 0,
            max_backoff_ms: 5_000,
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 8 << 20,
            queue_capacity: 8_192,
            direct_kernel_reads: true,
        }
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            max_args: 256,
            table_capacity: 65_536,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { interval_secs: 10 }
    }
}

impl Config {
    /// Reads and validates a config file, which must not be writable by
    /// anyone but its owner, and its owner must be root or this user.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = std::fs::File::open(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Checked on the open file, so the file read is the file checked.
        #[cfg(target_os = "linux")]
        check_private(path, &file)?;
        let text = std::io::read_to_string(file).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.message().to_owned()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let ring = self.capture.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return invalid(
                "capture.ring_buffer_bytes",
                &format!("must be a power of two of at least 4096, not {ring}"),
            );
        }
        if self.capture.queue_capacity == 0 {
            return invalid("capture.queue_capacity", "must be at least 1");
        }
        if self.collector.batch_size == 0 || self.collector.batch_size > 10_000 {
            return invalid("collector.batch_size", "must be between 1 and 10000");
        }
        if self.spool.max_bytes < 64 << 10 {
            return invalid("spool.max_bytes", "must be at least 65536");
        }
        if self.spool.dir.as_os_str().is_empty() {
            return invalid("spool.dir", "must not be empty");
        }
        if !(self.collector.url.starts_with("http://")
            || self.collector.url.starts_with("https://"))
        {
            return invalid("collector.url", "must start with http:// or https://");
        }
        if self.process.max_args == 0 {
            return invalid("process.max_args", "must be at least 1");
        }
        if let Some(bad) = self
            .files
            .ignore_prefixes
            .iter()
            .find(|p| !p.starts_with('/'))
        {
            return invalid(
                "files.ignore_prefixes",
                &format!("must hold absolute paths, not {bad:?}"),
            );
        }
        let win = &self.windows;
        if !(4..=16_384).contains(&win.buffer_kb) {
            return invalid("windows.buffer_kb", "must be between 4 and 16384");
        }
        if win.min_buffers == 0 || win.max_buffers < win.min_buffers {
            return invalid(
                "windows.max_buffers",
                "must be at least windows.min_buffers, which must be at least 1",
            );
        }
        if win.flush_ms == 0 {
            return invalid("windows.flush_ms", "must be at least 1");
        }
        if self.process.table_capacity == 0 {
            return invalid("process.table_capacity", "must be at least 1");
        }
        let ports = &self.network.dns_ports;
        if ports.len() > sensor_common::DNS_PORTS || ports.contains(&0) {
            return invalid(
                "network.dns_ports",
                &format!(
                    "must hold at most {} ports, none of them 0, not {ports:?}",
                    sensor_common::DNS_PORTS
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn keys_override_defaults() {
        let cfg = Config::parse(
            "sensor_id = \"s1\"\n[capture]\nring_buffer_bytes = 65536\n[process]\nmax_args = 8\n",
        )
        .unwrap();
        assert_eq!(cfg.sensor_id, "s1");
        assert_eq!(cfg.capture.ring_buffer_bytes, 65536);
        assert_eq!(cfg.process.max_args, 8);
        assert_eq!(cfg.collector, CollectorConfig::default());
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::parse("[capture]\nring_buffer_bytes = 1000\n").unwrap_err();
        assert!(
            err.to_string().contains("capture.ring_buffer_bytes"),
            "{err}"
        );
        let err = Config::parse("[collector]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(err.to_string().contains("collector.url"), "{err}");
    }

    #[test]
    fn file_settings_parse_and_relative_prefixes_are_refused() {
        let cfg = Config::parse(
            "[files]\nwrites = \"all\"\nreport_failed = true\nignore_prefixes = [\"/var/log\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.files.writes, WriteEvents::All);
        assert!(cfg.files.report_failed);
        assert_eq!(cfg.files.ignore_prefixes, ["/var/log"]);
        assert_eq!(
            Config::default().files.ignore_prefixes,
            ["/proc", "/sys", "/dev/pts"]
        );
        let err = Config::parse("[files]\nignore_prefixes = [\"tmp\"]\n").unwrap_err();
        assert!(err.to_string().contains("files.ignore_prefixes"), "{err}");
        let err = Config::parse("[files]\nwrites = \"some\"\n").unwrap_err();
        assert!(err.to_string().contains("some"), "{err}");
    }

    #[test]
    fn dns_ports_default_to_53_and_are_bounded() {
        assert_eq!(Config::default().network.dns_ports, vec![53]);
        let cfg = Config::parse("[network]\ndns_ports = [53, 5353]\n").unwrap();
        assert_eq!(kernel_dns_ports(&cfg.network.dns_ports), [53, 5353, 0, 0]);
        let off = Config::parse("[network]\ndns_ports = []\n").unwrap();
        assert_eq!(kernel_dns_ports(&off.network.dns_ports), [0; 4]);
        for bad in ["[1, 2, 3, 4, 5]", "[0]"] {
            let err = Config::parse(&format!("[network]\ndns_ports = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("network.dns_ports"), "{err}");
        }
        assert!(Config::parse("[network]\ndns_ports = [70000]\n").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_config_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.toml");
        std::fs::write(&path, "sensor_id = \"s1\"\n").unwrap();
        let chmod = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(0o644);
        assert_eq!(Config::load(&path).unwrap().sensor_id, "s1");
        for (mode, who) in [(0o666, "everyone"), (0o620, "its group")] {
            chmod(mode);
            let err = Config::load(&path).unwrap_err();
            assert!(matches!(err, ConfigError::Insecure { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("it is writable by {who} (mode 0{mode:o})")),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let err = Config::parse("[capture]\nring_bufer_bytes = 4096\n").unwrap_err();
        assert!(err.to_string().contains("ring_bufer_bytes"), "{err}");
        let err = Config::parse("[process]\nmax_args = \"many\"\n").unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
