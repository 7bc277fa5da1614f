//! Records with missing, mistyped or damaged properties, and records no
//! decoder handles: counted, never a panic, never a made-up event.

mod support;

use std::collections::BTreeMap;

use sensor_proto::v1::{DnsAnswer, DnsEvent, ProcessExec, RegistryEvent, RegistryOp, event::Body};
use support::{event, nonzero, run, scenarios, started, t};

#[test]
fn records_missing_what_their_decoder_needs_are_counted_per_provider() {
    let (out, c) = run(
        "malformed.json",
        "records_missing_what_their_decoder_needs_are_counted",
    );
    assert!(out.iter().all(Vec::is_empty));
    assert_eq!(
        nonzero(&c),
        BTreeMap::from([
            ("records", 8),
            ("malformed_process", 2),
            ("malformed_file", 1),
            ("malformed_registry", 1),
            ("malformed_network", 2),
            ("malformed_dns", 2),
        ])
    );
}

#[test]
fn unknown_providers_and_event_ids_are_unrouted() {
    let (out, c) = run(
        "malformed.json",
        "unknown_providers_and_event_ids_are_unrouted",
    );
    assert!(out.iter().all(Vec::is_empty));
    assert_eq!(
        nonzero(&c),
        BTreeMap::from([("records", 7), ("unrouted", 7)])
    );
}

#[test]
fn damaged_optional_properties_degrade_the_event_instead_of_dropping_it() {
    let (out, _) = run(
        "malformed.json",
        "damaged_optional_properties_degrade_the_event",
    );
    // A UserSID shorter than its TOKEN_USER header: argv joins, no user.
    let mut p = started(4242, 1000, 5, r"C:\a.exe");
    p.argv = vec!["a.exe".to_owned()];
    // Later events of the process carry its context, with their thread.
    let ctx = |tid| {
        let mut q = p.clone();
        q.tid = tid;
        q
    };
    let set = |ms, name: &str, ty: &str, data: Vec<u8>, size| {
        event(
            t(ms),
            ctx(6000),
            Body::Registry(RegistryEvent {
                op: RegistryOp::SetValue.into(),
                value_name: name.to_owned(),
                value_type: ty.to_owned(),
                data,
                data_size: size,
                key_unresolved: true,
                ..RegistryEvent::default()
            }),
        )
    };
    let dns = Body::Dns(DnsEvent {
        response: true,
        query_name: "x.test".to_owned(),
        query_type: "A".to_owned(),
        answers: vec![DnsAnswer {
            name: "x.test".to_owned(),
            r#type: "A".to_owned(),
            data: "1.2.3.4".to_owned(),
            ttl: 0,
        }],
        ..DnsEvent::default()
    });
    assert_eq!(
        out,
        vec![
            vec![],
            vec![event(
                t(6),
                p.clone(),
                Body::Exec(ProcessExec {
                    argc: 1,
                    ..ProcessExec::default()
                })
            )],
            // CapturedData that is not hex: no data, the rest stands.
            vec![set(11, "Y", "REG_SZ", vec![], 1)],
            // A DWORD captured short: the bytes, but no number.
            vec![set(12, "Z", "REG_DWORD", vec![1, 0], 2)],
            vec![event(t(40), ctx(4300), dns)],
        ]
    );
}

#[test]
fn every_fixture_says_where_its_layouts_come_from() {
    for file in [
        "process.json",
        "file.json",
        "registry.json",
        "network.json",
        "dns.json",
        "malformed.json",
    ] {
        let (source, names) = scenarios(file);
        assert!(source.len() > 80, "{file}: source note too thin");
        assert!(!names.is_empty(), "{file}: no scenarios");
        for name in names {
            // Every scenario replays without a panic.
            let _ = run(file, &name);
        }
    }
}
