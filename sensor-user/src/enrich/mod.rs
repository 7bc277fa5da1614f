//! Stage 3: decoded records -> events with full process context.
//!
//! Keeps the process table (tgid -> the current image's `Process`), which
//! gives every event its exec_id, parent linkage, exe, argv and cwd. Entries
//! leave the table when their process exits, so memory follows the number of
//! live processes; a bound evicts entries whose process is gone from /proc,
//! should an exit ever be lost.

pub mod cgroups;
pub mod connections;
pub mod files;
pub mod identity;
pub mod net;
pub mod procfs;
pub mod throttle;
pub mod users;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use sensor_common::file_op;
use sensor_proto::{
    timestamp_from_unix_ns,
    v1::{Event, FileEvent, FileOp, Process, ProcessExec, ProcessExit, ProcessFork, event::Body},
};

use self::{
    cgroups::{Cgroups, container_id},
    files::FileFilter,
    identity::{Origin, exec_id},
    procfs::ProcProcess,
    users::Users,
};
use crate::{
    decode::{Exec, Exit, File, Fork, Record, Task},
    encode::{Context, Enriched},
    host::HostInfo,
    stats::Stats,
};

#[derive(Clone, Debug)]
pub struct EnrichConfig {
    /// Arguments kept per exec; beyond it argv is cut and flagged truncated.
    pub max_args: usize,
    /// Most processes kept in the table.
    pub table_capacity: usize,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub passwd: PathBuf,
    /// Paths at or under these are never reported.
    pub ignore_prefixes: Vec<String>,
    /// Report file operations that failed too.
    pub report_failed: bool,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            max_args: 256,
            table_capacity: 65_536,
            proc_root: PathBuf::from("/proc"),
            cgroup_root: cgroups::cgroup2_mount()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            passwd: PathBuf::from("/etc/passwd"),
            ignore_prefixes: Vec::new(),
            report_failed: false,
        }
    }
}

pub struct Enricher {
    cfg: EnrichConfig,
    host: HostInfo,
    stats: Arc<Stats>,
    /// Shared with the events in flight: an event refers to its process's
    /// entry rather than copying it.
    table: HashMap<u32, Arc<Process>>,
    users: Users,
    cgroups: Cgroups,
    files: FileFilter,
    connections: connections::Connections,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// argv as text, plus the exact bytes of arguments that are not UTF-8.
fn argv_strings(argv: &[Vec<u8>]) -> (Vec<String>, HashMap<u32, Vec<u8>>) {
    let mut raw = HashMap::new();
    let text = argv
        .iter()
        .enumerate()
        .map(|(i, arg)| match std::str::from_utf8(arg) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                raw.insert(u32::try_from(i).unwrap_or(u32::MAX), arg.clone());
                lossy(arg)
            }
        })
        .collect();
    (text, raw)
}

/// `FMODE_CREATED` (include/linux/fs.h, `1 << 20` since 4.19): open set it
/// in `file::f_mode` because O_CREAT created the file.
const FMODE_CREATED: u32 = 1 << 20;

/// A kernel `dev_t` (major << 20 | minor) as stat(2) shows it.
#[must_use]
pub fn user_dev(kernel_dev: u32) -> u64 {
    libc::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

/// Splits a wait(2) status into (exit code, signal, core dumped).
#[must_use]
pub fn split_status(status: u32) -> (i32, u32, bool) {
    let signal = status & 0x7f;
    if signal == 0 {
        (i32::try_from((status >> 8) & 0xff).unwrap_or(0), 0, false)
    } else {
        (0, signal, status & 0x80 != 0)
    }
}

impl Enricher {
    #[must_use]
    pub fn new(cfg: EnrichConfig, host: HostInfo, stats: Arc<Stats>) -> Self {
        Self {
            users: Users::new(&cfg.passwd),
            files: FileFilter::new(&cfg.ignore_prefixes, cfg.report_failed),
            connections: connections::Connections::default(),
            cgroups: Cgroups::new(&cfg.cgroup_root),
            cfg,
            host,
            stats,
            table: HashMap::new(),
        }
    }

    /// Live processes in the table.
    #[must_use]
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// An event of thread `tid` of `process`.
    fn event(&self, ktime_ns: u64, process: Arc<Process>, tid: u32, body: Body) -> Enriched {
        Enriched {
            event: Event {
                time: Some(timestamp_from_unix_ns(self.host.unix_ns(ktime_ns))),
                monotonic_ns: ktime_ns,
                body: Some(body),
                ..Event::default()
            },
            process: Some(Context { process, tid }),
        }
    }

    /// The id of a process image that began with the process: its start
    /// time in clock ticks, as /proc/PID/stat shows it.
    fn ticks_id(&self, tgid: u32, start_ticks: u64) -> String {
        exec_id(&self.host.boot_id, tgid, Origin::Start { start_ticks })
    }

    /// The same id from the kernel's start time in nanoseconds.
    fn start_id(&self, tgid: u32, start_boottime_ns: u64) -> String {
        self.ticks_id(tgid, start_boottime_ns / self.host.tick_ns)
    }

    /// The exec_id of `tgid`'s current image: from the table, else from /proc.
    fn current_id(&mut self, tgid: u32) -> String {
        if tgid == 0 {
            return String::new();
        }
        if let Some(p) = self.table.get(&tgid) {
            return p.exec_id.clone();
        }
        Stats::inc(&self.stats.unknown_parent);
        procfs::read_process(&self.cfg.proc_root, tgid)
            .map(|p| self.ticks_id(tgid, p.start_ticks))
            .unwrap_or_default()
    }

    /// Fills the ids, credentials and names of `p` from a kernel task record.
    /// Not the tid: a context is shared by all threads (`Context::tid`).
    fn apply_task(&mut self, p: &mut Process, t: &Task) {
        p.pid = t.tgid;
        p.ppid = t.ppid;
        p.uid = t.uid;
        p.gid = t.gid;
        p.euid = t.euid;
        p.egid = t.egid;
        p.login_uid = t.login_uid;
        p.session_id = t.session_id;
        p.comm.clone_from(&t.comm);
        // Most events copy a table entry whose user is already right: no
        // new string then.
        let user = self.users.name(t.uid);
        if p.user != user {
            user.clone_into(&mut p.user);
        }
        if p.cgroup_id != t.cgroup_id || p.cgroup_path.is_empty() {
            p.cgroup_id = t.cgroup_id;
            p.cgroup_path = self.cgroups.path(t.cgroup_id);
            p.container_id = container_id(&p.cgroup_path).unwrap_or_default();
        }
        if p.start_time.is_none() && t.start_boottime_ns != 0 {
            p.start_time = Some(timestamp_from_unix_ns(
                self.host.unix_ns(t.start_boottime_ns),
            ));
        }
    }

    /// Whether `p` already holds what `apply_task` would write from `t`.
    fn task_applied(p: &Process, t: &Task) -> bool {
        p.pid == t.tgid
            && p.ppid == t.ppid
            && p.uid == t.uid
            && p.gid == t.gid
            && p.euid == t.euid
            && p.egid == t.egid
            && p.login_uid == t.login_uid
            && p.session_id == t.session_id
            && p.comm == t.comm
            && p.cgroup_id == t.cgroup_id
            && !p.cgroup_path.is_empty()
            && (p.start_time.is_some() || t.start_boottime_ns == 0)
    }

    /// The process context of an event by task `t`: its table entry, shared,
    /// when it already holds `t`'s ids and credentials; else a copy with
    /// them, which replaces the entry so the thread's next event shares it.
    /// A process the sensor never saw begin gets a context of its own.
    fn context(&mut self, t: &Task) -> Arc<Process> {
        let Some(entry) = self.table.get(&t.tgid) else {
            let mut p = self.unseen_process(t);
            self.apply_task(&mut p, t);
            return Arc::new(p);
        };
        let mut shared = entry.clone();
        if !Self::task_applied(&shared, t) {
            self.apply_task(Arc::make_mut(&mut shared), t);
            self.table.insert(t.tgid, shared.clone());
        }
        shared
    }

    /// A context built from the record and /proc, for a process the sensor
    /// never saw begin.
    fn unseen_process(&mut self, t: &Task) -> Process {
        let mut p = Process {
            exec_id: self.start_id(t.tgid, t.start_boottime_ns),
            parent_exec_id: self.current_id(t.ppid),
            ..Process::default()
        };
        if let Some(proc) = procfs::read_process(&self.cfg.proc_root, t.tgid) {
            p.exe = lossy(&proc.exe);
            p.cwd = lossy(&proc.cwd);
            p.argv = argv_strings(&proc.argv).0;
        }
        p
    }

    fn insert(&mut self, p: Arc<Process>) {
        if self.table.len() >= self.cfg.table_capacity && !self.table.contains_key(&p.pid) {
            let root = self.cfg.proc_root.clone();
            let before = self.table.len();
            self.table
                .retain(|pid, _| root.join(pid.to_string()).exists());
            Stats::add(
                &self.stats.table_evicted,
                (before - self.table.len()) as u64,
            );
        }
        self.table.insert(p.pid, p);
    }

    fn exec(&mut self, e: Exec) -> Enriched {
        let previous_exec_id = self
            .table
            .get(&e.task.tgid)
            .map(|p| p.exec_id.clone())
            .unwrap_or_default();
        let mut argv = e.argv;
        let argc = e
            .argc
            .unwrap_or_else(|| u32::try_from(argv.len()).unwrap_or(u32::MAX));
        let mut argv_truncated = e.argv_truncated;
        if argv.len() > self.cfg.max_args {
            argv.truncate(self.cfg.max_args);
            argv_truncated = true;
            Stats::inc(&self.stats.argv_limited);
        }
        let (argv, argv_raw) = argv_strings(&argv);
        let proc_dir = self.cfg.proc_root.join(e.task.tgid.to_string());
        // The kernel's walk, else what /proc still says (racy, but better than nothing).
        let or_proc_link = |path: Option<Vec<u8>>, name: &str| {
            lossy(&path.unwrap_or_else(|| procfs::link(&proc_dir.join(name))))
        };
        let mut p = Process {
            exec_id: exec_id(
                &self.host.boot_id,
                e.task.tgid,
                Origin::Exec {
                    ktime_ns: e.ktime_ns,
                },
            ),
            parent_exec_id: self.current_id(e.task.ppid),
            exe: or_proc_link(e.exe, "exe"),
            cwd: or_proc_link(e.cwd, "cwd"),
            argv,
            ..Process::default()
        };
        self.apply_task(&mut p, &e.task);
        let p = Arc::new(p);
        self.insert(p.clone());
        let body = Body::Exec(ProcessExec {
            argv_raw,
            argv_truncated,
            argc,
            exe_truncated: e.exe_truncated,
            cwd_truncated: e.cwd_truncated,
            procfs: false,
            previous_exec_id,
        });
        self.event(e.ktime_ns, p, e.task.tid, body)
    }

    fn fork(&mut self, f: Fork) -> Enriched {
        // The child inherits the parent's image: only those fields are copied.
        let (parent_exec_id, exe, argv, cwd) = match self.table.get(&f.task.tgid) {
            Some(p) => (
                p.exec_id.clone(),
                p.exe.clone(),
                p.argv.clone(),
                p.cwd.clone(),
            ),
            None => {
                let p = self.unseen_process(&f.task);
                (p.exec_id, p.exe, p.argv, p.cwd)
            }
        };
        let mut child = Process {
            exec_id: self.start_id(f.child_tgid, f.child_start_boottime_ns),
            parent_exec_id,
            exe,
            argv,
            cwd,
            start_time: Some(timestamp_from_unix_ns(
                self.host.unix_ns(f.child_start_boottime_ns),
            )),
            ..Process::default()
        };
        self.apply_task(&mut child, &f.task);
        child.pid = f.child_tgid;
        child.ppid = f.task.tgid;
        let child = Arc::new(child);
        self.insert(child.clone());
        self.event(
            f.ktime_ns,
            child,
            f.child_tgid,
            Body::Fork(ProcessFork {
                parent_tid: f.task.tid,
            }),
        )
    }

    fn exit(&mut self, x: Exit) -> Enriched {
        let p = match self.table.remove(&x.task.tgid) {
            // Usually the last holder of the entry: no copy.
            Some(mut p) => {
                if !Self::task_applied(&p, &x.task) {
                    self.apply_task(Arc::make_mut(&mut p), &x.task);
                }
                p
            }
            None => self.context(&x.task),
        };
        let (exit_code, signal, core_dumped) = split_status(x.status);
        self.event(
            x.ktime_ns,
            p,
            x.task.tid,
            Body::Exit(ProcessExit {
                exit_code,
                signal,
                core_dumped,
                status: x.status,
            }),
        )
    }

    fn file(&mut self, f: File) -> Enriched {
        let p = self.context(&f.task);
        let op = if f.op == file_op::OPEN_WRITE && f.f_mode & FMODE_CREATED != 0 {
            FileOp::Create
        } else {
            FileOp::try_from(i32::try_from(f.op).unwrap_or(0)).unwrap_or(FileOp::Unspecified)
        };
        let body = Body::File(FileEvent {
            op: op.into(),
            path: f.path.as_deref().map(lossy).unwrap_or_default(),
            path_truncated: f.path_truncated,
            old_path: f.old_path.as_deref().map(lossy).unwrap_or_default(),
            inode: f.ino,
            device: user_dev(f.dev),
            flags: f.flags,
            mode: f.mode,
            owner_uid: f.owner_uid,
            owner_gid: f.owner_gid,
            file_mode: f.file_mode,
            result: f.result,
            length: f.length,
            repeats: f.repeats,
        });
        self.event(f.ktime_ns, p, f.task.tid, body)
    }

    /// One decoded record in, at most one event out: file records taken at
    /// syscall entry wait for their result, and filters may drop them.
    pub fn enrich(&mut self, record: Record) -> Option<Enriched> {
        Stats::inc(&self.stats.enriched);
        match record {
            Record::Exec(e) => Some(self.exec(e)),
            Record::Fork(f) => Some(self.fork(f)),
            Record::Exit(x) => Some(self.exit(x)),
            Record::File(f) => {
                let ready = self.files.record(f, &self.stats)?;
                Some(self.file(ready))
            }
            Record::Result(r) => {
                let ready = self.files.result(r, &self.stats)?;
                Some(self.file(ready))
            }
            Record::Net(n) => {
                let reported = self.connections.record(n, &self.stats)?;
                Some(self.net(reported))
            }
            Record::Dns(d) => Some(self.dns(d)),
        }
    }

    /// Fills the table from /proc and returns one `procfs` exec event per
    /// process already running, parents first, so every later event and the
    /// collector's ancestry walk can reach back to init.
    pub fn scan_procfs(&mut self, now_boot_ns: u64) -> Vec<Enriched> {
        let all = procfs::scan(&self.cfg.proc_root);
        Stats::add(&self.stats.procfs_seen, all.len() as u64);
        let mut events = Vec::with_capacity(all.len());
        for proc in all {
            if !self.table.contains_key(&proc.pid) {
                events.push(self.procfs_event(&proc, now_boot_ns));
            }
        }
        events
    }

    fn procfs_event(&mut self, proc: &ProcProcess, now_boot_ns: u64) -> Enriched {
        let start_ns = proc.start_ticks * self.host.tick_ns;
        let parent_exec_id = self
            .table
            .get(&proc.ppid)
            .map(|p| p.exec_id.clone())
            .unwrap_or_default();
        let (argv, argv_raw) = argv_strings(&proc.argv);
        let cgroup_id = std::fs::metadata(
            Path::new(&self.cfg.cgroup_root).join(proc.cgroup_path.trim_start_matches('/')),
        )
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0);
        let task = Task {
            start_boottime_ns: start_ns,
            cgroup_id,
            tid: proc.pid,
            tgid: proc.pid,
            ppid: proc.ppid,
            uid: proc.uid,
            gid: proc.gid,
            euid: proc.euid,
            egid: proc.egid,
            login_uid: proc.login_uid,
            session_id: proc.session_id,
            comm: proc.comm.clone(),
        };
        let mut p = Process {
            exec_id: self.ticks_id(proc.pid, proc.start_ticks),
            parent_exec_id,
            exe: lossy(&proc.exe),
            cwd: lossy(&proc.cwd),
            argv,
            ..Process::default()
        };
        self.apply_task(&mut p, &task);
        let p = Arc::new(p);
        self.insert(p.clone());
        let argc = u32::try_from(proc.argv.len()).unwrap_or(u32::MAX);
        self.event(
            now_boot_ns,
            p,
            proc.pid,
            Body::Exec(ProcessExec {
                argv_raw,
                argc,
                procfs: true,
                ..ProcessExec::default()
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_device_numbers_become_stat_numbers() {
        // /dev/sda1 is 8:1; the kernel packs it as major << 20 | minor.
        assert_eq!(user_dev((8 << 20) | 1), libc::makedev(8, 1));
        assert_eq!(user_dev(254 << 20), 65024);
    }

    #[test]
    fn wait_statuses_split_into_code_signal_and_core() {
        assert_eq!(split_status(0), (0, 0, false));
        assert_eq!(split_status(3 << 8), (3, 0, false));
        assert_eq!(split_status(9), (0, 9, false));
        assert_eq!(split_status(11 | 0x80), (0, 11, true));
    }

    #[test]
    fn non_utf8_arguments_are_kept_exactly_beside_their_text() {
        let (text, raw) = argv_strings(&[b"ok".to_vec(), vec![0xff, b'a']]);
        assert_eq!(text, vec!["ok".to_owned(), "\u{fffd}a".to_owned()]);
        assert_eq!(raw.get(&1), Some(&vec![0xff, b'a']));
        assert_eq!(raw.len(), 1);
    }
}
