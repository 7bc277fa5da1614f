//! The one definition of the records the eBPF programs write into the ring
//! buffer and of the configuration userspace hands to them.
//!
//! Rules (shared/reference/aya-patterns.md §3.7): `#[repr(C)]`, fixed-width
//! integers and byte arrays only, explicit padding, `kind: u32` tags instead of
//! enums, and const asserts on size and offsets so both sides cannot drift.
#![no_std]

pub mod config;
pub mod records;

pub use config::{Config, KernelOffsets, OFFSET_MISSING, file_writes};
pub use records::*;

/// Map names, shared by the programs and the loader.
pub mod maps {
    /// `RingBuf`: every record, in the order the kernel reserved it.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` indexed by record kind: records the kernel could
    /// not hand to the ring buffer because it was full.
    pub const DROPS: &str = "DROPS";
    /// `Array<Config>` with one entry, written by userspace before attaching.
    pub const CONFIG: &str = "CONFIG";
    /// `HashMap<u32, u8>`: mount ids (`mount::mnt_id`) whose files are
    /// never reported (mounts at or under an ignored path prefix).
    pub const IGNORED_MOUNTS: &str = "IGNORED_MOUNTS";
    /// `HashMap<u32, u8>`: tgids of the sensor's own process tree.
    pub const OWN_TGIDS: &str = "OWN_TGIDS";
}

/// Program names (their Rust function names in `sensor-ebpf`) and the
/// raw tracepoints they attach to.
pub mod programs {
    pub const EXEC: (&str, &str) = ("sched_process_exec", "sched_process_exec");
    pub const FORK: (&str, &str) = ("sched_process_fork", "sched_process_fork");
    pub const EXIT: (&str, &str) = ("sched_process_exit", "sched_process_exit");
    pub const ALL: [(&str, &str); 3] = [EXEC, FORK, EXIT];

    /// File syscall tracepoints (category `syscalls`): (program, tracepoint).
    pub const SYSCALLS: [(&str, &str); 57] = [
        ("sys_enter_open", "sys_enter_open"),
        ("sys_exit_open", "sys_exit_open"),
        ("sys_enter_openat", "sys_enter_openat"),
        ("sys_exit_openat", "sys_exit_openat"),
        ("sys_enter_openat2", "sys_enter_openat2"),
        ("sys_exit_openat2", "sys_exit_openat2"),
        ("sys_enter_creat", "sys_enter_creat"),
        ("sys_exit_creat", "sys_exit_creat"),
        ("sys_enter_write", "sys_enter_write"),
        ("sys_enter_pwrite64", "sys_enter_pwrite64"),
        ("sys_enter_writev", "sys_enter_writev"),
        ("sys_enter_pwritev", "sys_enter_pwritev"),
        ("sys_enter_pwritev2", "sys_enter_pwritev2"),
        ("sys_enter_fchmod", "sys_enter_fchmod"),
        ("sys_exit_fchmod", "sys_exit_fchmod"),
        ("sys_enter_fchown", "sys_enter_fchown"),
        ("sys_exit_fchown", "sys_exit_fchown"),
        ("sys_enter_ftruncate", "sys_enter_ftruncate"),
        ("sys_exit_ftruncate", "sys_exit_ftruncate"),
        ("sys_enter_unlink", "sys_enter_unlink"),
        ("sys_exit_unlink", "sys_exit_unlink"),
        ("sys_enter_unlinkat", "sys_enter_unlinkat"),
        ("sys_exit_unlinkat", "sys_exit_unlinkat"),
        ("sys_enter_rmdir", "sys_enter_rmdir"),
        ("sys_exit_rmdir", "sys_exit_rmdir"),
        ("sys_enter_mkdir", "sys_enter_mkdir"),
        ("sys_exit_mkdir", "sys_exit_mkdir"),
        ("sys_enter_mkdirat", "sys_enter_mkdirat"),
        ("sys_exit_mkdirat", "sys_exit_mkdirat"),
        ("sys_enter_rename", "sys_enter_rename"),
        ("sys_exit_rename", "sys_exit_rename"),
        ("sys_enter_renameat", "sys_enter_renameat"),
        ("sys_exit_renameat", "sys_exit_renameat"),
        ("sys_enter_renameat2", "sys_enter_renameat2"),
        ("sys_exit_renameat2", "sys_exit_renameat2"),
        ("sys_enter_link", "sys_enter_link"),
        ("sys_exit_link", "sys_exit_link"),
        ("sys_enter_linkat", "sys_enter_linkat"),
        ("sys_exit_linkat", "sys_exit_linkat"),
        ("sys_enter_symlink", "sys_enter_symlink"),
        ("sys_exit_symlink", "sys_exit_symlink"),
        ("sys_enter_symlinkat", "sys_enter_symlinkat"),
        ("sys_exit_symlinkat", "sys_exit_symlinkat"),
        ("sys_enter_chmod", "sys_enter_chmod"),
        ("sys_exit_chmod", "sys_exit_chmod"),
        ("sys_enter_fchmodat", "sys_enter_fchmodat"),
        ("sys_exit_fchmodat", "sys_exit_fchmodat"),
        ("sys_enter_fchmodat2", "sys_enter_fchmodat2"),
        ("sys_exit_fchmodat2", "sys_exit_fchmodat2"),
        ("sys_enter_chown", "sys_enter_chown"),
        ("sys_exit_chown", "sys_exit_chown"),
        ("sys_enter_lchown", "sys_enter_lchown"),
        ("sys_exit_lchown", "sys_exit_lchown"),
        ("sys_enter_fchownat", "sys_enter_fchownat"),
        ("sys_exit_fchownat", "sys_exit_fchownat"),
        ("sys_enter_truncate", "sys_enter_truncate"),
        ("sys_exit_truncate", "sys_exit_truncate"),
    ];

    /// Network and DNS syscall tracepoints (category `syscalls`).
    pub const NET_SYSCALLS: [(&str, &str); 0] = [];

    /// Network raw tracepoints: (program, tracepoint).
    pub const NET_RAW: [(&str, &str); 0] = [];
}

/// Implements `aya::Pod` for ABI types on the user side only.
///
/// # Safety
/// Only for `#[repr(C)]` types made of fixed-width integers and arrays of them,
/// whose padding is explicit, so that every bit pattern is a valid value.
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(unsafe impl aya::Pod for $t {})*
    };
}

#[cfg(feature = "user")]
impl_pod!(Config, KernelOffsets);

#[cfg(feature = "user")]
impl_pod!(
    ExecEvent,
    ForkEvent,
    ExitEvent,
    FileEvent,
    FileNamedEvent,
    ResultEvent,
    NetEvent,
    DnsPacket,
    SockAddrs,
    Header,
    TaskInfo
);
