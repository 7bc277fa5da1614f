//! In-kernel cost of each eBPF program: bpf_stats' run time and run count
//! (enabled for as long as [`Enabled`] lives), read from every program the
//! kernel holds.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::{Context as _, Result};

/// Keeps the kernel's run-time accounting on (BPF_ENABLE_STATS); it costs
/// two clock reads per program run, for every program measured alike.
pub struct Enabled(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<Enabled> {
    let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling bpf_stats (BPF_ENABLE_STATS)")?;
    Ok(Enabled(fd))
}

/// Run time (ns) and run count, per program name.
pub type Snapshot = BTreeMap<String, (u64, u64)>;

/// The kernel keeps the first 15 bytes of a program name.
#[must_use]
pub fn kernel_name(name: &str) -> String {
    name.chars().take(15).collect()
}

/// Every loaded program's counters, summed by name.
#[must_use]
pub fn snapshot() -> Snapshot {
    let mut all = Snapshot::new();
    for info in aya::programs::loaded_programs().flatten() {
        let Some(name) = info.name_as_str() else {
            continue;
        };
        let entry = all.entry(name.to_owned()).or_default();
        entry.0 += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        entry.1 += info.run_count();
    }
    all
}

/// What ran between two snapshots, per program name.
#[must_use]
pub fn delta(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(name, &(ns, runs))| {
            let (ns0, runs0) = before.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                (ns.saturating_sub(ns0), runs.saturating_sub(runs0)),
            )
        })
        .filter(|(_, (_, runs))| *runs > 0)
        .collect()
}
