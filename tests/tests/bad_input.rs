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

/// Runs `sensor run --stdout --config FILE` with `config` as the file's text
/// (`None`: the file does not exist) and returns (exit code, the one line).
fn sensor_with_config(config: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.toml");
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap();
    }
    let out = Command::new(binary("sensor"))
        .args(["run", "--stdout", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.code(), one_line(&out.stderr))
}

#[test]
fn an_invalid_config_value_names_its_key_and_exits_2() {
    let (code, line) = sensor_with_config(Some("[capture]\nring_buffer_bytes = 1000\n"));
    assert_eq!(code, Some(2));
    assert!(line.contains("capture.ring_buffer_bytes"), "{line}");
}

#[test]
fn an_unknown_config_key_and_a_missing_file_are_refused() {
    let (code, line) = sensor_with_config(Some("[capture]\nring_bufer_bytes = 4096\n"));
    assert_eq!(code, Some(2));
    assert!(line.contains("ring_bufer_bytes"), "{line}");
    let (code, line) = sensor_with_config(None);
    assert_eq!(code, Some(2));
    assert!(line.contains("sensor.toml"), "{line}");
}
