//! Builds the eBPF object with aya-build (nightly + bpf-linker, which
//! `cargo xtask setup` installs) and leaves it in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! With `AYA_BUILD_SKIP=1`, or for a target other than Linux, an empty stub
//! is written instead, and the Linux loader refuses to run on it.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let out = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    let object = out.join("sensor-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // Only a Linux sensor loads eBPF programs; a Windows build needs none.
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let skip = !linux
        || env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&object, b"").context("writing the eBPF stub")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../sensor-ebpf");
    let root = root.to_str().context("non-UTF-8 path to sensor-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sensor-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` first)")
}
