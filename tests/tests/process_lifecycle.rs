//! Process telemetry end to end: real programs in the running kernel, a real
//! sensor, a real collector over gRPC, a real SQLite file.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    process::Command,
};

use serde_json::Value;
use tests::{EventExt, Rig, of_kind};

/// Waits for an exec and an exit of `pid`, and returns (exec, exit).
fn exec_and_exit(rig: &Rig, pid: u32) -> (Value, Value) {
    let events = rig.events_of(pid, |e| {
        !of_kind(e, "exec").is_empty() && !of_kind(e, "exit").is_empty()
    });
    let exec = of_kind(&events, "exec").last().copied().cloned().unwrap();
    let exit = of_kind(&events, "exit")[0].clone();
    (exec, exit)
}

#[test]
fn a_shell_runs_echo_both_execs_arrive_and_echos_parent_is_the_shell() {
    shell_runs_echo(&Rig::start());
}

#[test]
fn the_same_with_kernel_objects_copied_by_helpers() {
    shell_runs_echo(&Rig::with_helper_reads());
}

/// sh -c "/bin/echo hello world": both execs with their argv, exe, cwd and
/// parents, both exits, and the tree from init down to echo.
fn shell_runs_echo(rig: &Rig) {
    let sh = Command::new("/bin/sh")
        .args(["-c", "/bin/echo hello world"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    let out = sh.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello world\n");
    let (sh_exec, sh_exit) = exec_and_exit(rig, sh_pid);
    assert_eq!(
        sh_exec.u64_at("/process/ppid"),
        u64::from(std::process::id())
    );
    assert_eq!(sh_exec.u64_at("/exec/argc"), 3);

    let echo_exec = rig
        .collector
        .wait_for(&["--kind", "exec", "--exe", "/usr/bin/echo"], |e| {
            e.iter()
                .any(|x| x.u64_at("/process/ppid") == u64::from(sh_pid))
        })
        .into_iter()
        .find(|x| x.u64_at("/process/ppid") == u64::from(sh_pid))
        .unwrap();
    assert_eq!(echo_exec.argv(), ["/bin/echo", "hello", "world"]);
    assert_eq!(echo_exec.u64_at("/exec/argc"), 3);
    assert_eq!(echo_exec["exec"]["argv_truncated"], false);
    assert_eq!(
        echo_exec.str_at("/process/parent_exec_id"),
        sh_exec.str_at("/process/exec_id"),
        "echo's parent is the shell's image"
    );
    assert_eq!(
        echo_exec.str_at("/process/cwd"),
        sh_exec.str_at("/process/cwd")
    );

    let echo_pid = u32::try_from(echo_exec.u64_at("/process/pid")).unwrap();
    let (_, echo_exit) = exec_and_exit(rig, echo_pid);
    for exit in [&sh_exit, &echo_exit] {
        assert_eq!(exit["exit"]["exit_code"], 0);
        assert_eq!(exit["exit"]["signal"], 0);
    }
    assert_eq!(
        echo_exit.str_at("/process/exec_id"),
        echo_exec.str_at("/process/exec_id"),
        "the exit belongs to the image that exec'd"
    );

    // The investigator's walk back: init ... -> this test -> sh -> echo.
    let tree = rig
        .collector
        .cli("tree", &[echo_exec.str_at("/process/exec_id")]);
    assert!(
        tree.status.success(),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    let text = String::from_utf8_lossy(&tree.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "tree too short:\n{text}");
    assert!(lines[0].contains("pid=1 "), "root is init:\n{text}");
    assert!(
        lines[lines.len() - 1].contains("/bin/echo hello world"),
        "{text}"
    );
    assert!(
        lines[lines.len() - 2].contains(&format!("pid={sh_pid} ")),
        "{text}"
    );
    assert!(
        lines[lines.len() - 3].contains(&format!("pid={} ", std::process::id())),
        "{text}"
    );
}

#[test]
fn an_exit_code_is_reported_exactly() {
    let rig = Rig::start();
    let child = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(7));
    let (_, exit) = exec_and_exit(&rig, pid);
    assert_eq!(exit["exit"]["exit_code"], 7);
    assert_eq!(exit["exit"]["signal"], 0);
}

#[test]
fn three_hundred_arguments_are_truncated_with_the_flag_and_the_true_count() {
    let rig = Rig::start();
    let args: Vec<String> = (1..=300).map(|i| format!("arg-{i:03}")).collect();
    let child = Command::new("/bin/true").args(&args).spawn().unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let (exec, _) = exec_and_exit(&rig, pid);
    assert_eq!(exec["exec"]["argv_truncated"], true);
    assert_eq!(
        exec.u64_at("/exec/argc"),
        301,
        "the true count, argv[0] included"
    );
    let argv = exec.argv();
    assert!(argv.len() < 301, "argv was cut: {} kept", argv.len());
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(
        &argv[1..],
        &args[..argv.len() - 1],
        "the kept arguments are exact"
    );
}

#[test]
fn arguments_longer_than_the_kernel_buffer_are_cut_and_flagged() {
    let rig = Rig::start();
    let args: Vec<String> = (0..40)
        .map(|i| format!("{i:02}{}", "x".repeat(198)))
        .collect();
    let child = Command::new("/bin/true").args(&args).spawn().unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let (exec, _) = exec_and_exit(&rig, pid);
    assert_eq!(exec["exec"]["argv_truncated"], true);
    assert_eq!(exec.u64_at("/exec/argc"), 41);
    let argv = exec.argv();
    // 4 KiB of 201-byte arguments: 19 whole ones after "/bin/true", then a cut one.
    let whole = argv.len() - 2;
    assert_eq!(&argv[1..=whole], &args[..whole]);
    let cut = argv.last().unwrap();
    assert!(args[whole].starts_with(cut.as_str()) && cut.len() < args[whole].len());
}

#[test]
fn a_non_utf8_argument_survives_byte_for_byte() {
    let rig = Rig::start();
    let raw = OsStr::from_bytes(b"caf\xe9");
    let child = Command::new("/bin/true")
        .arg(raw)
        .arg("plain")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let (exec, _) = exec_and_exit(&rig, pid);
    // proto JSON writes bytes as base64: "caf\xe9" is Y2Fm6Q==.
    assert_eq!(exec["exec"]["argv_raw"]["1"], "Y2Fm6Q==");
    assert_eq!(exec.argv()[1], "caf\u{fffd}");
    assert_eq!(exec.argv()[2], "plain");
    assert!(exec["exec"]["argv_raw"].get("2").is_none());
}

#[test]
fn a_fork_without_exec_is_seen_with_its_own_id() {
    let rig = Rig::start();
    let before = sensor_user::host::boottime_ns();
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(42) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    let after = sensor_user::host::boottime_ns();
    let pid = pid as u32;
    let events = rig.events_of(pid, |e| {
        !of_kind(e, "fork").is_empty() && !of_kind(e, "exit").is_empty()
    });
    assert!(
        of_kind(&events, "exec").is_empty(),
        "the child never exec'd"
    );
    let fork = of_kind(&events, "fork")[0];
    let exit = of_kind(&events, "exit")[0];
    assert_eq!(fork.u64_at("/process/ppid"), u64::from(std::process::id()));
    let me = rig
        .collector
        .query(&["--pid", &std::process::id().to_string(), "--kind", "exec"]);
    assert_eq!(
        fork.str_at("/process/parent_exec_id"),
        me[0].str_at("/process/exec_id")
    );
    assert_ne!(
        fork.str_at("/process/exec_id"),
        me[0].str_at("/process/exec_id")
    );
    assert_eq!(
        fork.str_at("/process/exec_id"),
        exit.str_at("/process/exec_id")
    );
    assert_eq!(exit["exit"]["exit_code"], 42);
    // The fork is stamped with the child's start (the kernel's
    // start_boottime, which the record also carries), on the boot clock.
    assert_eq!(fork.str_at("/time"), fork.str_at("/process/start_time"));
    let forked = fork.u64_at("/monotonic_ns");
    assert!(
        (before..=after).contains(&forked),
        "fork at {forked}, not within {before}..={after}"
    );
    assert!(forked <= exit.u64_at("/monotonic_ns"));
}

#[test]
fn a_process_killed_by_sigkill_reports_the_signal() {
    let rig = Rig::start();
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    // Wait until its exec is stored so the kill hits sleep, not the fork.
    rig.events_of(pid, |e| !of_kind(e, "exec").is_empty());
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    let (_, exit) = exec_and_exit(&rig, pid);
    assert_eq!(exit["exit"]["signal"], 9);
    assert_eq!(exit["exit"]["exit_code"], 0);
}

#[test]
fn a_relative_path_from_another_cwd_reports_the_absolute_exe() {
    let rig = Rig::start();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    std::fs::create_dir(dir_path.join("sub")).unwrap();
    std::fs::copy("/bin/true", dir_path.join("sub/mytrue")).unwrap();
    let child = Command::new("./sub/mytrue")
        .current_dir(&dir_path)
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let (exec, _) = exec_and_exit(&rig, pid);
    let expected = dir_path.join("sub/mytrue");
    assert_eq!(exec.str_at("/process/exe"), expected.to_str().unwrap());
    assert_eq!(exec.str_at("/process/cwd"), dir_path.to_str().unwrap());
    assert_eq!(exec.argv(), ["./sub/mytrue"]);
}

#[test]
fn health_events_carry_every_stage_counter() {
    let rig = Rig::start();
    let health = rig
        .collector
        .wait_for(&["--kind", "health"], |e| !e.is_empty());
    let counters = health[0]["health"]["counters"].as_array().unwrap();
    for (stage, name) in [
        ("kernel", "exec_ring_full_dropped"),
        ("kernel", "file_ring_full_dropped"),
        ("kernel", "net_ring_full_dropped"),
        ("capture", "queue_full_dropped"),
        ("decode", "malformed_dropped"),
        ("ship", "buffer_full_dropped"),
    ] {
        assert!(
            counters
                .iter()
                .any(|c| c["stage"] == stage && c["name"] == name),
            "no {stage}/{name} in {counters:?}"
        );
    }
    let hooks = health[0]["health"]["hooks"].as_array().unwrap();
    for hook in [
        "raw_tp/sched_process_exec",
        "raw_tp/sched_process_fork",
        "raw_tp/sched_process_exit",
        "tracepoint/syscalls/sys_enter_write",
        "tracepoint/syscalls/sys_exit_openat",
    ] {
        assert!(hooks.iter().any(|h| h == hook), "{hook} not in {hooks:?}");
    }
    rig.sensor.stop();
}

/// The cgroup v2 hierarchy's mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .expect("a cgroup2 mount")
        .into()
}

#[test]
fn a_process_run_as_another_user_in_its_own_cgroup_reports_the_kernels_ids_name_and_cgroup() {
    use std::os::unix::fs::MetadataExt;
    let rig = Rig::start();
    let cgroup = cgroup2_mount().join(format!("sensor-test-{}", std::process::id()));
    std::fs::create_dir(&cgroup).unwrap();
    // cgroup v2 ids are the kernfs inode numbers of the directories.
    let cgroup_id = std::fs::metadata(&cgroup).unwrap().ino();
    let script = format!(
        "echo $$ > {} && exec /usr/bin/setpriv --reuid 4321 --regid 8765 --clear-groups /bin/sleep 0.1",
        cgroup.join("cgroup.procs").display()
    );
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    std::fs::remove_dir(&cgroup).unwrap();
    assert!(status.success());
    let is_sleep = |e: &&Value| e.str_at("/process/exe") == "/usr/bin/sleep";
    let events = rig.events_of(pid, |e| {
        of_kind(e, "exec").iter().any(is_sleep) && !of_kind(e, "exit").is_empty()
    });
    let exec = of_kind(&events, "exec").into_iter().find(is_sleep).unwrap();
    let exit = of_kind(&events, "exit")[0];
    let own = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/self/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for event in [exec, exit] {
        assert_eq!(event.u64_at("/process/uid"), 4321, "{event}");
        assert_eq!(event.u64_at("/process/euid"), 4321, "{event}");
        assert_eq!(event.u64_at("/process/gid"), 8765, "{event}");
        assert_eq!(event.u64_at("/process/egid"), 8765, "{event}");
        assert_eq!(event.str_at("/process/comm"), "sleep", "{event}");
        assert_eq!(event.u64_at("/process/cgroup_id"), cgroup_id, "{event}");
        assert_eq!(event.u64_at("/process/ppid"), u64::from(std::process::id()));
        assert_eq!(event.u64_at("/process/tid"), event.u64_at("/process/pid"));
        assert_eq!(event.u64_at("/process/login_uid"), own("loginuid"));
        assert_eq!(event.u64_at("/process/session_id"), own("sessionid"));
    }
}
