//! DNS messages (RFC 1035 §4), parsed from the bounded copy the kernel made
//! of a process's own buffer. The bytes are untrusted: every read is checked,
//! compression pointers must point strictly backwards of the previous jump
//! (so a name cannot loop), and a name stops at 255 bytes. A malformed
//! message is an error, never a panic.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

/// Longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// Labels plus pointers one name may take; a 255-byte name has at most 127
/// labels, so more steps than this are a pointer chain built to waste time.
const MAX_NAME_STEPS: usize = 256;
const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("message of {0} bytes is shorter than the 12-byte header")]
    ShortHeader(usize),
    #[error("{what} at byte {at} runs past the end of the message")]
    Truncated { what: &'static str, at: usize },
    #[error("compression pointer at byte {at} does not point backwards")]
    BadPointer { at: usize },
    #[error("name at byte {at} has more than {MAX_NAME_STEPS} labels and pointers")]
    TooManySteps { at: usize },
    #[error("label type {0:#04x} is not supported")]
    BadLabel(u8),
    #[error("name at byte {0} is longer than 255 bytes")]
    NameTooLong(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Lower case, without the trailing dot; the root is ".".
    pub name: String,
    pub qtype: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    /// The record's data in presentation form ("192.0.2.1", a name, ...).
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// The QR bit.
    pub response: bool,
    /// The header's 4-bit RCODE.
    pub rcode: u8,
    /// The first question; messages without one (some error responses) have none.
    pub question: Option<Question>,
    /// The answer section, as far as the copy reached.
    pub answers: Vec<Answer>,
    /// The copy ended inside the answer section: later answers are missing.
    pub answers_cut: bool,
}

/// The text of a record type: its mnemonic, or the number.
#[must_use]
pub fn type_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// Bounds-checked reads over the message.
struct Reader<'a> {
    msg: &'a [u8],
}

impl Reader<'_> {
    fn bytes(&self, at: usize, len: usize, what: &'static str) -> Result<&[u8], DnsError> {
        at.checked_add(len)
            .and_then(|end| self.msg.get(at..end))
            .ok_or(DnsError::Truncated { what, at })
    }

    fn u8(&self, at: usize, what: &'static str) -> Result<u8, DnsError> {
        Ok(self.bytes(at, 1, what)?[0])
    }

    fn u16(&self, at: usize, what: &'static str) -> Result<u16, DnsError> {
        let b = self.bytes(at, 2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize, what: &'static str) -> Result<u32, DnsError> {
        let b = self.bytes(at, 4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The name at `start` and the offset just after it where it sits
    /// (after its first pointer, if any).
    fn name(&self, start: usize) -> Result<(String, usize), DnsError> {
        let mut text = String::new();
        let mut at = start;
        // A pointer must land before `floor`, which each jump lowers: the
        // walk can only go backwards between label runs, so it cannot loop.
        let mut floor = start;
        let mut end = None;
        let mut wire_len = 1;
        for _ in 0..MAX_NAME_STEPS {
            let len = self.u8(at, "name")?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    if text.is_empty() {
                        text.push('.');
                    }
                    return Ok((text, end.unwrap_or(at + 1)));
                }
                0x00 => {
                    let label = self.bytes(at + 1, usize::from(len), "label")?;
                    wire_len += label.len() + 1;
                    if wire_len > MAX_NAME {
                        return Err(DnsError::NameTooLong(start));
                    }
                    if !text.is_empty() {
                        text.push('.');
                    }
                    push_label(&mut text, label);
                    at += 1 + label.len();
                }
                0xc0 => {
                    let target = usize::from(self.u16(at, "pointer")? & 0x3fff);
                    if target >= floor {
                        return Err(DnsError::BadPointer { at });
                    }
                    end.get_or_insert(at + 2);
                    floor = target;
                    at = target;
                }
                _ => return Err(DnsError::BadLabel(len)),
            }
        }
        Err(DnsError::TooManySteps { at: start })
    }

    /// One resource record at `at`: the record and where the next begins.
    fn record(&self, at: usize) -> Result<(Answer, usize), DnsError> {
        let (name, at) = self.name(at)?;
        let rtype = self.u16(at, "type")?;
        let ttl = self.u32(at + 4, "ttl")?;
        let rdlen = usize::from(self.u16(at + 8, "rdlength")?);
        let rdata_at = at + 10;
        let rdata = self.bytes(rdata_at, rdlen, "rdata")?;
        let data = self.rdata(rtype, rdata_at, rdata)?;
        Ok((
            Answer {
                name,
                rtype,
                ttl,
                data,
            },
            rdata_at + rdlen,
        ))
    }

    /// Record data in presentation form; types without one here use the
    /// generic form of RFC 3597 (`\# LEN HEX`).
    fn rdata(&self, rtype: u16, at: usize, rdata: &[u8]) -> Result<String, DnsError> {
        Ok(match (rtype, rdata.len()) {
            (1, 4) => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            (28, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                Ipv6Addr::from(a).to_string()
            }
            // NS, CNAME, PTR, DNAME: one name.
            (2 | 5 | 12 | 39, _) => self.name(at)?.0,
            (15, 3..) => format!("{} {}", self.u16(at, "mx")?, self.name(at + 2)?.0),
            (33, 7..) => format!(
                "{} {} {} {}",
                self.u16(at, "srv")?,
                self.u16(at + 2, "srv")?,
                self.u16(at + 4, "srv")?,
                self.name(at + 6)?.0
            ),
            (16, _) => txt(rdata)?,
            (6, _) => {
                let (mname, next) = self.name(at)?;
                let (rname, next) = self.name(next)?;
                let mut soa = format!("{mname} {rname}");
                for i in 0..5 {
                    write!(soa, " {}", self.u32(next + 4 * i, "soa")?).expect("string write");
                }
                soa
            }
            _ => {
                let mut generic = format!("\\# {}", rdata.len());
                if !rdata.is_empty() {
                    generic.push(' ');
                }
                for b in rdata {
                    write!(generic, "{b:02x}").expect("string write");
                }
                generic
            }
        })
    }
}

/// A label in presentation form: lower case, with `.`, `\` and bytes that
/// are not printable ASCII escaped as dig prints them.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7e => out.push(char::from(b.to_ascii_lowercase())),
            _ => write!(out, "\\{b:03}").expect("string write"),
        }
    }
}

/// TXT data: its character-strings, each quoted, space separated.
fn txt(rdata: &[u8]) -> Result<String, DnsError> {
    let mut out = String::new();
    let mut rest = rdata;
    while let Some((&len, tail)) = rest.split_first() {
        let s = tail.get(..usize::from(len)).ok_or(DnsError::Truncated {
            what: "txt",
            at: rdata.len() - rest.len(),
        })?;
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('"');
        for &b in s {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x20..=0x7e => out.push(char::from(b)),
                _ => write!(out, "\\{b:03}").expect("string write"),
            }
        }
        out.push('"');
        rest = &tail[usize::from(len)..];
    }
    Ok(out)
}

/// Whether TCP bytes start with the 2-byte length of the message after it.
/// Senders that write the prefix and the message separately, and readers
/// that read them separately, hand over the bare message instead.
fn framed(bytes: &[u8], cut: bool) -> bool {
    let [hi, lo, ..] = *bytes else {
        return false;
    };
    let claimed = usize::from(u16::from_be_bytes([hi, lo]));
    let rest = bytes.len() - 2;
    if cut {
        claimed >= rest
    } else {
        claimed == rest
    }
}

/// Parses a DNS message. `cut`: the bytes are only the start of a longer
/// message, so an answer section that runs off their end ends the answers
/// (flagged) instead of making the message malformed. With `tcp`, a 2-byte
/// length prefix, when the bytes start with one, is skipped.
pub fn parse(bytes: &[u8], tcp: bool, cut: bool) -> Result<Message, DnsError> {
    let msg = if tcp && framed(bytes, cut) {
        &bytes[2..]
    } else {
        bytes
    };
    if msg.len() < HEADER_LEN {
        return Err(DnsError::ShortHeader(msg.len()));
    }
    let r = Reader { msg };
    let id = r.u16(0, "id")?;
    let flags = r.u16(2, "flags")?;
    let qdcount = r.u16(4, "qdcount")?;
    let ancount = r.u16(6, "ancount")?;
    let mut at = HEADER_LEN;
    let mut question = None;
    // Every question takes at least 5 bytes, so the count is bounded by the
    // message (running off its end is an error).
    for _ in 0..qdcount {
        let (name, next) = r.name(at)?;
        let qtype = r.u16(next, "qtype")?;
        r.u16(next + 2, "qclass")?;
        question.get_or_insert(Question { name, qtype });
        at = next + 4;
    }
    let mut answers = Vec::new();
    let mut answers_cut = false;
    for _ in 0..ancount {
        match r.record(at) {
            Ok((answer, next)) => {
                answers.push(answer);
                at = next;
            }
            Err(DnsError::Truncated { .. }) if cut => {
                answers_cut = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Message {
        id,
        response: flags & 0x8000 != 0,
        rcode: (flags & 0xf) as u8,
        question,
        answers,
        answers_cut,
    })
}

/// Builders of wire-format messages for tests (here and in enrich).
#[cfg(test)]
pub mod wire {
    /// A name as length-prefixed labels ending with the root.
    #[must_use]
    pub fn name(dotted: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in dotted.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// A header with one question for `qname`/`qtype`.
    #[must_use]
    pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&name(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    /// The response to `query(id, qname, qtype)` with answers whose owner is
    /// a pointer to the question name (offset 12): (type, ttl, rdata).
    #[must_use]
    pub fn response(
        id: u16,
        qname: &str,
        qtype: u16,
        rcode: u8,
        answers: &[(u16, u32, Vec<u8>)],
    ) -> Vec<u8> {
        let mut m = query(id, qname, qtype);
        m[2..4].copy_from_slice(&(0x8180u16 | u16::from(rcode)).to_be_bytes());
        m[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (rtype, ttl, rdata) in answers {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::{wire::*, *};

    #[test]
    fn a_query_gives_its_id_lowercase_name_and_type() {
        let m = parse(&query(0xbeef, "WWW.Example.COM.", 28), false, false).unwrap();
        assert_eq!(m.id, 0xbeef);
        assert!(!m.response);
        assert_eq!(
            m.question,
            Some(Question {
                name: "www.example.com".into(),
                qtype: 28
            })
        );
        assert!(m.answers.is_empty());
        assert_eq!(type_name(28), "AAAA");
        assert_eq!(type_name(4242), "4242");
    }

    #[test]
    fn a_response_gives_its_answers_in_presentation_form() {
        let cname = name("edge.cdn.example.net");
        let m = parse(
            &response(
                7,
                "a.example.com",
                1,
                0,
                &[
                    (5, 300, cname),
                    (1, 60, vec![192, 0, 2, 1]),
                    (
                        28,
                        60,
                        "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
                    ),
                    (15, 10, [&[0, 10][..], &name("mx.example.com")].concat()),
                    (16, 10, b"\x05hello\x03a\"b".to_vec()),
                    (99, 1, vec![0xde, 0xad]),
                ],
            ),
            false,
            false,
        )
        .unwrap();
        assert!(m.response);
        assert_eq!(m.rcode, 0);
        let got: Vec<(&str, String, u32, &str)> = m
            .answers
            .iter()
            .map(|a| (a.name.as_str(), type_name(a.rtype), a.ttl, a.data.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.example.com", "CNAME".into(), 300, "edge.cdn.example.net"),
                ("a.example.com", "A".into(), 60, "192.0.2.1"),
                ("a.example.com", "AAAA".into(), 60, "2001:db8::1"),
                ("a.example.com", "MX".into(), 10, "10 mx.example.com"),
                ("a.example.com", "TXT".into(), 10, "\"hello\" \"a\\\"b\""),
                ("a.example.com", "SPF".into(), 1, "\\# 2 dead"),
            ]
        );
        assert!(!m.answers_cut);
    }

    #[test]
    fn an_nxdomain_keeps_its_rcode() {
        let m = parse(&response(9, "nope.test", 1, 3, &[]), false, false).unwrap();
        assert_eq!((m.response, m.rcode), (true, 3));
    }

    #[test]
    fn tcp_messages_lose_their_length_prefix_when_they_have_one() {
        let q = query(1, "example.org", 1);
        let framed = [&(q.len() as u16).to_be_bytes()[..], &q].concat();
        let m = parse(&framed, true, false).unwrap();
        assert_eq!(m.question.unwrap().name, "example.org");
        // The message read after its prefix was read on its own.
        let m = parse(&q, true, false).unwrap();
        assert_eq!(m.question.unwrap().name, "example.org");
        assert_eq!(parse(&[0], true, false), Err(DnsError::ShortHeader(1)));
    }

    #[test]
    fn short_and_truncated_messages_are_errors() {
        assert_eq!(
            parse(&[0; 11], false, false),
            Err(DnsError::ShortHeader(11))
        );
        let q = query(1, "example.org", 1);
        for cut in 12..q.len() {
            assert!(
                parse(&q[..cut], false, false).is_err(),
                "a question cut at {cut} bytes parsed"
            );
        }
        // qdcount says 2 but only one question is there.
        let mut two = q.clone();
        two[5] = 2;
        assert!(matches!(
            parse(&two, false, false),
            Err(DnsError::Truncated { .. })
        ));
    }

    #[test]
    fn a_response_cut_by_the_kernel_keeps_the_answers_that_fit() {
        let r = response(
            2,
            "x.test",
            1,
            0,
            &[(1, 1, vec![10, 0, 0, 1]), (1, 1, vec![10, 0, 0, 2])],
        );
        let short = &r[..r.len() - 3];
        let m = parse(short, false, true).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, "10.0.0.1");
        assert!(m.answers_cut);
        // The same bytes claimed complete are malformed.
        assert!(parse(short, false, false).is_err());
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_refused() {
        // The question name is a pointer to itself.
        let mut m = query(1, "", 1);
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            parse(&m, false, false),
            Err(DnsError::BadPointer { at: 12 })
        );
        // A label followed by a pointer back to that label: a loop.
        let mut m = query(1, "", 1);
        m.truncate(12);
        m.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            parse(&m, false, false),
            Err(DnsError::BadPointer { at: 14 })
        );
        // Two CNAMEs whose data (at 36 and 50) point at each other.
        let r = response(
            1,
            "a.test",
            5,
            0,
            &[(5, 1, vec![0xc0, 50]), (5, 1, vec![0xc0, 36])],
        );
        assert_eq!(
            parse(&r, false, false),
            Err(DnsError::BadPointer { at: 36 })
        );
    }

    #[test]
    fn long_names_odd_labels_and_pointer_chains_are_refused() {
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(
            parse(&query(1, &long, 1), false, false),
            Err(DnsError::NameTooLong(12))
        );
        let mut m = query(1, "", 1);
        m.truncate(12);
        m.extend_from_slice(&[0x40, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&m, false, false), Err(DnsError::BadLabel(0x40)));
        // 300 pointers, each to the one before it: backwards, but too many.
        // They sit in the data of a first answer (at 23: the root, then the
        // pointers from 24); the second answer's owner is the last pointer.
        let mut m = vec![0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(&[0, 0, 99, 0, 1, 0, 0, 0, 1]);
        m.extend_from_slice(&601u16.to_be_bytes());
        m.push(0);
        for i in 0..300u16 {
            let target = if i == 0 { 23 } else { 24 + 2 * (i - 1) };
            m.extend_from_slice(&(0xc000 | target).to_be_bytes());
        }
        m.extend_from_slice(&(0xc000u16 | 622).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            parse(&m, false, false),
            Err(DnsError::TooManySteps { at: 624 })
        );
    }

    #[test]
    fn labels_are_escaped_and_the_root_is_a_dot() {
        let mut m = query(1, "", 1);
        m.truncate(12);
        m.extend_from_slice(&[3, b'A', b'.', 0x07, 0, 0, 1, 0, 1]);
        assert_eq!(
            parse(&m, false, false).unwrap().question.unwrap().name,
            "a\\.\\007"
        );
        assert_eq!(
            parse(&query(1, "", 2), false, false)
                .unwrap()
                .question
                .unwrap()
                .name,
            "."
        );
    }

    #[test]
    fn every_prefix_of_a_response_parses_or_errs_without_panicking() {
        let r = response(
            3,
            "svc.example.com",
            33,
            0,
            &[(
                33,
                5,
                [&[0, 1, 0, 2, 1, 187][..], &name("host.example.com")].concat(),
            )],
        );
        assert_eq!(
            parse(&r, false, false).unwrap().answers[0].data,
            "1 2 443 host.example.com"
        );
        for cut in 0..r.len() {
            let _ = parse(&r[..cut], false, true);
            let _ = parse(&r[..cut], false, false);
        }
    }
}
