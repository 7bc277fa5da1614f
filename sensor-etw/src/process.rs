//! Processes: Microsoft-Windows-Kernel-Process 1 (start), 15 (rundown),
//! 2 (stop), 5 (image load), joined with the classic kernel logger's
//! Process Start/DCStart (opcodes 1/3) for the command line and user SID,
//! which Kernel-Process does not carry.
//!
//! Layouts: Kernel-Process `ProcessStart`/`ProcessRundown`/`ProcessStop`
//! (jdu2600/Windows10EtwEvents manifest/Microsoft-Windows-Kernel-Process.tsv,
//! v0–v5; reference §3) and the MOF `Process_V4_TypeGroup1` class
//! (learn.microsoft.com "Process_V4_TypeGroup1 class"; reference §4).
//!
//! The join: the classic start of the same PID and parent PID whose
//! timestamp is within `cmdline_wait_ms` of the Kernel-Process CreateTime
//! (for rundowns, PID and parent PID alone: both are snapshots). Either may
//! arrive first (they come from different sessions); the start waits up to
//! `cmdline_wait_ms` of clock (`Decoder::tick`) for its classic half, then
//! goes out without a command line, counted.

use sensor_proto::{
    timestamp_from_unix_ns,
    v1::{Event, Process, ProcessExec, ProcessExit, event::Body},
};

use crate::{
    cmdline,
    counters::EtwCounters,
    decoder::{Decoder, DecoderConfig},
    identity::{exec_id, filetime_to_unix_ns},
    record::EtwRecord,
    router::{Header, Route},
    state::Bounded,
};

/// The classic Process Start's CommandLine holds at most this many UTF-16
/// units, terminator included (reference §5.4, Win11 26200).
const CLASSIC_CMDLINE_UNITS: usize = 1_024;

/// "Unset" for the Linux audit ids, which Windows does not have.
const UNSET: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub hdr: Header,
    pub pid: u32,
    pub ppid: u32,
    /// FILETIME the process was created.
    pub create_time: i64,
    pub session_id: u32,
    /// NT path of the image.
    pub image: String,
    /// From a rundown (event 15): running before the sensor started.
    pub rundown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub hdr: Header,
    pub pid: u32,
    /// 0 when the record lacked it.
    pub create_time: i64,
    pub exit_code: u32,
    /// Short ANSI image name.
    pub image: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classic {
    pub hdr: Header,
    pub pid: u32,
    pub ppid: u32,
    pub command_line: String,
    /// The binary SID (TOKEN_USER header already skipped).
    pub sid: Option<Vec<u8>>,
    /// DCStart (opcode 3): a snapshot of a running process.
    pub rundown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessRecord {
    Start(Start),
    Stop(Stop),
    Classic(Classic),
    ImageLoad,
}

fn filetime(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

/// Reads a routed Kernel-Process or classic Process record; `None` when a
/// property the join or the ids need is missing or mistyped.
pub fn parse(route: Route, rec: &dyn EtwRecord) -> Option<ProcessRecord> {
    let hdr = Header::of(rec);
    Some(match route {
        Route::ProcessStart | Route::ProcessRundown => ProcessRecord::Start(Start {
            hdr,
            pid: rec.u32("ProcessID")?,
            ppid: rec.u32("ParentProcessID")?,
            create_time: filetime(rec.u64("CreateTime")?)?,
            session_id: rec.u32("SessionID").unwrap_or(0),
            image: rec.string("ImageName").unwrap_or_default(),
            rundown: route == Route::ProcessRundown,
        }),
        Route::ProcessStop => ProcessRecord::Stop(Stop {
            hdr,
            pid: rec.u32("ProcessID")?,
            create_time: rec.u64("CreateTime").and_then(filetime).unwrap_or(0),
            exit_code: rec.u32("ExitCode")?,
            image: rec.ansi("ImageName").unwrap_or_default(),
        }),
        Route::ClassicProcessStart | Route::ClassicProcessRundown => {
            // UserSID is a TOKEN_USER (SID_AND_ATTRIBUTES: a pointer and a
            // DWORD, padded to two pointers) followed by the SID itself.
            let skip = 2 * rec.pointer_size();
            ProcessRecord::Classic(Classic {
                hdr,
                pid: rec.u32("ProcessId")?,
                ppid: rec.u32("ParentId")?,
                command_line: rec.string("CommandLine").unwrap_or_default(),
                sid: rec
                    .bytes("UserSID")
                    .and_then(|b| b.get(skip..).map(<[u8]>::to_vec))
                    .filter(|s| !s.is_empty()),
                rundown: route == Route::ClassicProcessRundown,
            })
        }
        _ => ProcessRecord::ImageLoad,
    })
}

struct Entry {
    create_time: i64,
    process: Process,
}

/// A process start waiting for its command line.
struct Held {
    start: Start,
    deadline: i64,
    process: Process,
}

pub(crate) struct ProcessState {
    /// pid -> the live process with that pid.
    table: Bounded<u32, Entry>,
    /// Classic starts that came before their Kernel-Process start.
    classic: Bounded<u32, Classic>,
    /// Kernel-Process starts waiting for their classic start.
    held: Bounded<u32, Held>,
}

impl ProcessState {
    pub(crate) fn new(cfg: &DecoderConfig) -> Self {
        Self {
            table: Bounded::new(cfg.process_capacity),
            classic: Bounded::new(cfg.hold_capacity),
            held: Bounded::new(cfg.hold_capacity),
        }
    }
}

fn joins(start: &Start, c: &Classic, window: i64) -> bool {
    c.pid == start.pid
        && c.ppid == start.ppid
        && (start.rundown || c.rundown || (c.hdr.ts - start.create_time).abs() <= window)
}

/// The last component of a Windows path.
fn base_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

impl Decoder {
    pub(crate) fn process(&mut self, r: ProcessRecord, out: &mut Vec<Event>) {
        match r {
            ProcessRecord::Start(s) => self.process_start(s, out),
            ProcessRecord::Stop(s) => self.process_stop(s, out),
            ProcessRecord::Classic(c) => self.classic_start(c, out),
            ProcessRecord::ImageLoad => EtwCounters::inc(&self.counters.image_loads),
        }
    }

    /// The context of events of `pid`: its table entry, or ids alone.
    pub(crate) fn context(&mut self, pid: u32, tid: u32) -> Process {
        if let Some(e) = self.procs.table.get(&pid) {
            let mut p = e.process.clone();
            p.tid = tid;
            return p;
        }
        EtwCounters::inc(&self.counters.process_unknown);
        Process {
            pid,
            tid,
            login_uid: UNSET,
            session_id: UNSET,
            ..Process::default()
        }
    }

    fn process_start(&mut self, s: Start, out: &mut Vec<Event>) {
        let parent_exec_id = match self.procs.table.get(&s.ppid) {
            Some(parent) => parent.process.exec_id.clone(),
            None => {
                if s.ppid != 0 {
                    EtwCounters::inc(&self.counters.parent_unknown);
                }
                String::new()
            }
        };
        let exe = self.dos_path(&s.image);
        let process = Process {
            exec_id: exec_id(&self.cfg.boot_id, s.pid, s.create_time),
            parent_exec_id,
            pid: s.pid,
            ppid: s.ppid,
            login_uid: UNSET,
            // The Windows (terminal services) session.
            session_id: s.session_id,
            comm: base_name(&exe).to_owned(),
            exe,
            start_time: Some(timestamp_from_unix_ns(filetime_to_unix_ns(s.create_time))),
            ..Process::default()
        };
        if self.procs.table.contains(&s.pid) {
            EtwCounters::inc(&self.counters.process_replaced);
        }
        // A start while the previous holder of the pid still waits: send that
        // one first, so its exec precedes anything of the new process.
        if let Some(stale) = self.procs.held.remove(&s.pid) {
            self.release(stale, out);
        }
        let evicted = self.procs.table.insert(
            s.pid,
            Entry {
                create_time: s.create_time,
                process: process.clone(),
            },
        );
        for _ in evicted {
            EtwCounters::inc(&self.counters.process_table_evicted);
        }
        let window = Self::ms(self.cfg.cmdline_wait_ms);
        let classic = self
            .procs
            .classic
            .get(&s.pid)
            .is_some_and(|c| joins(&s, c, window));
        if classic && let Some(c) = self.procs.classic.remove(&s.pid) {
            self.send_exec(s, process, Some(&c), out);
            return;
        }
        let deadline = s.hdr.ts.saturating_add(window);
        let evicted = self.procs.held.insert(
            s.pid,
            Held {
                start: s,
                deadline,
                process,
            },
        );
        for (_, h) in evicted {
            self.release(h, out);
        }
    }

    fn classic_start(&mut self, c: Classic, out: &mut Vec<Event>) {
        let window = Self::ms(self.cfg.cmdline_wait_ms);
        let waiting = self
            .procs
            .held
            .get(&c.pid)
            .is_some_and(|h| joins(&h.start, &c, window));
        if waiting && let Some(h) = self.procs.held.remove(&c.pid) {
            self.send_exec(h.start, h.process, Some(&c), out);
            return;
        }
        for _ in self.procs.classic.insert(c.pid, c) {
            EtwCounters::inc(&self.counters.classic_unmatched);
        }
    }

    /// A held start goes out without its command line.
    fn release(&mut self, h: Held, out: &mut Vec<Event>) {
        EtwCounters::inc(&self.counters.cmdline_missing);
        self.send_exec(h.start, h.process, None, out);
    }

    fn send_exec(&mut self, s: Start, mut p: Process, c: Option<&Classic>, out: &mut Vec<Event>) {
        let mut exec = ProcessExec {
            procfs: s.rundown,
            ..ProcessExec::default()
        };
        if let Some(c) = c {
            EtwCounters::inc(&self.counters.cmdline_joined);
            p.argv = cmdline::split(&c.command_line);
            exec.argc = u32::try_from(p.argv.len()).unwrap_or(u32::MAX);
            exec.argv_truncated =
                c.command_line.encode_utf16().count() >= CLASSIC_CMDLINE_UNITS - 1;
            if let Some((sid, name)) = c.sid.as_deref().and_then(|sid| self.user(sid)) {
                p.user_sid = sid;
                p.user = name;
            }
            // Later events of this process carry what the join learnt.
            if let Some(e) = self.procs.table.get_mut(&s.pid)
                && e.create_time == s.create_time
            {
                e.process.argv.clone_from(&p.argv);
                e.process.user_sid.clone_from(&p.user_sid);
                e.process.user.clone_from(&p.user);
            }
        }
        out.push(self.event(s.hdr.ts, p, Body::Exec(exec)));
    }

    fn process_stop(&mut self, s: Stop, out: &mut Vec<Event>) {
        if let Some(h) = self.procs.held.remove(&s.pid) {
            self.release(h, out);
        }
        let entry = self
            .procs
            .table
            .remove(&s.pid)
            .filter(|e| s.create_time == 0 || e.create_time == s.create_time);
        let p = match entry {
            Some(e) => e.process,
            None => {
                EtwCounters::inc(&self.counters.process_unknown);
                Process {
                    exec_id: if s.create_time == 0 {
                        String::new()
                    } else {
                        exec_id(&self.cfg.boot_id, s.pid, s.create_time)
                    },
                    pid: s.pid,
                    login_uid: UNSET,
                    session_id: UNSET,
                    comm: s.image.clone(),
                    start_time: (s.create_time != 0)
                        .then(|| timestamp_from_unix_ns(filetime_to_unix_ns(s.create_time))),
                    ..Process::default()
                }
            }
        };
        // NTSTATUS-style codes (0xC0000005) read as the negative i32 that
        // GetExitCodeProcess callers print; `status` keeps the raw value.
        let exit_code = i32::from_ne_bytes(s.exit_code.to_ne_bytes());
        out.push(self.event(
            s.hdr.ts,
            p,
            Body::Exit(ProcessExit {
                exit_code,
                status: s.exit_code,
                ..ProcessExit::default()
            }),
        ));
    }

    pub(crate) fn expire_processes(&mut self, now: i64, out: &mut Vec<Event>) {
        let mut due = self.procs.held.drain_where(|_, h| h.deadline <= now);
        due.sort_by_key(|(pid, h)| (h.start.hdr.ts, *pid));
        for (_, h) in due {
            self.release(h, out);
        }
        let keep = 2 * Self::ms(self.cfg.cmdline_wait_ms);
        let stale = self
            .procs
            .classic
            .drain_where(|_, c| c.hdr.ts.saturating_add(keep) <= now);
        for _ in stale {
            EtwCounters::inc(&self.counters.classic_unmatched);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_take_the_last_component() {
        assert_eq!(base_name(r"C:\Windows\notepad.exe"), "notepad.exe");
        assert_eq!(base_name("System"), "System");
        assert_eq!(base_name(""), "");
    }
}
