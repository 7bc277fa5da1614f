//! Kernel-Process starts, rundowns, stops and image loads, joined with the
//! classic kernel logger's Process Start for command lines and users.

mod support;

use std::collections::BTreeMap;

use sensor_proto::v1::{Process, ProcessExec, ProcessExit, event::Body};
use support::{count, event, joined, nonzero, run, started, t, unknown};

const NOTEPAD: &str = r"C:\Windows\System32\notepad.exe";
const NOTEPAD_ARGV: [&str; 2] = [NOTEPAD, r"C:\Users\alice\notes.txt"];

fn notepad() -> Process {
    started(4242, 1000, 5, NOTEPAD)
}

fn exec(argc: u32) -> Body {
    Body::Exec(ProcessExec {
        argc,
        ..ProcessExec::default()
    })
}

#[test]
fn a_start_joined_with_its_earlier_classic_start_carries_command_line_and_user() {
    let (out, c) = run(
        "process.json",
        "classic_start_first_then_kernel_process_start",
    );
    assert_eq!(
        out,
        vec![
            vec![],
            vec![event(t(6), joined(notepad(), &NOTEPAD_ARGV), exec(2))]
        ]
    );
    assert_eq!(
        nonzero(&c),
        BTreeMap::from([("records", 2), ("cmdline_joined", 1), ("parent_unknown", 1)])
    );
}

#[test]
fn a_start_waits_for_its_classic_half_arriving_later() {
    let (out, c) = run(
        "process.json",
        "kernel_process_start_waits_for_its_classic_half",
    );
    assert_eq!(
        out,
        vec![
            vec![],
            vec![],
            vec![event(t(6), joined(notepad(), &NOTEPAD_ARGV), exec(2))]
        ]
    );
    assert_eq!(count(&c, "cmdline_joined"), 1);
    assert_eq!(count(&c, "cmdline_missing"), 0);
}

#[test]
fn a_start_whose_classic_half_never_comes_goes_out_at_the_deadline_without_argv() {
    let (out, c) = run(
        "process.json",
        "start_without_classic_half_goes_out_at_the_deadline",
    );
    assert_eq!(
        out,
        vec![vec![], vec![], vec![event(t(6), notepad(), exec(0))]]
    );
    assert_eq!(count(&c, "cmdline_missing"), 1);
}

#[test]
fn a_classic_start_of_the_same_pid_a_minute_apart_does_not_join() {
    let (out, c) = run(
        "process.json",
        "classic_start_of_another_time_does_not_join",
    );
    let reused = started(4242, 1000, 60_005, NOTEPAD);
    assert_eq!(
        out,
        vec![vec![], vec![], vec![event(t(60_006), reused, exec(0))]]
    );
    assert_eq!(count(&c, "cmdline_missing"), 1);
    assert_eq!(count(&c, "classic_unmatched"), 1);
}

#[test]
fn a_rundown_reports_running_processes_with_parents_and_command_lines() {
    let (out, c) = run("process.json", "rundown_of_processes_already_running");
    let mut explorer = joined(
        started(1000, 900, -3_600_000, r"C:\Windows\explorer.exe"),
        &[r"C:\Windows\Explorer.EXE"],
    );
    let mut cmd = joined(
        started(5000, 1000, -60_000, r"C:\Windows\System32\cmd.exe"),
        &[r"C:\Windows\system32\cmd.exe", "/k", "echo", "hi"],
    );
    cmd.parent_exec_id.clone_from(&explorer.exec_id);
    let rundown = |argc| {
        Body::Exec(ProcessExec {
            argc,
            procfs: true,
            ..ProcessExec::default()
        })
    };
    explorer.parent_exec_id = String::new();
    assert_eq!(
        out,
        vec![
            vec![],
            vec![],
            vec![event(t(1), explorer, rundown(1))],
            vec![event(t(1), cmd, rundown(4))],
        ]
    );
    assert_eq!(count(&c, "cmdline_joined"), 2);
    assert_eq!(count(&c, "parent_unknown"), 1);
}

#[test]
fn a_stop_reports_the_exit_code_with_the_full_process_context() {
    let (out, c) = run("process.json", "stop_with_exit_code");
    let p = joined(notepad(), &NOTEPAD_ARGV);
    assert_eq!(
        out,
        vec![
            vec![],
            vec![event(t(6), p.clone(), exec(2))],
            vec![event(
                t(500),
                p,
                Body::Exit(ProcessExit {
                    // STATUS_ACCESS_VIOLATION
                    exit_code: -1_073_741_819,
                    status: 0xC000_0005,
                    ..ProcessExit::default()
                })
            )],
        ]
    );
    assert_eq!(count(&c, "process_unknown"), 0);
}

#[test]
fn a_stop_before_the_classic_half_sends_the_start_first() {
    let (out, c) = run(
        "process.json",
        "stop_before_the_classic_half_sends_the_start_first",
    );
    let exit = Body::Exit(ProcessExit {
        exit_code: 1,
        status: 1,
        ..ProcessExit::default()
    });
    assert_eq!(
        out,
        vec![
            vec![],
            vec![
                event(t(6), notepad(), exec(0)),
                event(t(8), notepad(), exit)
            ]
        ]
    );
    assert_eq!(count(&c, "cmdline_missing"), 1);
}

#[test]
fn a_stop_of_a_process_never_seen_still_names_its_exec_id() {
    let (out, c) = run("process.json", "stop_of_a_process_never_seen");
    let p = Process {
        exec_id: sensor_etw::identity::exec_id(support::BOOT_ID, 77, t(-1000)),
        comm: "svc.exe".to_owned(),
        start_time: started(77, 0, -1000, "").start_time,
        ..unknown(77, 0)
    };
    assert_eq!(
        out,
        vec![vec![event(t(500), p, Body::Exit(ProcessExit::default()))]]
    );
    assert_eq!(count(&c, "process_unknown"), 1);
}

#[test]
fn an_image_load_is_routed_and_counted_but_not_sent() {
    let (out, c) = run("process.json", "image_load_is_routed_and_counted_not_sent");
    assert_eq!(out, vec![Vec::new()]);
    assert_eq!(
        nonzero(&c),
        BTreeMap::from([("records", 1), ("image_loads", 1)])
    );
}
