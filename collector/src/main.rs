//! `collector`: the command line. The work is done by the `collector` library.

use std::{
    io::{self, BufWriter, IsTerminal as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use collector::{
    EventFilter, IpRange, Kind, ServeConfig, Store, Transport,
    certs::{self, CertsRequest},
    output::{self, OutputError},
    server, timestamp,
    tls::ServerTls,
    tree::{self, Stop, TreeError},
};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "Receives sensor event streams over gRPC, stores them in SQLite, and answers queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive sensor streams and store every event.
    Serve(ServeArgs),
    /// Print stored events as JSON lines, oldest first.
    // Boxed: the filters make it far larger than the other commands.
    Query(Box<QueryArgs>),
    /// Print the ancestry of a process image, root first.
    Tree(TreeArgs),
    /// Make a test CA, a server certificate and client certificates for
    /// mutual TLS (files that exist are kept).
    Certs(CertsArgs),
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory to write into (created mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Names and IP addresses the server certificate is valid for,
    /// comma-separated.
    #[arg(
        long,
        value_name = "HOSTS",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1,localhost"
    )]
    hosts: Vec<String>,
    /// A client certificate NAME.pem / NAME.key for a sensor (repeatable).
    #[arg(long = "client", value_name = "NAME", default_value = "client")]
    clients: Vec<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: String,
    /// SQLite database file; created (mode 0600) if missing.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Refuse batches with more events than this.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_BATCH_EVENTS)]
    max_batch_events: usize,
    /// Refuse batch messages larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = server::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds open streams get to finish after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
    /// Nice levels the database writer thread runs above the rest of the
    /// collector (0 to 19; 0: none). It is the one thread every sensor's
    /// acks wait on. Needs root or CAP_SYS_NICE; without, a warning.
    #[arg(
        long,
        value_name = "N",
        default_value_t = server::DEFAULT_WRITER_PRIORITY_BOOST,
        value_parser = clap::value_parser!(u8).range(0..=19)
    )]
    writer_priority_boost: u8,
    /// The server's certificate chain (PEM); with --tls-key and --client-ca.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that every sensor's client certificate must
    /// chain to; clients without one are refused.
    #[arg(long, value_name = "PATH")]
    client_ca: Option<PathBuf>,
    /// Serve without TLS: only on a loopback address.
    #[arg(long)]
    plaintext: bool,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// SQLite database file written by `collector serve`.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Only events from this host name.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Only events from this sensor.
    #[arg(long, value_name = "ID")]
    sensor_id: Option<String>,
    /// Only events about this process image.
    #[arg(long, value_name = "ID")]
    exec_id: Option<String>,
    /// Only events about children of this process image.
    #[arg(long, value_name = "ID")]
    parent_exec_id: Option<String>,
    /// Only events about this pid.
    #[arg(long, value_name = "N")]
    pid: Option<u32>,
    /// Only events about this executable (exact path).
    #[arg(long, value_name = "PATH")]
    exe: Option<String>,
    /// Only events about executables whose path starts with this.
    #[arg(long, value_name = "PREFIX")]
    exe_prefix: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// Only events at or after this time (RFC 3339 or unix nanoseconds).
    #[arg(long, value_name = "TIME", value_parser = timestamp::parse_time_arg)]
    since: Option<i64>,
    /// Only events before this time (RFC 3339 or unix nanoseconds).
    #[arg(long, value_name = "TIME", value_parser = timestamp::parse_time_arg)]
    until: Option<i64>,
    /// Only file events whose path or old_path (rename/link source, symlink
    /// target) is exactly this.
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Only file events whose path or old_path starts with this (plain string
    /// prefix, case-sensitive: /tmp/x also matches /tmp/xyz).
    #[arg(long, value_name = "PREFIX")]
    path_prefix: Option<String>,
    /// Only network events whose remote or local address, and DNS events with
    /// an A/AAAA answer, in this address or CIDR block (IPv4 or IPv6;
    /// IPv4 also matches its v4-mapped IPv6 form and vice versa).
    #[arg(long, value_name = "ADDR_OR_CIDR")]
    ip: Option<String>,
    /// Only network events whose remote or local port is this.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Only DNS events whose query name or an answer name is this domain or a
    /// subdomain of it (case-insensitive).
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// Print at most this many events (the earliest).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

#[derive(Debug, Args)]
struct TreeArgs {
    /// SQLite database file written by `collector serve`.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Print each ancestor's event as a JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// The process image whose ancestry to print.
    #[arg(value_name = "EXEC_ID")]
    exec_id: String,
}

/// A failure and the exit code it earns.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// Bad setup: the database cannot be opened, the address cannot be bound.
fn setup(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

/// Anything else that goes wrong.
fn runtime(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Query(_) | Command::Tree(_) | Command::Certs(_) => "warn",
    };
    init_logging(default_level);
    let result = match cli.command {
        Command::Serve(args) => run_serve(&args),
        Command::Query(args) => run_query(*args),
        Command::Tree(args) => run_tree(&args),
        Command::Certs(args) => run_certs(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("collector: error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Only fails if a subscriber is already installed; logging then goes there.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

fn run_serve(args: &ServeArgs) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(runtime)?;
    rt.block_on(serve(args))
}

/// The transport the flags ask for. Checked before anything is opened:
/// serving in the clear must be asked for, and only on loopback.
async fn transport(args: &ServeArgs) -> Result<Transport, Failure> {
    let usage = |message: String| setup(anyhow::anyhow!(message));
    let tls_flags = [
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
        ("--client-ca", &args.client_ca),
    ];
    let given: Vec<&str> = tls_flags
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(flag, _)| *flag)
        .collect();
    if args.plaintext {
        if let Some(flag) = given.first() {
            return Err(usage(format!("--plaintext and {flag} exclude each other")));
        }
        let addrs: Vec<_> = tokio::net::lookup_host(args.listen.as_str())
            .await
            .with_context(|| format!("cannot resolve --listen {}", args.listen))
            .map_err(setup)?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(usage(format!(
                "--plaintext is allowed only on a loopback address, not {}; \
                 use --tls-cert, --tls-key and --client-ca",
                args.listen
            )));
        }
        return Ok(Transport::Plaintext);
    }
    match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(cert), Some(key), Some(ca)) => ServerTls::load(cert, key, ca)
            .map(Transport::Tls)
            .map_err(|e| setup(e.into())),
        _ if given.is_empty() => Err(usage(
            "refusing to serve without TLS: give --tls-cert, --tls-key and --client-ca \
             (`collector certs` makes test ones), or --plaintext on a loopback address"
                .to_owned(),
        )),
        _ => {
            let missing: Vec<&str> = tls_flags
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(flag, _)| *flag)
                .collect();
            Err(usage(format!(
                "{} needs {} too",
                given.join(" and "),
                missing.join(" and ")
            )))
        }
    }
}

async fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let transport = transport(args).await?;
    let store = Store::open(&args.db).map_err(|e| setup(e.into()))?;
    let listener = TcpListener::bind(args.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(setup)?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {}", args.listen))
        .map_err(setup)?;
    let shutdown = shutdown_signal().map_err(setup)?;
    let security = match transport {
        Transport::Tls(_) => "mutual TLS",
        Transport::Plaintext => "PLAINTEXT",
    };
    eprintln!(
        "collector listening on {local} ({security}), db {}",
        args.db.display()
    );
    let config = ServeConfig {
        max_batch_events: args.max_batch_events,
        max_message_bytes: args.max_message_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        writer_priority_boost: args.writer_priority_boost,
    };
    collector::serve(listener, transport, store, config, shutdown)
        .await
        .context("serving failed")
        .map_err(runtime)?;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

fn run_certs(args: &CertsArgs) -> Result<(), Failure> {
    let request = CertsRequest {
        hosts: args.hosts.clone(),
        clients: args.clients.clone(),
    };
    let report = certs::generate(&args.out, &request).map_err(|e| setup(e.into()))?;
    for path in &report.written {
        println!("wrote {}", path.display());
    }
    for path in &report.kept {
        println!("kept {}", path.display());
    }
    Ok(())
}

fn open_for_reading(db: &Path) -> Result<Store, Failure> {
    Store::open_read_only(db).map_err(|e| setup(e.into()))
}

fn run_query(args: QueryArgs) -> Result<(), Failure> {
    // Checked before the database is opened: a bad flag is a usage error.
    let ip = args
        .ip
        .as_deref()
        .map(|text| {
            text.parse::<IpRange>()
                .with_context(|| format!("invalid --ip {text:?}"))
        })
        .transpose()
        .map_err(setup)?;
    if let Some(domain) = &args.domain
        && domain.trim_end_matches('.').is_empty()
    {
        return Err(setup(anyhow::anyhow!(
            "invalid --domain {domain:?}: it names no domain"
        )));
    }
    let store = open_for_reading(&args.db)?;
    let filter = EventFilter {
        host_name: args.host,
        sensor_id: args.sensor_id,
        exec_id: args.exec_id,
        parent_exec_id: args.parent_exec_id,
        pid: args.pid,
        exe: args.exe,
        exe_prefix: args.exe_prefix,
        kind: args.kind,
        since_ns: args.since,
        until_ns: args.until,
        path: args.path,
        path_prefix: args.path_prefix,
        ip,
        port: args.port,
        domain: args.domain,
        limit: args.limit,
    };
    store.check_filter(&filter).map_err(|e| setup(e.into()))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match output::write_events_json(&store, &filter, &mut out) {
        Ok(stats) => {
            if stats.corrupt > 0 {
                eprintln!(
                    "collector: warning: {} stored events could not be decoded and were skipped",
                    stats.corrupt
                );
            }
            Ok(())
        }
        Err(e) => output_failure(e, "query failed"),
    }
}

fn run_tree(args: &TreeArgs) -> Result<(), Failure> {
    let store = open_for_reading(&args.db)?;
    let ancestry = match tree::ancestry(&store, &args.exec_id, tree::MAX_DEPTH) {
        Ok(ancestry) => ancestry,
        Err(e @ TreeError::UnknownExecId(_)) => return Err(runtime(e.into())),
        Err(e) => return Err(runtime(anyhow::Error::new(e).context("tree failed"))),
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = if args.json {
        output::write_tree_json(&ancestry, &mut out)
    } else {
        output::write_tree_text(&ancestry, &mut out)
    };
    if let Err(e) = written {
        return output_failure(e, "tree failed");
    }
    match &ancestry.stop {
        Stop::NoParent | Stop::ParentNotStored(_) => {}
        Stop::Cycle(id) => {
            eprintln!("collector: warning: the ancestry loops back to {id}; stopped there")
        }
        Stop::DepthLimit => eprintln!(
            "collector: warning: stopped after {} ancestors",
            tree::MAX_DEPTH
        ),
    }
    Ok(())
}

/// A closed pipe (`| head`) is a normal end; other failures are errors.
fn output_failure(e: OutputError, what: &'static str) -> Result<(), Failure> {
    if e.is_broken_pipe() {
        Ok(())
    } else {
        Err(runtime(anyhow::Error::new(e).context(what)))
    }
}
