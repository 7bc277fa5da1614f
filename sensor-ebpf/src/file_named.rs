//! File changes named by path (unlink, rmdir, mkdir, rename, link, symlink,
//! chmod, chown, truncate), from syscall tracepoints.
//!
//! Tracepoints never see the dentry these syscalls look up, so the record is
//! taken at entry: the caller's name, copied once and never re-read, and for
//! a relative name the base directory as the kernel holds it (the dirfd's
//! file or the cwd), walked in the kernel. The exit sends the result, and
//! userspace joins the two (failed operations are dropped there unless
//! configured).

use core::ptr::null;

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use sensor_common::{
    FileNamedEvent, NAME_BUF, NAMED_DATA, NAMED_FIXED_LEN, PATH_BUF, arg as spec_arg, file_op,
    kind, named_flags,
};

use crate::file::writes;
use crate::kernel::{
    FileWindow, PathRef, RET, config, config_for_others, current_task_btf, field, file_of_fd,
    header, koff, on_ignored_mount, output_prefix, record, regs_syscall_arg, send_result,
    syscall_spec, task_info, task_regs, walk_path,
};

const AT_FDCWD: i64 = -100;
/// include/uapi/linux/fcntl.h
const AT_REMOVEDIR: u64 = 0x200;
/// Marks a name that has no base directory: a symlink's target text.
const NO_BASE: i64 = i64::MIN;

#[map]
static NAMED_SCRATCH: PerCpuArray<FileNamedEvent> = PerCpuArray::with_max_entries(1, 0);

/// One path argument: a directory fd (or `AT_FDCWD`, or `NO_BASE`) and the
/// caller's name pointer.
#[derive(Clone, Copy)]
struct PathArg {
    dfd: i64,
    name: u64,
}

/// What a named operation passed, in the record's terms.
struct Named {
    op: u32,
    first: PathArg,
    second: Option<PathArg>,
    op_flags: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    length: u64,
}

impl Named {
    const fn new(op: u32, first: PathArg) -> Self {
        Self {
            op,
            first,
            second: None,
            op_flags: 0,
            mode: 0,
            uid: u32::MAX,
            gid: u32::MAX,
            length: 0,
        }
    }
}

/// Where the record keeps one path's lengths and flags.
#[derive(Clone, Copy)]
struct Slots {
    name_len: *mut u32,
    base_len: *mut u32,
    /// `named_flags` shift of this path.
    shift: u32,
}

/// A length the record holds, read back from map memory: the verifier then
/// sees one unknown value, bounded by the mask, instead of carrying every
/// branch's exact range into the walk that follows (which multiplied its
/// states past the 1M-instruction limit once one program served every
/// named syscall).
#[inline(always)]
fn stored(len: *mut u32, mask: usize) -> usize {
    // SAFETY: `len` points into the per-CPU scratch record.
    (unsafe { core::ptr::read_volatile(len) } as usize) & mask
}

/// Copies the name at `start` and, for a relative name, walks its base right
/// after it, keeping lengths and flags in the record. `false` when the base
/// lies on an ignored mount. `task` is the current task's BTF pointer.
#[inline(always)]
fn path_area(
    task: *const u8,
    path: PathArg,
    ev: *mut FileNamedEvent,
    start: usize,
    slots: Slots,
) -> bool {
    // SAFETY: `ev` is the per-CPU scratch record owned by this run.
    let data = unsafe { (*ev).data.as_mut_ptr() };
    let pos = start & (NAMED_DATA - 1);
    // SAFETY: pos < NAMED_DATA and the record has NAMED_SLACK >= NAME_BUF
    // bytes after `data`; the helper faults safely on a bad user pointer.
    let n = unsafe {
        bpf_probe_read_user_str(data.add(pos).cast(), NAME_BUF as u32, path.name as *const _)
    };
    let mut flags = 0;
    if n <= 0 {
        flags |= named_flags::NAME_UNREADABLE;
    } else if n as usize >= NAME_BUF {
        flags |= named_flags::NAME_TRUNCATED;
    }
    // SAFETY: pos is inside the record (see above).
    let first = if n > 0 { unsafe { *data.add(pos) } } else { 0 };
    if path.dfd == NO_BASE || first == b'/' {
        flags |= named_flags::NO_BASE;
    }
    // SAFETY: the slots and flags point into the scratch record.
    unsafe {
        core::ptr::write_volatile(slots.name_len, n.max(0) as u32);
        core::ptr::write_volatile(slots.base_len, 0);
        (*ev).flags |= flags << slots.shift;
    }
    if flags & named_flags::NO_BASE != 0 {
        return true;
    }
    let base = if path.dfd == AT_FDCWD {
        let fs: *const u8 = field(task, koff!(task_fs)).unwrap_or(null());
        PathRef::in_btf(fs, koff!(fs_pwd))
    } else if path.dfd >= 0 {
        FileWindow::of(file_of_fd(task, path.dfd as u64))
            .map_or(PathRef::NONE, |f| f.path(koff!(file_f_path)))
    } else {
        PathRef::NONE
    };
    if on_ignored_mount(&base) {
        return false;
    }
    let pos = (pos + stored(slots.name_len, NAME_BUF * 2 - 1)) & (NAMED_DATA - 1);
    // SAFETY: a walk writes at most PATH_BUF bytes; see NAMED_SLACK.
    let walk = walk_path(base, unsafe { data.add(pos) });
    // SAFETY: the slots and flags point into the scratch record.
    unsafe {
        core::ptr::write_volatile(slots.base_len, walk.len);
        if walk.truncated {
            (*ev).flags |= named_flags::BASE_TRUNCATED << slots.shift;
        }
    }
    true
}

#[inline(always)]
fn named_enter(task: *const u8, n: &Named) -> u32 {
    if config_for_others(task).is_none() {
        return 0;
    }
    let Some(ev) = NAMED_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch owned by this program run; fields are reached
    // through the raw pointer so the slots can alias them.
    let first = unsafe {
        (*ev).flags = 0;
        Slots {
            name_len: &raw mut (*ev).name1_len,
            base_len: &raw mut (*ev).base1_len,
            shift: 0,
        }
    };
    // SAFETY: as above.
    let second = unsafe {
        Slots {
            name_len: &raw mut (*ev).name2_len,
            base_len: &raw mut (*ev).base2_len,
            shift: named_flags::SECOND,
        }
    };
    if !path_area(task, n.first, ev, 0, first) {
        return 0;
    }
    let mut used = stored(first.name_len, NAME_BUF * 2 - 1) + stored(first.base_len, PATH_BUF - 1);
    if let Some(path) = n.second {
        if !path_area(task, path, ev, used, second) {
            return 0;
        }
        used += stored(second.name_len, NAME_BUF * 2 - 1) + stored(second.base_len, PATH_BUF - 1);
    } else {
        // SAFETY: slots point into the scratch record.
        unsafe {
            core::ptr::write_volatile(second.name_len, 0);
            core::ptr::write_volatile(second.base_len, 0);
        }
    }
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.task = task_info(task);
    ev.op = n.op;
    ev.op_flags = n.op_flags;
    ev.mode = n.mode;
    ev.req_uid = n.uid;
    ev.req_gid = n.gid;
    ev.length = n.length;
    let size = NAMED_FIXED_LEN + (used & (NAMED_DATA - 1));
    ev.header = header(kind::FILE_NAMED, size);
    output_prefix(ev, size, kind::FILE_NAMED);
    0
}

/// A path argument as the spec describes it.
#[inline(always)]
fn path_arg(regs: u64, dfd: u8, name: u8) -> PathArg {
    let dfd = match dfd {
        spec_arg::CWD => AT_FDCWD,
        spec_arg::NO_BASE => NO_BASE,
        i => i64::from(regs_syscall_arg(regs, i) as i32),
    };
    PathArg {
        dfd,
        name: regs_syscall_arg(regs, name),
    }
}

/// Attached to unlink, unlinkat, rmdir, mkdir, mkdirat, rename, renameat,
/// renameat2, link, linkat, symlink, symlinkat, chmod, fchmodat, fchmodat2,
/// chown, lchown, fchownat and truncate; `SYSCALL_SPECS` says where each
/// keeps its arguments.
#[tracepoint]
pub fn sys_enter_named(ctx: TracePointContext) -> u32 {
    let Some(spec) = syscall_spec(&ctx) else {
        return 0;
    };
    let task = current_task_btf();
    let regs = task_regs(task);
    let opt = |i: u8| (i != spec_arg::NONE).then(|| regs_syscall_arg(regs, i));
    let op_flags = opt(spec.flags).unwrap_or(0);
    if spec.op == file_op::OPEN_WRITE {
        // Attached to the opens only when failures are reported: the exit
        // sends the result of a failed open; a successful one has its own
        // record and drops this one.
        let Some(cfg) = config() else { return 0 };
        if cfg.report_failed == 0 || (spec.flags != spec_arg::NONE && !writes(op_flags as u32)) {
            return 0;
        }
    }
    let op = if spec.op == file_op::UNLINK && op_flags & AT_REMOVEDIR != 0 {
        file_op::RMDIR
    } else {
        spec.op
    };
    let mut n = Named::new(op, path_arg(regs, spec.dfd1, spec.name1));
    if spec.name2 != spec_arg::NONE {
        n.second = Some(path_arg(regs, spec.dfd2, spec.name2));
    }
    n.op_flags = op_flags as u32;
    n.mode = opt(spec.mode).unwrap_or(0) as u32;
    if spec.uid != spec_arg::NONE {
        n.uid = regs_syscall_arg(regs, spec.uid) as u32;
        n.gid = regs_syscall_arg(regs, spec.uid + 1) as u32;
    }
    n.length = opt(spec.length).unwrap_or(0);
    named_enter(task, &n)
}

/// Attached to the exit of every syscall whose entry may have sent a record.
#[tracepoint]
pub fn sys_exit_result(ctx: TracePointContext) -> u32 {
    send_result(current_task_btf(), record(&ctx, RET));
    0
}
