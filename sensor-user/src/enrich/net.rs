//! Network and DNS records -> `NetworkEvent` and `DnsEvent`.

use std::net::{Ipv4Addr, Ipv6Addr};

use sensor_common::SockAddrs;
use sensor_proto::v1::{DnsAnswer, DnsEvent, NetworkEvent, NetworkOp, event::Body};

use super::Enricher;
use crate::decode::{
    dns::type_name,
    net::{Dns, Net},
};
use crate::encode::Enriched;

const AF_INET: u32 = 2;

/// An address as text: IPv4 for AF_INET and for v4-mapped IPv6 (an IPv6
/// socket talking to an IPv4 peer), IPv6 otherwise.
#[must_use]
pub fn address_text(family: u32, addr: &[u8; 16]) -> String {
    if family == AF_INET {
        return Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string();
    }
    let v6 = Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// The remote end, or "" when there is none (bind, listen, unconnected).
fn remote_text(a: &SockAddrs) -> String {
    if a.remote_port == 0 && a.remote_addr == [0; 16] {
        String::new()
    } else {
        address_text(a.family, &a.remote_addr)
    }
}

/// "tcp", "udp", or the protocol number.
#[must_use]
pub fn protocol_name(protocol: u32) -> String {
    match protocol {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        other => other.to_string(),
    }
}

impl Enricher {
    pub(super) fn net(&mut self, n: Net) -> Enriched {
        let p = self.context(&n.task);
        let op =
            NetworkOp::try_from(i32::try_from(n.op).unwrap_or(0)).unwrap_or(NetworkOp::Unspecified);
        let body = Body::Network(NetworkEvent {
            op: op.into(),
            protocol: protocol_name(n.protocol),
            family: n.addrs.family,
            local_address: address_text(n.addrs.family, &n.addrs.local_addr),
            local_port: u32::from(n.addrs.local_port),
            remote_address: remote_text(&n.addrs),
            remote_port: u32::from(n.addrs.remote_port),
            result: i32::try_from(n.result).unwrap_or(i32::MIN),
            socket_inode: n.sock_ino,
            bytes_sent: n.bytes_sent,
            bytes_received: n.bytes_received,
        });
        self.event(n.ktime_ns, p, n.task.tid, body)
    }

    pub(super) fn dns(&mut self, d: Dns) -> Enriched {
        let p = self.context(&d.task);
        let m = d.message;
        let (query_name, query_type) = m
            .question
            .map(|q| (q.name, type_name(q.qtype)))
            .unwrap_or_default();
        // A host may also answer (a resolver on it forwarding): the QR bit,
        // not the direction, says what the message is.
        let response = m.response;
        let body = Body::Dns(DnsEvent {
            response,
            id: u32::from(m.id),
            query_name,
            query_type,
            protocol: protocol_name(d.protocol),
            server_address: address_text(d.addrs.family, &d.addrs.remote_addr),
            server_port: u32::from(d.addrs.remote_port),
            rcode: if response { u32::from(m.rcode) } else { 0 },
            answers: m
                .answers
                .into_iter()
                .map(|a| DnsAnswer {
                    name: a.name,
                    r#type: type_name(a.rtype),
                    data: a.data,
                    ttl: a.ttl,
                })
                .collect(),
        });
        self.event(d.ktime_ns, p, d.task.tid, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_investigators_write_them() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(address_text(2, &v4), "10.1.2.3");
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_text(10, &mapped.octets()), "192.0.2.7");
        assert_eq!(address_text(10, &Ipv6Addr::LOCALHOST.octets()), "::1");
        assert_eq!(address_text(10, &[0; 16]), "::");
    }

    #[test]
    fn an_unconnected_socket_has_no_remote_address() {
        let mut a = SockAddrs {
            family: 2,
            local_port: 8080,
            remote_port: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
        };
        assert_eq!(remote_text(&a), "");
        a.remote_port = 443;
        assert_eq!(remote_text(&a), "0.0.0.0");
        assert_eq!(protocol_name(6), "tcp");
        assert_eq!(protocol_name(132), "132");
    }
}
