//! The one definition of the records the eBPF programs write into the ring
//! buffer and of the configuration userspace hands to them.
//!
//! Rules (shared/reference/aya-patterns.md §3.7): `#[repr(C)]`, fixed-width
//! integers and byte arrays only, explicit padding, `kind: u32` tags instead of
//! enums, and const asserts on size and offsets so both sides cannot drift.
#![no_std]

pub mod config;
pub mod records;

pub use config::{Config, DNS_PORTS, KernelOffsets, OFFSET_MISSING, file_writes};
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

    /// Syscall tracepoints (category `syscalls`): (program, tracepoint).
    pub const SYSCALLS: [(&str, &str); 8] = [
        ("sys_enter_open", "sys_enter_open"),
        ("sys_exit_open", "sys_exit_open"),
        ("sys_enter_openat", "sys_enter_openat"),
        ("sys_exit_openat", "sys_exit_openat"),
        ("sys_enter_openat2", "sys_enter_openat2"),
        ("sys_exit_openat2", "sys_exit_openat2"),
        ("sys_enter_creat", "sys_enter_creat"),
        ("sys_exit_creat", "sys_exit_creat"),
    ];

    /// Network and DNS syscall tracepoints (category `syscalls`).
    /// The accepts have no enter program: the new descriptor is all they need.
    pub const NET_SYSCALLS: [(&str, &str); 18] = [
        ("sys_enter_connect", "sys_enter_connect"),
        ("sys_exit_connect", "sys_exit_connect"),
        ("sys_exit_accept", "sys_exit_accept"),
        ("sys_exit_accept4", "sys_exit_accept4"),
        ("sys_enter_bind", "sys_enter_bind"),
        ("sys_exit_bind", "sys_exit_bind"),
        ("sys_enter_listen", "sys_enter_listen"),
        ("sys_exit_listen", "sys_exit_listen"),
        ("sys_enter_sendto", "sys_enter_sendto"),
        ("sys_exit_sendto", "sys_exit_sendto"),
        ("sys_enter_sendmsg", "sys_enter_sendmsg"),
        ("sys_exit_sendmsg", "sys_exit_sendmsg"),
        ("sys_enter_sendmmsg", "sys_enter_sendmmsg"),
        ("sys_exit_sendmmsg", "sys_exit_sendmmsg"),
        ("sys_enter_recvfrom", "sys_enter_recvfrom"),
        ("sys_exit_recvfrom", "sys_exit_recvfrom"),
        ("sys_enter_recvmsg", "sys_enter_recvmsg"),
        ("sys_exit_recvmsg", "sys_exit_recvmsg"),
    ];

    /// Network raw tracepoints: (program, tracepoint).
    pub const NET_RAW: [(&str, &str); 1] = [("inet_sock_set_state", "inet_sock_set_state")];
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
