//! File changes described from the kernel's own `struct file`: opens for
//! writing (and so creations), first writes, and the fd-based changes
//! (fchmod, fchown, ftruncate). The path is the kernel's resolution (dirfd,
//! cwd, `..`, symlinks, mounts), walked from the file; the caller's path
//! string is never read, so a racing rewrite of it cannot change the report.

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    ptr::{addr_of_mut, read_volatile},
};

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_ktime_get_boot_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use sensor_common::{
    Config, FILE_FIXED_LEN, FileEvent, PATH_BUF, SyscallSpec, arg as spec_arg, counter, file_op,
    file_writes, kind, path_flags,
};

use crate::kernel::{
    FileWindow, InodeWindow, RET, arg, config, config_for_others, count, current_task_btf,
    file_of_fd, header, is_own, koff, leader_start_boottime, on_ignored_mount, output_prefix, read,
    record, regs_syscall_arg, send_result, set, syscall_spec, task_info, task_regs, task_tgid,
    walk_path,
};

const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
/// The open(2) flags that tell one kind of open for writing from another
/// when repeats are folded.
const FOLD_FLAGS: u32 = O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND;
/// include/linux/fs.h: the file was opened for writing.
const FMODE_WRITE: u32 = 1 << 1;
/// include/linux/fs.h: this open created the file.
const FMODE_CREATED: u32 = 1 << 20;
const S_IFMT: u16 = 0o170_000;
const S_IFREG: u16 = 0o100_000;

#[map]
static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

/// A process's first write to a file: (inode, process) pairs already seen.
/// LRU, so a forgotten pair costs one repeated event, never a lookup failure.
#[repr(C)]
#[derive(Clone, Copy)]
struct WriterKey {
    inode: u64,
    /// The process's start time tells a reused tgid apart.
    start_boottime_ns: u64,
    tgid: u32,
    _pad0: u32,
}

#[map]
static WRITERS: LruHashMap<WriterKey, u8> = LruHashMap::with_max_entries(65_536, 0);

/// The last file each CPU found in `WRITERS`: a loop writing one file again
/// and again is let go after the fd lookup and one read (f_inode) instead
/// of five reads and a hash lookup. The struct file alone would not do: the
/// kernel reuses a closed file's memory for the next open at once, so the
/// inode behind it is compared too. `check` finds an entry torn by a write
/// on the same CPU that preempted this one (syscall tracepoints may sleep
/// since Linux 6.13, "tracing: Allow system call tracepoints to handle page
/// faults").
#[repr(C)]
#[derive(Clone, Copy)]
struct SeenWrite {
    file: u64,
    inode: u64,
    tgid: u64,
    check: u64,
}

impl SeenWrite {
    #[inline(always)]
    fn check_of(file: u64, inode: u64, tgid: u64) -> u64 {
        file ^ inode.rotate_left(21) ^ tgid.rotate_left(42) ^ 0x5eed_f11e
    }
}

#[map]
static LAST_SEEN_WRITE: PerCpuArray<SeenWrite> = PerCpuArray::with_max_entries(1, 0);

/// Whether `file` of process `tgid` is the one this CPU last found seen.
#[inline(always)]
fn seen_last(file: &FileWindow, tgid: u64) -> bool {
    let Some(last) = LAST_SEEN_WRITE.get(0) else {
        return false;
    };
    // SAFETY: the entry is plain integers; a torn copy fails `check`.
    let last = unsafe { read_volatile(last) };
    if last.file != file.base() || last.tgid != tgid {
        return false;
    }
    let inode: u64 = file.get(koff!(file_f_inode)).unwrap_or(0);
    last.inode == inode && last.check == SeenWrite::check_of(file.base(), inode, tgid)
}

/// Remembers `file` of process `tgid` as seen, on this CPU.
#[inline(always)]
fn remember_seen(file: u64, inode: u64, tgid: u64) {
    if let Some(last) = LAST_SEEN_WRITE.get_ptr_mut(0) {
        let entry = SeenWrite {
            file,
            inode,
            tgid,
            check: SeenWrite::check_of(file, inode, tgid),
        };
        // SAFETY: this CPU's own entry.
        unsafe { *last = entry };
    }
}

/// One kind of open for writing of one file by one process.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenKey {
    inode: u64,
    /// No start time beside it, unlike `WriterKey`: an entry counts only
    /// within the window, and a tgid comes back that soon only after
    /// pid_max forks in between.
    tgid: u32,
    /// The open's `FOLD_FLAGS`.
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenSeen {
    /// When this kind of open was last reported.
    reported_ns: u64,
    /// Opens folded since that report.
    folded: u64,
}

/// Reported opens for writing, for folding their repeats. LRU, so a
/// forgotten entry costs one more report, never a lost one.
#[map]
static OPENS_SEEN: LruHashMap<OpenKey, OpenSeen> = LruHashMap::with_max_entries(65_536, 0);

/// `None` when this open for writing repeats one reported less than the
/// window ago: it is counted (in the entry and in `counter::OPENS_FOLDED`)
/// instead of reported. Otherwise the opens folded since the previous report,
/// which this one carries. Creations are always reported. A loop reopening
/// one file (a log, a lock file) then costs a map lookup per open instead of
/// a path walk and an event.
#[inline(always)]
fn unfolded(cfg: &Config, tgid: u32, file: &FileWindow, flags: u32, f_mode: u32) -> Option<u32> {
    if cfg.open_repeat_window_ms == 0 || f_mode & FMODE_CREATED != 0 {
        return Some(0);
    }
    let key = OpenKey {
        inode: file.get(koff!(file_f_inode)).unwrap_or(0),
        tgid,
        flags: flags & FOLD_FLAGS,
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(seen) = OPENS_SEEN.get_ptr_mut(&key) else {
        let _ = OPENS_SEEN.insert(
            &key,
            &OpenSeen {
                reported_ns: now,
                folded: 0,
            },
            0,
        );
        return Some(0);
    };
    // SAFETY: a map value stays valid while the program runs. Threads of one
    // process may race on it: the count changes by atomic adds only, and
    // either thread's time will do.
    unsafe {
        let folded = addr_of_mut!((*seen).folded);
        if now.wrapping_sub((*seen).reported_ns) < u64::from(cfg.open_repeat_window_ms) * 1_000_000
        {
            atomic_xadd::<u64, u64, { Relaxed }>(folded, 1);
            count(counter::OPENS_FOLDED);
            return None;
        }
        (*seen).reported_ns = now;
        // Subtracted, not zeroed, so a racing thread's fold is not lost.
        let n = read_volatile(folded);
        atomic_xadd::<u64, u64, { Relaxed }>(folded, n.wrapping_neg());
        Some(n.min(u64::from(u32::MAX)) as u32)
    }
}

/// Whether open(2) flags ask for writing.
#[inline(always)]
pub fn writes(flags: u32) -> bool {
    flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0
}

/// The flags and mode of the open that is exiting, from its registers
/// (`SYSCALL_SPECS` says which; creat has no flags argument, openat2 keeps
/// them in user memory). The mode is read only for an open that writes.
#[inline(always)]
fn open_args(task: *const u8, spec: &SyscallSpec) -> (u32, u32) {
    let regs = task_regs(task);
    let arg = |i: u8| regs_syscall_arg(regs, i);
    match spec.flags {
        spec_arg::NONE => (O_CREAT | O_WRONLY | O_TRUNC, arg(spec.mode) as u32),
        spec_arg::OPEN_HOW => {
            // SAFETY: the caller's struct, read with a fault-safe helper.
            let how = unsafe { bpf_probe_read_user(arg(2) as *const [u64; 2]) }.unwrap_or([0, 0]);
            (how[0] as u32, how[1] as u32)
        }
        i => {
            let flags = arg(i) as u32;
            let mode = if writes(flags) {
                arg(spec.mode) as u32
            } else {
                0
            };
            (flags, mode)
        }
    }
}

/// Whether `file` lies on an ignored mount (then nothing is walked).
#[inline(always)]
fn ignored(file: &FileWindow) -> bool {
    on_ignored_mount(&file.path(koff!(file_f_path)))
}

/// Fills `ev` with the identity and path of `file`, whose inode is `inode`.
#[inline(always)]
fn describe_file(ev: &mut FileEvent, task: *const u8, file: &FileWindow, inode: &InodeWindow) {
    ev.task = task_info(task);
    ev.f_mode = file.get(koff!(file_f_mode)).unwrap_or(0);
    ev.ino = inode.get(koff!(inode_i_ino)).unwrap_or(0);
    ev.file_mode = u32::from(inode.get::<u16>(koff!(inode_i_mode)).unwrap_or(0));
    ev.owner_uid = inode.get(koff!(inode_i_uid)).unwrap_or(u32::MAX);
    ev.owner_gid = inode.get(koff!(inode_i_gid)).unwrap_or(u32::MAX);
    let sb: u64 = inode.get(koff!(inode_i_sb)).unwrap_or(0);
    ev.dev = read(sb, koff!(sb_s_dev)).unwrap_or(0);
    let walk = walk_path(file.path(koff!(file_f_path)), ev.path.as_mut_ptr());
    ev.path_len = walk.len;
    ev.path_flags = if walk.truncated {
        path_flags::TRUNCATED
    } else {
        0
    };
}

/// A blank file record in the per-CPU scratch.
#[inline(always)]
fn scratch(op: u32) -> Option<&'static mut FileEvent> {
    let ev = FILE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.op = op;
    set(&mut ev.flags, 0);
    set(&mut ev.mode, 0);
    ev.req_uid = u32::MAX;
    ev.req_gid = u32::MAX;
    set(&mut ev.result, 0);
    set(&mut ev.length, 0);
    set(&mut ev.repeats, 0);
    Some(ev)
}

/// Sends a described file record.
#[inline(always)]
fn submit(ev: &mut FileEvent) -> bool {
    let size = FILE_FIXED_LEN + (ev.path_len as usize & (PATH_BUF - 1));
    ev.header = header(kind::FILE, size);
    output_prefix(ev, size, kind::FILE)
}

/// Attached to the exit of every open flavour. The arguments are still in
/// the syscall's registers at its exit, so opens need no entry program: a
/// host's many read-only opens cost one register read each.
#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(spec) = syscall_spec(&ctx) else {
        return 0;
    };
    let task = current_task_btf();
    let (flags, mode) = open_args(task, &spec);
    if !writes(flags) {
        return 0;
    }
    let ret: i64 = record(&ctx, RET);
    if ret < 0 {
        // Completes the named record sys_enter_named took when failures
        // are reported. (After a success, the open's own record below
        // replaces the named one in userspace.)
        if cfg.report_failed != 0 {
            send_result(task, ret);
        }
        return 0;
    }
    let tgid = task_tgid(task);
    if is_own(cfg, tgid) {
        return 0;
    }
    let Some(file) = FileWindow::of(file_of_fd(task, ret as u64)) else {
        return 0;
    };
    if ignored(&file) {
        return 0;
    }
    let f_mode: u32 = file.get(koff!(file_f_mode)).unwrap_or(0);
    let Some(repeats) = unfolded(cfg, tgid, &file, flags, f_mode) else {
        return 0;
    };
    let Some(inode) = InodeWindow::of(file.get(koff!(file_f_inode)).unwrap_or(0)) else {
        return 0;
    };
    let Some(ev) = scratch(file_op::OPEN_WRITE) else {
        return 0;
    };
    describe_file(ev, task, &file, &inode);
    ev.repeats = repeats;
    ev.flags = flags;
    ev.mode = mode;
    ev.result = ret;
    submit(ev);
    0
}

/// Every write syscall passes the fd first. Only regular files opened for
/// writing count; with `file_writes::FIRST` only a process's first write to
/// each file passes. Reported at entry: the kernel already checked the fd
/// is writable, and hooking the exit too would tax every write on the host.
/// Attached to write, pwrite64, writev, pwritev and pwritev2.
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    // Most writes go to pipes, sockets and terminals: the cheap file checks
    // come before any map lookup.
    let Some(cfg) = config() else { return 0 };
    if cfg.file_writes == file_writes::NONE {
        return 0;
    }
    let fd: u64 = record(&ctx, arg(0));
    let task = current_task_btf();
    let Some(file) = FileWindow::of(file_of_fd(task, fd)) else {
        return 0;
    };
    let tgid = task_tgid(task);
    let first_only = cfg.file_writes == file_writes::FIRST;
    if first_only && seen_last(&file, u64::from(tgid)) {
        return 0;
    }
    let f_mode: u32 = file.get(koff!(file_f_mode)).unwrap_or(0);
    if f_mode & FMODE_WRITE == 0 {
        return 0;
    }
    let Some(inode) = InodeWindow::of(file.get(koff!(file_f_inode)).unwrap_or(0)) else {
        return 0;
    };
    if inode.get::<u16>(koff!(inode_i_mode)).unwrap_or(0) & S_IFMT != S_IFREG {
        return 0;
    }
    if first_only {
        let key = WriterKey {
            inode: inode.base(),
            start_boottime_ns: leader_start_boottime(task),
            tgid,
            _pad0: 0,
        };
        // SAFETY: the key is plain data; the value is not kept.
        // A repeated write leaves here, before the own-tree lookup: the
        // sensor's own writes are never inserted, so they never hit.
        if unsafe { WRITERS.get(&key) }.is_some() {
            remember_seen(file.base(), inode.base(), u64::from(tgid));
            return 0;
        }
        if is_own(cfg, tgid) {
            return 0;
        }
        let _ = WRITERS.insert(&key, &1, 0);
    } else if is_own(cfg, tgid) {
        return 0;
    }
    if ignored(&file) {
        return 0;
    }
    let Some(ev) = scratch(file_op::WRITE) else {
        return 0;
    };
    describe_file(ev, task, &file, &inode);
    submit(ev);
    0
}

/// fchmod/fchown/ftruncate (`SYSCALL_SPECS` says which): the file is
/// described at entry (it exists and cannot change identity under the fd);
/// the result follows from the exit.
#[tracepoint]
pub fn sys_enter_fd_change(ctx: TracePointContext) -> u32 {
    let task = current_task_btf();
    if config_for_others(task).is_none() {
        return 0;
    }
    let Some(spec) = syscall_spec(&ctx) else {
        return 0;
    };
    let regs = task_regs(task);
    let Some(file) = FileWindow::of(file_of_fd(task, regs_syscall_arg(regs, spec.dfd1))) else {
        return 0;
    };
    if ignored(&file) {
        return 0;
    }
    let Some(inode) = InodeWindow::of(file.get(koff!(file_f_inode)).unwrap_or(0)) else {
        return 0;
    };
    let Some(ev) = scratch(spec.op) else { return 0 };
    describe_file(ev, task, &file, &inode);
    if spec.mode != spec_arg::NONE {
        ev.mode = regs_syscall_arg(regs, spec.mode) as u32;
    }
    if spec.uid != spec_arg::NONE {
        ev.req_uid = regs_syscall_arg(regs, spec.uid) as u32;
        ev.req_gid = regs_syscall_arg(regs, spec.uid + 1) as u32;
    }
    if spec.length != spec_arg::NONE {
        ev.length = regs_syscall_arg(regs, spec.length);
    }
    ev.path_flags |= path_flags::AWAIT_RESULT;
    submit(ev);
    0
}
