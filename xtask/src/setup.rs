//! Idempotent installation of the build prerequisites.
//!
//! - Debian packages the build needs (a C compiler for the bundled SQLite).
//! - The `nightly` toolchain with `rust-src`: aya-build compiles the eBPF
//!   crate with `rustup run nightly cargo build -Z build-std=core`.
//! - bpf-linker 0.13.0 linked against the nightly's own libLLVM: the linker's
//!   LLVM must be at least as new as the one that wrote rustc's bitcode
//!   (aya-rs/bpf-linker#387, rust-lang/rust#155580). A stamp records which
//!   nightly it was built for; a new nightly rebuilds it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::run_cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(program: &str) -> bool {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_some()
}

fn state_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/sensor-xtask")
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]));
    if let Some(s) = sysroot {
        return Ok(PathBuf::from(s.trim()));
    }
    eprintln!("xtask: installing the nightly toolchain");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    let s = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("nightly rustc still missing after install")?;
    Ok(PathBuf::from(s.trim()))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to nightly");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The nightly's `libLLVM.so.*` and its LLVM major version.
fn nightly_llvm(sysroot: &Path) -> Result<(PathBuf, String)> {
    let vv =
        output(Command::new("rustc").args(["+nightly", "-vV"])).context("rustc +nightly -vV")?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV shows no LLVM version")?
        .to_owned();
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly's lib directory")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .context("the nightly toolchain ships no libLLVM.so.*")?;
    Ok((lib, major))
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    let nightly_id = output(Command::new("rustc").args(["+nightly", "-V"])).unwrap_or_default();
    let stamp = state_dir().join("bpf-linker.stamp");
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION} for {}", nightly_id.trim());
    let installed = output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let stamped = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted);
    if installed && stamped {
        return Ok(());
    }
    let (lib, major) = nightly_llvm(sysroot)?;
    let prefix = state_dir().join(format!("llvm-{major}"));
    std::fs::create_dir_all(prefix.join("lib")).context("creating the LLVM prefix")?;
    // `libLLVM.so` for the build to link against, and the library's own
    // file name (its soname) so the installed linker also runs outside
    // `rustup run nightly`, through its RUNPATH.
    let soname = lib
        .file_name()
        .context("libLLVM path without a file name")?;
    for link in [
        prefix.join("lib/libLLVM.so"),
        prefix.join("lib").join(soname),
    ] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), lib.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {}",
        lib.display()
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    std::fs::write(&stamp, wanted).context("writing the bpf-linker stamp")?;
    Ok(())
}

/// The Rust target and the MinGW linker the Windows `sensor.exe` needs.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

fn ensure_windows_target() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|t| t.trim() == WINDOWS_TARGET) {
        run_cmd(Command::new("rustup").args(["target", "add", WINDOWS_TARGET]))?;
    }
    if !have("x86_64-w64-mingw32-gcc") {
        apt_install(&["gcc-mingw-w64-x86-64"])?;
    }
    Ok(())
}

/// What the benchmark compares against and profiles with: auditd and perf.
pub fn ensure_bench_tools() -> Result<()> {
    let mut missing = Vec::new();
    if !have("auditctl") && !std::path::Path::new("/sbin/auditctl").exists() {
        missing.push("auditd");
    }
    if !have("perf") {
        missing.push("linux-perf");
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

pub fn setup() -> Result<()> {
    if !have("rustup") {
        bail!("rustup is required (https://rustup.rs)");
    }
    if !have("cc") {
        apt_install(&["gcc", "libc6-dev"])?;
    }
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    std::fs::create_dir_all(state_dir()).context("creating the xtask state directory")?;
    ensure_bpf_linker(&sysroot)?;
    ensure_windows_target()
}
