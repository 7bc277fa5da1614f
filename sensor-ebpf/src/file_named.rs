//! File changes named by path (unlink, rmdir, mkdir, rename, link, symlink,
//! chmod, chown, truncate), from syscall tracepoints.
//!
//! Tracepoints never see the dentry these syscalls look up, so the record is
//! taken at entry: the caller's name, copied once and never re-read, and for
//! a relative name the base directory as the kernel holds it (the dirfd's
//! file or the cwd), walked in the kernel. The exit sends the result, and
//! userspace joins the two (failed operations are dropped there unless
//! configured).

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use sensor_common::{
    FileNamedEvent, KernelOffsets, NAME_BUF, NAMED_DATA, NAMED_FIXED_LEN, OFFSET_MISSING, file_op,
    kind, named_flags,
};

use crate::kernel::{
    RET, arg, config_for_others, current_task, current_task_info, file_of_fd, header,
    on_ignored_mount, output_prefix, read, remember_result, send_result, walk_path,
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

/// One path's areas in `data`: lengths and `named_flags`.
struct Area {
    name_len: u32,
    base_len: u32,
    flags: u32,
}

/// Copies the name at `*at` and, for a relative name, walks its base right
/// after it. `None` when the base lies on an ignored mount.
#[inline(always)]
fn path_area(off: &KernelOffsets, path: PathArg, data: *mut u8, at: &mut usize) -> Option<Area> {
    let mut area = Area {
        name_len: 0,
        base_len: 0,
        flags: 0,
    };
    let pos = *at & (NAMED_DATA - 1);
    // SAFETY: pos < NAMED_DATA and the record has NAMED_SLACK >= NAME_BUF
    // bytes after `data`; the helper faults safely on a bad user pointer.
    let n = unsafe {
        bpf_probe_read_user_str(data.add(pos).cast(), NAME_BUF as u32, path.name as *const _)
    };
    if n > 0 {
        area.name_len = n as u32;
        if n as usize >= NAME_BUF {
            area.flags |= named_flags::NAME_TRUNCATED;
        }
    } else {
        area.flags |= named_flags::NAME_UNREADABLE;
    }
    // SAFETY: pos is inside the record (see above).
    let first = if n > 0 { unsafe { *data.add(pos) } } else { 0 };
    *at = pos + (area.name_len as usize & (NAME_BUF * 2 - 1));
    if path.dfd == NO_BASE || first == b'/' {
        area.flags |= named_flags::NO_BASE;
        return Some(area);
    }
    let (owner, field) = if path.dfd == AT_FDCWD {
        (
            read::<u64>(current_task(), off.task_fs).unwrap_or(0),
            off.fs_pwd,
        )
    } else if path.dfd >= 0 {
        (file_of_fd(off, path.dfd as u64), off.file_f_path)
    } else {
        (0, OFFSET_MISSING)
    };
    if owner != 0 && field != OFFSET_MISSING && on_ignored_mount(off, owner + u64::from(field)) {
        return None;
    }
    let pos = *at & (NAMED_DATA - 1);
    // SAFETY: a walk writes at most PATH_BUF bytes; see NAMED_SLACK.
    let walk = walk_path(off, owner, field, unsafe { data.add(pos) });
    area.base_len = walk.len;
    if walk.truncated {
        area.flags |= named_flags::BASE_TRUNCATED;
    }
    *at = pos + walk.len as usize;
    Some(area)
}

#[inline(always)]
fn named_enter(n: &Named) -> u32 {
    let Some(cfg) = config_for_others() else {
        return 0;
    };
    let off = &cfg.offsets;
    let Some(ev) = NAMED_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    let data = ev.data.as_mut_ptr();
    let mut at = 0;
    let Some(first) = path_area(off, n.first, data, &mut at) else {
        return 0;
    };
    let second = match n.second {
        Some(path) => match path_area(off, path, data, &mut at) {
            Some(area) => area,
            None => return 0,
        },
        None => Area {
            name_len: 0,
            base_len: 0,
            flags: 0,
        },
    };
    ev.task = current_task_info(off);
    ev.op = n.op;
    ev.flags = first.flags | (second.flags << named_flags::SECOND);
    ev.op_flags = n.op_flags;
    ev.mode = n.mode;
    ev.req_uid = n.uid;
    ev.req_gid = n.gid;
    ev.length = n.length;
    ev.name1_len = first.name_len;
    ev.base1_len = first.base_len;
    ev.name2_len = second.name_len;
    ev.base2_len = second.base_len;
    let size = NAMED_FIXED_LEN + (at & (NAMED_DATA - 1));
    ev.header = header(kind::FILE_NAMED, size);
    if output_prefix(ev, size, kind::FILE_NAMED) {
        remember_result();
    }
    0
}

/// Syscall argument `i` of this tracepoint's record.
#[inline(always)]
fn a(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: reading this tracepoint's own record.
    unsafe { ctx.read_at::<u64>(arg(i)) }.unwrap_or(0)
}

#[inline(always)]
fn cwd(ctx: &TracePointContext, i: usize) -> PathArg {
    PathArg {
        dfd: AT_FDCWD,
        name: a(ctx, i),
    }
}

#[inline(always)]
fn at(ctx: &TracePointContext, dfd: usize, name: usize) -> PathArg {
    PathArg {
        dfd: i64::from(a(ctx, dfd) as i32),
        name: a(ctx, name),
    }
}

/// `unlink(const char *pathname)`
#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn sys_enter_unlink(ctx: TracePointContext) -> u32 {
    named_enter(&Named::new(file_op::UNLINK, cwd(&ctx, 0)))
}

/// `unlinkat(int dfd, const char *pathname, int flag)`
#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    let flag = a(&ctx, 2);
    let op = if flag & AT_REMOVEDIR != 0 {
        file_op::RMDIR
    } else {
        file_op::UNLINK
    };
    let mut n = Named::new(op, at(&ctx, 0, 1));
    n.op_flags = flag as u32;
    named_enter(&n)
}

/// `rmdir(const char *pathname)`
#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    named_enter(&Named::new(file_op::RMDIR, cwd(&ctx, 0)))
}

/// `mkdir(const char *pathname, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn sys_enter_mkdir(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::MKDIR, cwd(&ctx, 0));
    n.mode = a(&ctx, 1) as u32;
    named_enter(&n)
}

/// `mkdirat(int dfd, const char *pathname, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn sys_enter_mkdirat(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::MKDIR, at(&ctx, 0, 1));
    n.mode = a(&ctx, 2) as u32;
    named_enter(&n)
}

/// `rename(const char *oldname, const char *newname)`
#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn sys_enter_rename(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::RENAME, cwd(&ctx, 0));
    n.second = Some(cwd(&ctx, 1));
    named_enter(&n)
}

/// `renameat(int olddfd, const char *oldname, int newdfd, const char *newname)`
#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn sys_enter_renameat(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::RENAME, at(&ctx, 0, 1));
    n.second = Some(at(&ctx, 2, 3));
    named_enter(&n)
}

/// `renameat2(int olddfd, const char *oldname, int newdfd, const char *newname, unsigned int flags)`
#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn sys_enter_renameat2(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::RENAME, at(&ctx, 0, 1));
    n.second = Some(at(&ctx, 2, 3));
    n.op_flags = a(&ctx, 4) as u32;
    named_enter(&n)
}

/// `link(const char *oldname, const char *newname)`
#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn sys_enter_link(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::LINK, cwd(&ctx, 0));
    n.second = Some(cwd(&ctx, 1));
    named_enter(&n)
}

/// `linkat(int olddfd, const char *oldname, int newdfd, const char *newname, int flags)`
#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn sys_enter_linkat(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::LINK, at(&ctx, 0, 1));
    n.second = Some(at(&ctx, 2, 3));
    n.op_flags = a(&ctx, 4) as u32;
    named_enter(&n)
}

/// `symlink(const char *oldname, const char *newname)`: the old name is
/// the link's target text, stored as given.
#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn sys_enter_symlink(ctx: TracePointContext) -> u32 {
    let target = PathArg {
        dfd: NO_BASE,
        name: a(&ctx, 0),
    };
    let mut n = Named::new(file_op::SYMLINK, target);
    n.second = Some(cwd(&ctx, 1));
    named_enter(&n)
}

/// `symlinkat(const char *oldname, int newdfd, const char *newname)`
#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn sys_enter_symlinkat(ctx: TracePointContext) -> u32 {
    let target = PathArg {
        dfd: NO_BASE,
        name: a(&ctx, 0),
    };
    let mut n = Named::new(file_op::SYMLINK, target);
    n.second = Some(at(&ctx, 1, 2));
    named_enter(&n)
}

/// `chmod(const char *filename, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_chmod")]
pub fn sys_enter_chmod(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::CHMOD, cwd(&ctx, 0));
    n.mode = a(&ctx, 1) as u32;
    named_enter(&n)
}

/// `fchmodat(int dfd, const char *filename, umode_t mode)`
#[tracepoint(category = "syscalls", name = "sys_enter_fchmodat")]
pub fn sys_enter_fchmodat(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::CHMOD, at(&ctx, 0, 1));
    n.mode = a(&ctx, 2) as u32;
    named_enter(&n)
}

/// `fchmodat2(int dfd, const char *filename, umode_t mode, unsigned int flags)`
#[tracepoint(category = "syscalls", name = "sys_enter_fchmodat2")]
pub fn sys_enter_fchmodat2(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::CHMOD, at(&ctx, 0, 1));
    n.mode = a(&ctx, 2) as u32;
    n.op_flags = a(&ctx, 3) as u32;
    named_enter(&n)
}

#[inline(always)]
fn chown(ctx: &TracePointContext, path: PathArg, ids: usize, flags: Option<usize>) -> u32 {
    let mut n = Named::new(file_op::CHOWN, path);
    n.uid = a(ctx, ids) as u32;
    n.gid = a(ctx, ids + 1) as u32;
    n.op_flags = flags.map_or(0, |i| a(ctx, i) as u32);
    named_enter(&n)
}

/// `chown(const char *filename, uid_t user, gid_t group)`
#[tracepoint(category = "syscalls", name = "sys_enter_chown")]
pub fn sys_enter_chown(ctx: TracePointContext) -> u32 {
    chown(&ctx, cwd(&ctx, 0), 1, None)
}

/// `lchown(const char *filename, uid_t user, gid_t group)`
#[tracepoint(category = "syscalls", name = "sys_enter_lchown")]
pub fn sys_enter_lchown(ctx: TracePointContext) -> u32 {
    chown(&ctx, cwd(&ctx, 0), 1, None)
}

/// `fchownat(int dfd, const char *filename, uid_t user, gid_t group, int flag)`
#[tracepoint(category = "syscalls", name = "sys_enter_fchownat")]
pub fn sys_enter_fchownat(ctx: TracePointContext) -> u32 {
    chown(&ctx, at(&ctx, 0, 1), 2, Some(4))
}

/// `truncate(const char *path, long length)`
#[tracepoint(category = "syscalls", name = "sys_enter_truncate")]
pub fn sys_enter_truncate(ctx: TracePointContext) -> u32 {
    let mut n = Named::new(file_op::TRUNCATE, cwd(&ctx, 0));
    n.length = a(&ctx, 1);
    named_enter(&n)
}

/// Exit programs: every syscall whose entry may have produced a record.
macro_rules! result_exits {
    ($($name:ident),* $(,)?) => {
        $(
            #[tracepoint]
            pub fn $name(ctx: TracePointContext) -> u32 {
                // SAFETY: reading this tracepoint's own record.
                send_result(unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0));
                0
            }
        )*
    };
}

result_exits!(
    sys_exit_unlink,
    sys_exit_unlinkat,
    sys_exit_rmdir,
    sys_exit_mkdir,
    sys_exit_mkdirat,
    sys_exit_rename,
    sys_exit_renameat,
    sys_exit_renameat2,
    sys_exit_link,
    sys_exit_linkat,
    sys_exit_symlink,
    sys_exit_symlinkat,
    sys_exit_chmod,
    sys_exit_fchmodat,
    sys_exit_fchmodat2,
    sys_exit_chown,
    sys_exit_lchown,
    sys_exit_fchownat,
    sys_exit_truncate,
    sys_exit_fchmod,
    sys_exit_fchown,
    sys_exit_ftruncate,
);
