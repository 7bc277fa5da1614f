//! DNS-Client queries (3006) and results (3008).

mod support;

use sensor_proto::v1::{DnsAnswer, DnsEvent, Event, event::Body};
use support::{event, run, t, unknown};

fn dns(ms: i64, e: DnsEvent) -> Event {
    event(t(ms), unknown(4242, 4300), Body::Dns(e))
}

fn answer(name: &str, ty: &str, data: &str) -> DnsAnswer {
    DnsAnswer {
        name: name.to_owned(),
        r#type: ty.to_owned(),
        data: data.to_owned(),
        ttl: 0,
    }
}

#[test]
fn a_query_and_its_result_with_a_cname_chain_and_addresses() {
    let (out, _) = run("dns.json", "query_and_result_with_cname_and_addresses");
    let name = "login.live.com";
    assert_eq!(
        out,
        vec![
            vec![dns(
                10,
                DnsEvent {
                    query_name: name.to_owned(),
                    query_type: "A".to_owned(),
                    server_address: "192.168.1.1".to_owned(),
                    ..DnsEvent::default()
                }
            )],
            vec![dns(
                40,
                DnsEvent {
                    response: true,
                    query_name: name.to_owned(),
                    query_type: "A".to_owned(),
                    answers: vec![
                        answer(name, "CNAME", "login.msa.msidentity.com"),
                        answer(name, "A", "20.190.159.23"),
                        answer(name, "A", "40.126.31.67"),
                    ],
                    ..DnsEvent::default()
                }
            )],
        ]
    );
}

#[test]
fn an_aaaa_result_drops_the_trailing_dot() {
    let (out, _) = run("dns.json", "aaaa_result");
    assert_eq!(
        out,
        vec![vec![dns(
            40,
            DnsEvent {
                response: true,
                query_name: "example.com".to_owned(),
                query_type: "AAAA".to_owned(),
                answers: vec![answer(
                    "example.com",
                    "AAAA",
                    "2606:2800:220:1:248:1893:25c8:1946"
                )],
                ..DnsEvent::default()
            }
        )]]
    );
}

#[test]
fn a_name_error_reads_as_nxdomain() {
    let (out, _) = run("dns.json", "name_error_result");
    assert_eq!(
        out,
        vec![vec![dns(
            40,
            DnsEvent {
                response: true,
                query_name: "nope.invalid".to_owned(),
                query_type: "A".to_owned(),
                rcode: 3,
                ..DnsEvent::default()
            }
        )]]
    );
}
