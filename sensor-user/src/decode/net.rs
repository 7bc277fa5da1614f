//! Network and DNS records. DNS messages are parsed here, so a malformed one
//! is refused (and counted) like any other malformed record.

use sensor_common::{DNS_BUF, DNS_FIXED_LEN, DnsPacket, Header, NetEvent, SockAddrs};

use std::mem::offset_of;

use super::{DecodeError, Sent, Task, dns, field, fixed};

const IPPROTO_TCP: u32 = 6;

/// A network operation, as the kernel described the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    pub ktime_ns: u64,
    pub task: Task,
    /// `sensor_common::net_op`.
    pub op: u32,
    /// `IPPROTO_*`.
    pub protocol: u32,
    pub addrs: SockAddrs,
    pub result: i64,
    pub sock_ino: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The kernel's `struct sock` address (`NetEvent::sk`): joins a close
    /// to its connect or accept (`enrich::connections`).
    pub sk: u64,
}

/// A DNS message a process sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    pub ktime_ns: u64,
    pub task: Task,
    /// `sensor_common::dns_direction`.
    pub direction: u32,
    pub protocol: u32,
    /// The remote end is the DNS server (the destination of a query, the
    /// source of a response).
    pub addrs: SockAddrs,
    pub sock_ino: u64,
    pub message: dns::Message,
}

fn check_family(addrs: &SockAddrs) -> Result<(), DecodeError> {
    match addrs.family {
        2 | 10 => Ok(()),
        other => Err(DecodeError::Family(other)),
    }
}

pub(super) fn decode_net(bytes: &[u8], header: &Header) -> Result<Net, DecodeError> {
    let ev: NetEvent = fixed(bytes, "net", header)?;
    check_family(&ev.addrs)?;
    Ok(Net {
        ktime_ns: header.ktime_ns,
        task: Task::from(&ev.task),
        op: ev.op,
        protocol: ev.protocol,
        addrs: ev.addrs,
        result: ev.result,
        sock_ino: ev.sock_ino,
        bytes_sent: ev.bytes_sent,
        bytes_received: ev.bytes_received,
        sk: ev.sk,
    })
}

pub(super) fn decode_dns(bytes: &[u8], header: &Header) -> Result<Dns, DecodeError> {
    let ev = Sent::<DnsPacket>::new(bytes, header, "dns", DNS_FIXED_LEN)?;
    let payload = ev.used_tail("payload", field!(ev, DnsPacket, len), DNS_BUF)?;
    let addrs = field!(ev, DnsPacket, addrs);
    check_family(&addrs)?;
    let protocol = field!(ev, DnsPacket, protocol);
    let cut = field!(ev, DnsPacket, orig_len) as usize > payload.len();
    let message = dns::parse(payload, protocol == IPPROTO_TCP, cut)?;
    Ok(Dns {
        ktime_ns: header.ktime_ns,
        task: Task::from(&field!(ev, DnsPacket, task)),
        direction: field!(ev, DnsPacket, direction),
        protocol,
        addrs,
        sock_ino: field!(ev, DnsPacket, sock_ino),
        message,
    })
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use sensor_common::{dns_direction, kind, net_op};

    use super::{super::tests::as_bytes, super::tests::task, *};
    use crate::decode::{Record, decode};

    fn addrs() -> SockAddrs {
        let mut a = SockAddrs {
            family: 2,
            local_port: 40000,
            remote_port: 53,
            local_addr: [0; 16],
            remote_addr: [0; 16],
        };
        a.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        a.remote_addr[..4].copy_from_slice(&[127, 0, 0, 53]);
        a
    }

    fn net_record() -> NetEvent {
        NetEvent {
            header: Header {
                kind: kind::NET,
                size: size_of::<NetEvent>() as u32,
                ktime_ns: 4,
            },
            task: task(5),
            op: net_op::CONNECT,
            protocol: 6,
            addrs: addrs(),
            result: -111,
            sock_ino: 77,
            bytes_sent: 0,
            bytes_received: 0,
            sk: 0xffff_8880_0000_1000,
        }
    }

    fn dns_record(payload: &[u8], orig_len: usize) -> Vec<u8> {
        // SAFETY: all-zero is a valid DnsPacket.
        let mut ev: DnsPacket = unsafe { std::mem::zeroed() };
        ev.task = task(6);
        ev.direction = dns_direction::SENT;
        ev.protocol = 17;
        ev.addrs = addrs();
        ev.sock_ino = 8;
        ev.payload[..payload.len()].copy_from_slice(payload);
        ev.len = payload.len() as u32;
        ev.orig_len = orig_len as u32;
        let size = DNS_FIXED_LEN + payload.len();
        ev.header = Header {
            kind: kind::DNS,
            size: size as u32,
            ktime_ns: 3,
        };
        as_bytes(&ev)[..size].to_vec()
    }

    #[test]
    fn a_refused_connect_keeps_its_error_and_endpoints() {
        let Record::Net(n) = decode(&as_bytes(&net_record())).unwrap() else {
            panic!("not a network record")
        };
        assert_eq!((n.op, n.protocol, n.result, n.sock_ino), (1, 6, -111, 77));
        assert_eq!((n.addrs.local_port, n.addrs.remote_port), (40000, 53));
        assert_eq!(n.task.tgid, 5);
    }

    #[test]
    fn network_records_of_another_family_or_size_are_refused() {
        let mut ev = net_record();
        ev.addrs.family = 1;
        assert_eq!(
            decode(&as_bytes(&ev)),
            Err(DecodeError::Family(1)),
            "AF_UNIX is never reported"
        );
        let bytes = as_bytes(&net_record());
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { kind: "net", .. })
        ));
    }

    #[test]
    fn a_dns_record_carries_the_parsed_query() {
        let q = dns::wire::query(0x1234, "Made-Up.Example", 1);
        let Record::Dns(d) = decode(&dns_record(&q, q.len())).unwrap() else {
            panic!("not a DNS record")
        };
        assert_eq!(d.message.id, 0x1234);
        assert_eq!(d.message.question.unwrap().name, "made-up.example");
        assert_eq!(
            (d.direction, d.addrs.remote_port),
            (dns_direction::SENT, 53)
        );
    }

    #[test]
    fn malformed_and_lying_dns_records_are_refused() {
        let garbage = [0xffu8; 20];
        assert!(matches!(
            decode(&dns_record(&garbage, garbage.len())),
            Err(DecodeError::Dns(_))
        ));
        let q = dns::wire::query(1, "x.test", 1);
        let mut bytes = dns_record(&q, q.len());
        let at = offset_of!(DnsPacket, len);
        bytes[at..at + 4].copy_from_slice(&(q.len() as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadLength {
                field: "payload",
                ..
            })
        ));
    }
}
