//! Registry: Microsoft-Windows-Kernel-Registry 1 (create key), 3 (delete
//! key), 5 (set value), 6 (delete value), with KeyObject -> key path
//! bookkeeping from CreateKey/OpenKey (1/2: `BaseObject` + `RelativeName`)
//! evicted by CloseKey (13). SetValue/DeleteValue/DeleteKey carry only the
//! KeyObject (`KeyName` is empty on Win11), so a key opened before the
//! sensor started is unresolved (`key_unresolved`, counted).
//!
//! Layouts: jdu2600/Windows10EtwEvents manifest/Microsoft-Windows-Kernel-Registry.tsv
//! (`task_0CreateKey(Pointer BaseObject, Pointer KeyObject, UInt32 Status,
//! UInt32 Disposition, UnicodeString BaseName, UnicodeString RelativeName)`,
//! `task_0SetValueKey(Pointer KeyObject, UInt32 Status, UInt32 Type, UInt32
//! DataSize, UnicodeString KeyName, UnicodeString ValueName, UInt16
//! CapturedDataSize, Binary CapturedData, ...)`). CapturedData is empty
//! unless the session passes the capture filter (reference §3).

use sensor_proto::v1::{Event, RegistryEvent, RegistryOp, event::Body};

use crate::{
    counters::EtwCounters,
    decoder::Decoder,
    paths::registry_user_form,
    record::EtwRecord,
    router::{Header, Route},
    state::Bounded,
};

/// `Disposition` of a created key (REG_CREATED_NEW_KEY); 2 is opened.
const REG_CREATED_NEW_KEY: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegRecord {
    /// CreateKey (`create`) or OpenKey.
    Open {
        hdr: Header,
        create: bool,
        base: u64,
        key: u64,
        status: u32,
        disposition: u32,
        base_name: String,
        relative_name: String,
    },
    DeleteKey {
        hdr: Header,
        key: u64,
        status: u32,
        key_name: String,
    },
    SetValue {
        hdr: Header,
        key: u64,
        status: u32,
        value_type: u32,
        data_size: u32,
        key_name: String,
        value_name: String,
        data: Vec<u8>,
    },
    DeleteValue {
        hdr: Header,
        key: u64,
        status: u32,
        key_name: String,
        value_name: String,
    },
    Close {
        key: u64,
    },
}

pub fn parse(route: Route, rec: &dyn EtwRecord) -> Option<RegRecord> {
    let hdr = Header::of(rec);
    let key = rec.pointer("KeyObject")?;
    Some(match route {
        Route::RegCreateKey | Route::RegOpenKey => RegRecord::Open {
            hdr,
            create: route == Route::RegCreateKey,
            base: rec.pointer("BaseObject").unwrap_or(0),
            key,
            status: rec.u32("Status")?,
            disposition: rec.u32("Disposition").unwrap_or(0),
            base_name: rec.string("BaseName").unwrap_or_default(),
            relative_name: rec.string("RelativeName")?,
        },
        Route::RegDeleteKey => RegRecord::DeleteKey {
            hdr,
            key,
            status: rec.u32("Status")?,
            key_name: rec.string("KeyName").unwrap_or_default(),
        },
        Route::RegSetValue => RegRecord::SetValue {
            hdr,
            key,
            status: rec.u32("Status")?,
            value_type: rec.u32("Type")?,
            data_size: rec.u32("DataSize").unwrap_or(0),
            key_name: rec.string("KeyName").unwrap_or_default(),
            value_name: rec.string("ValueName").unwrap_or_default(),
            data: rec.bytes("CapturedData").unwrap_or_default(),
        },
        Route::RegDeleteValue => RegRecord::DeleteValue {
            hdr,
            key,
            status: rec.u32("Status")?,
            key_name: rec.string("KeyName").unwrap_or_default(),
            value_name: rec.string("ValueName").unwrap_or_default(),
        },
        Route::RegCloseKey => RegRecord::Close { key },
        _ => return None,
    })
}

/// KeyObject -> kernel key path (`\REGISTRY\MACHINE\...`).
pub(crate) type KeyNames = Bounded<u64, String>;

/// "REG_SZ", ... or the number as text (winnt.h REG_* values).
#[must_use]
pub fn type_name(t: u32) -> String {
    let name = match t {
        0 => "REG_NONE",
        1 => "REG_SZ",
        2 => "REG_EXPAND_SZ",
        3 => "REG_BINARY",
        4 => "REG_DWORD",
        5 => "REG_DWORD_BIG_ENDIAN",
        6 => "REG_LINK",
        7 => "REG_MULTI_SZ",
        8 => "REG_RESOURCE_LIST",
        9 => "REG_FULL_RESOURCE_DESCRIPTOR",
        10 => "REG_RESOURCE_REQUIREMENTS_LIST",
        11 => "REG_QWORD",
        other => return other.to_string(),
    };
    name.to_owned()
}

fn utf16(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The data as text for string and number types, when it is all there;
/// "" otherwise (binary types, or capture shorter than the number).
#[must_use]
pub fn data_text(value_type: u32, data: &[u8]) -> String {
    match value_type {
        1 | 2 | 6 => utf16(data).trim_end_matches('\0').to_owned(),
        // REG_MULTI_SZ: NUL-separated, double-NUL-terminated; one per line.
        7 => utf16(data)
            .trim_end_matches('\0')
            .split('\0')
            .collect::<Vec<_>>()
            .join("\n"),
        4 => data
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b).to_string())
            .unwrap_or_default(),
        5 => data
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b).to_string())
            .unwrap_or_default(),
        11 => data
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b).to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn join(base: &str, relative: &str) -> String {
    if relative.is_empty() {
        base.to_owned()
    } else if base.is_empty() {
        relative.to_owned()
    } else {
        format!("{}\\{}", base.trim_end_matches('\\'), relative)
    }
}

/// NTSTATUS as the signed value the proto carries.
fn status_i32(s: u32) -> i32 {
    i32::from_ne_bytes(s.to_ne_bytes())
}

impl Decoder {
    pub(crate) fn registry(&mut self, r: RegRecord, out: &mut Vec<Event>) {
        match r {
            RegRecord::Open {
                hdr,
                create,
                base,
                key,
                status,
                disposition,
                base_name,
                relative_name,
            } => {
                if status != 0 {
                    if create && self.cfg.report_failed {
                        let (raw, unresolved) = self.open_path(base, &base_name, &relative_name);
                        self.send_registry(
                            hdr,
                            RegistryOp::CreateKey,
                            raw,
                            unresolved,
                            status,
                            out,
                            |_| {},
                        );
                    } else {
                        EtwCounters::inc(&self.counters.registry_failed_ignored);
                    }
                    return;
                }
                let (raw, unresolved) = self.open_path(base, &base_name, &relative_name);
                if !unresolved {
                    for _ in self.keys.insert(key, raw.clone()) {
                        EtwCounters::inc(&self.counters.registry_keys_evicted);
                    }
                }
                if create && disposition == REG_CREATED_NEW_KEY {
                    self.send_registry(
                        hdr,
                        RegistryOp::CreateKey,
                        raw,
                        unresolved,
                        status,
                        out,
                        |_| {},
                    );
                }
            }
            RegRecord::DeleteKey {
                hdr,
                key,
                status,
                key_name,
            } => {
                if self.failed_ignored(status) {
                    return;
                }
                let (raw, unresolved) = self.key_path(key, &key_name);
                self.send_registry(
                    hdr,
                    RegistryOp::DeleteKey,
                    raw,
                    unresolved,
                    status,
                    out,
                    |_| {},
                );
            }
            RegRecord::SetValue {
                hdr,
                key,
                status,
                value_type,
                data_size,
                key_name,
                value_name,
                mut data,
            } => {
                if self.failed_ignored(status) {
                    return;
                }
                let (raw, unresolved) = self.key_path(key, &key_name);
                data.truncate(self.cfg.max_value_data);
                let text = data_text(value_type, &data);
                self.send_registry(
                    hdr,
                    RegistryOp::SetValue,
                    raw,
                    unresolved,
                    status,
                    out,
                    |e| {
                        e.value_name = value_name;
                        e.value_type = type_name(value_type);
                        e.data = data;
                        e.data_text = text;
                        e.data_size = data_size;
                    },
                );
            }
            RegRecord::DeleteValue {
                hdr,
                key,
                status,
                key_name,
                value_name,
            } => {
                if self.failed_ignored(status) {
                    return;
                }
                let (raw, unresolved) = self.key_path(key, &key_name);
                self.send_registry(
                    hdr,
                    RegistryOp::DeleteValue,
                    raw,
                    unresolved,
                    status,
                    out,
                    |e| {
                        e.value_name = value_name;
                    },
                );
            }
            RegRecord::Close { key } => {
                self.keys.remove(&key);
            }
        }
    }

    fn failed_ignored(&self, status: u32) -> bool {
        if status != 0 && !self.cfg.report_failed {
            EtwCounters::inc(&self.counters.registry_failed_ignored);
            return true;
        }
        false
    }

    /// The full path a create/open names: an absolute `RelativeName`; the
    /// base key's cached path, else its `BaseName`, joined with it; else
    /// the relative name alone, unresolved.
    fn open_path(&self, base: u64, base_name: &str, relative: &str) -> (String, bool) {
        if relative.starts_with('\\') {
            return (relative.to_owned(), false);
        }
        if let Some(b) = self.keys.get(&base) {
            return (join(b, relative), false);
        }
        if base_name.starts_with('\\') {
            return (join(base_name, relative), false);
        }
        (join(base_name, relative), true)
    }

    /// The path of a KeyObject: cached, else an absolute `KeyName`, else
    /// unresolved (the kernel's name as given, often empty).
    fn key_path(&self, key: u64, key_name: &str) -> (String, bool) {
        if let Some(p) = self.keys.get(&key) {
            return (p.clone(), false);
        }
        (key_name.to_owned(), !key_name.starts_with('\\'))
    }

    #[allow(clippy::too_many_arguments)] // the event's common fields, then its own
    fn send_registry(
        &mut self,
        hdr: Header,
        op: RegistryOp,
        raw: String,
        unresolved: bool,
        status: u32,
        out: &mut Vec<Event>,
        fill: impl FnOnce(&mut RegistryEvent),
    ) {
        if unresolved {
            EtwCounters::inc(&self.counters.registry_key_unresolved);
        }
        let mut e = RegistryEvent {
            op: op.into(),
            key: registry_user_form(&raw),
            raw_key: raw,
            status: status_i32(status),
            key_unresolved: unresolved,
            ..RegistryEvent::default()
        };
        fill(&mut e);
        let p = self.context(hdr.pid, hdr.tid);
        out.push(self.event(hdr.ts, p, Body::Registry(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_data_reads_as_text_for_strings_and_numbers() {
        let sz: Vec<u8> = "hi\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(data_text(1, &sz), "hi");
        let multi: Vec<u8> = "a\0b\0\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(data_text(7, &multi), "a\nb");
        assert_eq!(data_text(4, &[1, 0, 0, 0]), "1");
        assert_eq!(data_text(4, &[1, 0]), "");
        assert_eq!(data_text(5, &[0, 0, 0, 2]), "2");
        assert_eq!(data_text(11, &[0, 0, 0, 0, 1, 0, 0, 0]), "4294967296");
        assert_eq!(data_text(3, &[1, 2]), "");
        assert_eq!(type_name(4), "REG_DWORD");
        assert_eq!(type_name(99), "99");
    }
}
