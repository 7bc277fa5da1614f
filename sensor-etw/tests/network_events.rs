//! Kernel-Network TCP connects and accepts, UDP first datagrams per peer,
//! IPv4 and IPv6.

mod support;

use sensor_proto::v1::{Event, NetworkEvent, NetworkOp, event::Body};
use support::{event, run, t, unknown};

#[allow(clippy::too_many_arguments)]
fn net(
    ms: i64,
    pid: u32,
    op: NetworkOp,
    proto: &str,
    family: u32,
    local: (&str, u32),
    remote: (&str, u32),
) -> Event {
    event(
        t(ms),
        unknown(pid, 0),
        Body::Network(NetworkEvent {
            op: op.into(),
            protocol: proto.to_owned(),
            family,
            local_address: local.0.to_owned(),
            local_port: local.1,
            remote_address: remote.0.to_owned(),
            remote_port: remote.1,
            ..NetworkEvent::default()
        }),
    )
}

#[test]
fn a_tcp_connect_over_ipv4_decodes_network_byte_order() {
    let (out, _) = run("network.json", "tcp_connect_ipv4");
    assert_eq!(
        out,
        vec![vec![net(
            10,
            4242,
            NetworkOp::Connect,
            "tcp",
            2,
            ("10.0.0.5", 50000),
            ("93.184.216.34", 443)
        )]]
    );
}

#[test]
fn a_tcp_accept_over_ipv4_with_ip_typed_addresses() {
    let (out, _) = run("network.json", "tcp_accept_ipv4_with_ip_typed_addresses");
    assert_eq!(
        out,
        vec![vec![net(
            10,
            1800,
            NetworkOp::Accept,
            "tcp",
            2,
            ("10.0.0.5", 3389),
            ("10.0.0.9", 51515)
        )]]
    );
}

#[test]
fn a_tcp_connect_over_ipv6() {
    let (out, _) = run("network.json", "tcp_connect_ipv6");
    assert_eq!(
        out,
        vec![vec![net(
            10,
            4242,
            NetworkOp::Connect,
            "tcp",
            10,
            ("2001:db8::5", 50001),
            ("2606:2800:220:1::1", 443)
        )]]
    );
}

#[test]
fn a_tcp_accept_over_ipv6_from_a_v4_mapped_peer_reads_as_ipv4() {
    let (out, _) = run("network.json", "tcp_accept_ipv6_from_a_v4_mapped_peer");
    assert_eq!(
        out,
        vec![vec![net(
            10,
            1800,
            NetworkOp::Accept,
            "tcp",
            10,
            ("10.0.0.5", 80),
            ("10.0.0.9", 52000)
        )]]
    );
}

#[test]
fn udp_is_reported_once_per_peer_and_direction() {
    let (out, _) = run("network.json", "udp_first_datagram_per_peer");
    let local = ("10.0.0.5", 60000);
    let local6 = ("2001:db8::5", 60001);
    let google6 = ("2001:4860:4860::8888", 53);
    assert_eq!(
        out,
        vec![
            vec![net(
                10,
                4242,
                NetworkOp::UdpSend,
                "udp",
                2,
                local,
                ("8.8.8.8", 53)
            )],
            vec![],
            // An inbound first datagram from a new peer.
            vec![net(
                12,
                4242,
                NetworkOp::UdpRecv,
                "udp",
                2,
                local,
                ("8.8.8.8", 53)
            )],
            vec![],
            vec![net(
                14,
                4242,
                NetworkOp::UdpSend,
                "udp",
                2,
                local,
                ("1.1.1.1", 53)
            )],
            vec![net(
                15,
                4242,
                NetworkOp::UdpSend,
                "udp",
                10,
                local6,
                google6
            )],
            vec![net(
                16,
                4242,
                NetworkOp::UdpRecv,
                "udp",
                10,
                local6,
                google6
            )],
            vec![],
        ]
    );
}
