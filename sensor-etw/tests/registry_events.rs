//! Kernel-Registry key creates and deletes, value sets and deletes, with
//! the KeyObject -> key path bookkeeping.

mod support;

use sensor_proto::v1::{Event, RegistryEvent, RegistryOp, event::Body};
use support::{count, event, run, t, unknown};

fn reg(
    ms: i64,
    op: RegistryOp,
    raw: &str,
    key: &str,
    fill: impl FnOnce(&mut RegistryEvent),
) -> Event {
    let mut e = RegistryEvent {
        op: op.into(),
        key: key.to_owned(),
        raw_key: raw.to_owned(),
        ..RegistryEvent::default()
    };
    fill(&mut e);
    event(t(ms), unknown(4242, 6000), Body::Registry(e))
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

const ACME: &str = r"\REGISTRY\MACHINE\SOFTWARE\Acme";

#[test]
fn a_created_key_is_reported_and_names_its_string_and_dword_values() {
    let (out, _) = run(
        "registry.json",
        "create_key_then_set_string_and_dword_values",
    );
    let hklm = r"HKLM\SOFTWARE\Acme";
    assert_eq!(
        out,
        vec![
            vec![reg(10, RegistryOp::CreateKey, ACME, hklm, |_| {})],
            vec![reg(11, RegistryOp::SetValue, ACME, hklm, |e| {
                e.value_name = "InstallPath".to_owned();
                e.value_type = "REG_SZ".to_owned();
                e.data = utf16("C:\\Acme\0");
                e.data_text = r"C:\Acme".to_owned();
                e.data_size = 16;
            })],
            vec![reg(12, RegistryOp::SetValue, ACME, hklm, |e| {
                e.value_name = "Enabled".to_owned();
                e.value_type = "REG_DWORD".to_owned();
                e.data = vec![1, 0, 0, 0];
                e.data_text = "1".to_owned();
                e.data_size = 4;
            })],
        ]
    );
}

#[test]
fn a_key_opened_relative_to_a_known_key_resolves_until_closed() {
    let (out, c) = run(
        "registry.json",
        "open_relative_to_a_known_key_then_delete_value_and_close",
    );
    let run_key = r"\REGISTRY\MACHINE\SOFTWARE\Acme\Run";
    assert_eq!(
        out,
        vec![
            vec![],
            vec![],
            vec![reg(
                12,
                RegistryOp::DeleteValue,
                run_key,
                r"HKLM\SOFTWARE\Acme\Run",
                |e| {
                    e.value_name = "Updater".to_owned();
                }
            )],
            vec![],
            vec![reg(14, RegistryOp::DeleteValue, "", "", |e| {
                e.value_name = "Updater".to_owned();
                e.key_unresolved = true;
            })],
        ]
    );
    assert_eq!(count(&c, "registry_key_unresolved"), 1);
}

#[test]
fn a_deleted_user_key_reads_under_hku() {
    let (out, _) = run("registry.json", "delete_key");
    let raw = r"\REGISTRY\USER\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Acme";
    let key = r"HKU\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Acme";
    assert_eq!(
        out,
        vec![
            vec![],
            vec![reg(11, RegistryOp::DeleteKey, raw, key, |_| {})]
        ]
    );
}

#[test]
fn a_value_set_on_an_unknown_key_object_is_reported_unresolved() {
    let (out, c) = run(
        "registry.json",
        "set_value_on_an_unknown_key_object_is_unresolved",
    );
    assert_eq!(
        out,
        vec![vec![reg(11, RegistryOp::SetValue, "", "", |e| {
            e.value_name = "Shell".to_owned();
            e.value_type = "REG_SZ".to_owned();
            e.data = utf16("evil.exe\0");
            e.data_text = "evil.exe".to_owned();
            e.data_size = 18;
            e.key_unresolved = true;
        })]]
    );
    assert_eq!(count(&c, "registry_key_unresolved"), 1);
}

#[test]
fn creating_an_existing_key_indexes_it_without_an_event() {
    let (out, _) = run(
        "registry.json",
        "create_of_an_existing_key_indexes_it_without_an_event",
    );
    assert_eq!(
        out,
        vec![
            vec![],
            vec![reg(
                11,
                RegistryOp::DeleteValue,
                ACME,
                r"HKLM\SOFTWARE\Acme",
                |e| {
                    e.value_name = "Old".to_owned();
                }
            )]
        ]
    );
}

#[test]
fn a_create_under_an_unknown_base_object_uses_the_base_name() {
    let (out, _) = run(
        "registry.json",
        "create_by_base_name_when_the_base_object_is_unknown",
    );
    assert_eq!(
        out,
        vec![vec![reg(
            10,
            RegistryOp::CreateKey,
            r"\REGISTRY\MACHINE\SOFTWARE\Acme\Sub",
            r"HKLM\SOFTWARE\Acme\Sub",
            |_| {}
        )]]
    );
}

#[test]
fn failed_operations_are_counted_not_reported() {
    let (out, c) = run("registry.json", "failed_operations_are_not_reported");
    assert_eq!(out, vec![vec![], vec![]]);
    assert_eq!(count(&c, "registry_failed_ignored"), 2);
}
