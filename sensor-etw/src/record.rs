//! The seam between ETW and the decoders: a plain GUID, the `EtwRecord`
//! trait the decoders read through, and `FixtureRecord`, an owned record
//! read from JSON fixtures so the decoders run on Linux.
//!
//! Getters return `None` when a property is missing or has another type or
//! width than asked for, as ferrisetw's `Parser::try_parse` does (NotFound,
//! InvalidType, LengthMismatch); the decoders count such records as
//! malformed instead of guessing.

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use serde::Deserialize;

/// A GUID as ETW headers carry it (`EVENT_RECORD.EventHeader.ProviderId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    /// Parses the registry form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`,
    /// with or without braces, in a `const` context.
    ///
    /// # Panics
    /// At compile time for a malformed literal; use `FromStr` for input.
    #[must_use]
    pub const fn from_str_const(s: &str) -> Self {
        match parse_guid(s.as_bytes()) {
            Some(g) => g,
            None => panic!("malformed GUID literal"),
        }
    }
}

const fn hex(c: u8) -> Option<u64> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as u64),
        b'a'..=b'f' => Some((c - b'a' + 10) as u64),
        b'A'..=b'F' => Some((c - b'A' + 10) as u64),
        _ => None,
    }
}

/// Reads `n` hex digits at `at`.
const fn hex_run(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let mut v = 0u64;
    let mut i = 0;
    while i < n {
        if at + i >= b.len() {
            return None;
        }
        match hex(b[at + i]) {
            Some(d) => v = (v << 4) | d,
            None => return None,
        }
        i += 1;
    }
    Some(v)
}

#[allow(clippy::cast_possible_truncation)] // each run is as wide as its field
const fn parse_guid(b: &[u8]) -> Option<Guid> {
    let (b, off) = if b.len() == 38 && b[0] == b'{' && b[37] == b'}' {
        (b, 1)
    } else if b.len() == 36 {
        (b, 0)
    } else {
        return None;
    };
    if b[off + 8] != b'-' || b[off + 13] != b'-' || b[off + 18] != b'-' || b[off + 23] != b'-' {
        return None;
    }
    let Some(d1) = hex_run(b, off, 8) else {
        return None;
    };
    let Some(d2) = hex_run(b, off + 9, 4) else {
        return None;
    };
    let Some(d3) = hex_run(b, off + 14, 4) else {
        return None;
    };
    let mut d4 = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        let at = if i < 2 {
            off + 19 + 2 * i
        } else {
            off + 24 + 2 * (i - 2)
        };
        match hex_run(b, at, 2) {
            Some(v) => d4[i] = v as u8,
            None => return None,
        }
        i += 1;
    }
    Some(Guid {
        data1: d1 as u32,
        data2: d2 as u16,
        data3: d3 as u16,
        data4: d4,
    })
}

/// A GUID string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed GUID {0:?}")]
pub struct GuidError(pub String);

impl FromStr for Guid {
    type Err = GuidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_guid(s.as_bytes()).ok_or_else(|| GuidError(s.to_owned()))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One ETW event record as the decoders see it: header fields, then typed
/// property getters by manifest (or MOF) property name.
pub trait EtwRecord {
    fn provider(&self) -> Guid;
    /// `EventDescriptor.Id`; 0 for classic (MOF) events.
    fn event_id(&self) -> u16;
    fn opcode(&self) -> u8;
    fn version(&self) -> u8;
    /// Header process id: the *logging* context, not always the subject.
    fn process_id(&self) -> u32;
    fn thread_id(&self) -> u32;
    /// Header timestamp as a FILETIME (100 ns since 1601-01-01 UTC).
    fn timestamp(&self) -> i64;
    /// Pointer size of the logging kernel (8 on x64), for MOF layouts such
    /// as the classic `UserSID` (a TOKEN_USER before the SID).
    fn pointer_size(&self) -> usize {
        8
    }

    fn u8(&self, name: &str) -> Option<u8>;
    fn u16(&self, name: &str) -> Option<u16>;
    fn u32(&self, name: &str) -> Option<u32>;
    fn u64(&self, name: &str) -> Option<u64>;
    fn i32(&self, name: &str) -> Option<i32>;
    /// A `Pointer` in-type (kernel object addresses), widened to 64 bits.
    fn pointer(&self, name: &str) -> Option<u64>;
    /// A UTF-16 (`UnicodeString`) property, without its terminator.
    fn string(&self, name: &str) -> Option<String>;
    /// An 8-bit (`AnsiString`) property, without its terminator.
    fn ansi(&self, name: &str) -> Option<String>;
    /// The raw bytes of a property (`Binary`, SIDs, anything).
    fn bytes(&self, name: &str) -> Option<Vec<u8>>;
    /// An address with an IPv4 or IPv6 out-type.
    fn ip(&self, name: &str) -> Option<IpAddr>;
}

/// A typed property value in a fixture; the tag keeps the width, so a
/// fixture can reproduce a property of an unexpected type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I32(i32),
    Ptr(u64),
    String(String),
    Ansi(String),
    /// Hex text.
    Bytes(String),
    Ip(IpAddr),
}

/// An owned record read from a fixture.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRecord {
    pub provider: Guid,
    #[serde(default)]
    pub id: u16,
    #[serde(default)]
    pub opcode: u8,
    #[serde(default)]
    pub version: u8,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub tid: u32,
    pub timestamp: i64,
    #[serde(default = "default_pointer_size")]
    pub pointer_size: usize,
    #[serde(default)]
    pub props: BTreeMap<String, Value>,
}

fn default_pointer_size() -> usize {
    8
}

/// Hex text to bytes; `None` for odd lengths or non-hex digits.
#[must_use]
pub fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| match p {
            [h, l] => Some(u8::try_from((hex(*h)? << 4) | hex(*l)?).ok()?),
            _ => None,
        })
        .collect()
}

impl FixtureRecord {
    fn prop(&self, name: &str) -> Option<&Value> {
        self.props.get(name)
    }
}

impl EtwRecord for FixtureRecord {
    fn provider(&self) -> Guid {
        self.provider
    }
    fn event_id(&self) -> u16 {
        self.id
    }
    fn opcode(&self) -> u8 {
        self.opcode
    }
    fn version(&self) -> u8 {
        self.version
    }
    fn process_id(&self) -> u32 {
        self.pid
    }
    fn thread_id(&self) -> u32 {
        self.tid
    }
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn pointer_size(&self) -> usize {
        self.pointer_size
    }
    fn u8(&self, name: &str) -> Option<u8> {
        match self.prop(name)? {
            Value::U8(v) => Some(*v),
            _ => None,
        }
    }
    fn u16(&self, name: &str) -> Option<u16> {
        match self.prop(name)? {
            Value::U16(v) => Some(*v),
            _ => None,
        }
    }
    fn u32(&self, name: &str) -> Option<u32> {
        match self.prop(name)? {
            Value::U32(v) => Some(*v),
            _ => None,
        }
    }
    fn u64(&self, name: &str) -> Option<u64> {
        match self.prop(name)? {
            Value::U64(v) => Some(*v),
            _ => None,
        }
    }
    fn i32(&self, name: &str) -> Option<i32> {
        match self.prop(name)? {
            Value::I32(v) => Some(*v),
            _ => None,
        }
    }
    fn pointer(&self, name: &str) -> Option<u64> {
        // ferrisetw's `Pointer` parse accepts 4- and 8-byte values.
        match self.prop(name)? {
            Value::Ptr(v) | Value::U64(v) => Some(*v),
            Value::U32(v) => Some(u64::from(*v)),
            _ => None,
        }
    }
    fn string(&self, name: &str) -> Option<String> {
        match self.prop(name)? {
            Value::String(v) => Some(v.clone()),
            _ => None,
        }
    }
    fn ansi(&self, name: &str) -> Option<String> {
        match self.prop(name)? {
            Value::Ansi(v) | Value::String(v) => Some(v.clone()),
            _ => None,
        }
    }
    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        match self.prop(name)? {
            Value::Bytes(v) => hex_bytes(v),
            _ => None,
        }
    }
    fn ip(&self, name: &str) -> Option<IpAddr> {
        match self.prop(name)? {
            Value::Ip(v) => Some(*v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_read_and_print_in_registry_form() {
        let s = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716";
        let g: Guid = s.parse().unwrap();
        assert_eq!(g.to_string(), s);
        assert_eq!(
            g,
            Guid::from_str_const("{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}")
        );
        assert_eq!(g.data1, 0x22fb_2cd6);
        assert_eq!(g.data4, [0xa0, 0xc7, 0x2f, 0xad, 0x1f, 0xd0, 0xe7, 0x16]);
        assert!(
            "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e71"
                .parse::<Guid>()
                .is_err()
        );
        assert!(
            "22fb2cd6x0e7b-422b-a0c7-2fad1fd0e716"
                .parse::<Guid>()
                .is_err()
        );
    }

    #[test]
    fn fixture_getters_keep_the_recorded_width() {
        let r: FixtureRecord = serde_json::from_str(
            r#"{"provider":"22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716","timestamp":1,
                "props":{"A":{"u32":7},"B":{"bytes":"0a0B"},"C":{"ptr":5}}}"#,
        )
        .unwrap();
        assert_eq!(r.u32("A"), Some(7));
        assert_eq!(r.u64("A"), None);
        assert_eq!(r.pointer("A"), Some(7));
        assert_eq!(r.bytes("B"), Some(vec![10, 11]));
        assert_eq!(r.pointer("C"), Some(5));
        assert_eq!(r.string("missing"), None);
        assert_eq!(hex_bytes("abc"), None);
        assert_eq!(hex_bytes("zz"), None);
    }
}
