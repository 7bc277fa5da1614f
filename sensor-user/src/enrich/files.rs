//! File records between decode and event: joins a record taken at syscall
//! entry with its result, drops failed operations unless configured, and
//! applies the ignored path prefixes (the kernel already discarded what lies
//! on ignored mounts; this catches the rest, e.g. absolute names).

use std::collections::HashMap;

use sensor_common::file_op;

use crate::{
    decode::{File, SyscallResult},
    stats::Stats,
};

/// Most threads with a record awaiting its result. A thread has at most one
/// syscall in flight, so this only bounds the damage of lost results.
const MAX_PENDING: usize = 16_384;

pub struct FileFilter {
    ignore_prefixes: Vec<Vec<u8>>,
    report_failed: bool,
    pending: HashMap<u32, File>,
}

/// Whether `path` is `prefix` or lies under it (component-wise).
fn under(path: &[u8], prefix: &[u8]) -> bool {
    let prefix = prefix.strip_suffix(b"/").unwrap_or(prefix);
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/") || prefix.is_empty())
}

impl FileFilter {
    #[must_use]
    pub fn new(ignore_prefixes: &[String], report_failed: bool) -> Self {
        Self {
            ignore_prefixes: ignore_prefixes
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            report_failed,
            pending: HashMap::new(),
        }
    }

    fn ignored(&self, f: &File) -> bool {
        let hit = |p: &Option<Vec<u8>>| {
            p.as_deref()
                .is_some_and(|p| self.ignore_prefixes.iter().any(|pre| under(p, pre)))
        };
        hit(&f.path) && (f.old_path.is_none() || hit(&f.old_path))
    }

    /// A decoded file record: `Some` when it is ready to report, `None` when
    /// it waits for its result or is filtered out.
    pub fn record(&mut self, f: File, stats: &Stats) -> Option<File> {
        if self.ignored(&f) {
            Stats::inc(&stats.file_ignored);
            return None;
        }
        if !f.await_result {
            if f.op == file_op::OPEN_WRITE
                && self
                    .pending
                    .get(&f.task.tid)
                    .is_some_and(|p| p.op == file_op::OPEN_WRITE)
            {
                // The open succeeded: its own record replaces the named one
                // kept in case it failed.
                self.pending.remove(&f.task.tid);
            }
            return Some(f);
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&f.task.tid) {
            // Results were lost (a full ring drops them like any record);
            // forget everything rather than grow.
            Stats::add(&stats.file_result_lost, self.pending.len() as u64);
            self.pending.clear();
        }
        if self.pending.insert(f.task.tid, f).is_some() {
            Stats::inc(&stats.file_result_lost);
        }
        None
    }

    /// A syscall's result: the completed record, unless it failed and
    /// failures are not reported. The kernel sends the result of every
    /// syscall it hooks for one (`send_result` in sensor-ebpf); one with no
    /// waiting record had its entry filtered out there and is let go.
    pub fn result(&mut self, r: SyscallResult, stats: &Stats) -> Option<File> {
        let mut f = self.pending.remove(&r.tid)?;
        f.result = r.ret;
        f.await_result = false;
        if r.ret < 0 {
            if !self.report_failed {
                Stats::inc(&stats.file_failed);
                return None;
            }
            return Some(f);
        }
        // The kernel described the file before the change; apply it.
        match f.op {
            file_op::CHMOD if f.file_mode != 0 => {
                f.file_mode = (f.file_mode & 0o170_000) | (f.mode & 0o7777);
            }
            file_op::CHOWN => {
                if f.req_uid != u32::MAX {
                    f.owner_uid = f.req_uid;
                }
                if f.req_gid != u32::MAX {
                    f.owner_gid = f.req_gid;
                }
            }
            _ => {}
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Task;

    fn file(op: u32, path: &str, await_result: bool) -> File {
        File {
            ktime_ns: 1,
            task: Task {
                start_boottime_ns: 0,
                cgroup_id: 0,
                tid: 42,
                tgid: 42,
                ppid: 1,
                uid: 0,
                gid: 0,
                euid: 0,
                egid: 0,
                login_uid: u32::MAX,
                session_id: u32::MAX,
                comm: "t".into(),
            },
            op,
            flags: 0,
            mode: 0o640,
            file_mode: 0o100_600,
            owner_uid: 0,
            owner_gid: 0,
            dev: 0,
            ino: 0,
            result: 0,
            f_mode: 0,
            path: Some(path.as_bytes().to_vec()),
            path_truncated: false,
            old_path: None,
            req_uid: 1000,
            req_gid: u32::MAX,
            length: 0,
            repeats: 0,
            await_result,
        }
    }

    #[test]
    fn an_entry_record_waits_for_its_result_and_failures_are_dropped_by_default() {
        let stats = Stats::default();
        let mut filter = FileFilter::new(&[], false);
        assert!(
            filter
                .record(file(file_op::UNLINK, "/t/a", true), &stats)
                .is_none()
        );
        let done = filter
            .result(SyscallResult { tid: 42, ret: 0 }, &stats)
            .unwrap();
        assert_eq!(done.result, 0);
        assert!(
            filter
                .record(file(file_op::UNLINK, "/t/b", true), &stats)
                .is_none()
        );
        assert!(
            filter
                .result(SyscallResult { tid: 42, ret: -2 }, &stats)
                .is_none()
        );
        assert_eq!(Stats::get(&stats.file_failed), 1);
        // A result nobody waits for is ignored.
        assert!(
            filter
                .result(SyscallResult { tid: 42, ret: 0 }, &stats)
                .is_none()
        );
    }

    #[test]
    fn failures_are_reported_when_configured() {
        let stats = Stats::default();
        let mut filter = FileFilter::new(&[], true);
        filter.record(file(file_op::MKDIR, "/t/d", true), &stats);
        let done = filter
            .result(SyscallResult { tid: 42, ret: -17 }, &stats)
            .unwrap();
        assert_eq!(done.result, -17);
    }

    #[test]
    fn chmod_and_chown_apply_what_was_asked_once_they_succeed() {
        let stats = Stats::default();
        let mut filter = FileFilter::new(&[], false);
        filter.record(file(file_op::CHMOD, "/t/f", true), &stats);
        let f = filter
            .result(SyscallResult { tid: 42, ret: 0 }, &stats)
            .unwrap();
        assert_eq!(f.file_mode, 0o100_640);
        filter.record(file(file_op::CHOWN, "/t/f", true), &stats);
        let f = filter
            .result(SyscallResult { tid: 42, ret: 0 }, &stats)
            .unwrap();
        assert_eq!((f.owner_uid, f.owner_gid), (1000, 0));
    }

    #[test]
    fn a_second_entry_before_a_result_counts_the_first_as_lost() {
        let stats = Stats::default();
        let mut filter = FileFilter::new(&[], false);
        filter.record(file(file_op::UNLINK, "/t/a", true), &stats);
        filter.record(file(file_op::UNLINK, "/t/b", true), &stats);
        assert_eq!(Stats::get(&stats.file_result_lost), 1);
        let f = filter
            .result(SyscallResult { tid: 42, ret: 0 }, &stats)
            .unwrap();
        assert_eq!(f.path.as_deref(), Some(&b"/t/b"[..]));
    }

    #[test]
    fn ignored_prefixes_match_whole_components() {
        let stats = Stats::default();
        let mut filter = FileFilter::new(&["/proc".into(), "/dev/pts/".into()], false);
        assert!(
            filter
                .record(file(file_op::WRITE, "/proc/1/x", false), &stats)
                .is_none()
        );
        assert!(
            filter
                .record(file(file_op::WRITE, "/dev/pts", false), &stats)
                .is_none()
        );
        assert!(
            filter
                .record(file(file_op::WRITE, "/processes", false), &stats)
                .is_some()
        );
        let mut moved_out = file(file_op::RENAME, "/tmp/x", true);
        moved_out.old_path = Some(b"/proc/x".to_vec());
        assert!(filter.record(moved_out, &stats).is_none());
        assert_eq!(filter.pending.len(), 1);
        assert_eq!(Stats::get(&stats.file_ignored), 2);
    }
}
