//! File changes: opens for writing (and so creations), from the syscall
//! tracepoints. The enter program keeps the caller's flags; the exit program,
//! once the kernel succeeded, describes the opened `struct file` itself: its
//! path as the kernel resolved it (dirfd, cwd, `..`, symlinks, mounts), inode,
//! device and owner. The caller's path string is never read, so a racing
//! rewrite of it cannot change what is reported.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use sensor_common::{FILE_FIXED_LEN, FileEvent, PATH_BUF, file_op, kind, path_flags};

use crate::kernel::{
    RET, arg, config, current_task_info, file_of_fd, header, is_own, output_prefix, read, walk_path,
};

const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

/// Flags and mode of an open in flight, by thread.
#[derive(Clone, Copy)]
#[repr(C)]
struct PendingOpen {
    flags: u32,
    mode: u32,
}

/// Bounded: a thread has at most one open in flight; an entry whose exit
/// never comes is overwritten or evicted.
#[map]
static PENDING_OPENS: HashMap<u64, PendingOpen> = HashMap::with_max_entries(16_384, 0);

#[map]
static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn writes(flags: u32) -> bool {
    flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0
}

#[inline(always)]
fn remember(flags: u32, mode: u32) {
    if !writes(flags) {
        return;
    }
    let Some(cfg) = config() else { return };
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_own(cfg, (pid_tgid >> 32) as u32) {
        return;
    }
    // A full map only loses this one open; it is never waited on.
    let _ = PENDING_OPENS.insert(pid_tgid, PendingOpen { flags, mode }, 0);
}

/// `open(const char *filename, int flags, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    // SAFETY: reading this tracepoint's own record.
    let (flags, mode) = unsafe { (ctx.read_at::<u64>(arg(1)), ctx.read_at::<u64>(arg(2))) };
    remember(flags.unwrap_or(0) as u32, mode.unwrap_or(0) as u32);
    0
}

/// `openat(int dfd, const char *filename, int flags, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: reading this tracepoint's own record.
    let (flags, mode) = unsafe { (ctx.read_at::<u64>(arg(2)), ctx.read_at::<u64>(arg(3))) };
    remember(flags.unwrap_or(0) as u32, mode.unwrap_or(0) as u32);
    0
}

/// `openat2(int dfd, const char *filename, struct open_how *how, size_t size)`;
/// `struct open_how { u64 flags; u64 mode; u64 resolve; }` is in user memory.
#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: reading this tracepoint's own record, then the caller's struct.
    let how = unsafe { ctx.read_at::<u64>(arg(2)) }.unwrap_or(0);
    let how = unsafe { bpf_probe_read_user(how as *const [u64; 2]) }.unwrap_or([0, 0]);
    remember(how[0] as u32, how[1] as u32);
    0
}

/// `creat(const char *pathname, umode_t mode)` is open(O_CREAT|O_WRONLY|O_TRUNC).
#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    // SAFETY: reading this tracepoint's own record.
    let mode = unsafe { ctx.read_at::<u64>(arg(1)) }.unwrap_or(0);
    remember(O_CREAT | 0o1 | O_TRUNC, mode as u32);
    0
}

/// Shared by every open flavour's exit.
#[inline(always)]
fn open_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the key is a plain integer; the value is copied out at once.
    let Some(pending) = (unsafe { PENDING_OPENS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING_OPENS.remove(&pid_tgid);
    // SAFETY: reading this tracepoint's own record.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if ret < 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    let off = &cfg.offsets;
    let file = file_of_fd(off, ret as u64);
    if file == 0 {
        return 0;
    }
    let Some(ev) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.task = current_task_info(off);
    ev.op = file_op::OPEN_WRITE;
    ev.flags = pending.flags;
    ev.mode = pending.mode;
    ev.result = ret;
    ev.f_mode = read(file, off.file_f_mode).unwrap_or(0);
    let inode: u64 = read(file, off.file_f_inode).unwrap_or(0);
    ev.ino = read(inode, off.inode_i_ino).unwrap_or(0);
    ev.file_mode = u32::from(read::<u16>(inode, off.inode_i_mode).unwrap_or(0));
    ev.owner_uid = read(inode, off.inode_i_uid).unwrap_or(u32::MAX);
    ev.owner_gid = read(inode, off.inode_i_gid).unwrap_or(u32::MAX);
    let sb: u64 = read(inode, off.inode_i_sb).unwrap_or(0);
    ev.dev = read(sb, off.sb_s_dev).unwrap_or(0);
    let walk = walk_path(off, file, off.file_f_path, ev.path.as_mut_ptr());
    ev.path_len = walk.len;
    ev.path_flags = if walk.truncated {
        path_flags::TRUNCATED
    } else {
        0
    };
    let size = FILE_FIXED_LEN + (ev.path_len as usize & (PATH_BUF - 1));
    ev.header = header(kind::FILE, size);
    output_prefix(ev, size, kind::FILE);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}
