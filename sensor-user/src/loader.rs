//! Loads the eBPF object, hands it the kernel offsets and attaches the
//! programs. Failures become one clear line for the operator.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use std::collections::HashSet;

use sensor_common::{
    Config as KernelConfig, KernelOffsets, SyscallSpec, counter, kfunc, kind, maps, programs,
};

use crate::{
    btf::{Btf, BtfError, kernel_offsets},
    kfunc::{KfuncError, prepare},
    syscalls,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the sensor needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs")]
    NotPrivileged,
    #[error("this sensor binary was built without its eBPF programs (AYA_BUILD_SKIP)")]
    Stub,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Kfunc(#[from] KfuncError),
    #[error("cannot mount tracefs at {TRACEFS}: {0}")]
    Tracefs(std::io::Error),
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("no floor program left for {0} (sensor_common::programs::floor)")]
    NoFloorSlot(&'static str),
}

/// The loaded programs and the maps userspace reads.
pub struct Loaded {
    /// Owns the programs; dropping it detaches them.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    /// `sensor_common::counter::*`.
    pub counters: PerCpuArray<MapData, u64>,
    /// The tracepoints attached, for health reports.
    pub hooks: Vec<String>,
}

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Root, or CAP_SYS_ADMIN, or CAP_BPF (39) with CAP_PERFMON (38).
#[must_use]
pub fn has_privileges() -> bool {
    let caps = effective_caps();
    let has = |bit: u32| caps & (1 << bit) != 0;
    has(21) || (has(39) && has(38))
}

/// Mounts tracefs where it is missing (some hosts mount only debugfs).
pub fn ensure_tracefs() -> Result<(), LoadError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).map_err(|e| LoadError::Tracefs(e.into()))?;
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Whether `sched_process_exit` passes `group_dead` (Linux 6.16+).
fn exit_has_group_dead() -> bool {
    std::fs::read_to_string(Path::new(TRACEFS).join("events/sched/sched_process_exit/format"))
        .is_ok_and(|f| f.contains("group_dead"))
}

fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoadError {
    move |e| LoadError::Program {
        name,
        source: Box::new(e),
    }
}

/// Program `name` of type `T`, loaded into the kernel (verified).
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    T: 'a,
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    T: ProgramLoad,
{
    let prog: &mut T = ebpf
        .program_mut(name)
        .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(prog_err(name))?;
    prog.load_program().map_err(prog_err(name))?;
    Ok(prog)
}

/// `load()` of the program types the sensor uses.
trait ProgramLoad {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl ProgramLoad for RawTracePoint {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

impl ProgramLoad for TracePoint {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

/// A program `program()` already loaded, to attach it once more.
fn loaded_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, LoadError> {
    ebpf.program_mut(name)
        .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(prog_err(name))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}

/// What the kernel side is told at load time.
#[derive(Clone, Debug)]
pub struct KernelSettings {
    /// Size of the ring buffer in bytes.
    pub ring_bytes: u32,
    /// `sensor_common::file_writes::*`.
    pub file_writes: u32,
    pub report_failed: bool,
    /// `Config::open_repeat_window_ms`.
    pub open_repeat_window_ms: u32,
    /// Mounts whose files are never reported.
    pub ignored_mounts: Vec<u32>,
    /// Ports whose messages are copied as DNS (at most `DNS_PORTS`,
    /// validated by the config).
    pub dns_ports: Vec<u16>,
    /// Read kernel objects with plain loads where the kernel allows it
    /// (`capture.direct_kernel_reads`).
    pub direct_kernel_reads: bool,
}

/// What the programs are told: the running kernel's offsets (frozen
/// constants, `KERNEL_OFFSETS`) and `settings` (the `CONFIG` map).
fn kernel_config(
    settings: &KernelSettings,
    btf: &Btf,
) -> Result<(KernelOffsets, KernelConfig), LoadError> {
    let offsets = kernel_offsets(btf)?;
    if let Err(e) = ensure_tracefs() {
        // Raw tracepoints attach without tracefs; only the group_dead probe
        // needs it, and without it exits fall back to leader exits.
        tracing::warn!("{e}");
    }
    let config = KernelConfig {
        sensor_tgid: std::process::id(),
        exit_has_group_dead: u32::from(exit_has_group_dead()),
        file_writes: settings.file_writes,
        report_failed: u32::from(settings.report_failed),
        open_repeat_window_ms: settings.open_repeat_window_ms,
        // An eighth of the ring: bursts wake the consumer long before it fills.
        wakeup_bytes: settings.ring_bytes / 8,
        dns_ports: crate::config::kernel_dns_ports(&settings.dns_ports),
    };
    Ok((offsets, config))
}

/// The words of the `IGNORED_MOUNTS` bitmap that have bits set, for mount
/// ids `ids`. An id beyond the bitmap cannot be ignored: its files are
/// reported (more events, none lost), with a warning.
fn ignored_mount_bitmap(ids: &[u32]) -> Vec<(u32, u64)> {
    let mut words: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for &id in ids {
        if id / 64 >= maps::IGNORED_MOUNT_WORDS {
            tracing::warn!(
                "mount id {id} is beyond the ignored-mount bitmap: its files are reported"
            );
            continue;
        }
        *words.entry(id / 64).or_default() |= 1 << (id % 64);
    }
    words.into_iter().collect()
}

fn write_config(ebpf: &mut Ebpf, config: KernelConfig) -> Result<(), LoadError> {
    let err = |e| LoadError::Map {
        name: maps::CONFIG,
        source: Box::new(e),
    };
    let map = ebpf
        .map_mut(maps::CONFIG)
        .ok_or(LoadError::MissingMap(maps::CONFIG))?;
    let mut cfg: Array<_, KernelConfig> = Array::try_from(map).map_err(err)?;
    cfg.set(0, config, 0).map_err(err)
}

/// The eBPF object, its maps created with the ring sized by `settings` and
/// its CONFIG written; no program loaded yet.
fn open_object(settings: &KernelSettings, btf_path: &Path) -> Result<Ebpf, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::Stub);
    }
    if !has_privileges() {
        return Err(LoadError::NotPrivileged);
    }
    let btf = Btf::from_file(btf_path)?;
    let (offsets, config) = kernel_config(settings, &btf)?;
    let object = prepare(OBJECT, &btf, settings.direct_kernel_reads)?;
    if object.kernel_loads {
        tracing::info!("kernel objects are read with plain loads (bpf_rdonly_cast)");
    } else {
        tracing::info!("kernel objects are read with bpf_probe_read_kernel");
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::EVENTS, settings.ring_bytes)
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .override_global(kfunc::KERNEL_LOADS, &u32::from(object.kernel_loads), true)
        .load(object.bytes())
        .map_err(|e| LoadError::Object(Box::new(e)))?;
    write_config(&mut ebpf, config)?;
    Ok(ebpf)
}

/// Loads and attaches everything.
pub fn load(settings: &KernelSettings, btf_path: &Path) -> Result<Loaded, LoadError> {
    let mut ebpf = open_object(settings, btf_path)?;
    let map_err = |name| {
        move |e| LoadError::Map {
            name,
            source: Box::new(e),
        }
    };
    {
        let map = ebpf
            .map_mut(maps::IGNORED_MOUNTS)
            .ok_or(LoadError::MissingMap(maps::IGNORED_MOUNTS))?;
        let mut ignored: Array<_, u64> =
            Array::try_from(map).map_err(map_err(maps::IGNORED_MOUNTS))?;
        for (word, bits) in ignored_mount_bitmap(&settings.ignored_mounts) {
            ignored
                .set(word, bits, 0)
                .map_err(map_err(maps::IGNORED_MOUNTS))?;
        }
    }
    let mut hooks = Vec::new();
    let mut loaded = HashSet::new();
    let mut specs = Vec::new();
    for hook in attachments(settings.report_failed) {
        if attach(&mut ebpf, &mut loaded, hook.program, &hook)? {
            hooks.push(hook.label());
        }
        if let Some(spec) = hook.spec {
            specs.push(spec);
        }
    }
    {
        let map = ebpf
            .map_mut(maps::SYSCALL_SPECS)
            .ok_or(LoadError::MissingMap(maps::SYSCALL_SPECS))?;
        let mut table: Array<_, SyscallSpec> =
            Array::try_from(map).map_err(map_err(maps::SYSCALL_SPECS))?;
        for &(nr, spec) in &specs {
            table
                .set(nr, spec, 0)
                .map_err(map_err(maps::SYSCALL_SPECS))?;
        }
    }
    let events =
        RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?).map_err(map_err(maps::EVENTS))?;
    let drops =
        PerCpuArray::try_from(take_map(&mut ebpf, maps::DROPS)?).map_err(map_err(maps::DROPS))?;
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
        .map_err(map_err(maps::COUNTERS))?;
    Ok(Loaded {
        ebpf,
        events,
        drops,
        counters,
        hooks,
    })
}

/// Where one program attaches: a raw tracepoint, or a syscall tracepoint
/// (category `syscalls`) with the argument spec of its syscall.
#[derive(Clone, Copy, Debug)]
pub struct Attachment {
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub raw: bool,
    pub spec: Option<(u32, SyscallSpec)>,
}

impl Attachment {
    /// `raw_tp/NAME` or `tracepoint/syscalls/NAME`, as health events list them.
    #[must_use]
    pub fn label(&self) -> String {
        if self.raw {
            format!("raw_tp/{}", self.tracepoint)
        } else {
            format!("tracepoint/syscalls/{}", self.tracepoint)
        }
    }
}

/// Every attachment of the sensor's programs, in load order.
#[must_use]
pub fn attachments(report_failed: bool) -> Vec<Attachment> {
    let raw = programs::ALL
        .iter()
        .chain(&programs::NET_RAW)
        .map(|&(program, tracepoint)| Attachment {
            program,
            tracepoint,
            raw: true,
            spec: None,
        });
    let file = syscalls::file_hooks(report_failed)
        .into_iter()
        .map(|h| Attachment {
            program: h.program,
            tracepoint: h.tracepoint,
            raw: false,
            spec: h.spec,
        });
    let net = programs::NET_SYSCALLS
        .iter()
        .map(|&(program, tracepoint)| Attachment {
            program,
            tracepoint,
            raw: false,
            spec: None,
        });
    raw.chain(file).chain(net).collect()
}

/// Loads `program` (once: `loaded` remembers) and attaches it where `hook`
/// says. A syscall missing on this kernel or architecture (open, creat,
/// fchmodat2) is skipped with a warning: it costs only its own events.
/// Returns whether it attached.
fn attach(
    ebpf: &mut Ebpf,
    loaded: &mut HashSet<&'static str>,
    program_name: &'static str,
    hook: &Attachment,
) -> Result<bool, LoadError> {
    if hook.raw {
        let prog: &mut RawTracePoint = program(ebpf, program_name)?;
        prog.attach(hook.tracepoint)
            .map_err(prog_err(program_name))?;
        return Ok(true);
    }
    let prog: &mut TracePoint = if loaded.insert(program_name) {
        program(ebpf, program_name)?
    } else {
        loaded_program(ebpf, program_name)?
    };
    match prog.attach("syscalls", hook.tracepoint) {
        Ok(_) => Ok(true),
        Err(e) => {
            tracing::warn!("not attached to syscalls/{}: {e}", hook.tracepoint);
            Ok(false)
        }
    }
}

/// Which floor program stands in for each sensor program: the next free
/// one of the same type, in attachment order.
pub fn floor_pairs(report_failed: bool) -> Result<Vec<(&'static str, &'static str)>, LoadError> {
    let mut pairs: Vec<(&'static str, &'static str)> = Vec::new();
    let (mut tp_slots, mut raw_slots) = (
        programs::floor::TRACEPOINTS.iter(),
        programs::floor::RAW.iter(),
    );
    for hook in attachments(report_failed) {
        if pairs.iter().any(|(p, _)| *p == hook.program) {
            continue;
        }
        let slot = if hook.raw {
            raw_slots.next()
        } else {
            tp_slots.next()
        };
        pairs.push((
            hook.program,
            *slot.ok_or(LoadError::NoFloorSlot(hook.program))?,
        ));
    }
    Ok(pairs)
}

/// The benchmark's floor programs, attached where the sensor's are.
pub struct Floor {
    /// Owns the programs; dropping it detaches them.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    /// (sensor program, the floor program standing in for it).
    pub pairs: Vec<(&'static str, &'static str)>,
}

/// Loads one floor program (`programs::floor`) per sensor program and
/// attaches it to every tracepoint that program uses, with a ring of
/// `ring_bytes`. No configuration: the floor reads nothing.
pub fn load_floor(
    ring_bytes: u32,
    report_failed: bool,
    btf_path: &Path,
) -> Result<Floor, LoadError> {
    // The floor reads only `wakeup_bytes`: it wakes its consumer as the sensor does.
    let settings = KernelSettings {
        ring_bytes,
        file_writes: 0,
        report_failed,
        open_repeat_window_ms: 0,
        ignored_mounts: Vec::new(),
        dns_ports: Vec::new(),
        direct_kernel_reads: true,
    };
    let mut ebpf = open_object(&settings, btf_path)?;
    let pairs = floor_pairs(report_failed)?;
    let mut loaded = HashSet::new();
    for hook in attachments(report_failed) {
        let floor = pairs
            .iter()
            .find(|(p, _)| *p == hook.program)
            .map(|&(_, floor)| floor)
            .ok_or(LoadError::NoFloorSlot(hook.program))?;
        attach(&mut ebpf, &mut loaded, floor, &hook)?;
    }
    let events =
        RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?).map_err(|e| LoadError::Map {
            name: maps::EVENTS,
            source: Box::new(e),
        })?;
    Ok(Floor {
        ebpf,
        events,
        pairs,
    })
}

/// The health counter of one record kind's ring-full drops. Per kind, as
/// Falco's per-syscall and Tetragon's per-operation drop counters: a lost
/// exec breaks a process chain, a lost write does not, and a benchmark can
/// match a workload's own kind against what it generated.
#[must_use]
pub const fn ring_full_counter(record_kind: u32) -> &'static str {
    match record_kind {
        kind::EXEC => "exec_ring_full_dropped",
        kind::FORK => "fork_ring_full_dropped",
        kind::EXIT => "exit_ring_full_dropped",
        kind::FILE => "file_ring_full_dropped",
        kind::FILE_NAMED => "file_named_ring_full_dropped",
        kind::RESULT => "result_ring_full_dropped",
        kind::NET => "net_ring_full_dropped",
        kind::DNS => "dns_ring_full_dropped",
        _ => "other_ring_full_dropped",
    }
}

/// The kernel's own counters for a health report, as (stage, name, value,
/// counts a drop): each kind's ring-full drops, then the folded opens.
#[must_use]
pub fn kernel_snapshot(
    drops: &PerCpuArray<MapData, u64>,
    counters: &PerCpuArray<MapData, u64>,
) -> Vec<(&'static str, &'static str, u64, bool)> {
    (1..kind::COUNT)
        .map(|k| {
            (
                "kernel",
                ring_full_counter(k),
                kernel_counter(drops, k),
                true,
            )
        })
        .chain([(
            "kernel",
            "opens_folded",
            kernel_counter(counters, counter::OPENS_FOLDED),
            false,
        )])
        .collect()
}

/// Sum over CPUs of one entry of a per-CPU counter map (0 if unreadable).
#[must_use]
pub fn kernel_counter(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    map.get(&index, 0)
        .map(|per_cpu| per_cpu.iter().sum::<u64>())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn ignored_mount_ids_become_bits_of_their_words_and_too_large_ones_are_left_out() {
        let words = ignored_mount_bitmap(&[3, 64, 65, 1, 64 * 1024, 70_000]);
        assert_eq!(words, vec![(0, (1 << 3) | (1 << 1)), (1, 0b11)]);
        assert!(ignored_mount_bitmap(&[]).is_empty());
    }

    #[test]
    fn the_programs_call_the_cast_kfunc_by_its_marker() {
        assert!(!OBJECT.is_empty(), "built with AYA_BUILD_SKIP");
        let mut object = OBJECT.to_vec();
        let calls = crate::kfunc::rewrite_calls(
            &mut object,
            kfunc::RDONLY_CAST_MARKER,
            crate::kfunc::Rewrite::Unused,
        )
        .unwrap();
        assert!(calls > 10, "{calls} marked calls");
    }

    #[test]
    fn on_this_kernel_the_programs_read_with_plain_loads_unless_configured_not_to() {
        let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
        assert!(prepare(OBJECT, &btf, true).unwrap().kernel_loads);
        let helpers = prepare(OBJECT, &btf, false).unwrap();
        assert!(!helpers.kernel_loads);
        assert_eq!(helpers.bytes().len(), OBJECT.len());
    }

    #[test]
    fn every_record_kind_has_its_own_drop_counter_and_each_counts_a_drop() {
        let names: HashSet<&str> = (1..kind::COUNT).map(ring_full_counter).collect();
        assert_eq!(names.len(), kind::COUNT as usize - 1);
        assert!(!names.contains(ring_full_counter(0)));
        assert!(names.iter().all(|n| n.ends_with("_ring_full_dropped")));
        assert_eq!(ring_full_counter(kind::FILE), "file_ring_full_dropped");
    }

    #[test]
    fn every_program_name_is_unique_in_the_15_bytes_the_kernel_keeps() {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let names = attachments(true)
            .into_iter()
            .map(|a| a.program)
            .chain(programs::floor::TRACEPOINTS)
            .chain(programs::floor::RAW);
        for name in names {
            let kept = &name[..name.len().min(15)];
            if let Some(other) = seen.insert(kept, name) {
                assert_eq!(other, name, "{other} and {name} both show as {kept}");
            }
        }
        assert!(seen.contains_key("proc_exec") && seen.contains_key("proc_exit"));
    }
}
