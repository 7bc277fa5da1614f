//! Kernel-File creates, writes, renames and deletes, with the FileObject
//! and FileKey name bookkeeping.

mod support;

use sensor_proto::v1::{FileEvent, FileOp, event::Body};
use support::{count, event, run, t, unknown};

fn file(op: FileOp, path: &str) -> Body {
    Body::File(FileEvent {
        op: op.into(),
        path: path.to_owned(),
        ..FileEvent::default()
    })
}

fn at(ft: i64, body: Body) -> sensor_proto::v1::Event {
    event(ft, unknown(4242, 5000), body)
}

#[test]
fn a_new_file_is_created_then_its_first_write_reported_once() {
    let (out, _) = run("file.json", "new_file_then_its_first_write");
    let path = r"C:\Users\alice\report.txt";
    assert_eq!(
        out,
        vec![
            vec![],
            vec![at(t(10) + 1_000, file(FileOp::Create, path))],
            vec![at(t(11), file(FileOp::Write, path))],
            vec![],
        ]
    );
}

#[test]
fn a_write_arriving_before_its_create_is_held_then_named() {
    let (out, c) = run("file.json", "write_before_its_create");
    assert_eq!(
        out,
        vec![
            vec![],
            vec![at(t(11), file(FileOp::Write, r"C:\Users\alice\late.txt"))]
        ]
    );
    assert_eq!(count(&c, "file_write_held"), 1);
    assert_eq!(count(&c, "file_write_late_resolved"), 1);
    assert_eq!(count(&c, "file_path_unresolved"), 0);
}

#[test]
fn a_write_through_a_file_opened_before_start_is_named_by_the_rundown() {
    let (out, c) = run("file.json", "write_through_a_file_known_only_from_rundown");
    assert_eq!(
        out,
        vec![
            vec![],
            vec![at(t(20), file(FileOp::Write, r"C:\Windows\Temp\svc.log"))]
        ]
    );
    assert_eq!(count(&c, "file_write_held"), 0);
}

#[test]
fn a_name_create_names_writes_by_file_key() {
    let (out, _) = run("file.json", "name_create_names_writes_by_file_key");
    assert_eq!(
        out,
        vec![
            vec![],
            vec![at(
                t(20),
                file(FileOp::Write, r"C:\ProgramData\app\state.db")
            )]
        ]
    );
}

#[test]
fn a_write_that_is_never_named_goes_out_unresolved_after_the_hold() {
    let (out, c) = run("file.json", "write_without_a_name_goes_out_unresolved");
    assert_eq!(
        out,
        vec![vec![], vec![], vec![at(t(20), file(FileOp::Write, ""))]]
    );
    assert_eq!(count(&c, "file_path_unresolved"), 1);
}

#[test]
fn a_close_ends_the_file_object_so_its_reuse_reports_a_new_first_write() {
    let (out, _) = run(
        "file.json",
        "close_ends_a_file_object_and_its_reuse_starts_afresh",
    );
    assert_eq!(
        out,
        vec![
            vec![],
            vec![at(t(11), file(FileOp::Write, r"C:\Users\alice\a.txt"))],
            vec![],
            vec![],
            vec![at(t(14), file(FileOp::Write, r"C:\Users\alice\b.txt"))],
        ]
    );
}

#[test]
fn renames_name_the_old_path_and_deletes_the_path() {
    let (out, _) = run("file.json", "rename_and_delete_by_path");
    let rename = Body::File(FileEvent {
        op: FileOp::Rename.into(),
        old_path: r"C:\Users\alice\old.txt".to_owned(),
        ..FileEvent::default()
    });
    assert_eq!(
        out,
        vec![
            vec![at(t(30), rename)],
            vec![at(t(31), file(FileOp::Unlink, r"C:\Users\alice\gone.txt"))]
        ]
    );
}

#[test]
fn a_path_on_a_device_without_drive_letter_stays_in_device_form() {
    let (out, c) = run(
        "file.json",
        "path_on_an_unmapped_device_stays_in_device_form",
    );
    assert_eq!(
        out,
        vec![vec![at(
            t(10),
            file(FileOp::Create, r"\Device\HarddiskVolume9\x.bin")
        )]]
    );
    assert_eq!(count(&c, "device_path_unmapped"), 1);
}
