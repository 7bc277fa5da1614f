//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` and runs each
//! for a bounded time on its committed corpus.
//!
//! - cargo-fuzz needs nightly (sanitizers, `-Z` flags); the fuzz crate is its
//!   own workspace with its own `target/`, so the sanitizer flags never touch
//!   the main build.
//! - `AYA_BUILD_SKIP=1`: sensor-user's build script then writes an empty eBPF
//!   stub; the decoder does not need the object, and building it would need
//!   bpf-linker inside a sanitizer build.
//! - The committed corpus (`fuzz/corpus/<target>`) is read only: new inputs
//!   go to a scratch directory under `fuzz/target/`, and `--merge` adds those
//!   that reach new coverage to the committed corpus.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{run_cmd, workspace_root};

/// Installed when `cargo fuzz` is missing; any installed version is used.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target with the largest input worth trying: a little over the
/// largest record the producer can write (a named-file record is 8328
/// bytes; the kernel copies 512 bytes of DNS), so time is not spent on
/// inputs that only differ past what matters.
pub const TARGETS: [(&str, usize); 4] = [
    ("kernel_record", 8448),
    ("dns_message", 1024),
    ("collector_batch", 16384),
    ("spool_segment", 8192),
];

/// `cargo +nightly ...` through rustup's proxy, whatever toolchain runs xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly");
    // `cargo xtask` runs under the stable toolchain: without these the
    // proxy (and cargo-fuzz's own cargo calls) would stay on stable.
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env("AYA_BUILD_SKIP", "1")
        .current_dir(workspace_root());
    cmd
}

fn have_cargo_fuzz() -> bool {
    nightly_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs cargo-fuzz unless `cargo +nightly fuzz` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    if have_cargo_fuzz() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run_cmd(
        Command::new("cargo")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(CARGO_FUZZ_VERSION),
    )?;
    if !have_cargo_fuzz() {
        bail!(
            "`cargo +nightly fuzz` still fails after installing cargo-fuzz; is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

/// Files in `dir` modified at or after `since`: what a failed run left.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Runs one target for `seconds` on its committed corpus.
fn run_target(target: &str, max_len: usize, seconds: u64, merge: bool) -> Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    let committed = fuzz_dir.join("corpus").join(target);
    let scratch = fuzz_dir.join("target/scratch-corpus").join(target);
    // Fresh every run: a run's finds are either merged or thrown away, so
    // the scratch directory never grows without bound.
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    fs::create_dir_all(&committed).with_context(|| format!("creating {}", committed.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let started = SystemTime::now();
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    // libFuzzer writes new inputs to the first directory only.
    let status = nightly_cargo()
        .args(["fuzz", "run", target])
        .arg(&scratch)
        .arg(&committed)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        // A single input taking this long is a hang worth reporting.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .status()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    if !status.success() {
        let found = new_files(&artifacts, started);
        let list = if found.is_empty() {
            format!(
                "(no artifact in {}; see the output above)",
                artifacts.display()
            )
        } else {
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        bail!(
            "fuzz target {target} failed ({status}): the crashing input is\n  {list}\n\
             reproduce it with: AYA_BUILD_SKIP=1 cargo +nightly fuzz run {target} <that file>\n\
             once fixed, copy it into fuzz/corpus/{target}/ so it stays a regression test"
        );
    }
    if merge {
        // Keeps every committed file and adds a small set of finds that
        // covers the edges the committed corpus does not (set cover, not
        // libFuzzer's first-fit merge). Edges only (no hit counts, no
        // comparison operands): those would keep hundreds of near-copies,
        // and the corpus is committed.
        run_cmd(
            nightly_cargo()
                .args(["fuzz", "run", target])
                .arg(&committed)
                .arg(&scratch)
                .arg("--")
                .arg("-set_cover_merge=1")
                .arg("-use_counters=0")
                .arg("-use_cmp=0")
                .arg(format!("-max_len={max_len}")),
        )
        .with_context(|| format!("merging new inputs into {}", committed.display()))?;
    }
    Ok(())
}

/// Builds every target, then runs those named in `only` (all when empty)
/// for `seconds` each; `merge` adds new coverage to the committed corpus.
pub fn fuzz(seconds: u64, only: &[String], merge: bool) -> Result<()> {
    for name in only {
        if !TARGETS.iter().any(|(t, _)| t == name) {
            let known: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
            bail!("no fuzz target {name:?}; targets: {}", known.join(", "));
        }
    }
    ensure_cargo_fuzz()?;
    let build = Instant::now();
    // One build for all targets; `cargo fuzz run` then finds them current.
    run_cmd(nightly_cargo().args(["fuzz", "build"])).context("building the fuzz targets")?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        build.elapsed().as_secs_f64()
    );
    for (target, max_len) in TARGETS {
        if only.is_empty() || only.iter().any(|o| o == target) {
            run_target(target, max_len, seconds, merge)?;
        }
    }
    Ok(())
}
