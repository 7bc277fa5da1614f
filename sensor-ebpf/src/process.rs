//! Process lifecycle: exec, fork of a new process, exit of a process.

use core::ptr::null;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user_buf},
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use sensor_common::{
    ARGV_BUF, EXEC_DATA, EXEC_FIXED_LEN, ExecEvent, ExitEvent, ForkEvent, OFFSET_MISSING, PATH_BUF,
    exec_flags, kind,
};

use crate::kernel::{
    PathRef, Reserved, config, current_task_btf, current_task_info, field, header, header_at,
    is_own, join_own_tree, koff, leave_own_tree, output_prefix, read, task_info, task_tgid,
    walk_path,
};

/// Exec records are ~8 KiB: built here, not on the 512-byte stack.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
/// (include/trace/events/sched.h). Runs in the new image, after
/// `begin_new_exec`, so `current->mm` already describes the new program.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(ctx: RawTracePointContext) -> u32 {
    if config().is_none() {
        return 0;
    }
    let Some(ev) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    let task = current_task_btf();
    ev.task = task_info(task);
    ev.flags = 0;

    let mm: *const u8 = field(task, koff!(task_mm)).unwrap_or(null());
    let data = ev.data.as_mut_ptr();

    // The executable as the kernel opened it: mm->exe_file->f_path. Each
    // walk's length is below PATH_BUF, so the cwd's walk starts inside the
    // first PATH_BUF bytes and argv inside the first 2 * PATH_BUF; the masks
    // change nothing but give the verifier those bounds.
    let exe_file: u64 = field(mm, koff!(mm_exe_file)).unwrap_or(0);
    let exe_path = if exe_file == 0 || koff!(file_f_path) == OFFSET_MISSING {
        PathRef::NONE
    } else {
        PathRef::at(exe_file + u64::from(koff!(file_f_path)))
    };
    let exe = walk_path(exe_path, data);
    ev.exe_len = exe.len;
    if exe.truncated {
        ev.flags |= exec_flags::EXE_TRUNCATED;
    }
    let cwd_at = exe.len as usize & (PATH_BUF - 1);

    let fs: *const u8 = field(task, koff!(task_fs)).unwrap_or(null());
    // SAFETY: cwd_at < PATH_BUF, and the walk writes at most PATH_BUF bytes.
    let cwd = walk_path(PathRef::in_btf(fs, koff!(fs_pwd)), unsafe {
        data.add(cwd_at)
    });
    ev.cwd_len = cwd.len;
    if cwd.truncated {
        ev.flags |= exec_flags::CWD_TRUNCATED;
    }
    let argv_at = (cwd_at + cwd.len as usize) & (2 * PATH_BUF - 1);

    // argv: the NUL-separated strings between mm->arg_start and arg_end.
    let arg_start: u64 = field(mm, koff!(mm_arg_start)).unwrap_or(0);
    let arg_end: u64 = field(mm, koff!(mm_arg_end)).unwrap_or(0);
    let mut len = arg_end.saturating_sub(arg_start);
    if len >= ARGV_BUF as u64 {
        len = ARGV_BUF as u64 - 1;
        ev.flags |= exec_flags::ARGV_TRUNCATED;
    }
    // The mask is a no-op after the clamp; it lets the verifier see the bound.
    let len = (len as usize) & (ARGV_BUF - 1);
    // SAFETY: reads user memory of the current task into the scratch buffer;
    // argv_at + len < 2 * PATH_BUF + ARGV_BUF.
    let rc =
        unsafe { probe_read_user_buf(data.add(argv_at).cast(), len as u32, arg_start as *const _) };
    ev.argv_len = if rc == 0 {
        len as u32
    } else {
        ev.flags |= exec_flags::ARGV_UNREADABLE;
        0
    };

    // argc as the exec counted it: linux_binprm::argc (the raw tracepoint's
    // third argument), a load where the top of the new stack took a helper
    // call; from there (create_elf_tables() puts it where mm->start_stack
    // points) only if the kernel's BTF lacks the field.
    let bprm: u64 = ctx.arg(2);
    ev.argc = match read::<i32>(bprm, koff!(binprm_argc)) {
        Some(argc) if argc >= 0 => argc as u32,
        _ => {
            let start_stack: u64 = field(mm, koff!(mm_start_stack)).unwrap_or(0);
            // SAFETY: reads user memory of the current task, fault-safe.
            match unsafe { bpf_probe_read_user(start_stack as *const u64) } {
                Ok(argc) if start_stack != 0 => argc as u32,
                _ => {
                    ev.flags |= exec_flags::ARGC_UNKNOWN;
                    0
                }
            }
        }
    };

    let size = EXEC_FIXED_LEN + ((argv_at + ev.argv_len as usize) & (EXEC_DATA - 1));
    ev.header = header(kind::EXEC, size);
    output_prefix(ev, size, kind::EXEC);
    0
}

/// `TP_PROTO(struct task_struct *parent, struct task_struct *child)`.
/// Fires for threads too; only new processes (child tid == child tgid) pass.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn proc_fork(ctx: RawTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    // A raw tracepoint's arguments are plain numbers to the verifier, so the
    // child's fields take helper reads: its pid and tgid in one when the
    // kernel keeps them side by side (it has since 2.6).
    let child: u64 = ctx.arg(1);
    let (child_tid, child_tgid) = if koff!(task_tgid) == koff!(task_pid) + 4 {
        let ids = read::<u64>(child, koff!(task_pid)).unwrap_or(0);
        (ids as u32, (ids >> 32) as u32)
    } else {
        (
            read::<u32>(child, koff!(task_pid)).unwrap_or(0),
            read::<u32>(child, koff!(task_tgid)).unwrap_or(0),
        )
    };
    if child_tid != child_tgid {
        return 0;
    }
    let task = current_task_info();
    if is_own(cfg, task.tgid) {
        join_own_tree(child_tgid);
    }
    // The child's start (copy_process() stamps it with the boot clock just
    // before this tracepoint) is the fork's time: a load, where reading the
    // clock again was a helper call.
    let child_start: u64 = read(child, koff!(task_start_boottime)).unwrap_or(0);
    let size = size_of::<ForkEvent>();
    let Some(mut reserved) = Reserved::new(kind::FORK) else {
        return 0;
    };
    *reserved.record() = ForkEvent {
        header: if child_start != 0 {
            header_at(kind::FORK, size, child_start)
        } else {
            header(kind::FORK, size)
        },
        task,
        child_start_boottime_ns: child_start,
        child_tid,
        child_tgid,
    };
    reserved.submit();
    0
}

/// `TP_PROTO(struct task_struct *p, bool group_dead)` (group_dead since
/// Linux 6.16). Runs in do_exit() after `exit_code` is set and before the mm
/// and files are released. Only the exit of the whole process is reported.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(ctx: RawTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let current = current_task_btf();
    // Decided before the process is described: a thread's exit costs no more.
    let last = if cfg.exit_has_group_dead != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        field::<u32>(current, koff!(task_pid)) == Some(task_tgid(current))
    };
    if !last {
        return 0;
    }
    let task = task_info(current);
    leave_own_tree(cfg, task.tgid);
    let Some(mut reserved) = Reserved::new(kind::EXIT) else {
        return 0;
    };
    *reserved.record() = ExitEvent {
        header: header(kind::EXIT, size_of::<ExitEvent>()),
        task,
        exit_status: field(current, koff!(task_exit_code)).unwrap_or(0),
        _pad0: 0,
    };
    reserved.submit();
    0
}
