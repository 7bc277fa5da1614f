//! Network: Microsoft-Windows-Kernel-Network TCP connect (12/28) and
//! accept (15/31), UDP send (42/58) and receive (43/59), IPv4/IPv6.
//!
//! Layouts: jdu2600/Windows10EtwEvents manifest/Microsoft-Windows-Kernel-Network.tsv
//! (`UInt32 PID, UInt32 size, UInt32|Binary daddr, UInt32|Binary saddr,
//! UInt16 dport, UInt16 sport, ...`). IPv4 addresses and ports are in
//! network byte order (reference §3: `Ipv4Addr::from(v.to_le_bytes())`,
//! `u16::from_be`). `saddr`/`sport` are the local end and `daddr`/`dport`
//! the remote end in both directions (an accept's daddr is the client).
//! The header PID is arbitrary; the payload `PID` is the process.
//!
//! UDP has no connection: like the Linux sensor, a datagram is reported
//! only for the first exchange with a peer (per process, local port,
//! direction, remote address and port).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_proto::v1::{Event, NetworkEvent, NetworkOp, event::Body};

use crate::{
    counters::EtwCounters,
    decoder::Decoder,
    record::EtwRecord,
    router::{Header, Route},
    state::Bounded,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetKind {
    Connect,
    Accept,
    UdpSend,
    UdpRecv,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRecord {
    pub hdr: Header,
    pub kind: NetKind,
    pub v6: bool,
    pub pid: u32,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

/// A port as ETW logs it (network byte order in a UInt16).
#[must_use]
pub fn port(raw: u16) -> u16 {
    u16::from_be(raw)
}

/// An IPv4 address as ETW logs it (network byte order in a UInt32).
#[must_use]
pub fn ipv4(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_le_bytes())
}

/// An address property: the IPv4/IPv6 out-type when TDH gives it, else the
/// raw UInt32 (IPv4) or 16 bytes (IPv6).
fn address(rec: &dyn EtwRecord, name: &str, v6: bool) -> Option<IpAddr> {
    if let Some(ip) = rec.ip(name) {
        return Some(ip);
    }
    if v6 {
        let b: [u8; 16] = rec.bytes(name)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        rec.u32(name).map(|v| IpAddr::V4(ipv4(v)))
    }
}

pub fn parse(route: Route, rec: &dyn EtwRecord) -> Option<NetRecord> {
    let (kind, v6) = match route {
        Route::TcpConnect { v6 } => (NetKind::Connect, v6),
        Route::TcpAccept { v6 } => (NetKind::Accept, v6),
        Route::UdpSend { v6 } => (NetKind::UdpSend, v6),
        Route::UdpRecv { v6 } => (NetKind::UdpRecv, v6),
        _ => return None,
    };
    Some(NetRecord {
        hdr: Header::of(rec),
        kind,
        v6,
        pid: rec.u32("PID")?,
        local: address(rec, "saddr", v6)?,
        local_port: port(rec.u16("sport")?),
        remote: address(rec, "daddr", v6)?,
        remote_port: port(rec.u16("dport")?),
    })
}

/// An address as text: IPv4, and v4-mapped IPv6 shown as IPv4 (as the
/// Linux sensor's `address_text`).
#[must_use]
pub fn address_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
    }
}

type PeerKey = (u32, NetKind, u16, IpAddr, u16);

/// UDP peers already reported.
pub(crate) struct UdpPeers(Bounded<PeerKey, ()>);

impl UdpPeers {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Bounded::new(capacity))
    }
}

impl Decoder {
    pub(crate) fn network(&mut self, n: NetRecord, out: &mut Vec<Event>) {
        let (op, protocol) = match n.kind {
            NetKind::Connect => (NetworkOp::Connect, "tcp"),
            NetKind::Accept => (NetworkOp::Accept, "tcp"),
            NetKind::UdpSend => (NetworkOp::UdpSend, "udp"),
            // sensor.v1 has no receive op: the first datagram from a new
            // peer is the inbound flow, which `accept` names for TCP.
            NetKind::UdpRecv => (NetworkOp::UdpRecv, "udp"),
        };
        if matches!(n.kind, NetKind::UdpSend | NetKind::UdpRecv) {
            let key = (n.pid, n.kind, n.local_port, n.remote, n.remote_port);
            if self.udp.0.contains(&key) {
                return;
            }
            for _ in self.udp.0.insert(key, ()) {
                EtwCounters::inc(&self.counters.udp_peers_evicted);
            }
        }
        let body = Body::Network(NetworkEvent {
            op: op.into(),
            protocol: protocol.to_owned(),
            family: if n.v6 { AF_INET6 } else { AF_INET },
            local_address: address_text(n.local),
            local_port: u32::from(n.local_port),
            remote_address: address_text(n.remote),
            remote_port: u32::from(n.remote_port),
            ..NetworkEvent::default()
        });
        let p = self.context(n.pid, 0);
        out.push(self.event(n.hdr.ts, p, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_byte_order_fields_decode_as_written() {
        assert_eq!(ipv4(0x0100_007f), Ipv4Addr::LOCALHOST);
        assert_eq!(port(0x5000), 80);
        assert_eq!(port(0xbb01), 443);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_text(mapped), "192.0.2.7");
        assert_eq!(address_text("::1".parse().unwrap()), "::1");
    }
}
