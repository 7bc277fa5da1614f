//! `sensor`: the host sensor's command line.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::{Parser, Subcommand};
use sensor_user::{
    config::{Config, ConfigError},
    pipeline::{self, Output, Settings},
    tls::CollectorUrl,
};

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Host security sensor: records process activity and ships it to a collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture process activity until interrupted (SIGINT/SIGTERM).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file (every key: docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC URL of the collector, e.g. https://collector.example:50051 (overrides collector.url).
    #[arg(long, conflicts_with = "stdout")]
    collector: Option<String>,
    /// Print events as JSON lines on stdout instead of shipping them.
    #[arg(long)]
    stdout: bool,
    /// Kernel ring buffer size in bytes (overrides capture.ring_buffer_bytes).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Seconds between health events (overrides health.interval_secs).
    #[arg(long)]
    health_interval: Option<u64>,
    /// Sensor id (overrides sensor_id).
    #[arg(long)]
    sensor_id: Option<String>,
    /// Spool directory (overrides spool.dir).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Allow an http:// collector URL, to a loopback address only
    /// (sets collector.plaintext).
    #[arg(long, conflicts_with = "stdout")]
    plaintext: bool,
    /// CA certificate the collector's must chain to (overrides collector.ca_file).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// This sensor's client certificate (overrides collector.cert_file).
    #[arg(long, value_name = "PATH")]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (overrides collector.key_file).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Kernel BTF to read struct offsets from (Linux).
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
}

fn settings(args: RunArgs) -> Result<Settings, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(url) = args.collector {
        config.collector.url = url;
    }
    if let Some(bytes) = args.ring_buffer_bytes {
        config.capture.ring_buffer_bytes = bytes;
    }
    if let Some(secs) = args.health_interval {
        config.health.interval_secs = secs;
    }
    if let Some(id) = args.sensor_id {
        config.sensor_id = id;
    }
    if let Some(dir) = args.spool_dir {
        config.spool.dir = dir;
    }
    if args.plaintext {
        config.collector.plaintext = true;
    }
    for (flag, key) in [
        (args.ca_file, &mut config.collector.ca_file),
        (args.cert_file, &mut config.collector.cert_file),
        (args.key_file, &mut config.collector.key_file),
    ] {
        if flag.is_some() {
            *key = flag;
        }
    }
    config.validate()?;
    let output = if args.stdout {
        Output::Stdout
    } else {
        Output::Collector(CollectorUrl::from_config(&config.collector)?)
    };
    Ok(Settings {
        config,
        output,
        btf: args.btf,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sensor: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("sensor: cannot install signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    match pipeline::run(settings, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor: {e:#}");
            ExitCode::from(if cannot_capture_here(&e) { 2 } else { 1 })
        }
    }
}

/// Errors of the host rather than of the run (privileges, kernel support):
/// exit code 2, like a usage error.
#[cfg(target_os = "linux")]
fn cannot_capture_here(e: &anyhow::Error) -> bool {
    use sensor_user::loader::LoadError;
    e.downcast_ref::<LoadError>().is_some_and(|l| {
        matches!(
            l,
            LoadError::NotPrivileged | LoadError::Stub | LoadError::Btf(_)
        )
    })
}

#[cfg(not(target_os = "linux"))]
fn cannot_capture_here(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sensor_etw::EtwError>().is_some()
}
