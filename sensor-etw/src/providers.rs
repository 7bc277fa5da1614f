//! Provider GUIDs, event ids and keyword masks the sessions enable and the
//! router dispatches on. Values from the Win10/11 manifests
//! (jdu2600/Windows10EtwEvents `manifest/*.tsv`), the classic kernel GUIDs
//! from ferrisetw `src/provider/kernel_providers.rs`; see
//! shared/reference/windows-etw.md §1–§4.

use crate::record::Guid;

pub const KERNEL_PROCESS: Guid = Guid::from_str_const("22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716");
pub const KERNEL_FILE: Guid = Guid::from_str_const("edd08927-9cc4-4e65-b970-c2560fb5c289");
pub const KERNEL_REGISTRY: Guid = Guid::from_str_const("70eb4f03-c1de-4f73-a051-33d13d5413bd");
pub const KERNEL_NETWORK: Guid = Guid::from_str_const("7dd42a49-5329-4832-8dfd-43d979153a88");
pub const DNS_CLIENT: Guid = Guid::from_str_const("1c95126e-7eea-49a9-a3fe-a378b03ddb4d");

/// Classic (MOF) event GUIDs as they appear in `ProviderId` of records from
/// a kernel logger; their events are told apart by opcode (Id is 0).
pub const CLASSIC_PROCESS: Guid = Guid::from_str_const("3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c");
pub const CLASSIC_FILE_IO: Guid = Guid::from_str_const("90cbdc39-4a3e-11d1-84f4-0000f80464e3");

/// Keyword masks (Win10 18990 manifests; reference §2).
pub mod keywords {
    /// PROCESS 0x10 | IMAGE 0x40.
    pub const KERNEL_PROCESS: u64 = 0x50;
    /// FILENAME | CREATE | WRITE | DELETE_PATH | RENAME_SETLINK_PATH |
    /// CREATE_NEW_FILE, plus FILEIO (0x20) for Close, which carries only it.
    pub const KERNEL_FILE: u64 = 0x10 | 0x20 | 0x80 | 0x200 | 0x400 | 0x800 | 0x1000;
    /// CloseKey 0x1 | SetValueKey 0x100 | DeleteValueKey 0x200 | CreateKey
    /// 0x1000 | OpenKey 0x2000 | DeleteKey 0x4000.
    pub const KERNEL_REGISTRY: u64 = 0x7301;
    /// IPV4 0x10 | IPV6 0x20; TCP and UDP are told apart by event id only.
    pub const KERNEL_NETWORK: u64 = 0x30;
    /// Everything: DNS-Client's events are narrowed by the id filter.
    pub const DNS_CLIENT: u64 = 0;
}

/// Event ids per provider, for the sessions' `EVENT_FILTER_TYPE_EVENT_ID`
/// filters and the router.
pub mod ids {
    /// Kernel-Process: 1 start, 2 stop, 5 image load, 15 rundown
    /// (after CAPTURE_STATE).
    pub const PROCESS: [u16; 4] = [1, 2, 5, 15];
    /// Kernel-File: 10/11 name create/delete, 12 create, 14 close, 16 write,
    /// 26 delete path, 27 rename path, 30 create new file.
    pub const FILE: [u16; 8] = [10, 11, 12, 14, 16, 26, 27, 30];
    /// Kernel-Registry: 1 create, 2 open, 3 delete key, 5 set value,
    /// 6 delete value, 13 close.
    pub const REGISTRY: [u16; 6] = [1, 2, 3, 5, 6, 13];
    /// Kernel-Network: TCP connect 12/28, accept 15/31; UDP send 42/58,
    /// receive 43/59 (IPv4/IPv6).
    pub const NETWORK: [u16; 8] = [12, 15, 28, 31, 42, 43, 58, 59];
    /// DNS-Client: 3006 query start, 3008 query complete.
    pub const DNS: [u16; 2] = [3006, 3008];
}

/// Classic opcodes (MOF `Process_TypeGroup1`, `FileIo_Name`; learn.microsoft.com
/// "Process class", "FileIo_Name class").
pub mod opcodes {
    pub const PROCESS_START: u8 = 1;
    pub const PROCESS_DC_START: u8 = 3;
    pub const FILE_NAME: u8 = 0;
    pub const FILE_CREATE: u8 = 32;
    pub const FILE_RUNDOWN: u8 = 36;
}
