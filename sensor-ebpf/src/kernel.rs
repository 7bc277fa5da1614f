//! Maps and the small readers every program shares: kernel struct fields at
//! BTF offsets, the current task's identity, and the dentry walk.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str, bpf_ringbuf_output,
            bpf_ringbuf_query, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sensor_common::{
    Config, Header, KernelOffsets, NAME_READ, OFFSET_MISSING, PATH_BUF, PATH_DEPTH, ResultEvent,
    SYSCALL_SPEC_SLOTS, SyscallSpec, TaskInfo, counter, kind,
};

/// include/uapi/linux/bpf.h: `bpf_ringbuf_query` and output flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Every record, in reservation order. Userspace sets the real size at load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Records lost because the ring was full, per CPU, indexed by kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// What programs did instead of sending a record (other than drop it), per
/// CPU, indexed by `counter::*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// `struct syscall_trace_enter { struct trace_entry ent; int nr; unsigned long args[6]; }`
/// and `struct syscall_trace_exit { ...; int nr; long ret; }`
/// (kernel/trace/trace_syscalls.c): argument `i` is at 16 + 8 i, the return
/// value at 16. This layout is the tracepoint ABI, unchanged since 2.6.
pub const fn arg(i: usize) -> usize {
    16 + 8 * i
}
pub const RET: usize = 16;

/// How each file syscall's arguments map onto a record, indexed by syscall
/// number (an array: a lookup is an index, not a hash); `op` 0 marks the
/// syscalls without a spec.
#[map]
pub static SYSCALL_SPECS: Array<SyscallSpec> = Array::with_max_entries(SYSCALL_SPEC_SLOTS, 0);

/// The spec of the syscall that fired, by its number at offset 8. (The
/// record's `common_type` is not there for BPF: perf_call_bpf_enter() in
/// kernel/trace/trace_syscalls.c puts a pt_regs pointer in its place.)
#[inline(always)]
pub fn syscall_spec(ctx: &TracePointContext) -> Option<SyscallSpec> {
    // SAFETY: reading this tracepoint's own record.
    let nr = unsafe { ctx.read_at::<i32>(8) }.ok()?;
    SYSCALL_SPECS
        .get(nr as u32)
        .copied()
        .filter(|spec| spec.op != 0)
}

/// Syscall argument `idx` (0-5) of this tracepoint's record; 0 for any other index.
#[inline(always)]
pub fn syscall_arg(ctx: &TracePointContext, idx: u8) -> u64 {
    if idx > 5 {
        return 0;
    }
    // SAFETY: reading this tracepoint's own record.
    unsafe { ctx.read_at::<u64>(arg(idx as usize)) }.unwrap_or(0)
}

/// The current task's user registers (`bpf_task_pt_regs`). They keep a
/// syscall's arguments until it returns: the syscall writes its value to ax
/// only. (The pt_regs pointer at the head of a syscall tracepoint's record is
/// no use at exit: in current kernels perf_call_bpf_exit() in
/// kernel/trace/trace_syscalls.c passes the tracer's own registers there.)
#[inline(always)]
pub fn current_regs() -> u64 {
    // SAFETY: helpers without preconditions; the task is the current one.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

/// Argument `idx` (0-5) of the syscall in `regs` (`current_regs`).
#[inline(always)]
pub fn regs_syscall_arg(off: &KernelOffsets, regs: u64, idx: u8) -> u64 {
    let Some(&field) = off.syscall_regs.get(usize::from(idx)) else {
        return 0;
    };
    read(regs, field).unwrap_or(0)
}

/// tgids of the sensor's own process tree (the sensor adds itself; the fork
/// program adds its children), whose activity is never reported.
#[map]
pub static OWN_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Mount ids whose files are never reported (from the ignored path prefixes).
#[map]
pub static IGNORED_MOUNTS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// Whether the `struct path` at `path` lies on an ignored mount. Checked
/// before any walk, so ignored files (e.g. /proc) cost one lookup.
#[inline(always)]
pub fn on_ignored_mount(off: &KernelOffsets, path: u64) -> bool {
    let Some(vfsmnt) = read::<u64>(path, off.path_mnt) else {
        return false;
    };
    if vfsmnt == 0 || off.mount_mnt == OFFSET_MISSING {
        return false;
    }
    let Some(id) = read::<i32>(vfsmnt - u64::from(off.mount_mnt), off.mount_mnt_id) else {
        return false;
    };
    // SAFETY: plain integer key; the value is not kept.
    unsafe { IGNORED_MOUNTS.get(&(id as u32)) }.is_some()
}

/// Whether `tgid` is the sensor or one of its descendants.
#[inline(always)]
pub fn is_own(cfg: &Config, tgid: u32) -> bool {
    // SAFETY: plain integer key; the value is not kept.
    tgid == cfg.sensor_tgid || unsafe { OWN_TGIDS.get(&tgid) }.is_some()
}

/// The loaded configuration, or `None` before userspace wrote it.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// The configuration, unless the current process is in the sensor's own
/// tree (whose activity is never reported).
#[inline(always)]
pub fn config_for_others() -> Option<&'static Config> {
    let cfg = config()?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    (!is_own(cfg, tgid)).then_some(cfg)
}

/// Counts a record the ring could not take.
#[inline(always)]
pub fn count_drop(record_kind: u32) {
    bump(&DROPS, record_kind);
}

/// Adds one to a `counter::*`.
#[inline(always)]
pub fn count(index: u32) {
    bump(&COUNTERS, index);
}

/// Per-CPU, so no atomics needed.
#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the map value is a u64 owned by this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// Output flags: wake the consumer only once `wakeup_bytes` wait in the
/// ring (it also polls every 100 ms, `capture::POLL_MS`). A wakeup per record is an irq_work
/// self-IPI, which dominated the cost of every program in a VM.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let ring = (&raw const EVENTS).cast_mut().cast();
    let wakeup_bytes = config().map_or(0, |c| u64::from(c.wakeup_bytes));
    // SAFETY: querying our own ring map.
    let waiting = unsafe { bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) };
    if waiting >= wakeup_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends the first `size` bytes of a per-CPU scratch record (its header
/// already filled), counting a drop of `record_kind` when the ring is full.
/// Variable-length records send only the used part of their last area.
#[inline(always)]
pub fn output_prefix<T>(record: &mut T, size: usize, record_kind: u32) -> bool {
    if size > core::mem::size_of::<T>() {
        return false;
    }
    let ring = (&raw const EVENTS).cast_mut().cast();
    let flags = wakeup_flags();
    // SAFETY: `record` is `size_of::<T>()` readable bytes and size fits in it.
    let rc = unsafe { bpf_ringbuf_output(ring, (record as *mut T).cast(), size as u64, flags) };
    if rc != 0 {
        count_drop(record_kind);
    }
    rc == 0
}

/// Threads inside a syscall whose entry produced a record; their exit sends
/// a `ResultEvent`. Bounded: an entry whose exit never comes is overwritten
/// by the thread's next syscall or evicted.
#[map]
static AWAITING_RESULT: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16_384, 0);

/// Marks the current thread's syscall as reported at entry.
#[inline(always)]
pub fn remember_result() {
    let _ = AWAITING_RESULT.insert(&bpf_get_current_pid_tgid(), &1, 0);
}

/// Drops the current thread's mark: its syscall's exit reports otherwise.
#[inline(always)]
pub fn forget_result() {
    let _ = AWAITING_RESULT.remove(&bpf_get_current_pid_tgid());
}

/// At a syscall's exit: sends its result if its entry was reported.
#[inline(always)]
pub fn send_result(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain integer key; the value is not kept.
    if unsafe { AWAITING_RESULT.get(&pid_tgid) }.is_none() {
        return;
    }
    let _ = AWAITING_RESULT.remove(&pid_tgid);
    let mut ev = ResultEvent {
        header: header(kind::RESULT, core::mem::size_of::<ResultEvent>()),
        tid: pid_tgid as u32,
        _pad0: 0,
        ret,
    };
    output_prefix(&mut ev, core::mem::size_of::<ResultEvent>(), kind::RESULT);
}

/// Reads a `T` at `base + off`; `None` for a null base or a field the running
/// kernel does not have.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == OFFSET_MISSING {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address, faulting safely.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() }
}

#[inline(always)]
pub fn header(record_kind: u32, size: usize) -> Header {
    Header {
        kind: record_kind,
        size: size as u32,
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

/// Who the current task is: ids, credentials, cgroup, name.
#[inline(always)]
pub fn current_task_info(off: &KernelOffsets) -> TaskInfo {
    let task = current_task();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let leader: u64 = read(task, off.task_group_leader).unwrap_or(task);
    let parent: u64 = read(task, off.task_real_parent).unwrap_or(0);
    let cred: u64 = read(task, off.task_cred).unwrap_or(0);
    TaskInfo {
        start_boottime_ns: read(leader, off.task_start_boottime).unwrap_or(0),
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ppid: read::<i32>(parent, off.task_tgid).unwrap_or(0) as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        euid: read(cred, off.cred_euid).unwrap_or(u32::MAX),
        egid: read(cred, off.cred_egid).unwrap_or(u32::MAX),
        login_uid: read(task, off.task_loginuid).unwrap_or(u32::MAX),
        session_id: read(task, off.task_sessionid).unwrap_or(u32::MAX),
        _pad0: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// The file behind descriptor `fd` of the current task: files->fdt->fd[fd].
#[inline(always)]
pub fn file_of_fd(off: &KernelOffsets, fd: u64) -> u64 {
    let files: u64 = read(current_task(), off.task_files).unwrap_or(0);
    let fdt: u64 = read(files, off.files_fdt).unwrap_or(0);
    let max_fds: u32 = read(fdt, off.fdtable_max_fds).unwrap_or(0);
    if fd >= u64::from(max_fds) {
        return 0;
    }
    let fds: u64 = read(fdt, off.fdtable_fd).unwrap_or(0);
    if fds == 0 {
        return 0;
    }
    read(fds + fd * 8, 0).unwrap_or(0)
}

/// The outcome of a dentry walk.
pub struct Walk {
    pub len: u32,
    pub truncated: bool,
}

/// Writes the components of the `struct path` at `owner + field` into `buf`
/// (a `PATH_BUF` area), leaf first, each NUL-terminated; userspace reverses
/// them. Crosses mount points up to the root of the mount tree. An empty,
/// complete walk is `/`; a walk that could not start is empty and truncated.
///
/// Walking leaf-first avoids the variable-offset backwards writes that C
/// sensors use, which the verifier finds hard to bound in Rust codegen.
#[inline(always)]
pub fn walk_path(off: &KernelOffsets, owner: u64, field: u32, buf: *mut u8) -> Walk {
    let mut out = Walk {
        len: 0,
        truncated: true,
    };
    if owner == 0 || field == OFFSET_MISSING || off.mount_mnt == OFFSET_MISSING {
        return out;
    }
    let path = owner + u64::from(field);
    let (Some(mut dentry), Some(vfsmnt)) = (
        read::<u64>(path, off.path_dentry),
        read::<u64>(path, off.path_mnt),
    ) else {
        return out;
    };
    // struct vfsmount is embedded in struct mount: container_of().
    let mut mnt = vfsmnt - u64::from(off.mount_mnt);
    let mut done = false;
    for _ in 0..PATH_DEPTH {
        let vfsmnt = mnt + u64::from(off.mount_mnt);
        let mnt_root: u64 = read(vfsmnt, off.vfsmount_root).unwrap_or(0);
        let parent: u64 = read(dentry, off.dentry_parent).unwrap_or(0);
        if dentry == mnt_root || dentry == parent || parent == 0 {
            let mnt_parent: u64 = read(mnt, off.mount_parent).unwrap_or(0);
            if mnt_parent == mnt || mnt_parent == 0 {
                done = true;
                break;
            }
            dentry = read(mnt, off.mount_mountpoint).unwrap_or(0);
            mnt = mnt_parent;
            continue;
        }
        let Some(name) = read::<u64>(dentry, off.dentry_name) else {
            break;
        };
        if out.len >= (PATH_BUF - NAME_READ) as u32 {
            break;
        }
        let at = (out.len as usize) & (PATH_BUF - 1);
        // SAFETY: at + NAME_READ < PATH_BUF by the check above.
        let n = unsafe {
            bpf_probe_read_kernel_str(buf.add(at).cast(), NAME_READ as u32, name as *const _)
        };
        if n <= 0 {
            break;
        }
        // The mask changes nothing (len < PATH_BUF - NAME_READ, n <= NAME_READ)
        // but gives the verifier one range for every path through the loop,
        // so its states converge instead of multiplying per iteration.
        out.len = (out.len + n as u32) & (PATH_BUF as u32 - 1);
        dentry = parent;
    }
    out.truncated = !done;
    out
}
