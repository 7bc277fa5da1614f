//! Records in the `EVENTS` ring buffer. Every record starts with a [`Header`];
//! its `kind` says which struct follows and `size` how many bytes of it the
//! kernel wrote (records may be shorter than their struct: the tail of the
//! last variable-length area is not sent).

use core::mem::{offset_of, size_of};

/// Record kinds. Stable numbers: a retired kind keeps its number reserved.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const FILE: u32 = 4;
    pub const FILE_NAMED: u32 = 5;
    pub const RESULT: u32 = 6;
    pub const NET: u32 = 7;
    pub const DNS: u32 = 8;
    /// One past the largest kind: the length of the `DROPS` map.
    pub const COUNT: u32 = 9;

    /// Human name of a kind, for counters and logs.
    #[must_use]
    pub const fn name(kind: u32) -> &'static str {
        match kind {
            EXEC => "exec",
            FORK => "fork",
            EXIT => "exit",
            FILE => "file",
            FILE_NAMED => "file_named",
            RESULT => "result",
            NET => "net",
            DNS => "dns",
            _ => "unknown",
        }
    }
}

/// Bytes of argv the kernel copies (the NUL-separated `mm->arg_start..arg_end`).
/// A power of two so the verifier can bound copy sizes with a mask.
pub const ARGV_BUF: usize = 4096;
/// Bytes of one path area. Paths arrive as NUL-terminated components, leaf
/// first, as the kernel's dentry walk meets them; userspace reverses them.
pub const PATH_BUF: usize = 2048;
/// An exec record's packed area: two paths and argv.
pub const EXEC_DATA: usize = 2 * PATH_BUF + ARGV_BUF;
/// The most bytes one path component can take (NAME_MAX + NUL).
pub const NAME_READ: usize = 256;
/// The most dentries a path walk visits before it gives up and sets the
/// truncation flag.
pub const PATH_DEPTH: u32 = 64;

/// `ExecEvent::flags` bits.
pub mod exec_flags {
    /// argv did not fit in `ARGV_BUF`.
    pub const ARGV_TRUNCATED: u32 = 1 << 0;
    /// The exe path hit `PATH_BUF` or `PATH_DEPTH`.
    pub const EXE_TRUNCATED: u32 = 1 << 1;
    /// The cwd path hit `PATH_BUF` or `PATH_DEPTH`.
    pub const CWD_TRUNCATED: u32 = 1 << 2;
    /// The kernel could not read argv from the new image's memory.
    pub const ARGV_UNREADABLE: u32 = 1 << 3;
    /// `argc` could not be read from the new image's stack.
    pub const ARGC_UNKNOWN: u32 = 1 << 4;
}

/// `FileEvent::op`: the same numbers as `sensor.v1.FileOp`. The kernel
/// reports opens as `OPEN_WRITE`; userspace tells creations apart by
/// `f_mode`.
pub mod file_op {
    pub const CREATE: u32 = 1;
    pub const OPEN_WRITE: u32 = 2;
    pub const WRITE: u32 = 3;
    pub const RENAME: u32 = 4;
    pub const UNLINK: u32 = 5;
    pub const RMDIR: u32 = 6;
    pub const MKDIR: u32 = 7;
    pub const CHMOD: u32 = 8;
    pub const CHOWN: u32 = 9;
    pub const LINK: u32 = 10;
    pub const SYMLINK: u32 = 11;
    pub const TRUNCATE: u32 = 12;
}

/// `NetEvent::op`: the same numbers as `sensor.v1.NetworkOp`.
pub mod net_op {
    pub const CONNECT: u32 = 1;
    pub const ACCEPT: u32 = 2;
    pub const LISTEN: u32 = 3;
    pub const BIND: u32 = 4;
    pub const UDP_SEND: u32 = 5;
    pub const CLOSE: u32 = 6;
}

/// `DnsPacket::direction`.
pub mod dns_direction {
    /// The host sent it (a query).
    pub const SENT: u32 = 1;
    /// The host received it (a response).
    pub const RECEIVED: u32 = 2;
}

/// Bytes of a DNS message the kernel copies; longer messages are cut and
/// parsed as far as they go.
pub const DNS_BUF: usize = 512;
/// Bytes of a caller's path argument the kernel copies (at syscall entry).
pub const NAME_BUF: usize = 1024;
/// Bytes of the data area of a `FileNamedEvent`: two names and two walks.
pub const NAMED_DATA: usize = 8192;
/// Room after `FileNamedEvent::data` for the verifier's worst case.
pub const NAMED_SLACK: usize = 4096;

/// `FileEvent::path_flags` bits.
pub mod path_flags {
    /// The walk hit `PATH_BUF` or `PATH_DEPTH`, or could not start.
    pub const TRUNCATED: u32 = 1 << 0;
    /// `FileEvent`: the record was taken at syscall entry; its result follows
    /// in a `ResultEvent` of the same thread.
    pub const AWAIT_RESULT: u32 = 1 << 1;
}

/// `FileNamedEvent::flags` bits, per path (`<< 8` for the second path).
pub mod named_flags {
    /// The base directory walk hit `PATH_BUF` or `PATH_DEPTH`.
    pub const BASE_TRUNCATED: u32 = 1 << 0;
    /// The caller's name hit `NAME_BUF`.
    pub const NAME_TRUNCATED: u32 = 1 << 1;
    /// The name is absolute (or has no base: a symlink's target text), so
    /// no base was walked.
    pub const NO_BASE: u32 = 1 << 2;
    /// The caller's name could not be read.
    pub const NAME_UNREADABLE: u32 = 1 << 3;
    /// Shift of the second path's bits.
    pub const SECOND: u32 = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    /// Bytes of the record that are meaningful, header included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ktime_ns: u64,
}

/// Who did it: the task the event is about.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// Boot-time ns when the thread group leader was created
    /// (`task_struct::start_boottime`, what /proc/PID/stat field 22 shows in ticks).
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub tid: u32,
    pub tgid: u32,
    /// tgid of `real_parent`.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// `u32::MAX` when unset or unknown.
    pub login_uid: u32,
    /// `u32::MAX` when unset or unknown.
    pub session_id: u32,
    pub _pad0: u32,
    pub comm: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: Header,
    pub task: TaskInfo,
    /// The true argument count, read from the top of the new image's stack.
    pub argc: u32,
    /// Bytes used in `argv`.
    pub argv_len: u32,
    /// Bytes used by the exe's and the cwd's path (components, leaf first,
    /// NUL-terminated), each less than `PATH_BUF`.
    pub exe_len: u32,
    pub cwd_len: u32,
    pub flags: u32,
    pub _pad0: u32,
    /// The exe's path, the cwd's path, then argv, back to back, so the kernel
    /// sends only `EXEC_FIXED_LEN + exe_len + cwd_len + argv_len` bytes: an
    /// exec record is a few hundred bytes instead of 4 KiB of mostly unused
    /// path areas that the ring, capture and decode each copied.
    pub data: [u8; EXEC_DATA],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: Header,
    /// The parent (the task that called fork/clone).
    pub task: TaskInfo,
    pub child_start_boottime_ns: u64,
    pub child_tid: u32,
    pub child_tgid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: Header,
    /// The last thread of the process.
    pub task: TaskInfo,
    /// `task_struct::exit_code`: the wait(2) status (exit code << 8, or the
    /// signal number in the low 7 bits, 0x80 when it dumped core).
    pub exit_status: u32,
    pub _pad0: u32,
}

/// A file operation that succeeded, described after the fact from the
/// kernel's own objects (the opened `struct file`), never by re-reading the
/// caller's path argument.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: Header,
    pub task: TaskInfo,
    /// `file_op::*`.
    pub op: u32,
    /// open(2) flags as the caller passed them.
    pub flags: u32,
    /// The mode the caller asked for.
    pub mode: u32,
    /// `inode::i_mode`: type and permission bits.
    pub file_mode: u32,
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// `super_block::s_dev`, the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    /// Bytes used in `path` (components, leaf first, NUL-terminated).
    pub path_len: u32,
    /// `path_flags::*`.
    pub path_flags: u32,
    /// `file::f_mode` after open: userspace reads FMODE_CREATED from it.
    pub f_mode: u32,
    /// fchown's requested owner (`u32::MAX`: unchanged).
    pub req_uid: u32,
    pub req_gid: u32,
    /// `OPEN_WRITE`: opens of the same file by the same process with the
    /// same flags that were folded into this report because they came
    /// within `Config::open_repeat_window_ms` of the previous one.
    pub repeats: u32,
    pub _pad0: u32,
    pub ino: u64,
    /// The syscall's return value.
    pub result: i64,
    /// ftruncate's length.
    pub length: u64,
    /// Last, so the kernel sends only `offset_of!(path) + path_len` bytes.
    pub path: [u8; PATH_BUF],
    /// Never sent: room for the verifier, which must see that a component
    /// read of `NAME_READ` bytes at any masked offset stays in the record.
    pub _slack: [u8; NAME_READ],
}

/// A file operation named by a path argument (unlink, rename, mkdir, ...),
/// taken at syscall entry; its `ResultEvent` follows from the exit.
///
/// Each of the (at most two) paths is the caller's name string, copied once
/// at entry and never re-read, and, when the name is relative, its base
/// directory as the kernel holds it (the dirfd's file or the cwd), walked
/// leaf first like `FileEvent::path`. `data` holds name 1, base 1, name 2,
/// base 2 back to back; the lengths split it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileNamedEvent {
    pub header: Header,
    pub task: TaskInfo,
    /// `file_op::*`.
    pub op: u32,
    /// `named_flags::*` for the first path, `<< SECOND` for the second.
    pub flags: u32,
    /// The operation's own flags (`AT_*`, `RENAME_*`).
    pub op_flags: u32,
    /// The mode asked for (mkdir, chmod).
    pub mode: u32,
    /// chown's requested owner (`u32::MAX`: unchanged).
    pub req_uid: u32,
    pub req_gid: u32,
    /// `truncate`'s length.
    pub length: u64,
    /// Bytes of each area in `data`; names include their NUL.
    pub name1_len: u32,
    pub base1_len: u32,
    pub name2_len: u32,
    pub base2_len: u32,
    /// Last, so the kernel sends only the used bytes.
    pub data: [u8; NAMED_DATA],
    /// Never sent: the verifier must see that an area written at any masked
    /// offset in `data` (a walk or a name) stays in the record.
    pub _slack: [u8; NAMED_SLACK],
}

/// The return value of a syscall whose entry produced a record (a
/// `FileNamedEvent`, or a `FileEvent` with `AWAIT_RESULT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultEvent {
    pub header: Header,
    pub tid: u32,
    pub _pad0: u32,
    pub ret: i64,
}

/// A socket address pair as the kernel's `struct sock` holds it.
/// IPv4 addresses use the first 4 bytes of `*_addr`; ports are host order.
/// Aligned to 8 (it sits at 8-aligned offsets anyway) so that the programs
/// copy an address as two words, not sixteen bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrs {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// A network operation on a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    pub header: Header,
    pub task: TaskInfo,
    /// `net_op::*`.
    pub op: u32,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u32,
    pub addrs: SockAddrs,
    /// 0 or -errno.
    pub result: i64,
    pub sock_ino: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The `struct sock`'s address: joins a close to the connect or accept
    /// it ends (userspace keeps who owned the connection). It never leaves
    /// the sensor.
    pub sk: u64,
}

/// A DNS message a process sent or received, copied (bounded) from the
/// syscall's own buffer; userspace parses it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsPacket {
    pub header: Header,
    pub task: TaskInfo,
    /// `dns_direction::*`.
    pub direction: u32,
    /// `IPPROTO_UDP` or `IPPROTO_TCP` (whose messages start with a 2-byte length).
    pub protocol: u32,
    pub addrs: SockAddrs,
    pub sock_ino: u64,
    /// The message's full length; more than `len` when cut.
    pub orig_len: u32,
    /// Bytes used in `payload`.
    pub len: u32,
    /// Last, so the kernel sends only `offset_of!(payload) + len` bytes.
    pub payload: [u8; DNS_BUF],
}

/// The fixed-size part of a file record: everything before the path bytes.
pub const FILE_FIXED_LEN: usize = offset_of!(FileEvent, path);

/// The fixed-size part of a named-file record: everything before `data`.
pub const NAMED_FIXED_LEN: usize = offset_of!(FileNamedEvent, data);

/// The fixed-size part of a DNS record: everything before the payload.
pub const DNS_FIXED_LEN: usize = offset_of!(DnsPacket, payload);

/// The fixed-size part of an exec record: everything before its packed area.
pub const EXEC_FIXED_LEN: usize = offset_of!(ExecEvent, data);

const _: () = assert!(size_of::<Header>() == 16);
const _: () = assert!(size_of::<TaskInfo>() == 72);
const _: () = assert!(offset_of!(TaskInfo, comm) == 56);
const _: () = assert!(offset_of!(ExecEvent, task) == 16);
const _: () = assert!(offset_of!(ExecEvent, argc) == 88);
const _: () = assert!(EXEC_FIXED_LEN == 112);
const _: () = assert!(size_of::<ExecEvent>() == EXEC_FIXED_LEN + EXEC_DATA);
const _: () = assert!(EXEC_DATA.is_power_of_two());
const _: () = assert!(size_of::<ForkEvent>() == 104);
const _: () = assert!(size_of::<ExitEvent>() == 96);
const _: () = assert!(FILE_FIXED_LEN == 168);
const _: () = assert!(offset_of!(FileEvent, repeats) == 136);
const _: () = assert!(NAMED_FIXED_LEN == 136);
const _: () = assert!(size_of::<FileNamedEvent>() == NAMED_FIXED_LEN + NAMED_DATA + NAMED_SLACK);
const _: () = assert!(2 * (NAME_BUF + PATH_BUF) <= NAMED_DATA);
const _: () = assert!(PATH_BUF + NAME_READ <= NAMED_SLACK && NAME_BUF <= NAMED_SLACK);
const _: () = assert!(size_of::<ResultEvent>() == 32);
const _: () = assert!(size_of::<SockAddrs>() == 40);
const _: () = assert!(size_of::<NetEvent>() == 176);
const _: () = assert!(DNS_FIXED_LEN == 152);
const _: () = assert!(size_of::<DnsPacket>() == DNS_FIXED_LEN + DNS_BUF);
const _: () = assert!(NAMED_DATA.is_power_of_two() && NAME_BUF.is_power_of_two());
const _: () = assert!(DNS_BUF.is_power_of_two());
const _: () = assert!(size_of::<FileEvent>() == FILE_FIXED_LEN + PATH_BUF + NAME_READ);
const _: () = assert!(ARGV_BUF.is_power_of_two() && PATH_BUF.is_power_of_two());
const _: () = assert!(NAME_READ < PATH_BUF);
