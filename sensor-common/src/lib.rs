//! The one definition of the records the eBPF programs write into the ring
//! buffer and of the configuration userspace hands to them.
//!
//! Rules (shared/reference/aya-patterns.md §3.7): `#[repr(C)]`, fixed-width
//! integers and byte arrays only, explicit padding, `kind: u32` tags instead of
//! enums, and const asserts on size and offsets so both sides cannot drift.
#![no_std]

pub mod config;
pub mod records;

pub use config::{
    Config, DNS_PORTS, KernelOffsets, OFFSET_MISSING, SYSCALL_SPEC_SLOTS, SyscallSpec, arg,
    file_writes,
};
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
    /// `Array<u64>` of `IGNORED_MOUNT_WORDS`: a bitmap of the mount ids
    /// (`mount::mnt_id`) whose files are never reported (mounts at or under
    /// an ignored path prefix); bit `id % 64` of word `id / 64`.
    pub const IGNORED_MOUNTS: &str = "IGNORED_MOUNTS";
    /// Words of the `IGNORED_MOUNTS` bitmap: mount ids below 65,536. The
    /// kernel hands out the lowest free id (an IDA), so ids stay far below
    /// unless as many mounts exist at once.
    pub const IGNORED_MOUNT_WORDS: u32 = 1024;
    /// `Array<SyscallSpec>` of `SYSCALL_SPEC_SLOTS`, indexed by syscall
    /// number; `op` 0 where a syscall has none.
    pub const SYSCALL_SPECS: &str = "SYSCALL_SPECS";
    /// `HashMap<u32, u8>`: tgids of the sensor's own process tree.
    pub const OWN_TGIDS: &str = "OWN_TGIDS";
    /// `PerCpuArray<u64>` indexed by `counter::*`: what the programs did
    /// instead of sending a record, other than dropping it.
    pub const COUNTERS: &str = "COUNTERS";
}

/// Kernel functions (kfuncs) the programs call. aya 0.14 does not resolve
/// kfunc externs (`__ksym` in libbpf), so a program calls each as if it were
/// a helper with a number no helper has, and the loader rewrites those calls
/// before loading: into the kfunc's call where the running kernel takes it,
/// else into `r0 = r1` with the program's frozen flag saying not to use it.
pub mod kfunc {
    /// `bpf_rdonly_cast(obj, 0)`: `obj` as read-only memory the program may
    /// load from, each load fault-safe (Linux 6.17+ for the untyped cast; the
    /// verifier turns the call into a register copy).
    pub const RDONLY_CAST_MARKER: u32 = 0x5ec0_ca57;
    /// Its name in the kernel's BTF.
    pub const RDONLY_CAST: &str = "bpf_rdonly_cast";
    /// The programs' read-only global the loader sets to 1 where the calls
    /// became the kfunc: then kernel objects are read with plain loads.
    pub const KERNEL_LOADS: &str = "KERNEL_LOADS";
}

/// Indexes of the `COUNTERS` map.
pub mod counter {
    /// Opens for writing folded into an earlier report of the same file by
    /// the same process (`Config::open_repeat_window_ms`).
    pub const OPENS_FOLDED: u32 = 0;
    /// The length of the `COUNTERS` map.
    pub const COUNT: u32 = 1;
}

/// Program names (their Rust function names in `sensor-ebpf`) and the
/// raw tracepoints they attach to. The kernel keeps the first 15 bytes of a
/// program's name (`BPF_OBJ_NAME_LEN`), which is all bpftool and bpf_stats
/// show, so names differ within them: hence `proc_exec`, not
/// `sched_process_exec` beside `sched_process_exit`.
pub mod programs {
    pub const EXEC: (&str, &str) = ("proc_exec", "sched_process_exec");
    pub const FORK: (&str, &str) = ("proc_fork", "sched_process_fork");
    pub const EXIT: (&str, &str) = ("proc_exit", "sched_process_exit");
    pub const ALL: [(&str, &str); 3] = [EXEC, FORK, EXIT];

    /// File programs on syscall tracepoints (category `syscalls`). One
    /// program serves a family of syscalls; which tracepoints it attaches to,
    /// and how their arguments map (`SyscallSpec`), is userspace's table.
    pub mod file {
        /// Any open flavour's exit (opens have no entry program: the exit
        /// reads their flags from the syscall's registers).
        pub const OPEN_EXIT: &str = "sys_exit_open";
        /// Any write flavour's entry (the fd is the first argument).
        pub const WRITE_ENTER: &str = "sys_enter_write";
        /// fchmod, fchown, ftruncate.
        pub const FD_CHANGE_ENTER: &str = "sys_enter_fd_change";
        /// unlink, rename, mkdir, ...
        pub const NAMED_ENTER: &str = "sys_enter_named";
        /// The exit of every syscall whose entry may have sent a record.
        pub const RESULT_EXIT: &str = "sys_exit_result";
    }

    /// Network and DNS syscall tracepoints (category `syscalls`).
    /// Accepts, connects, binds and listens have no enter program: the new
    /// descriptor, or the arguments still in the task's registers, and the
    /// socket as the call left it are all they need.
    pub const NET_SYSCALLS: [(&str, &str); 15] = [
        ("sys_exit_connect", "sys_exit_connect"),
        ("sys_exit_accept", "sys_exit_accept"),
        ("exit_accept4", "sys_exit_accept4"),
        ("sys_exit_bind", "sys_exit_bind"),
        ("sys_exit_listen", "sys_exit_listen"),
        ("sys_enter_sendto", "sys_enter_sendto"),
        ("sys_exit_sendto", "sys_exit_sendto"),
        ("sys_enter_sendmsg", "sys_enter_sendmsg"),
        ("sys_exit_sendmsg", "sys_exit_sendmsg"),
        ("enter_sendmmsg", "sys_enter_sendmmsg"),
        ("sys_exit_sendmmsg", "sys_exit_sendmmsg"),
        ("sys_enter_recvfrom", "sys_enter_recvfrom"),
        ("sys_exit_recvfrom", "sys_exit_recvfrom"),
        ("sys_enter_recvmsg", "sys_enter_recvmsg"),
        ("sys_exit_recvmsg", "sys_exit_recvmsg"),
    ];

    /// Network raw tracepoints: (program, tracepoint).
    pub const NET_RAW: [(&str, &str); 1] = [("inet_sock_set_state", "inet_sock_set_state")];

    /// The benchmark's floor (`cargo xtask bench`): programs that only
    /// reserve and submit a fixed {RECORD_BYTES}-byte record, attached to the
    /// same tracepoints as the sensor's, one per sensor program, so each
    /// program's cost can be read against the least any program there costs.
    /// Never loaded by the sensor.
    pub mod floor {
        pub const RECORD_BYTES: usize = 64;
        /// Syscall tracepoint programs (`TracePoint`).
        pub const TRACEPOINTS: [&str; 32] = [
            "floor_tp_00",
            "floor_tp_01",
            "floor_tp_02",
            "floor_tp_03",
            "floor_tp_04",
            "floor_tp_05",
            "floor_tp_06",
            "floor_tp_07",
            "floor_tp_08",
            "floor_tp_09",
            "floor_tp_10",
            "floor_tp_11",
            "floor_tp_12",
            "floor_tp_13",
            "floor_tp_14",
            "floor_tp_15",
            "floor_tp_16",
            "floor_tp_17",
            "floor_tp_18",
            "floor_tp_19",
            "floor_tp_20",
            "floor_tp_21",
            "floor_tp_22",
            "floor_tp_23",
            "floor_tp_24",
            "floor_tp_25",
            "floor_tp_26",
            "floor_tp_27",
            "floor_tp_28",
            "floor_tp_29",
            "floor_tp_30",
            "floor_tp_31",
        ];
        /// Raw tracepoint programs.
        pub const RAW: [&str; 4] = ["floor_raw_0", "floor_raw_1", "floor_raw_2", "floor_raw_3"];
    }
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
impl_pod!(Config, KernelOffsets, SyscallSpec);

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
