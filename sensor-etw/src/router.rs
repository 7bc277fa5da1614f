//! Routing: (provider GUID, event id) for manifest providers and (classic
//! GUID, opcode) for the classic kernel logger, decided from the header
//! alone, before any property lookup (TDH costs microseconds a property;
//! a route miss costs nothing). Then the route's parser reads the
//! properties into an owned record the decoder applies.

use std::sync::atomic::AtomicU64;

use crate::{
    counters::EtwCounters,
    dns::{self, DnsRecord},
    file::{self, FileRecord},
    network::{self, NetRecord},
    process::{self, ProcessRecord},
    providers::{
        CLASSIC_FILE_IO, CLASSIC_PROCESS, DNS_CLIENT, KERNEL_FILE, KERNEL_NETWORK, KERNEL_PROCESS,
        KERNEL_REGISTRY, opcodes,
    },
    record::EtwRecord,
    registry::{self, RegRecord},
};

/// What a record is, by header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    ProcessStart,
    ProcessRundown,
    ProcessStop,
    ImageLoad,
    ClassicProcessStart,
    ClassicProcessRundown,
    FileNameCreate,
    FileNameDelete,
    FileCreate,
    FileCreateNew,
    FileClose,
    FileWrite,
    FileDeletePath,
    FileRenamePath,
    /// Classic FileIo Name/FileCreate/FileRundown: FileKey -> name.
    ClassicFileName,
    RegCreateKey,
    RegOpenKey,
    RegDeleteKey,
    RegSetValue,
    RegDeleteValue,
    RegCloseKey,
    TcpConnect {
        v6: bool,
    },
    TcpAccept {
        v6: bool,
    },
    UdpSend {
        v6: bool,
    },
    UdpRecv {
        v6: bool,
    },
    DnsQuery,
    DnsResult,
}

/// The route of a header, or `None` for records no decoder handles.
#[must_use]
pub fn route(rec: &dyn EtwRecord) -> Option<Route> {
    let p = rec.provider();
    let id = rec.event_id();
    Some(if p == KERNEL_PROCESS {
        match id {
            1 => Route::ProcessStart,
            2 => Route::ProcessStop,
            5 => Route::ImageLoad,
            15 => Route::ProcessRundown,
            _ => return None,
        }
    } else if p == KERNEL_FILE {
        match id {
            10 => Route::FileNameCreate,
            11 => Route::FileNameDelete,
            12 => Route::FileCreate,
            14 => Route::FileClose,
            16 => Route::FileWrite,
            26 => Route::FileDeletePath,
            27 => Route::FileRenamePath,
            30 => Route::FileCreateNew,
            _ => return None,
        }
    } else if p == KERNEL_REGISTRY {
        match id {
            1 => Route::RegCreateKey,
            2 => Route::RegOpenKey,
            3 => Route::RegDeleteKey,
            5 => Route::RegSetValue,
            6 => Route::RegDeleteValue,
            13 => Route::RegCloseKey,
            _ => return None,
        }
    } else if p == KERNEL_NETWORK {
        match id {
            12 => Route::TcpConnect { v6: false },
            28 => Route::TcpConnect { v6: true },
            15 => Route::TcpAccept { v6: false },
            31 => Route::TcpAccept { v6: true },
            42 => Route::UdpSend { v6: false },
            58 => Route::UdpSend { v6: true },
            43 => Route::UdpRecv { v6: false },
            59 => Route::UdpRecv { v6: true },
            _ => return None,
        }
    } else if p == DNS_CLIENT {
        match id {
            3006 => Route::DnsQuery,
            3008 => Route::DnsResult,
            _ => return None,
        }
    } else if p == CLASSIC_PROCESS {
        match rec.opcode() {
            opcodes::PROCESS_START => Route::ClassicProcessStart,
            opcodes::PROCESS_DC_START => Route::ClassicProcessRundown,
            _ => return None,
        }
    } else if p == CLASSIC_FILE_IO {
        match rec.opcode() {
            opcodes::FILE_NAME | opcodes::FILE_CREATE | opcodes::FILE_RUNDOWN => {
                Route::ClassicFileName
            }
            _ => return None,
        }
    } else {
        return None;
    })
}

/// Header fields every record keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub pid: u32,
    pub tid: u32,
    /// FILETIME.
    pub ts: i64,
}

impl Header {
    #[must_use]
    pub fn of(rec: &dyn EtwRecord) -> Self {
        Self {
            pid: rec.process_id(),
            tid: rec.thread_id(),
            ts: rec.timestamp(),
        }
    }
}

/// A record read into owned, typed fields; `Send`, so the adapter's
/// callbacks can hand it to the decoder thread.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Process(ProcessRecord),
    File(FileRecord),
    Registry(RegRecord),
    Network(NetRecord),
    Dns(DnsRecord),
}

/// Routes and parses one record, counting it, a route miss, or a record
/// that lacks what its route needs (malformed, per provider).
pub fn parse(rec: &dyn EtwRecord, counters: &EtwCounters) -> Option<Parsed> {
    EtwCounters::inc(&counters.records);
    let Some(route) = route(rec) else {
        EtwCounters::inc(&counters.unrouted);
        return None;
    };
    parse_route(route, rec, counters)
}

/// The decoder a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Process,
    File,
    Registry,
    Network,
    Dns,
}

impl Route {
    #[must_use]
    pub fn family(self) -> Family {
        match self {
            Route::ProcessStart
            | Route::ProcessRundown
            | Route::ProcessStop
            | Route::ImageLoad
            | Route::ClassicProcessStart
            | Route::ClassicProcessRundown => Family::Process,
            Route::FileNameCreate
            | Route::FileNameDelete
            | Route::FileCreate
            | Route::FileCreateNew
            | Route::FileClose
            | Route::FileWrite
            | Route::FileDeletePath
            | Route::FileRenamePath
            | Route::ClassicFileName => Family::File,
            Route::RegCreateKey
            | Route::RegOpenKey
            | Route::RegDeleteKey
            | Route::RegSetValue
            | Route::RegDeleteValue
            | Route::RegCloseKey => Family::Registry,
            Route::TcpConnect { .. }
            | Route::TcpAccept { .. }
            | Route::UdpSend { .. }
            | Route::UdpRecv { .. } => Family::Network,
            Route::DnsQuery | Route::DnsResult => Family::Dns,
        }
    }
}

/// The malformed-record counter of a route's provider.
#[must_use]
pub fn malformed_counter(route: Route, counters: &EtwCounters) -> &AtomicU64 {
    match route.family() {
        Family::Process => &counters.malformed_process,
        Family::File => &counters.malformed_file,
        Family::Registry => &counters.malformed_registry,
        Family::Network => &counters.malformed_network,
        Family::Dns => &counters.malformed_dns,
    }
}

/// Parses a record already routed (the adapter routes on the header before
/// it asks TDH for the schema).
pub fn parse_route(route: Route, rec: &dyn EtwRecord, counters: &EtwCounters) -> Option<Parsed> {
    let parsed = match route.family() {
        Family::Process => process::parse(route, rec).map(Parsed::Process),
        Family::File => file::parse(route, rec).map(Parsed::File),
        Family::Registry => registry::parse(route, rec).map(Parsed::Registry),
        Family::Network => network::parse(route, rec).map(Parsed::Network),
        Family::Dns => dns::parse(route, rec).map(Parsed::Dns),
    };
    if parsed.is_none() {
        EtwCounters::inc(malformed_counter(route, counters));
    }
    parsed
}
