//! Stage 2: raw ring-buffer records -> typed records. Every length is checked
//! before it is trusted; a malformed record is an error the stage counts.

pub mod dns;
pub mod net;

use std::mem::{offset_of, size_of};

use sensor_common::{
    ARGV_BUF, EXEC_FIXED_LEN, ExecEvent, ExitEvent, FILE_FIXED_LEN, FileEvent, FileNamedEvent,
    ForkEvent, Header, NAME_BUF, NAMED_DATA, NAMED_FIXED_LEN, PATH_BUF, ResultEvent, TaskInfo,
    exec_flags, file_op, kind, named_flags, path_flags,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record has {got} bytes, needs at least {need}")]
    Truncated {
        kind: &'static str,
        got: usize,
        need: usize,
    },
    #[error("{kind} record says it has {claimed} bytes but {got} arrived")]
    BadSize {
        kind: &'static str,
        claimed: usize,
        got: usize,
    },
    #[error("{field} length {len} exceeds its area of {cap} bytes")]
    BadLength {
        field: &'static str,
        len: usize,
        cap: usize,
    },
    #[error("address family {0} is neither AF_INET nor AF_INET6")]
    Family(u32),
    #[error("malformed DNS message: {0}")]
    Dns(#[from] dns::DnsError),
}

/// The task fields every record carries, in userspace types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub tid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub login_uid: u32,
    pub session_id: u32,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub ktime_ns: u64,
    pub task: Task,
    /// Arguments as the kernel copied them (the last one may be cut short).
    pub argv: Vec<Vec<u8>>,
    pub argc: Option<u32>,
    pub argv_truncated: bool,
    pub argv_unreadable: bool,
    /// Absolute path, `None` when the kernel could not walk it.
    pub exe: Option<Vec<u8>>,
    pub exe_truncated: bool,
    pub cwd: Option<Vec<u8>>,
    pub cwd_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    pub ktime_ns: u64,
    /// The parent, which called fork/clone.
    pub task: Task,
    pub child_tgid: u32,
    pub child_start_boottime_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub ktime_ns: u64,
    pub task: Task,
    /// The wait(2) status.
    pub status: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub ktime_ns: u64,
    pub task: Task,
    /// `sensor_common::file_op`.
    pub op: u32,
    pub flags: u32,
    pub mode: u32,
    pub file_mode: u32,
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// The kernel's device number encoding (major << 20 | minor).
    pub dev: u32,
    pub ino: u64,
    pub result: i64,
    pub f_mode: u32,
    /// Absolute path, `None` when the kernel could not walk it.
    pub path: Option<Vec<u8>>,
    pub path_truncated: bool,
    /// rename and link: the source; symlink: the link's target text.
    pub old_path: Option<Vec<u8>>,
    /// chown's requested owner (`u32::MAX`: unchanged).
    pub req_uid: u32,
    pub req_gid: u32,
    /// truncate's length.
    pub length: u64,
    /// Opens folded into this one (`FileEvent::repeats`).
    pub repeats: u32,
    /// Taken at syscall entry: `result` arrives in a later `Record::Result`.
    pub await_result: bool,
}

/// The return value of a syscall whose entry produced a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallResult {
    pub tid: u32,
    pub ret: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Exec(Exec),
    Fork(Fork),
    Exit(Exit),
    File(File),
    Result(SyscallResult),
    Net(net::Net),
    Dns(net::Dns),
}

/// Copies a `T` out of the front of `bytes`, which the caller sized.
fn read_pod<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked above; T is a repr(C) integer-only ABI type, so
    // every bit pattern is valid; read_unaligned copes with ring alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

impl From<&TaskInfo> for Task {
    fn from(t: &TaskInfo) -> Self {
        Self {
            start_boottime_ns: t.start_boottime_ns,
            cgroup_id: t.cgroup_id,
            tid: t.tid,
            tgid: t.tgid,
            ppid: t.ppid,
            uid: t.uid,
            gid: t.gid,
            euid: t.euid,
            egid: t.egid,
            login_uid: t.login_uid,
            session_id: t.session_id,
            comm: comm(&t.comm),
        }
    }
}

/// Joins components the kernel wrote leaf first (`c\0b\0a\0`) into `/a/b/c`.
/// No components means the root.
#[must_use]
pub fn path_from_components(area: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = area.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
    parts.reverse();
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut path = Vec::with_capacity(area.len() + 1);
    for part in parts {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    path
}

/// Splits the NUL-separated argv area. A trailing NUL ends the last argument;
/// without one the last argument was cut short.
fn split_argv(area: &[u8]) -> Vec<Vec<u8>> {
    if area.is_empty() {
        return Vec::new();
    }
    let body = area.strip_suffix(&[0]).unwrap_or(area);
    body.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

fn check_len(field: &'static str, len: u32, cap: usize) -> Result<usize, DecodeError> {
    let len = len as usize;
    if len > cap {
        return Err(DecodeError::BadLength { field, len, cap });
    }
    Ok(len)
}

fn fixed<T: Copy>(bytes: &[u8], name: &'static str, header: &Header) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind: name,
            got: bytes.len(),
            need,
        });
    }
    if header.size as usize != need {
        return Err(DecodeError::BadSize {
            kind: name,
            claimed: header.size as usize,
            got: bytes.len(),
        });
    }
    Ok(read_pod(bytes))
}

/// How much of a record whose last area is sent only as far as it is used
/// arrived: checks the claimed size against what arrived and `T`'s size.
fn sent_len<T>(
    bytes: &[u8],
    header: &Header,
    name: &'static str,
    fixed_len: usize,
) -> Result<usize, DecodeError> {
    if bytes.len() < fixed_len {
        return Err(DecodeError::Truncated {
            kind: name,
            got: bytes.len(),
            need: fixed_len,
        });
    }
    let claimed = header.size as usize;
    if claimed < fixed_len || claimed > bytes.len() || claimed > size_of::<T>() {
        return Err(DecodeError::BadSize {
            kind: name,
            claimed,
            got: bytes.len(),
        });
    }
    Ok(claimed)
}

/// A variable-length record as a whole `T`, the unsent tail zero-filled.
/// A record whose last area is sent only as far as it is used, read in
/// place from the bytes that arrived: fixed fields one at a time
/// ([`field!`]), the tail as a slice. Copying out the whole `T`, most of it
/// the unsent area zeroed first, was a third of the decode thread's time
/// under load (memset and memmove of 2.5 KiB per file record).
struct Sent<'a, T> {
    /// Exactly the record's claimed size (checked by [`sent_len`]).
    bytes: &'a [u8],
    fixed_len: usize,
    of: std::marker::PhantomData<T>,
}

impl<'a, T> Sent<'a, T> {
    fn new(
        bytes: &'a [u8],
        header: &Header,
        name: &'static str,
        fixed_len: usize,
    ) -> Result<Self, DecodeError> {
        let sent = sent_len::<T>(bytes, header, name, fixed_len)?;
        Ok(Self {
            bytes: &bytes[..sent],
            fixed_len,
            of: std::marker::PhantomData,
        })
    }

    /// The field at `offset`, of the type `_field` projects to (use
    /// [`field!`], which passes both from the field's name).
    fn at<F: Copy>(&self, offset: usize, _field: fn(&T) -> &F) -> F {
        assert!(
            offset + size_of::<F>() <= self.fixed_len,
            "not a fixed field"
        );
        read_pod(&self.bytes[offset..])
    }

    /// The variable area after the fixed fields, as far as it was sent.
    fn tail(&self) -> &'a [u8] {
        &self.bytes[self.fixed_len..]
    }

    /// The first `len` bytes of the tail (its used length, from the
    /// record), which must be within `cap` and within what was sent.
    fn used_tail(
        &self,
        field: &'static str,
        len: u32,
        cap: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = check_len(field, len, cap)?;
        let tail = self.tail();
        tail.get(..len).ok_or(DecodeError::BadLength {
            field,
            len,
            cap: tail.len(),
        })
    }
}

/// `field!(record, Type, name)`: a fixed field of a [`Sent`] record, read
/// at its offset with its own type.
macro_rules! field {
    ($rec:expr, $T:ty, $f:ident) => {
        $rec.at(offset_of!($T, $f), |r: &$T| &r.$f)
    };
}
use field;

/// Splits a packed area into its parts, in order: each within its own cap,
/// and all of them within the bytes that arrived.
fn split_areas<'a, const N: usize>(
    area: &'a [u8],
    parts: [(&'static str, u32, usize); N],
) -> Result<[&'a [u8]; N], DecodeError> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut at = 0;
    for (slot, (field, len, cap)) in out.iter_mut().zip(parts) {
        let len = check_len(field, len, cap)?;
        let Some(part) = area.get(at..at + len) else {
            return Err(DecodeError::BadLength {
                field,
                len,
                cap: area.len() - at,
            });
        };
        *slot = part;
        at += len;
    }
    Ok(out)
}

/// An empty, truncated walk means the kernel could not read the path at all.
fn walked_path(walked: &[u8], truncated: bool) -> Option<Vec<u8>> {
    (!walked.is_empty() || !truncated).then(|| path_from_components(walked))
}

fn decode_file(bytes: &[u8], header: &Header) -> Result<File, DecodeError> {
    let ev = Sent::<FileEvent>::new(bytes, header, "file", FILE_FIXED_LEN)?;
    let path = ev.used_tail("path", field!(ev, FileEvent, path_len), PATH_BUF)?;
    let path_flags = field!(ev, FileEvent, path_flags);
    let truncated = path_flags & path_flags::TRUNCATED != 0;
    Ok(File {
        ktime_ns: header.ktime_ns,
        task: Task::from(&field!(ev, FileEvent, task)),
        op: field!(ev, FileEvent, op),
        flags: field!(ev, FileEvent, flags),
        mode: field!(ev, FileEvent, mode),
        file_mode: field!(ev, FileEvent, file_mode),
        owner_uid: field!(ev, FileEvent, owner_uid),
        owner_gid: field!(ev, FileEvent, owner_gid),
        dev: field!(ev, FileEvent, dev),
        ino: field!(ev, FileEvent, ino),
        result: field!(ev, FileEvent, result),
        f_mode: field!(ev, FileEvent, f_mode),
        path: walked_path(path, truncated),
        path_truncated: truncated,
        old_path: None,
        req_uid: field!(ev, FileEvent, req_uid),
        req_gid: field!(ev, FileEvent, req_gid),
        length: field!(ev, FileEvent, length),
        repeats: field!(ev, FileEvent, repeats),
        await_result: path_flags & path_flags::AWAIT_RESULT != 0,
    })
}

/// Cleans a joined path without changing what it names: drops empty and `.`
/// components. `..` stays: only the kernel knew whether a symlink preceded it.
fn clean_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// One path of a named record: the caller's name, joined to the base the
/// kernel walked when the name was relative. `(path, truncated)`.
fn named_path(name: &[u8], base: &[u8], flags: u32) -> (Option<Vec<u8>>, bool) {
    let has = |bit: u32| flags & bit != 0;
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    let truncated = has(named_flags::NAME_TRUNCATED) || has(named_flags::BASE_TRUNCATED);
    if has(named_flags::NAME_UNREADABLE) {
        return (None, true);
    }
    if has(named_flags::NO_BASE) || name.starts_with(b"/") {
        return (Some(clean_path(name)), truncated);
    }
    if base.is_empty() && has(named_flags::BASE_TRUNCATED) {
        return (None, true);
    }
    let mut joined = path_from_components(base);
    joined.push(b'/');
    joined.extend_from_slice(name);
    (Some(clean_path(&joined)), truncated)
}

fn decode_named(bytes: &[u8], header: &Header) -> Result<File, DecodeError> {
    let ev = Sent::<FileNamedEvent>::new(bytes, header, "file_named", NAMED_FIXED_LEN)?;
    let data = ev.tail();
    let areas = split_areas(
        &data[..data.len().min(NAMED_DATA)],
        [
            ("name1", field!(ev, FileNamedEvent, name1_len), NAME_BUF),
            ("base1", field!(ev, FileNamedEvent, base1_len), PATH_BUF),
            ("name2", field!(ev, FileNamedEvent, name2_len), NAME_BUF),
            ("base2", field!(ev, FileNamedEvent, base2_len), PATH_BUF),
        ],
    )?;
    let flags = field!(ev, FileNamedEvent, flags);
    let op = field!(ev, FileNamedEvent, op);
    let (first, first_cut) = named_path(areas[0], areas[1], flags);
    let second_flags = flags >> named_flags::SECOND;
    let (path, old_path, truncated) = match op {
        file_op::RENAME | file_op::LINK => {
            let (second, second_cut) = named_path(areas[2], areas[3], second_flags);
            (second, first, first_cut || second_cut)
        }
        file_op::SYMLINK => {
            // The target is text the link will hold, not a path to clean.
            let target = areas[0].strip_suffix(&[0]).unwrap_or(areas[0]).to_vec();
            let (second, second_cut) = named_path(areas[2], areas[3], second_flags);
            (second, Some(target), first_cut || second_cut)
        }
        _ => (first, None, first_cut),
    };
    Ok(File {
        ktime_ns: header.ktime_ns,
        task: Task::from(&field!(ev, FileNamedEvent, task)),
        op,
        flags: field!(ev, FileNamedEvent, op_flags),
        mode: field!(ev, FileNamedEvent, mode),
        file_mode: 0,
        owner_uid: u32::MAX,
        owner_gid: u32::MAX,
        dev: 0,
        ino: 0,
        result: 0,
        f_mode: 0,
        path,
        path_truncated: truncated,
        old_path,
        req_uid: field!(ev, FileNamedEvent, req_uid),
        req_gid: field!(ev, FileNamedEvent, req_gid),
        length: field!(ev, FileNamedEvent, length),
        repeats: 0,
        await_result: true,
    })
}

fn decode_exec(bytes: &[u8], header: &Header) -> Result<Exec, DecodeError> {
    let ev = Sent::<ExecEvent>::new(bytes, header, "exec", EXEC_FIXED_LEN)?;
    let [exe, cwd, argv] = split_areas(
        ev.tail(),
        [
            ("exe", field!(ev, ExecEvent, exe_len), PATH_BUF),
            ("cwd", field!(ev, ExecEvent, cwd_len), PATH_BUF),
            ("argv", field!(ev, ExecEvent, argv_len), ARGV_BUF),
        ],
    )?;
    let flags = field!(ev, ExecEvent, flags);
    let has = |bit: u32| flags & bit != 0;
    Ok(Exec {
        ktime_ns: header.ktime_ns,
        task: Task::from(&field!(ev, ExecEvent, task)),
        argv: split_argv(argv),
        argc: (!has(exec_flags::ARGC_UNKNOWN)).then_some(field!(ev, ExecEvent, argc)),
        argv_truncated: has(exec_flags::ARGV_TRUNCATED),
        argv_unreadable: has(exec_flags::ARGV_UNREADABLE),
        exe: walked_path(exe, has(exec_flags::EXE_TRUNCATED)),
        exe_truncated: has(exec_flags::EXE_TRUNCATED),
        cwd: walked_path(cwd, has(exec_flags::CWD_TRUNCATED)),
        cwd_truncated: has(exec_flags::CWD_TRUNCATED),
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: Header = read_pod(bytes);
    match header.kind {
        kind::EXEC => decode_exec(bytes, &header).map(Record::Exec),
        kind::FILE => decode_file(bytes, &header).map(Record::File),
        kind::FILE_NAMED => decode_named(bytes, &header).map(Record::File),
        kind::RESULT => {
            let ev: ResultEvent = fixed(bytes, "result", &header)?;
            Ok(Record::Result(SyscallResult {
                tid: ev.tid,
                ret: ev.ret,
            }))
        }
        kind::NET => net::decode_net(bytes, &header).map(Record::Net),
        kind::DNS => net::decode_dns(bytes, &header).map(Record::Dns),
        kind::FORK => {
            let ev: ForkEvent = fixed(bytes, "fork", &header)?;
            Ok(Record::Fork(Fork {
                ktime_ns: header.ktime_ns,
                task: Task::from(&ev.task),
                child_tgid: ev.child_tgid,
                child_start_boottime_ns: ev.child_start_boottime_ns,
            }))
        }
        kind::EXIT => {
            let ev: ExitEvent = fixed(bytes, "exit", &header)?;
            Ok(Record::Exit(Exit {
                ktime_ns: header.ktime_ns,
                task: Task::from(&ev.task),
                status: ev.exit_status,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    pub(super) fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: ABI types are plain integers with explicit padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub(super) fn task(tgid: u32) -> TaskInfo {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"echo");
        TaskInfo {
            start_boottime_ns: 5_000_000_000,
            cgroup_id: 77,
            tid: tgid,
            tgid,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 0,
            login_uid: u32::MAX,
            session_id: 3,
            _pad0: 0,
            comm,
        }
    }

    fn exec_record(argv: &[u8], exe: &[u8], cwd: &[u8], flags: u32) -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent.
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        ev.task = task(42);
        ev.argc = 3;
        let packed = [exe, cwd, argv].concat();
        ev.data[..packed.len()].copy_from_slice(&packed);
        ev.argv_len = argv.len() as u32;
        ev.exe_len = exe.len() as u32;
        ev.cwd_len = cwd.len() as u32;
        ev.flags = flags;
        let size = EXEC_FIXED_LEN + packed.len();
        ev.header = Header {
            kind: kind::EXEC,
            size: size as u32,
            ktime_ns: 9,
        };
        as_bytes(&ev)[..size].to_vec()
    }

    #[test]
    fn an_exec_record_becomes_argv_and_absolute_paths() {
        let bytes = exec_record(
            b"/bin/echo\0hello\0world\0",
            b"echo\0bin\0usr\0",
            b"tmp\0",
            0,
        );
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(
            exec.argv,
            vec![b"/bin/echo".to_vec(), b"hello".to_vec(), b"world".to_vec()]
        );
        assert_eq!(exec.argc, Some(3));
        assert_eq!(exec.exe.as_deref(), Some(&b"/usr/bin/echo"[..]));
        assert_eq!(exec.cwd.as_deref(), Some(&b"/tmp"[..]));
        assert_eq!(exec.task.comm, "echo");
        assert_eq!(exec.task.tgid, 42);
        assert_eq!(exec.ktime_ns, 9);
        assert!(!exec.argv_truncated && !exec.exe_truncated);
    }

    #[test]
    fn a_truncated_argv_keeps_the_cut_argument_and_the_flag() {
        let bytes = exec_record(b"a\0bb\0cc", b"x\0", b"", exec_flags::ARGV_TRUNCATED);
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(
            exec.argv,
            vec![b"a".to_vec(), b"bb".to_vec(), b"cc".to_vec()]
        );
        assert!(exec.argv_truncated);
        assert_eq!(
            exec.cwd.as_deref(),
            Some(&b"/"[..]),
            "no components is the root"
        );
    }

    #[test]
    fn an_unwalkable_exe_and_unknown_argc_are_absent() {
        let bytes = exec_record(
            b"",
            b"",
            b"",
            exec_flags::EXE_TRUNCATED | exec_flags::ARGC_UNKNOWN | exec_flags::ARGV_UNREADABLE,
        );
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(exec.exe, None);
        assert_eq!(exec.argc, None);
        assert!(exec.argv.is_empty() && exec.argv_unreadable);
    }

    #[test]
    fn non_utf8_arguments_keep_their_bytes() {
        let bytes = exec_record(b"prog\0\xff\xfe\0", b"prog\0", b"", 0);
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(exec.argv[1], vec![0xff, 0xfe]);
    }

    #[test]
    fn exec_records_with_lying_lengths_are_refused() {
        let mut bytes = exec_record(b"a\0", b"x\0", b"", 0);
        // argv_len larger than what arrived.
        let at = offset_of!(ExecEvent, argv_len);
        bytes[at..at + 4].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadLength { field: "argv", .. })
        ));

        let mut bytes = exec_record(b"a\0", b"x\0", b"", 0);
        let at = offset_of!(ExecEvent, exe_len);
        bytes[at..at + 4].copy_from_slice(&(PATH_BUF as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadLength { field: "exe", .. })
        ));

        let mut bytes = exec_record(b"a\0", b"x\0", b"", 0);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadSize { kind: "exec", .. })
        ));

        let bytes = exec_record(b"a\0", b"x\0", b"", 0);
        assert!(matches!(
            decode(&bytes[..EXEC_FIXED_LEN - 1]),
            Err(DecodeError::Truncated { kind: "exec", .. })
        ));
    }

    #[test]
    fn fork_and_exit_records_decode_and_short_ones_are_refused() {
        let fork = ForkEvent {
            header: Header {
                kind: kind::FORK,
                size: size_of::<ForkEvent>() as u32,
                ktime_ns: 1,
            },
            task: task(10),
            child_start_boottime_ns: 123,
            child_tid: 11,
            child_tgid: 11,
        };
        let bytes = as_bytes(&fork);
        let Record::Fork(f) = decode(&bytes).unwrap() else {
            panic!("not a fork")
        };
        assert_eq!(
            (f.task.tgid, f.child_tgid, f.child_start_boottime_ns),
            (10, 11, 123)
        );
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { kind: "fork", .. })
        ));

        let exit = ExitEvent {
            header: Header {
                kind: kind::EXIT,
                size: size_of::<ExitEvent>() as u32,
                ktime_ns: 2,
            },
            task: task(10),
            exit_status: 9,
            _pad0: 0,
        };
        let Record::Exit(e) = decode(&as_bytes(&exit)).unwrap() else {
            panic!("not an exit")
        };
        assert_eq!(e.status, 9);
        let mut bad = as_bytes(&exit);
        bad[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::BadSize { kind: "exit", .. })
        ));
    }

    fn file_record(path: &[u8]) -> Vec<u8> {
        // SAFETY: all-zero is a valid FileEvent.
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.task = task(7);
        ev.op = sensor_common::file_op::OPEN_WRITE;
        ev.flags = 0o101;
        ev.ino = 99;
        ev.dev = (8 << 20) | 1;
        ev.result = 3;
        ev.path[..path.len()].copy_from_slice(path);
        ev.path_len = path.len() as u32;
        let size = FILE_FIXED_LEN + path.len();
        ev.header = Header {
            kind: kind::FILE,
            size: size as u32,
            ktime_ns: 5,
        };
        as_bytes(&ev)[..size].to_vec()
    }

    #[test]
    fn a_file_record_becomes_an_absolute_path_and_its_inode() {
        let Record::File(f) = decode(&file_record(b"f.txt\0tmp\0")).unwrap() else {
            panic!("not a file record")
        };
        assert_eq!(f.path.as_deref(), Some(&b"/tmp/f.txt"[..]));
        assert_eq!(
            (f.ino, f.dev, f.result, f.flags),
            (99, (8 << 20) | 1, 3, 0o101)
        );
        assert!(!f.path_truncated);
    }

    #[test]
    fn file_records_with_lying_or_short_lengths_are_refused() {
        let mut bytes = file_record(b"a\0");
        let at = offset_of!(FileEvent, path_len);
        bytes[at..at + 4].copy_from_slice(&50u32.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadLength { field: "path", .. })
        ));
        let bytes = file_record(b"a\0");
        assert!(matches!(
            decode(&bytes[..FILE_FIXED_LEN - 8]),
            Err(DecodeError::Truncated { kind: "file", .. })
        ));
        let mut bytes = file_record(b"");
        let at = offset_of!(FileEvent, path_flags);
        bytes[at..at + 4].copy_from_slice(&path_flags::TRUNCATED.to_le_bytes());
        let Record::File(f) = decode(&bytes).unwrap() else {
            panic!("not a file record")
        };
        assert_eq!(f.path, None, "a walk that never started has no path");
    }

    #[test]
    fn short_and_unknown_records_are_refused() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut bytes = vec![0u8; 32];
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(99)));
    }
}
