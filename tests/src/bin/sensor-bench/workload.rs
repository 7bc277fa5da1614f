//! The workloads: what a busy host does, in loops the benchmark can count.
//! Each returns how much it did and how long it took; none knows what is
//! watching it.

use std::{
    collections::VecDeque,
    ffi::CString,
    io::Read as _,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::procstat;

/// How much a loop did in how long, and the CPU it used (this process and
/// its children, so the kernel time the hooks add to the workload is in it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub iterations: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
}

impl Run {
    /// Wall time per iteration, µs.
    #[must_use]
    pub fn us_per_iteration(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / (self.iterations.max(1) as f64)
    }

    /// CPU time per iteration, µs.
    #[must_use]
    pub fn cpu_us_per_iteration(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.iterations.max(1) as f64)
    }
}

/// Runs `body` (which returns iterations done) and measures it.
fn measure(body: impl FnOnce() -> Result<u64>) -> Result<Run> {
    let cpu0 = procstat::own_and_children_cpu();
    let start = Instant::now();
    let iterations = body()?;
    Ok(Run {
        iterations,
        elapsed: start.elapsed(),
        cpu: procstat::own_and_children_cpu().saturating_sub(cpu0),
    })
}

/// A scratch directory on tmpfs, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Result<Self> {
        let dir = Path::new("/dev/shm").join(format!("sensor-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).context("NUL in a path")
}

/// open(O_WRONLY|O_CREAT|O_TRUNC) / write 1 byte / close on tmpfs, for `time`.
pub fn open_write_close(scratch: &Scratch, time: Duration) -> Result<Run> {
    let path = c_path(&scratch.0.join("owc"))?;
    measure(|| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            for _ in 0..256 {
                // SAFETY: valid NUL-terminated path, 1-byte buffer.
                unsafe {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                        0o600,
                    );
                    if fd < 0 {
                        bail!("open: {}", std::io::Error::last_os_error());
                    }
                    libc::write(fd, b"x".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            n += 256;
        }
        Ok(n)
    })
}

/// The rarer hooks, in one loop: each iteration renames a tmpfs file there
/// and back, changes its mode, and binds and listens on a fresh loopback
/// socket (TcpListener::bind: socket, bind, listen, close). Without it those
/// programs ran once per benchmark and their cost was one cold run.
pub fn renames_and_listens(scratch: &Scratch, time: Duration) -> Result<Run> {
    let a = scratch.0.join("a");
    std::fs::write(&a, b"x").with_context(|| format!("creating {}", a.display()))?;
    let (a, b) = (c_path(&a)?, c_path(&scratch.0.join("b"))?);
    measure(|| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            for i in 0..64 {
                // SAFETY: valid NUL-terminated paths.
                let rc = unsafe {
                    libc::rename(a.as_ptr(), b.as_ptr())
                        | libc::rename(b.as_ptr(), a.as_ptr())
                        | libc::chmod(a.as_ptr(), if i % 2 == 0 { 0o600 } else { 0o644 })
                };
                if rc != 0 {
                    bail!("rename/chmod: {}", std::io::Error::last_os_error());
                }
                drop(TcpListener::bind("127.0.0.1:0").context("listening on loopback")?);
            }
            n += 64;
        }
        Ok(n)
    })
}

/// TCP connect to a loopback listener that accepts and closes first (so the
/// TIME_WAIT stays on the server side and client ports never run out).
pub fn tcp_connect(time: Duration) -> Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let run = measure(|| {
        let start = Instant::now();
        let mut n = 0u64;
        let mut buf = [0u8; 1];
        while start.elapsed() < time {
            let mut s = TcpStream::connect(addr).context("connecting on loopback")?;
            let _ = s.read(&mut buf);
            n += 1;
        }
        Ok(n)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(addr);
    let _ = server.join();
    run
}

/// posix_spawn of `/bin/true` (glibc spawns with CLONE_VFORK, so the cost is
/// the exec and the new image, not copying the benchmark).
struct Spawner {
    program: CString,
    argv: [*mut libc::c_char; 2],
}

impl Spawner {
    fn new() -> Result<Self> {
        let program = CString::new("/bin/true")?;
        let argv = [program.as_ptr().cast_mut(), std::ptr::null_mut()];
        Ok(Self { program, argv })
    }

    fn spawn(&self) -> Result<libc::pid_t> {
        let mut pid = 0;
        unsafe extern "C" {
            static environ: *const *mut libc::c_char;
        }
        // SAFETY: valid program path and NULL-terminated argv; the
        // environment is this process's.
        let rc = unsafe {
            libc::posix_spawn(
                &raw mut pid,
                self.program.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                self.argv.as_ptr(),
                environ,
            )
        };
        if rc != 0 {
            bail!(
                "posix_spawn /bin/true: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(pid)
    }
}

/// Waits for `pid`; with `block` false, only if it has exited.
fn reap(pid: libc::pid_t, block: bool) -> bool {
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &raw mut status, if block { 0 } else { libc::WNOHANG }) == pid }
}

/// Runs `/bin/true` for `time`: `rate` per second on a fixed schedule, or
/// one after another as fast as possible. Only its own children are reaped
/// (the sensor and collector are children of this process too).
pub fn exec_loop(rate: Option<u32>, time: Duration) -> Result<Run> {
    let spawner = Spawner::new()?;
    measure(|| {
        let start = Instant::now();
        let mut n = 0u64;
        let mut running = VecDeque::new();
        while start.elapsed() < time {
            match rate {
                None => {
                    let pid = spawner.spawn()?;
                    reap(pid, true);
                }
                Some(rate) => {
                    let due = start + Duration::from_secs_f64(n as f64 / f64::from(rate));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    running.push_back(spawner.spawn()?);
                    while running.front().is_some_and(|&pid| reap(pid, false)) {
                        running.pop_front();
                    }
                }
            }
            n += 1;
        }
        for pid in running {
            reap(pid, true);
        }
        Ok(n)
    })
}

/// `threads` threads each pwrite 1 byte at offset 0 of their own file in
/// `scratch`, together `rate` writes per second (paced per millisecond), or
/// as fast as they can. Returns the writes that succeeded: with the sensor's
/// `files.writes = "all"`, each is one event (plus one open per thread).
pub fn write_flood(
    scratch: &Scratch,
    threads: u32,
    rate: Option<u64>,
    time: Duration,
) -> Result<Run> {
    let paths: Vec<CString> = (0..threads)
        .map(|i| c_path(&scratch.0.join(format!("flood-{i}"))))
        .collect::<Result<_>>()?;
    measure(|| {
        let workers: Vec<_> = paths
            .into_iter()
            .map(|path| {
                thread::spawn(move || -> Result<u64> {
                    // SAFETY: valid NUL-terminated path.
                    let fd = unsafe {
                        libc::open(
                            path.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                            0o600,
                        )
                    };
                    if fd < 0 {
                        bail!("open: {}", std::io::Error::last_os_error());
                    }
                    let per_ms = rate.map(|r| (r as f64 / f64::from(threads) / 1000.0).max(0.001));
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < time {
                        let burst = match per_ms {
                            Some(per_ms) => {
                                let due_ms = n as f64 / per_ms;
                                let due = start + Duration::from_secs_f64(due_ms / 1000.0);
                                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                    thread::sleep(wait);
                                }
                                (per_ms.ceil() as u64).max(1)
                            }
                            None => 256,
                        };
                        for _ in 0..burst {
                            // SAFETY: our fd, 1-byte buffer.
                            if unsafe { libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) } == 1 {
                                n += 1;
                            }
                        }
                    }
                    // SAFETY: our fd.
                    unsafe { libc::close(fd) };
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(total)
    })
}

/// `n` processes sleeping for an hour (each an exec the sensor tracks until
/// it exits); killed and reaped on drop.
pub struct Sleepers(Vec<Child>);

impl Sleepers {
    pub fn spawn(n: usize) -> Result<Self> {
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let child = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawning sleeper {i} of {n}"))?;
            children.push(child);
        }
        Ok(Self(children))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}
