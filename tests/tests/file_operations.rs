//! What processes do to files once they are open: renames, links, removals,
//! permission and owner changes, truncation and writes, through the real
//! kernel programs, the gRPC stream and the collector's store.

use std::{
    ffi::CString,
    io::Write as _,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::{EventExt, Rig};

fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Writes a marker file and waits until the store has it: everything this
/// process did before has then passed the pipeline. Returns this process's
/// file events inside `dir`, oldest first, marker excluded.
fn settled_file_events(rig: &Rig, dir: &Path) -> Vec<Value> {
    let marker = dir.join("zz-marker");
    std::fs::write(&marker, b"").unwrap();
    let marker = marker.to_str().unwrap().to_owned();
    let dir_arg = dir.to_str().unwrap();
    let me = std::process::id().to_string();
    let filters = ["--pid", &me, "--kind", "file", "--path-prefix", dir_arg];
    let events = rig.collector.wait_for(&filters, |e| {
        e.iter().any(|x| x.str_at("/file/path") == marker)
    });
    events
        .into_iter()
        .filter(|e| e.str_at("/file/path") != marker && e.str_at("/file/path") != dir_arg)
        .collect()
}

fn ops_and_paths(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.str_at("/file/op")
                    .trim_start_matches("FILE_OP_")
                    .to_owned(),
                e.str_at("/file/path").to_owned(),
                e.str_at("/file/old_path").to_owned(),
            )
        })
        .collect()
}

#[test]
fn each_named_change_arrives_once_with_its_paths_and_arguments() {
    named_changes(&Rig::start());
}

#[test]
fn the_same_with_kernel_objects_copied_by_helpers() {
    named_changes(&Rig::with_helper_reads());
    descriptor_changes(&Rig::with_helper_reads());
}

/// Rename, mkdir, rmdir, chmod, chown, truncate, link, symlink and unlink
/// by name: each once, in order, with its paths and arguments.
fn named_changes(rig: &Rig) {
    let (_dir, dir) = canonical_tempdir();
    let p = |name: &str| dir.join(name);
    std::fs::write(p("a"), b"0123456789").unwrap();
    std::fs::rename(p("a"), p("b")).unwrap();
    std::fs::create_dir(p("d")).unwrap();
    std::fs::remove_dir(p("d")).unwrap();
    std::fs::set_permissions(p("b"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p("b"), Some(65534), Some(65534)).unwrap();
    // SAFETY: plain syscalls on paths we own.
    assert_eq!(unsafe { libc::truncate(c(&p("b")).as_ptr(), 3) }, 0);
    std::fs::hard_link(p("b"), p("c")).unwrap();
    std::os::unix::fs::symlink("b", p("s")).unwrap();
    std::fs::remove_file(p("c")).unwrap();
    std::fs::remove_file(p("s")).unwrap();

    let events = settled_file_events(rig, &dir);
    let s = |x: &str| x.to_owned();
    let at = |name: &str| p(name).to_str().unwrap().to_owned();
    assert_eq!(
        ops_and_paths(&events),
        [
            (s("CREATE"), at("a"), s("")),
            (s("WRITE"), at("a"), s("")),
            (s("RENAME"), at("b"), at("a")),
            (s("MKDIR"), at("d"), s("")),
            (s("RMDIR"), at("d"), s("")),
            (s("CHMOD"), at("b"), s("")),
            (s("CHOWN"), at("b"), s("")),
            (s("TRUNCATE"), at("b"), s("")),
            (s("LINK"), at("c"), at("b")),
            (s("SYMLINK"), at("s"), s("b")),
            (s("UNLINK"), at("c"), s("")),
            (s("UNLINK"), at("s"), s("")),
        ]
    );
    let by_op = |op: &str| {
        events
            .iter()
            .find(|e| e.str_at("/file/op") == format!("FILE_OP_{op}"))
            .unwrap()
    };
    assert_eq!(by_op("MKDIR").u64_at("/file/mode"), 0o777);
    assert_eq!(by_op("CHMOD").u64_at("/file/mode"), 0o600);
    assert_eq!(by_op("CHOWN").u64_at("/file/owner_uid"), 65534);
    assert_eq!(by_op("CHOWN").u64_at("/file/owner_gid"), 65534);
    assert_eq!(by_op("TRUNCATE").u64_at("/file/length"), 3);
    assert!(events.iter().all(|e| e.i64_at("/file/result") >= 0));
}

#[test]
fn a_path_of_short_and_long_names_is_reported_exactly() {
    path_of_every_name_length(&Rig::start());
}

#[test]
fn the_same_path_with_kernel_objects_copied_by_helpers() {
    path_of_every_name_length(&Rig::with_helper_reads());
}

/// A file created below directories whose names are 1 to 17 bytes long:
/// the kernel walk loads names under 16 bytes as two words and copies
/// longer ones, and the path comes out whole either way.
fn path_of_every_name_length(rig: &Rig) {
    let (_dir, dir) = canonical_tempdir();
    let mut deep = dir.clone();
    for name in [
        "a",
        "bcdefgh",
        "ijklmnop",
        "qrstuvwxyz01234",
        "qrstuvwxyz012345",
        "qrstuvwxyz0123456",
    ] {
        deep.push(name);
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join("fifteen-bytes-f");
    std::fs::write(&file, b"").unwrap();

    let events = settled_file_events(rig, &dir);
    let created: Vec<_> = ops_and_paths(&events)
        .into_iter()
        .filter(|(op, _, _)| op == "CREATE")
        .map(|(_, path, _)| path)
        .collect();
    assert_eq!(created, [file.to_str().unwrap()], "{events:?}");
}

#[test]
fn changes_through_descriptors_describe_the_file_itself() {
    descriptor_changes(&Rig::start());
}

/// fchmod, fchown and ftruncate of a created file: each describes the file.
fn descriptor_changes(rig: &Rig) {
    let (_dir, dir) = canonical_tempdir();
    let target = dir.join("f");
    let file = std::fs::File::create(&target).unwrap();
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .unwrap();
    std::os::unix::fs::fchown(&file, Some(65534), None).unwrap();
    file.set_len(5).unwrap();
    drop(file);

    let events = settled_file_events(rig, &dir);
    let path = target.to_str().unwrap();
    let ops: Vec<_> = ops_and_paths(&events)
        .into_iter()
        .map(|(op, p, _)| {
            assert_eq!(p, path);
            op
        })
        .collect();
    assert_eq!(ops, ["CREATE", "CHMOD", "CHOWN", "TRUNCATE"]);
    let meta = std::fs::metadata(&target).unwrap();
    for e in &events {
        assert_eq!(e.u64_at("/file/inode"), meta.ino());
        assert_eq!(e.u64_at("/file/device"), meta.dev());
    }
    assert_eq!(events[1].u64_at("/file/file_mode"), 0o100_640);
    assert_eq!(events[2].u64_at("/file/owner_uid"), 65534);
    assert_eq!(events[3].u64_at("/file/length"), 5);
}

#[test]
fn ten_thousand_writes_to_one_file_yield_one_write_event() {
    let rig = Rig::start();
    let (_dir, dir) = canonical_tempdir();
    let target = dir.join("storm");
    let mut file = std::fs::File::create(&target).unwrap();
    for _ in 0..10_000 {
        file.write_all(b"x").unwrap();
    }
    drop(file);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 10_000);

    let events = settled_file_events(&rig, &dir);
    let ops: Vec<_> = ops_and_paths(&events).into_iter().map(|x| x.0).collect();
    assert_eq!(ops, ["CREATE", "WRITE"]);
}

#[test]
fn every_write_is_reported_when_configured() {
    let rig = Rig::with_config("[files]\nwrites = \"all\"\n");
    let (_dir, dir) = canonical_tempdir();
    let mut file = std::fs::File::create(dir.join("audited")).unwrap();
    for _ in 0..3 {
        file.write_all(b"x").unwrap();
    }
    drop(file);
    let events = settled_file_events(&rig, &dir);
    let ops: Vec<_> = ops_and_paths(&events).into_iter().map(|x| x.0).collect();
    assert_eq!(ops, ["CREATE", "WRITE", "WRITE", "WRITE"]);
}

#[test]
fn failed_operations_are_reported_only_when_configured() {
    for report_failed in [false, true] {
        let rig = Rig::with_config(&format!("[files]\nreport_failed = {report_failed}\n"));
        let (_dir, dir) = canonical_tempdir();
        std::fs::File::create(dir.join("existing")).unwrap();
        assert!(std::fs::remove_file(dir.join("missing")).is_err());
        assert!(std::fs::create_dir(dir.join("existing")).is_err());
        let missing = dir.join("no-such-dir/new");
        assert!(std::fs::File::create(&missing).is_err());
        let events = settled_file_events(&rig, &dir);
        let seen: Vec<_> = events
            .iter()
            // Success is any fd or 0; failures keep their -errno.
            .map(|e| (e.str_at("/file/op"), e.i64_at("/file/result").min(0)))
            .collect();
        if report_failed {
            assert_eq!(
                seen,
                [
                    ("FILE_OP_CREATE", 0),
                    ("FILE_OP_UNLINK", -i64::from(libc::ENOENT)),
                    ("FILE_OP_MKDIR", -i64::from(libc::EEXIST)),
                    ("FILE_OP_OPEN_WRITE", -i64::from(libc::ENOENT)),
                ]
            );
            let failed_open = events.last().unwrap();
            assert_eq!(failed_open.str_at("/file/path"), missing.to_str().unwrap());
            assert_eq!(
                failed_open.u64_at("/file/flags") & 0o1103,
                0o1101,
                "O_WRONLY|O_CREAT|O_TRUNC"
            );
        } else {
            assert_eq!(seen, [("FILE_OP_CREATE", 0)]);
        }
    }
}

#[test]
fn paths_under_ignored_prefixes_produce_nothing() {
    let (_dir, dir) = canonical_tempdir();
    // A mount under an ignored prefix is discarded in the kernel; a plain
    // directory by the userspace prefix rule.
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs for the test");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    std::fs::create_dir(dir.join("ignored")).unwrap();
    let rig = Rig::with_config(&format!(
        "[files]\nignore_prefixes = [\"/proc\", \"{}\", \"{}/ignored/\"]\n",
        mnt.display(),
        dir.display()
    ));
    std::fs::write(mnt.join("on-mount"), b"x").unwrap();
    std::fs::rename(mnt.join("on-mount"), mnt.join("renamed")).unwrap();
    std::fs::write(dir.join("ignored/in-dir"), b"x").unwrap();
    std::fs::write(dir.join("ignoredness"), b"x").unwrap();
    std::fs::write("/proc/self/comm", b"file-ops-test").unwrap();

    let events = settled_file_events(&rig, &dir);
    let paths: Vec<_> = ops_and_paths(&events).into_iter().map(|x| x.1).collect();
    let kept = dir.join("ignoredness").to_str().unwrap().to_owned();
    assert_eq!(
        paths,
        [kept.clone(), kept],
        "create and write of the lookalike only"
    );
    let me = std::process::id().to_string();
    let proc_events = rig
        .collector
        .query(&["--pid", &me, "--path-prefix", "/proc"]);
    assert_eq!(proc_events, Vec::<Value>::new());
}

#[test]
fn the_sensor_never_reports_its_own_file_writes() {
    // With --stdout redirected to a regular file the sensor writes a file
    // for every event; none of those writes may come back as events.
    let (_dir, dir) = canonical_tempdir();
    let out_path = dir.join("sensor-out.jsonl");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new(tests::binary("sensor"));
    cmd.args(["run", "--stdout", "--health-interval", "1"]);
    let mut sensor = tests::Sensor::spawn_with_stdout(cmd, out);
    let sensor_pid = sensor.pid();
    let watched = dir.join("watched");
    let start = std::time::Instant::now();
    let lines = loop {
        std::fs::write(&watched, b"x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let text = std::fs::read_to_string(&out_path).unwrap();
        let watched = watched.to_str().unwrap();
        if text.lines().filter(|l| l.contains(watched)).count() >= 2 {
            break text;
        }
        assert!(start.elapsed() < tests::PATIENCE, "no event for {watched}");
    };
    sensor.stop_now();
    let events: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(events.iter().any(|e| e.kind() == "file"));
    let own: Vec<_> = events
        .iter()
        .filter(|e| e.kind() != "health" && e.u64_at("/process/pid") == u64::from(sensor_pid))
        .filter(|e| e.kind() != "exec" && e.kind() != "fork" && e.kind() != "exit")
        .collect();
    assert_eq!(own, Vec::<&Value>::new());
}
