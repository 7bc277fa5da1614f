//! Bad input gets one clear line and exit code 2, never a panic.

use std::{os::unix::process::CommandExt as _, process::Command};

use tests::binary;

fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).trim().to_owned();
    assert_eq!(text.lines().count(), 1, "expected one line, got:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

#[test]
fn without_privileges_the_sensor_says_so_and_exits_2() {
    let out = Command::new(binary("sensor"))
        .args(["run", "--stdout"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("needs root"), "{line}");
}

#[test]
fn an_invalid_config_value_names_its_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.toml");
    std::fs::write(&path, "[capture]\nring_buffer_bytes = 1000\n").unwrap();
    let out = Command::new(binary("sensor"))
        .args(["run", "--stdout", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("capture.ring_buffer_bytes"), "{line}");
}

#[test]
fn an_unknown_config_key_and_a_missing_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.toml");
    std::fs::write(&path, "[capture]\nring_bufer_bytes = 4096\n").unwrap();
    let out = Command::new(binary("sensor"))
        .args(["run", "--stdout", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out.stderr).contains("ring_bufer_bytes"));

    let out = Command::new(binary("sensor"))
        .args(["run", "--stdout", "--config"])
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out.stderr).contains("absent.toml"));
}
