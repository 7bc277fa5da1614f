//! Indicators: the values investigators search events by (file paths, IP
//! addresses, ports, domain names), taken out of file, network and DNS events
//! into the `keys` index ([`crate::keys`]), and the search keys they are
//! stored as.
//!
//! - Paths are stored as they are (case-sensitive), so an exact match is `=`
//!   and a prefix match is a range `>= prefix AND < upper` on the index.
//! - IP addresses are 16-byte big-endian blobs, IPv4 as v4-mapped IPv6
//!   (`::ffff:a.b.c.d`), so one CIDR range of either family is one
//!   `BETWEEN lo AND hi` on the index ([`IpRange`]).
//! - Domain names are lower-cased and stored reversed label-wise with a
//!   trailing dot (`a.example.com` is `com.example.a.`), so "this name or
//!   any name under it" is one prefix range (`com.example.`) on the index
//!   ([`domain_key`]).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use sensor_proto::v1::{DnsEvent, Event, FileEvent, NetworkEvent, event::Body};

/// At most this many answers of one DNS event are indexed; real responses
/// carry far fewer. Later answers stay in the stored event, unindexed.
pub const MAX_INDEXED_DNS_ANSWERS: usize = 1024;

/// What an indicator row holds; the `type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndicatorType {
    /// `value_text`: a file event's `path` or `old_path`.
    Path,
    /// `value_ip`: a network event's remote or local address, or the address
    /// of a DNS `A`/`AAAA` answer.
    Ip,
    /// `value_int`: a network event's remote or local port (not 0).
    Port,
    /// `value_text`: a DNS query name or answer name (or the name a
    /// `CNAME`/`DNAME`/`NS`/`PTR` answer points to), as [`domain_key`].
    Domain,
}

impl IndicatorType {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Ip => "ip",
            Self::Port => "port",
            Self::Domain => "domain",
        }
    }
}

/// The value of an indicator, in the column its type uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndicatorValue {
    Text(String),
    Ip([u8; 16]),
    Int(i64),
}

/// One indicator of an event: a `keys` row's type and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Indicator {
    pub kind: IndicatorType,
    pub value: IndicatorValue,
}

/// The indicators of an event, each value once. Events other than file,
/// network and DNS have none; values that do not parse (an address that is
/// not an IP address) or are empty are left out.
#[must_use]
pub fn indicators_of(event: &Event) -> Vec<Indicator> {
    let mut out = Vec::new();
    match &event.body {
        Some(Body::File(file)) => file_indicators(file, &mut out),
        Some(Body::Network(net)) => network_indicators(net, &mut out),
        Some(Body::Dns(dns)) => dns_indicators(dns, &mut out),
        // A registry key is searched like a path (--path, --path-prefix).
        Some(Body::Registry(reg)) if !reg.key.is_empty() => {
            out.push(Indicator {
                kind: IndicatorType::Path,
                value: IndicatorValue::Text(reg.key.clone()),
            });
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

fn file_indicators(file: &FileEvent, out: &mut Vec<Indicator>) {
    for path in [&file.path, &file.old_path] {
        if !path.is_empty() {
            out.push(Indicator {
                kind: IndicatorType::Path,
                value: IndicatorValue::Text(path.clone()),
            });
        }
    }
}

fn network_indicators(net: &NetworkEvent, out: &mut Vec<Indicator>) {
    for address in [&net.remote_address, &net.local_address] {
        if let Some(ip) = parse_stored_ip(address) {
            out.push(Indicator {
                kind: IndicatorType::Ip,
                value: IndicatorValue::Ip(ip),
            });
        }
    }
    for port in [net.remote_port, net.local_port] {
        if (1..=u32::from(u16::MAX)).contains(&port) {
            out.push(Indicator {
                kind: IndicatorType::Port,
                value: IndicatorValue::Int(i64::from(port)),
            });
        }
    }
}

fn dns_indicators(dns: &DnsEvent, out: &mut Vec<Indicator>) {
    let mut domain = |name: &str| {
        if let Some(key) = domain_key(name) {
            out.push(Indicator {
                kind: IndicatorType::Domain,
                value: IndicatorValue::Text(key),
            });
        }
    };
    domain(&dns.query_name);
    let mut addresses = Vec::new();
    for answer in dns.answers.iter().take(MAX_INDEXED_DNS_ANSWERS) {
        domain(&answer.name);
        let kind = answer.r#type.as_str();
        if kind.eq_ignore_ascii_case("A") || kind.eq_ignore_ascii_case("AAAA") {
            if let Some(ip) = parse_stored_ip(&answer.data) {
                addresses.push(ip);
            }
        } else if ["CNAME", "DNAME", "NS", "PTR"]
            .iter()
            .any(|k| kind.eq_ignore_ascii_case(k))
        {
            domain(&answer.data);
        }
    }
    out.extend(addresses.into_iter().map(|ip| Indicator {
        kind: IndicatorType::Ip,
        value: IndicatorValue::Ip(ip),
    }));
}

/// The 16-byte key of an address: IPv6 as it is, IPv4 v4-mapped.
#[must_use]
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The key of an address as a sensor reports it (`10.1.2.3`, `2001:db8::1`,
/// `::ffff:10.1.2.3`, `fe80::1%eth0`); `None` when it is not an address.
#[must_use]
pub fn parse_stored_ip(text: &str) -> Option<[u8; 16]> {
    // A link-local IPv6 address may carry its zone; the zone is not indexed.
    let address = match text.split_once('%') {
        Some((address, _zone)) if address.contains(':') => address,
        _ => text,
    };
    IpAddr::from_str(address).ok().map(ip_key)
}

/// The search key of a domain name: lower case, labels in reverse order,
/// each followed by a dot (`A.Example.COM.` is `com.example.a.`). Trailing
/// dots of `name` are ignored; `None` when nothing else is left.
#[must_use]
pub fn domain_key(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    let mut key = String::with_capacity(name.len() + 1);
    for label in name.rsplit('.') {
        key.push_str(&label.to_lowercase());
        key.push('.');
    }
    Some(key)
}

/// An address or CIDR block to search for, as a range of 16-byte keys
/// (IPv4 in its v4-mapped form). Parsed from `10.1.2.3`, `10.0.0.0/8`,
/// `2001:db8::/32`, `::1/128` or `::ffff:10.0.0.0/104` (the same block as
/// `10.0.0.0/8`). Host bits below the prefix are ignored (`10.1.2.3/8` is
/// `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix_len: u8,
    lo: [u8; 16],
    hi: [u8; 16],
}

/// Why an `--ip` value is not an address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("{0:?} is not a prefix length (a number of bits)")]
    PrefixLength(String),
    #[error("prefix length {len} is longer than the {max} bits of an {family} address")]
    PrefixTooLong {
        len: u32,
        max: u32,
        family: &'static str,
    },
}

impl IpRange {
    /// The block of `prefix_len` leading bits of `address`.
    ///
    /// # Errors
    /// `prefix_len` is longer than the address.
    pub fn new(address: IpAddr, prefix_len: u32) -> Result<Self, IpRangeError> {
        let (max, family, offset) = match address {
            IpAddr::V4(_) => (32, "IPv4", 96),
            IpAddr::V6(_) => (128, "IPv6", 0),
        };
        if prefix_len > max {
            return Err(IpRangeError::PrefixTooLong {
                len: prefix_len,
                max,
                family,
            });
        }
        let bits = u128::from_be_bytes(ip_key(address));
        let mapped_len = prefix_len + offset;
        let host_mask = u128::MAX.checked_shr(mapped_len).unwrap_or(0);
        let lo = bits & !host_mask;
        let hi = bits | host_mask;
        let network = match address {
            IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::from(lo)).to_canonical(),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(lo)),
        };
        Ok(Self {
            network,
            prefix_len: u8::try_from(prefix_len).unwrap_or(u8::MAX),
            lo: lo.to_be_bytes(),
            hi: hi.to_be_bytes(),
        })
    }

    /// The lowest key in the block.
    #[must_use]
    pub fn lo(&self) -> [u8; 16] {
        self.lo
    }

    /// The highest key in the block.
    #[must_use]
    pub fn hi(&self) -> [u8; 16] {
        self.hi
    }

    /// Whether the address with key `key` is in the block.
    #[must_use]
    pub fn contains_key(&self, key: &[u8; 16]) -> bool {
        (self.lo..=self.hi).contains(key)
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let ip =
            IpAddr::from_str(address).map_err(|_| IpRangeError::Address(address.to_owned()))?;
        let prefix_len = match prefix {
            None => match ip {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            Some(p) => {
                let bad = || IpRangeError::PrefixLength(p.to_owned());
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                p.parse::<u32>().map_err(|_| bad())?
            }
        };
        Self::new(ip, prefix_len)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sensor_proto::v1::{DnsAnswer, FileOp, NetworkOp};

    use super::*;

    fn key(s: &str) -> [u8; 16] {
        parse_stored_ip(s).unwrap_or_else(|| panic!("{s} does not parse"))
    }

    fn range(s: &str) -> IpRange {
        s.parse()
            .unwrap_or_else(|e| panic!("{s} does not parse: {e}"))
    }

    #[test]
    fn ipv4_is_keyed_as_v4_mapped_ipv6() {
        assert_eq!(key("10.1.2.3"), key("::ffff:10.1.2.3"));
        assert_eq!(
            key("10.1.2.3"),
            Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets()
        );
        assert_eq!(key("fe80::1%eth0"), key("fe80::1"));
        assert_eq!(parse_stored_ip("10.1.2.3%eth0"), None);
        assert_eq!(parse_stored_ip("not an address"), None);
        assert_eq!(parse_stored_ip(""), None);
        assert_eq!(parse_stored_ip("10.1.2.3:80"), None);
    }

    #[test]
    fn a_cidr_block_is_the_range_of_its_addresses() {
        let ten = range("10.0.0.0/8");
        assert_eq!(ten.to_string(), "10.0.0.0/8");
        assert_eq!(ten.lo(), key("10.0.0.0"));
        assert_eq!(ten.hi(), key("10.255.255.255"));
        assert!(ten.contains_key(&key("10.1.2.3")));
        assert!(!ten.contains_key(&key("11.0.0.1")));
        assert!(!ten.contains_key(&key("9.255.255.255")));
        assert_eq!(range("::ffff:10.0.0.0/104"), range("::ffff:10.0.0.0/104"));
        assert_eq!(range("::ffff:10.0.0.0/104").lo(), ten.lo());
        assert_eq!(range("::ffff:10.0.0.0/104").hi(), ten.hi());
        assert_eq!(range("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(range("10.1.2.3").lo(), range("10.1.2.3").hi());
        assert_eq!(range("0.0.0.0/0").lo(), key("0.0.0.0"));
        assert_eq!(range("0.0.0.0/0").hi(), key("255.255.255.255"));
        assert_eq!(range("::/0").lo(), [0; 16]);
        assert_eq!(range("::/0").hi(), [0xff; 16]);
        let doc = range("2001:db8::/32");
        assert!(doc.contains_key(&key("2001:db8:ffff::1")));
        assert!(!doc.contains_key(&key("2001:db9::1")));
        assert_eq!(range("::1/128").lo(), key("::1"));
        assert_eq!(range("::1/128").hi(), key("::1"));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "example.com",
            "10.0.0.0/ 8",
            "[::1]",
            "::1/0128",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            "10.0.0.0/33"
                .parse::<IpRange>()
                .err()
                .map(|e| e.to_string()),
            Some("prefix length 33 is longer than the 32 bits of an IPv4 address".into())
        );
        assert_eq!(
            "10.0.0.256".parse::<IpRange>().err().map(|e| e.to_string()),
            Some("\"10.0.0.256\" is not an IPv4 or IPv6 address".into())
        );
    }

    #[test]
    fn domain_keys_reverse_the_labels() {
        assert_eq!(domain_key("A.Example.COM."), Some("com.example.a.".into()));
        assert_eq!(domain_key("example.com"), Some("com.example.".into()));
        assert_eq!(domain_key("localhost"), Some("localhost.".into()));
        assert_eq!(domain_key("."), None);
        assert_eq!(domain_key(""), None);
    }

    fn event(body: Body) -> Event {
        Event {
            body: Some(body),
            ..Event::default()
        }
    }

    fn text(kind: IndicatorType, s: &str) -> Indicator {
        Indicator {
            kind,
            value: IndicatorValue::Text(s.into()),
        }
    }

    fn ip(s: &str) -> Indicator {
        Indicator {
            kind: IndicatorType::Ip,
            value: IndicatorValue::Ip(key(s)),
        }
    }

    fn port(n: i64) -> Indicator {
        Indicator {
            kind: IndicatorType::Port,
            value: IndicatorValue::Int(n),
        }
    }

    #[test]
    fn a_registry_key_is_indexed_as_a_path() {
        let set = event(Body::Registry(sensor_proto::v1::RegistryEvent {
            key: "HKLM\\SOFTWARE\\Run".into(),
            ..Default::default()
        }));
        assert_eq!(
            indicators_of(&set),
            [text(IndicatorType::Path, "HKLM\\SOFTWARE\\Run")]
        );
    }

    #[test]
    fn a_rename_indexes_both_paths() {
        let rename = event(Body::File(FileEvent {
            op: FileOp::Rename.into(),
            path: "/etc/passwd".into(),
            old_path: "/tmp/x".into(),
            ..FileEvent::default()
        }));
        assert_eq!(
            indicators_of(&rename),
            [
                text(IndicatorType::Path, "/etc/passwd"),
                text(IndicatorType::Path, "/tmp/x")
            ]
        );
    }

    #[test]
    fn a_connection_indexes_addresses_and_ports_that_parse() {
        let connect = event(Body::Network(NetworkEvent {
            op: NetworkOp::Connect.into(),
            protocol: "tcp".into(),
            family: 2,
            local_address: "bogus".into(),
            local_port: 70_000,
            remote_address: "10.1.2.3".into(),
            remote_port: 443,
            ..NetworkEvent::default()
        }));
        assert_eq!(indicators_of(&connect), [ip("10.1.2.3"), port(443)]);
    }

    #[test]
    fn a_dns_response_indexes_names_and_answer_addresses() {
        let answer = |name: &str, kind: &str, data: &str| DnsAnswer {
            name: name.into(),
            r#type: kind.into(),
            data: data.into(),
            ttl: 60,
        };
        let response = event(Body::Dns(DnsEvent {
            response: true,
            query_name: "www.example.com".into(),
            query_type: "A".into(),
            server_address: "10.0.0.53".into(),
            answers: vec![
                answer("www.example.com", "CNAME", "edge.CDN.net."),
                answer("edge.cdn.net", "A", "192.0.2.1"),
                answer("edge.cdn.net", "AAAA", "2001:db8::1"),
                answer("edge.cdn.net", "TXT", "198.51.100.1"),
            ],
            ..DnsEvent::default()
        }));
        assert_eq!(
            indicators_of(&response),
            [
                ip("192.0.2.1"),
                ip("2001:db8::1"),
                text(IndicatorType::Domain, "com.example.www."),
                text(IndicatorType::Domain, "net.cdn.edge."),
            ]
        );
    }
}
