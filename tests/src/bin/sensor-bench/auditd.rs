//! auditd, the tool a Linux user would otherwise run, with rules that record
//! what the sensor records: execs, forks, exits, opens for writing, file
//! changes by name or descriptor, and TCP connects/accepts/binds/listens.
//! (auditd cannot report only a file's first write, nor DNS by port: those
//! have no rule, which favours auditd.)

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The rules, as `auditctl` arguments (x86-64 syscall names).
pub const RULES: &[&str] = &[
    "-a always,exit -F arch=b64 -S execve,execveat -k bench-exec",
    "-a always,exit -F arch=b64 -S fork,vfork,clone,clone3 -k bench-fork",
    "-a always,exit -F arch=b64 -S exit,exit_group -k bench-exit",
    "-a always,exit -F arch=b64 -S open,openat,openat2,creat -F perm=w -k bench-open",
    "-a always,exit -F arch=b64 -S unlink,unlinkat,rmdir,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,chmod,fchmod,fchmodat,chown,fchown,lchown,fchownat,truncate,ftruncate -k bench-file",
    "-a always,exit -F arch=b64 -S connect,accept,accept4,bind,listen -k bench-net",
];

const LOG: &str = "/var/log/audit/audit.log";

fn auditctl(args: &[&str]) -> Result<String> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .context("running auditctl (is auditd installed? `cargo xtask bench` installs it)")?;
    if !out.status.success() {
        bail!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether auditd is installed.
#[must_use]
pub fn installed() -> bool {
    ["/sbin/auditd", "/usr/sbin/auditd"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// auditd in the foreground with the rules loaded; stopped, its rules
/// deleted and its log emptied on drop.
pub struct Auditd(Child);

impl Auditd {
    pub fn start() -> Result<Self> {
        auditctl(&["-D"])?;
        let child = Command::new("auditd")
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting auditd -n")?;
        let me = Self(child);
        let start = Instant::now();
        loop {
            let status = auditctl(&["-s"])?;
            if status
                .lines()
                .any(|l| l.starts_with("pid ") && l != "pid 0")
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("auditd did not register with the kernel within 10 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
        auditctl(&["-b", "8192"])?;
        for rule in RULES {
            let args: Vec<&str> = rule.split(' ').collect();
            auditctl(&args)?;
        }
        auditctl(&["-e", "1"])?;
        Ok(me)
    }

    /// Records the kernel could not hand to auditd (`lost` of `auditctl -s`).
    #[must_use]
    pub fn lost() -> u64 {
        auditctl(&["-s"])
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("lost ").map(|v| v.trim().parse().ok()))
            })
            .flatten()
            .unwrap_or(0)
    }
}

/// Where the audit log stood, to tell what a workload added to it.
pub struct LogMark {
    inode: u64,
    len: u64,
}

impl LogMark {
    #[must_use]
    pub fn now() -> Self {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(LOG).ok();
        Self {
            inode: meta.as_ref().map_or(0, MetadataExt::ino),
            len: meta.as_ref().map_or(0, MetadataExt::size),
        }
    }

    /// Whether auditd logged a record with `key` since the mark, waiting a
    /// few seconds for it to flush. A workload whose records never reached
    /// the log ran unaudited, and its auditd figure would be void. (If the
    /// log rotated meanwhile, the new file holds the workload's last records.)
    #[must_use]
    pub fn recorded_since(&self, key: &str) -> bool {
        use std::{
            io::{Read as _, Seek as _, SeekFrom},
            os::unix::fs::MetadataExt as _,
        };
        let needle = format!("key=\"{key}\"");
        let start = Instant::now();
        loop {
            let found = std::fs::File::open(LOG).ok().is_some_and(|mut f| {
                let same = f.metadata().is_ok_and(|m| m.ino() == self.inode);
                let from = if same { self.len } else { 0 };
                let mut text = Vec::new();
                f.seek(SeekFrom::Start(from)).is_ok()
                    && f.read_to_end(&mut text).is_ok()
                    && text.windows(needle.len()).any(|w| w == needle.as_bytes())
            });
            if found || start.elapsed() > Duration::from_secs(5) {
                return found;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = auditctl(&["-e", "0"]);
        let _ = auditctl(&["-D"]);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        let _ = std::fs::write(LOG, b"");
    }
}
