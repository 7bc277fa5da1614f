//! File changes as the kernel resolved them, through the real pipeline.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::{EventExt, Rig};

/// File events of `pid` on `path`, once `count` of them are stored.
fn file_events(rig: &Rig, pid: u32, path: &Path, count: usize) -> Vec<Value> {
    let path = path.to_str().unwrap().to_owned();
    let on_path = move |e: &Value| e.kind() == "file" && e.str_at("/file/path") == path;
    let events = rig.events_of(pid, |e| e.iter().filter(|x| on_path(x)).count() >= count);
    events.into_iter().filter(|x| on_path(x)).collect()
}

fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

fn assert_describes(event: &Value, path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(event.u64_at("/file/inode"), meta.ino());
    assert_eq!(event.u64_at("/file/device"), meta.dev());
    assert_eq!(event.u64_at("/file/file_mode"), u64::from(meta.mode()));
    assert_eq!(event.u64_at("/file/owner_uid"), u64::from(meta.uid()));
}

#[test]
fn a_relative_create_after_chdir_reports_the_absolute_path() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let sh = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cd {} && echo x > rel.txt", dir.display()))
        .spawn()
        .unwrap();
    let pid = sh.id();
    assert!(sh.wait_with_output().unwrap().status.success());
    let target = dir.join("rel.txt");
    let events = file_events(&rig, pid, &target, 2);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["file"]["op"], "FILE_OP_CREATE");
    assert_eq!(events[1]["file"]["op"], "FILE_OP_WRITE");
    // dash opens with O_WRONLY|O_CREAT|O_TRUNC.
    assert_eq!(events[0].u64_at("/file/flags") & 0o1103, 0o1101);
    assert_describes(&events[0], &target);
}

#[test]
fn openat_with_a_directory_fd_reports_the_absolute_path_and_mode() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let cdir = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscalls on paths we own.
    let fd = unsafe {
        let dirfd = libc::open(cdir.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        assert!(dirfd >= 0);
        let fd = libc::openat(
            dirfd,
            c"viadirfd.txt".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o640,
        );
        libc::close(dirfd);
        fd
    };
    assert!(fd >= 0);
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    let target = dir.join("viadirfd.txt");
    let events = file_events(&rig, std::process::id(), &target, 1);
    assert_eq!(events[0]["file"]["op"], "FILE_OP_CREATE");
    assert_eq!(events[0].u64_at("/file/mode"), 0o640);
    assert_eq!(events[0].u64_at("/file/result"), fd as u64);
    assert_describes(&events[0], &target);
}

#[test]
fn a_path_through_a_symlinked_directory_reports_what_the_kernel_resolved() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    std::fs::write(dir.join("link/../real/./f.txt"), b"x").unwrap();
    let target = dir.join("real/f.txt");
    let events = file_events(&rig, std::process::id(), &target, 1);
    assert_eq!(events[0]["file"]["op"], "FILE_OP_CREATE");
    assert_describes(&events[0], &target);
}

#[test]
fn reopening_for_write_is_open_write_and_reading_is_not_reported() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let target = dir.join("existing.txt");
    std::fs::write(&target, b"one").unwrap();
    std::fs::read(&target).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .unwrap();
    // Everything before the marker has passed the pipeline once it is stored.
    let marker = dir.join("marker.txt");
    std::fs::write(&marker, b"").unwrap();
    file_events(&rig, std::process::id(), &marker, 1);
    let events = file_events(&rig, std::process::id(), &target, 0);
    let ops: Vec<&str> = events.iter().map(|e| e.str_at("/file/op")).collect();
    assert_eq!(
        ops,
        ["FILE_OP_CREATE", "FILE_OP_WRITE", "FILE_OP_OPEN_WRITE"],
        "the read is not reported"
    );
}

#[test]
fn writing_one_file_again_and_again_then_another_reports_each_first_write_once() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    let write_often = |path: &Path, times: usize| {
        let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls on a path and a descriptor we own.
        unsafe {
            let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
            assert!(fd >= 0);
            for _ in 0..times {
                assert_eq!(libc::write(fd, b"x".as_ptr().cast(), 1), 1);
            }
            libc::close(fd);
        }
    };
    // One CPU for both files: the kernel hands b.log the memory a.log's
    // struct file just freed, the case the last-write cache must tell apart.
    let pinned = std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t is valid; this thread's own affinity.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
        write_often(&a, 50);
        write_often(&b, 50);
        write_often(&a, 5);
    });
    pinned.join().unwrap();
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    let marker = dir.join("marker.txt");
    std::fs::write(&marker, b"").unwrap();
    file_events(&rig, std::process::id(), &marker, 1);
    for path in [&a, &b] {
        let writes: Vec<Value> = file_events(&rig, std::process::id(), path, 0)
            .into_iter()
            .filter(|e| e.str_at("/file/op") == "FILE_OP_WRITE")
            .collect();
        assert_eq!(writes.len(), 1, "{}: {writes:#?}", path.display());
        assert_describes(&writes[0], path);
    }
}

#[test]
fn a_shell_appending_to_one_log_in_a_loop_is_reported_once_per_window_with_its_repeats() {
    let rig = Rig::with_config("[health]\ninterval_secs = 1\n");
    let (_dir, dir) = canonical_tempdir();
    let log = dir.join("app.log");
    std::fs::write(&log, b"").unwrap();
    // 20 appends well inside the default 1 s window, a pause past it, one more.
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"i=0; while [ $i -lt 20 ]; do echo x >> "$1"; i=$((i+1)); done; sleep 1.5; echo x >> "$1"; echo $$ > "$2""#)
        .arg("sh")
        .arg(&log)
        .arg(dir.join("pid"))
        .status()
        .unwrap();
    assert!(status.success());
    let pid: u32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The shell's pid file is its last open: once stored, so is the rest.
    file_events(&rig, pid, &dir.join("pid"), 1);
    let opens: Vec<Value> = file_events(&rig, pid, &log, 0)
        .into_iter()
        .filter(|e| e.str_at("/file/op") == "FILE_OP_OPEN_WRITE")
        .collect();
    let repeats: Vec<u64> = opens.iter().map(|e| e.u64_at("/file/repeats")).collect();
    assert_eq!(
        repeats,
        [0, 19],
        "the first append is reported, the next 19 fold into the one after the pause"
    );
    let health = rig.collector.wait_for(&["--kind", "health"], |e| {
        e.iter().any(|h| {
            h["health"]["counters"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["stage"] == "kernel"
                        && c["name"] == "opens_folded"
                        && c.u64_at("/value") >= 19
                })
            })
        })
    });
    assert!(!health.is_empty());
}

#[test]
fn each_open_flavour_reports_its_flags_and_mode_from_the_syscall_itself() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let path = |name: &str| CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
    let (open, creat, openat2) = (path("open.txt"), path("creat.txt"), path("openat2.txt"));
    // open(2) and creat(2) through syscall(2): libc maps its wrappers to openat.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_CREAT | libc::O_RDWR | libc::O_APPEND) as u64,
        mode: 0o604,
        resolve: 0,
    };
    // SAFETY: plain syscalls on paths we own; `how` outlives the call.
    let fds = unsafe {
        [
            libc::syscall(
                libc::SYS_open,
                open.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                0o600,
            ),
            libc::syscall(libc::SYS_creat, creat.as_ptr(), 0o620),
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                openat2.as_ptr(),
                &raw const how,
                size_of::<OpenHow>(),
            ),
        ]
    };
    for fd in fds {
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd as i32) };
    }
    let creat_flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    for (name, flags, mode) in [
        ("open.txt", creat_flags, 0o600),
        ("creat.txt", creat_flags, 0o620),
        (
            "openat2.txt",
            libc::O_CREAT | libc::O_RDWR | libc::O_APPEND,
            0o604,
        ),
    ] {
        let target = dir.join(name);
        let events = file_events(&rig, std::process::id(), &target, 1);
        assert_eq!(events[0]["file"]["op"], "FILE_OP_CREATE", "{name}");
        let reported = events[0].u64_at("/file/flags") as i32;
        assert_eq!(reported & !libc::O_LARGEFILE, flags, "{name}: flags");
        assert_eq!(events[0].u64_at("/file/mode"), mode, "{name}: mode");
        assert_describes(&events[0], &target);
    }
}

#[test]
fn two_threads_of_one_process_create_files_and_each_event_names_its_thread() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    // Both threads live at once, so their tids differ; the process's
    // context is shared by both events, the tid is each event's own.
    let barrier = std::sync::Barrier::new(2);
    let create = |name: &str| {
        barrier.wait();
        let path = dir.join(name);
        std::fs::write(&path, b"x").unwrap();
        // SAFETY: no arguments.
        (path, u64::from(unsafe { libc::gettid() }.unsigned_abs()))
    };
    let created = std::thread::scope(|s| {
        let a = s.spawn(|| create("a.txt"));
        let b = s.spawn(|| create("b.txt"));
        [a.join().unwrap(), b.join().unwrap()]
    });
    assert_ne!(created[0].1, created[1].1);
    for (path, tid) in created {
        let events = file_events(&rig, std::process::id(), &path, 1);
        assert_eq!(events[0]["file"]["op"], "FILE_OP_CREATE");
        assert_eq!(events[0].u64_at("/process/tid"), tid, "{:#?}", events[0]);
        assert_eq!(
            events[0].u64_at("/process/pid"),
            u64::from(std::process::id())
        );
    }
}

#[test]
fn a_write_flood_overflowing_a_4_kib_ring_counts_each_lost_write_under_the_file_kind() {
    let rig = Rig::with_config(
        "[capture]\nring_buffer_bytes = 4096\n[files]\nwrites = \"all\"\n[health]\ninterval_secs = 1\n",
    );
    let (_dir, dir) = canonical_tempdir();
    let log = dir.join("flood.log");
    let file = std::fs::File::create(&log).unwrap();
    // Far more writes than a 4 KiB ring holds between two drains.
    const WRITES: u64 = 20_000;
    for i in 0..WRITES {
        std::os::unix::fs::FileExt::write_at(&file, b"x", i).unwrap();
    }
    let path = log.to_str().unwrap();
    let stored_writes = || {
        rig.collector
            .query(&["--path", path, "--kind", "file"])
            .iter()
            .filter(|e| e.str_at("/file/op") == "FILE_OP_WRITE")
            .count() as u64
    };
    let file_drops = |health: &Value| {
        health["health"]["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["stage"] == "kernel" && c["name"] == "file_ring_full_dropped")
            .map_or(0, |c| c.u64_at("/value"))
    };
    // Every write is stored or counted: the counter covers other processes'
    // file records too, so together they may exceed WRITES, never fall short.
    let health = rig.collector.wait_for(&["--kind", "health"], |h| {
        h.last()
            .is_some_and(|last| file_drops(last) + stored_writes() >= WRITES)
    });
    let (dropped, stored) = (file_drops(health.last().unwrap()), stored_writes());
    assert!(dropped > 0, "the ring never overflowed: {stored} stored");
    assert!(
        stored < WRITES,
        "{stored} of {WRITES} writes stored and {dropped} dropped"
    );
}
