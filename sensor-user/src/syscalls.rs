//! Which file syscall tracepoints each program attaches to, and where each
//! syscall keeps its arguments (`SyscallSpec`). One program per family is
//! verified once and attached many times, which keeps start-up fast.

use sensor_common::{SyscallSpec, arg, file_op, programs::file};

/// One attachment: program, tracepoint (category `syscalls`), and the spec
/// the program looks up by syscall number.
pub struct Hook {
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub spec: Option<(u32, SyscallSpec)>,
}

const fn spec(op: u32) -> SyscallSpec {
    SyscallSpec {
        op,
        dfd1: arg::CWD,
        name1: 0,
        dfd2: arg::NONE,
        name2: arg::NONE,
        mode: arg::NONE,
        uid: arg::NONE,
        flags: arg::NONE,
        length: arg::NONE,
    }
}

/// `op(dfd, name, ...)`.
const fn at(op: u32) -> SyscallSpec {
    SyscallSpec {
        dfd1: 0,
        name1: 1,
        ..spec(op)
    }
}

/// `op(old, new)`, both relative to the cwd.
const fn two(op: u32) -> SyscallSpec {
    SyscallSpec {
        dfd2: arg::CWD,
        name2: 1,
        ..spec(op)
    }
}

/// `op(olddfd, old, newdfd, new, ...)`.
const fn two_at(op: u32) -> SyscallSpec {
    SyscallSpec {
        dfd1: 0,
        name1: 1,
        dfd2: 2,
        name2: 3,
        ..spec(op)
    }
}

/// `op(fd, ...)`.
const fn fd(op: u32) -> SyscallSpec {
    SyscallSpec {
        dfd1: 0,
        name1: arg::NONE,
        ..spec(op)
    }
}

/// Syscall numbers are userspace ABI (`libc::SYS_*`), safe to compile in.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const fn nr(sys: libc::c_long) -> u32 {
    sys as u32
}

/// `spec` whose argument `i` is the mode.
const fn mode(spec: SyscallSpec, i: u8) -> SyscallSpec {
    SyscallSpec { mode: i, ..spec }
}

/// `spec` whose argument `i` holds the operation's flags.
const fn flags(spec: SyscallSpec, i: u8) -> SyscallSpec {
    SyscallSpec { flags: i, ..spec }
}

/// `spec` whose arguments `i` and `i + 1` are the uid and gid.
const fn owner(spec: SyscallSpec, i: u8) -> SyscallSpec {
    SyscallSpec { uid: i, ..spec }
}

/// `spec` whose argument `i` is a length.
const fn length(spec: SyscallSpec, i: u8) -> SyscallSpec {
    SyscallSpec { length: i, ..spec }
}

/// Named file operations: (tracepoint suffix, syscall number, spec).
#[rustfmt::skip]
const NAMED: [(&str, u32, SyscallSpec); 19] = [
    ("unlink", nr(libc::SYS_unlink), spec(file_op::UNLINK)),
    // unlinkat(dfd, name, flag): AT_REMOVEDIR makes it an rmdir.
    ("unlinkat", nr(libc::SYS_unlinkat), flags(at(file_op::UNLINK), 2)),
    ("rmdir", nr(libc::SYS_rmdir), spec(file_op::RMDIR)),
    ("mkdir", nr(libc::SYS_mkdir), mode(spec(file_op::MKDIR), 1)),
    ("mkdirat", nr(libc::SYS_mkdirat), mode(at(file_op::MKDIR), 2)),
    ("rename", nr(libc::SYS_rename), two(file_op::RENAME)),
    ("renameat", nr(libc::SYS_renameat), two_at(file_op::RENAME)),
    ("renameat2", nr(libc::SYS_renameat2), flags(two_at(file_op::RENAME), 4)),
    ("link", nr(libc::SYS_link), two(file_op::LINK)),
    ("linkat", nr(libc::SYS_linkat), flags(two_at(file_op::LINK), 4)),
    // symlink(target, linkpath): the target is text, not a path to resolve.
    ("symlink", nr(libc::SYS_symlink), SyscallSpec { dfd1: arg::NO_BASE, ..two(file_op::SYMLINK) }),
    // symlinkat(target, newdfd, linkpath)
    ("symlinkat", nr(libc::SYS_symlinkat), SyscallSpec {
        dfd1: arg::NO_BASE, name1: 0, dfd2: 1, name2: 2, ..spec(file_op::SYMLINK)
    }),
    ("chmod", nr(libc::SYS_chmod), mode(spec(file_op::CHMOD), 1)),
    ("fchmodat", nr(libc::SYS_fchmodat), mode(at(file_op::CHMOD), 2)),
    ("fchmodat2", nr(libc::SYS_fchmodat2), flags(mode(at(file_op::CHMOD), 2), 3)),
    ("chown", nr(libc::SYS_chown), owner(spec(file_op::CHOWN), 1)),
    ("lchown", nr(libc::SYS_lchown), owner(spec(file_op::CHOWN), 1)),
    ("fchownat", nr(libc::SYS_fchownat), flags(owner(at(file_op::CHOWN), 2), 4)),
    ("truncate", nr(libc::SYS_truncate), length(spec(file_op::TRUNCATE), 1)),
];

/// Changes through a file descriptor.
#[rustfmt::skip]
const FD_CHANGES: [(&str, u32, SyscallSpec); 3] = [
    ("fchmod", nr(libc::SYS_fchmod), mode(fd(file_op::CHMOD), 1)),
    ("fchown", nr(libc::SYS_fchown), owner(fd(file_op::CHOWN), 1)),
    ("ftruncate", nr(libc::SYS_ftruncate), length(fd(file_op::TRUNCATE), 1)),
];

/// Every open flavour, whose exit reads flags and mode by this spec.
/// openat2 keeps them in user memory (`arg::OPEN_HOW`).
#[rustfmt::skip]
const OPENS: [(&str, u32, SyscallSpec); 4] = [
    ("open", nr(libc::SYS_open), mode(flags(spec(file_op::OPEN_WRITE), 1), 2)),
    ("openat", nr(libc::SYS_openat), mode(flags(at(file_op::OPEN_WRITE), 2), 3)),
    ("creat", nr(libc::SYS_creat), mode(spec(file_op::OPEN_WRITE), 1)),
    ("openat2", nr(libc::SYS_openat2), flags(at(file_op::OPEN_WRITE), arg::OPEN_HOW)),
];

const WRITES: [&str; 5] = ["write", "pwrite64", "writev", "pwritev", "pwritev2"];

fn enter(name: &str) -> &'static str {
    Box::leak(format!("sys_enter_{name}").into_boxed_str())
}

fn exit(name: &str) -> &'static str {
    Box::leak(format!("sys_exit_{name}").into_boxed_str())
}

/// Every file hook; with `report_failed` the opens feed the named program too.
#[must_use]
pub fn file_hooks(report_failed: bool) -> Vec<Hook> {
    let mut hooks = Vec::new();
    for (name, nr, spec) in OPENS {
        // Failed opens have no file to describe: with `report_failed` the
        // named program records them at entry, and the exit sends their
        // result. Not openat2's, whose flags are out of a spec's reach.
        if report_failed && spec.flags != arg::OPEN_HOW {
            hooks.push(Hook {
                program: file::NAMED_ENTER,
                tracepoint: enter(name),
                spec: Some((nr, spec)),
            });
        }
        hooks.push(Hook {
            program: file::OPEN_EXIT,
            tracepoint: exit(name),
            spec: Some((nr, spec)),
        });
    }
    for name in WRITES {
        hooks.push(Hook {
            program: file::WRITE_ENTER,
            tracepoint: enter(name),
            spec: None,
        });
    }
    for (table, program) in [
        (&NAMED[..], file::NAMED_ENTER),
        (&FD_CHANGES[..], file::FD_CHANGE_ENTER),
    ] {
        for (name, nr, spec) in table {
            hooks.push(Hook {
                program,
                tracepoint: enter(name),
                spec: Some((*nr, *spec)),
            });
            hooks.push(Hook {
                program: file::RESULT_EXIT,
                tracepoint: exit(name),
                spec: None,
            });
        }
    }
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_with_a_spec_has_its_exit_and_the_specs_stay_in_range() {
        let hooks = file_hooks(true);
        for hook in hooks.iter().filter(|h| h.spec.is_some()) {
            let exit = hook.tracepoint.replace("sys_enter_", "sys_exit_");
            assert!(
                hooks.iter().any(|h| h.tracepoint == exit
                    && (h.program == file::RESULT_EXIT || h.program == file::OPEN_EXIT)),
                "{exit}"
            );
            let (nr, s) = hook.spec.unwrap();
            assert!(nr < sensor_common::SYSCALL_SPEC_SLOTS, "{nr}");
            for idx in [
                s.dfd1, s.name1, s.dfd2, s.name2, s.mode, s.uid, s.flags, s.length,
            ] {
                assert!(
                    idx <= 5 || idx >= arg::OPEN_HOW,
                    "{}: {idx}",
                    hook.tracepoint
                );
            }
        }
        assert_eq!(hooks.len(), 3 + 4 + 5 + (19 + 3) * 2);
        assert_eq!(file_hooks(false).len(), 4 + 5 + (19 + 3) * 2);
    }
}
