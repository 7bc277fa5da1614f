//! What /proc says about processes: the state of processes that were running
//! before the sensor started, and a fallback for a parent the sensor never saw.

use std::{fs, os::unix::ffi::OsStrExt, path::Path};

/// One process as /proc shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcProcess {
    pub pid: u32,
    pub ppid: u32,
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
    pub start_ticks: u64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub login_uid: u32,
    pub session_id: u32,
    pub comm: String,
    pub argv: Vec<Vec<u8>>,
    pub exe: Vec<u8>,
    pub cwd: Vec<u8>,
    /// The unified (v2) cgroup path.
    pub cgroup_path: String,
}

/// Parses the fields of /proc/PID/stat that follow the `(comm)`, which may
/// itself hold spaces and parentheses: (ppid, start ticks).
#[must_use]
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// `(real, effective)` from a `Uid:`/`Gid:` line of /proc/PID/status.
fn ids(status: &str, key: &str) -> Option<(u32, u32)> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut f = line[key.len()..].split_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

fn read_u32(path: &Path) -> u32 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// The target of a /proc symlink (exe, cwd), empty when unreadable.
#[must_use]
pub fn link(path: &Path) -> Vec<u8> {
    fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

/// Reads one process; `None` when it is gone or is a kernel thread we cannot read.
#[must_use]
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcProcess> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (ppid, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let (uid, euid) = ids(&status, "Uid:").unwrap_or((u32::MAX, u32::MAX));
    let (gid, egid) = ids(&status, "Gid:").unwrap_or((u32::MAX, u32::MAX));
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv = cmdline
        .strip_suffix(&[0])
        .unwrap_or(&cmdline)
        .split(|&b| b == 0)
        .filter(|_| !cmdline.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    Some(ProcProcess {
        pid,
        ppid,
        start_ticks,
        uid,
        euid,
        gid,
        egid,
        login_uid: read_u32(&dir.join("loginuid")),
        session_id: read_u32(&dir.join("sessionid")),
        comm: fs::read_to_string(dir.join("comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
        argv,
        exe: link(&dir.join("exe")),
        cwd: link(&dir.join("cwd")),
        cgroup_path: cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Every process, parents before children (ordered by start time, then pid).
#[must_use]
pub fn scan(proc_root: &Path) -> Vec<ProcProcess> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut all: Vec<ProcProcess> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(proc_root, pid))
        .collect();
    all.sort_by_key(|p| (p.start_ticks, p.pid));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm_still_parses() {
        let stat = "42 (a) b (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 2 3";
        assert_eq!(parse_stat(stat), Some((7, 12345)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn this_test_process_is_seen_with_its_parent_and_exe() {
        let me = std::process::id();
        let all = scan(Path::new("/proc"));
        let mine = all
            .iter()
            .find(|p| p.pid == me)
            .expect("own process in the scan");
        assert_eq!(mine.ppid, std::os::unix::process::parent_id());
        assert_eq!(
            mine.exe,
            std::env::current_exe().unwrap().as_os_str().as_bytes()
        );
        let parent_pos = all.iter().position(|p| p.pid == mine.ppid).unwrap();
        let my_pos = all.iter().position(|p| p.pid == me).unwrap();
        assert!(parent_pos < my_pos, "parents come before children");
    }
}
