//! What userspace tells the programs before they are attached.

use core::mem::{offset_of, size_of};

/// An offset the running kernel's BTF does not have (e.g. `loginuid` without
/// `CONFIG_AUDIT`); the programs leave the field at its "unset" value.
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Byte offsets of the kernel struct fields the programs read, taken from
/// `/sys/kernel/btf/vmlinux` at start-up. rustc emits no CO-RE relocations
/// (rust-lang/rust#158412), so nothing here may be compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_group_leader: u32,
    pub task_real_parent: u32,
    pub task_start_boottime: u32,
    pub task_cred: u32,
    pub task_loginuid: u32,
    pub task_sessionid: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_exit_code: u32,
    pub task_files: u32,
    pub task_comm: u32,
    /// `task_struct::stack`: the task's kernel stack, whose top holds its
    /// user registers (`task_pt_regs()`).
    pub task_stack: u32,
    /// `task_struct::cgroups` (a `struct css_set *`).
    pub task_cgroups: u32,
    // struct css_set -> struct cgroup -> struct kernfs_node: the cgroup id
    // bpf_get_current_cgroup_id() reports (cgroup v2)
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    // struct files_struct, struct fdtable
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    // struct cred
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    // struct mm_struct
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_start_stack: u32,
    pub mm_exe_file: u32,
    // struct file, struct path, struct fs_struct
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    // struct inode, struct super_block
    pub inode_i_ino: u32,
    pub inode_i_mode: u32,
    pub inode_i_uid: u32,
    pub inode_i_gid: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub fs_pwd: u32,
    // struct dentry (d_name is a struct qstr; this is d_name.name)
    pub dentry_parent: u32,
    pub dentry_name: u32,
    /// `dentry::d_name.len`: the name's length, without its NUL.
    pub dentry_name_len: u32,
    /// `linux_binprm::argc`, the argument count of an exec.
    pub binprm_argc: u32,
    // struct mount (which embeds struct vfsmount at `mount_mnt`), struct vfsmount
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub mount_mnt: u32,
    pub vfsmount_root: u32,
    /// `mount::mnt_id`: what /proc/self/mountinfo shows first.
    pub mount_mnt_id: u32,
    // struct file -> struct socket -> struct sock
    pub file_private_data: u32,
    pub socket_sk: u32,
    // struct sock (its first member is struct sock_common)
    pub sock_family: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_dport: u32,
    pub sock_num: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_type: u32,
    pub sock_protocol: u32,
    // struct tcp_sock
    pub tcp_bytes_sent: u32,
    pub tcp_bytes_received: u32,
    // struct pt_regs: where a syscall's arguments 0-5 stay until its exit
    // (x86-64: di, si, dx, r10, r8, r9).
    pub syscall_regs: [u32; SYSCALL_ARGS],
}

/// Arguments a syscall can have.
pub const SYSCALL_ARGS: usize = 6;

impl KernelOffsets {
    /// Every offset missing: what the programs see before userspace writes.
    pub const MISSING: Self = Self {
        task_pid: OFFSET_MISSING,
        task_tgid: OFFSET_MISSING,
        task_group_leader: OFFSET_MISSING,
        task_real_parent: OFFSET_MISSING,
        task_start_boottime: OFFSET_MISSING,
        task_cred: OFFSET_MISSING,
        task_loginuid: OFFSET_MISSING,
        task_sessionid: OFFSET_MISSING,
        task_mm: OFFSET_MISSING,
        task_fs: OFFSET_MISSING,
        task_exit_code: OFFSET_MISSING,
        task_files: OFFSET_MISSING,
        task_comm: OFFSET_MISSING,
        task_stack: OFFSET_MISSING,
        task_cgroups: OFFSET_MISSING,
        css_set_dfl_cgrp: OFFSET_MISSING,
        cgroup_kn: OFFSET_MISSING,
        kernfs_node_id: OFFSET_MISSING,
        files_fdt: OFFSET_MISSING,
        fdtable_fd: OFFSET_MISSING,
        fdtable_max_fds: OFFSET_MISSING,
        cred_euid: OFFSET_MISSING,
        cred_uid: OFFSET_MISSING,
        cred_gid: OFFSET_MISSING,
        cred_egid: OFFSET_MISSING,
        mm_arg_start: OFFSET_MISSING,
        mm_arg_end: OFFSET_MISSING,
        mm_start_stack: OFFSET_MISSING,
        mm_exe_file: OFFSET_MISSING,
        file_f_path: OFFSET_MISSING,
        file_f_inode: OFFSET_MISSING,
        file_f_mode: OFFSET_MISSING,
        inode_i_ino: OFFSET_MISSING,
        inode_i_mode: OFFSET_MISSING,
        inode_i_uid: OFFSET_MISSING,
        inode_i_gid: OFFSET_MISSING,
        inode_i_sb: OFFSET_MISSING,
        sb_s_dev: OFFSET_MISSING,
        path_mnt: OFFSET_MISSING,
        path_dentry: OFFSET_MISSING,
        fs_pwd: OFFSET_MISSING,
        dentry_parent: OFFSET_MISSING,
        dentry_name: OFFSET_MISSING,
        dentry_name_len: OFFSET_MISSING,
        binprm_argc: OFFSET_MISSING,
        mount_parent: OFFSET_MISSING,
        mount_mountpoint: OFFSET_MISSING,
        mount_mnt: OFFSET_MISSING,
        vfsmount_root: OFFSET_MISSING,
        mount_mnt_id: OFFSET_MISSING,
        file_private_data: OFFSET_MISSING,
        socket_sk: OFFSET_MISSING,
        sock_family: OFFSET_MISSING,
        sock_daddr: OFFSET_MISSING,
        sock_rcv_saddr: OFFSET_MISSING,
        sock_dport: OFFSET_MISSING,
        sock_num: OFFSET_MISSING,
        sock_v6_daddr: OFFSET_MISSING,
        sock_v6_rcv_saddr: OFFSET_MISSING,
        sock_type: OFFSET_MISSING,
        sock_protocol: OFFSET_MISSING,
        tcp_bytes_sent: OFFSET_MISSING,
        tcp_bytes_received: OFFSET_MISSING,
        syscall_regs: [OFFSET_MISSING; SYSCALL_ARGS],
    };
}

/// The single entry of the `CONFIG` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// tgid of the sensor itself; 0 reports everything.
    pub sensor_tgid: u32,
    /// Non-zero when `sched_process_exit` passes `group_dead` (Linux 6.16+);
    /// otherwise a process exit is the exit of its thread-group leader.
    pub exit_has_group_dead: u32,
    /// `file_writes::*`: which writes become events.
    pub file_writes: u32,
    /// Non-zero: file operations that failed are reported too.
    pub report_failed: u32,
    /// A record wakes the consumer when the bytes waiting in the ring cross
    /// a multiple of this. Others are sent without a wakeup and the consumer
    /// finds them as it drains or on its next timed poll: a wakeup is an
    /// irq_work, a self-IPI that costs microseconds per record in a VM.
    /// A power of two (the programs find its multiples with a mask); 0:
    /// every record wakes.
    pub wakeup_bytes: u32,
    /// Ports whose UDP and TCP payloads are DNS messages, copied for
    /// userspace to parse; 0 marks an unused slot (all zero: no DNS capture).
    pub dns_ports: [u16; DNS_PORTS],
    /// A process's repeated opens for writing of one file (same flags) within
    /// this many milliseconds of the one last reported are counted, not
    /// reported; the next report carries the count. 0: every open is reported.
    pub open_repeat_window_ms: u32,
}

/// Most DNS ports the programs check (a fixed, unrolled comparison).
pub const DNS_PORTS: usize = 4;

/// `Config::file_writes`.
pub mod file_writes {
    /// No write events (opens for writing are still reported).
    pub const NONE: u32 = 0;
    /// The first write of each process to each file.
    pub const FIRST: u32 = 1;
    /// Every write (for audits; floods the pipeline under a write storm).
    pub const ALL: u32 = 2;
}

impl Config {
    pub const DEFAULT: Self = Self {
        sensor_tgid: 0,
        exit_has_group_dead: 0,
        file_writes: file_writes::FIRST,
        report_failed: 0,
        wakeup_bytes: 0,
        dns_ports: [53, 0, 0, 0],
        open_repeat_window_ms: 0,
    };
}

const _: () = assert!(size_of::<KernelOffsets>() == 69 * 4);
const _: () = assert!(size_of::<Config>() == 8 * 4);
const _: () = assert!(offset_of!(Config, open_repeat_window_ms) == 7 * 4);
const _: () = assert!(offset_of!(Config, dns_ports) == 5 * 4);
const _: () = assert!(offset_of!(Config, sensor_tgid) == 0);

/// How one syscall's arguments map onto a file record, so that one verified
/// program serves every syscall of a family. Userspace writes one per
/// syscall into `SYSCALL_SPECS`, keyed by the syscall number (userspace ABI,
/// `__syscall_nr` in the tracepoint record).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    /// `file_op::*`.
    pub op: u32,
    /// Argument indexes (0-5) or `arg::*`. For fd-based changes `dfd1` is the fd.
    pub dfd1: u8,
    pub name1: u8,
    pub dfd2: u8,
    pub name2: u8,
    pub mode: u8,
    /// The uid; the gid is the next argument.
    pub uid: u8,
    /// The operation's own flags (`AT_*`, `RENAME_*`).
    pub flags: u8,
    pub length: u8,
}

/// Slots of the `SYSCALL_SPECS` array: one past the largest syscall number
/// with a spec (x86-64 numbers stay below 512).
pub const SYSCALL_SPEC_SLOTS: u32 = 512;

/// Special values of the `SyscallSpec` argument indexes.
pub mod arg {
    /// The syscall has no such argument.
    pub const NONE: u8 = 0xff;
    /// The directory is the cwd (`AT_FDCWD` implied by the syscall).
    pub const CWD: u8 = 0xfe;
    /// The name has no base directory: a symlink's target text.
    pub const NO_BASE: u8 = 0xfd;
    /// openat2's flags: the flags and mode are the first two `u64`s of the
    /// `struct open_how` that argument 2 points to.
    pub const OPEN_HOW: u8 = 0xfc;
}

const _: () = assert!(size_of::<SyscallSpec>() == 12);
