//! DNS: Microsoft-Windows-DNS-Client 3006 (query start) and 3008 (query
//! complete), logged in the querying process by dnsapi.dll, so the header
//! PID is the client.
//!
//! Layouts: jdu2600/Windows10EtwEvents manifest/Microsoft-Windows-DNS-Client.tsv
//! (`task_03006(UnicodeString QueryName, UInt32 QueryType, UInt64
//! QueryOptions, UnicodeString ServerList, UInt32 IsNetworkQuery, ...)`,
//! `task_03008(UnicodeString QueryName, UInt32 QueryType, UInt64
//! QueryOptions, UInt32 QueryStatus, UnicodeString QueryResults)`).
//! QueryResults is `;`-separated: addresses (A records as v4-mapped IPv6,
//! `::ffff:20.190.159.23`) and `type:  N data` for other records (CNAME 5).

use std::net::IpAddr;

use sensor_proto::v1::{DnsAnswer, DnsEvent, Event, event::Body};

use crate::{
    decoder::Decoder,
    network::address_text,
    record::EtwRecord,
    router::{Header, Route},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    pub hdr: Header,
    pub response: bool,
    pub name: String,
    pub query_type: u32,
    pub status: u32,
    pub results: String,
    pub servers: String,
}

pub fn parse(route: Route, rec: &dyn EtwRecord) -> Option<DnsRecord> {
    let response = route == Route::DnsResult;
    Some(DnsRecord {
        hdr: Header::of(rec),
        response,
        name: rec.string("QueryName")?,
        query_type: rec.u32("QueryType")?,
        status: if response { rec.u32("QueryStatus")? } else { 0 },
        results: rec.string("QueryResults").unwrap_or_default(),
        servers: rec.string("ServerList").unwrap_or_default(),
    })
}

/// "A", "AAAA", ... or the number as text (the Linux sensor's names).
#[must_use]
pub fn type_name(t: u32) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        65 => "HTTPS",
        255 => "ANY",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// The DNS rcode of a DNS-Client status: 0 ok; DNS_ERROR_RCODE_* are
/// 9000 + rcode (winerror.h); DNS_INFO_NO_RECORDS (9501) is an empty
/// NOERROR answer; anything else (timeouts, 87, 1460) failed without an
/// answer and reads as SERVFAIL (2).
#[must_use]
pub fn rcode(status: u32) -> u32 {
    match status {
        0 | 9501 => 0,
        9001..=9023 => status - 9000,
        _ => 2,
    }
}

/// Lower case, without the trailing dot, as the Linux sensor reports names.
fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_lowercase()
}

/// QueryResults -> answers, each for the query name (the entries do not
/// say which name of a CNAME chain they belong to).
#[must_use]
pub fn answers(name: &str, results: &str) -> Vec<DnsAnswer> {
    results
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            if let Some(rest) = e.strip_prefix("type:") {
                let mut parts = rest.split_whitespace();
                let t: u32 = parts.next()?.parse().ok()?;
                let data = parts.next().unwrap_or_default();
                return Some(DnsAnswer {
                    name: name.to_owned(),
                    r#type: type_name(t),
                    data: normal_name(data),
                    ttl: 0,
                });
            }
            let ip: IpAddr = e.parse().ok()?;
            let v4 = match ip {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
            };
            Some(DnsAnswer {
                name: name.to_owned(),
                r#type: if v4 { "A" } else { "AAAA" }.to_owned(),
                data: address_text(ip),
                ttl: 0,
            })
        })
        .collect()
}

impl Decoder {
    pub(crate) fn dns(&mut self, d: DnsRecord, out: &mut Vec<Event>) {
        let query_name = normal_name(&d.name);
        let server_address = d
            .servers
            .split(';')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(address_text)
            .unwrap_or_default();
        let body = Body::Dns(DnsEvent {
            response: d.response,
            answers: if d.response {
                answers(&query_name, &d.results)
            } else {
                Vec::new()
            },
            rcode: if d.response { rcode(d.status) } else { 0 },
            query_type: type_name(d.query_type),
            query_name,
            server_address,
            ..DnsEvent::default()
        });
        let p = self.context(d.hdr.pid, d.hdr.tid);
        out.push(self.event(d.hdr.ts, p, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_rcodes() {
        assert_eq!(rcode(0), 0);
        assert_eq!(rcode(9003), 3);
        assert_eq!(rcode(9501), 0);
        assert_eq!(rcode(1460), 2);
    }

    #[test]
    fn results_become_answers() {
        let a = answers(
            "x.test",
            "type:  5 Edge.X.test.;::ffff:20.190.159.23;2001:db8::1;junk;",
        );
        let got: Vec<_> = a
            .iter()
            .map(|a| (a.r#type.as_str(), a.data.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("CNAME", "edge.x.test"),
                ("A", "20.190.159.23"),
                ("AAAA", "2001:db8::1")
            ]
        );
    }
}
