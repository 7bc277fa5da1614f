//! The decoder: parsed records in, `sensor.v1` events out, with the
//! caches that give events their process context, file paths and key
//! names. Single-threaded; the adapter runs it on one thread fed by the
//! session callbacks, tests call it directly.

use std::sync::Arc;

use sensor_proto::{
    timestamp_from_unix_ns,
    v1::{Event, Process, event::Body},
};

use crate::{
    counters::EtwCounters,
    file::FileState,
    identity::{FILETIME_PER_MS, filetime_to_unix_ns},
    network::UdpPeers,
    paths::{DeviceMap, SidResolver, sid_to_string},
    process::ProcessState,
    record::EtwRecord,
    registry::KeyNames,
    router::{self, Parsed},
    state::Bounded,
};

/// Settings of the decoder; defaults suit a live host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Stable id of this boot of this host, hashed into every exec_id.
    pub boot_id: String,
    /// Unix time of boot in ns, so `monotonic_ns` is time since boot.
    pub boot_unix_ns: u64,
    /// How long a process start waits for its classic start (command
    /// line, SID), and how far apart their timestamps may be.
    pub cmdline_wait_ms: u32,
    /// How long a write through an unnamed FileObject waits for its name.
    pub file_hold_ms: u32,
    pub process_capacity: usize,
    pub file_name_capacity: usize,
    pub key_name_capacity: usize,
    pub udp_peer_capacity: usize,
    /// Held process starts and writes, each.
    pub hold_capacity: usize,
    /// Bytes of registry value data kept per event.
    pub max_value_data: usize,
    /// Report failed registry operations too (Status != 0).
    pub report_failed: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            boot_id: String::new(),
            boot_unix_ns: 0,
            cmdline_wait_ms: 2_000,
            file_hold_ms: 1_000,
            process_capacity: 65_536,
            file_name_capacity: 262_144,
            key_name_capacity: 131_072,
            udp_peer_capacity: 65_536,
            hold_capacity: 8_192,
            max_value_data: 4_096,
            report_failed: false,
        }
    }
}

pub struct Decoder {
    pub(crate) cfg: DecoderConfig,
    pub(crate) counters: Arc<EtwCounters>,
    pub(crate) devices: DeviceMap,
    sids: Box<dyn SidResolver>,
    users: Bounded<String, Option<String>>,
    pub(crate) procs: ProcessState,
    pub(crate) files: FileState,
    pub(crate) keys: KeyNames,
    pub(crate) udp: UdpPeers,
}

impl Decoder {
    #[must_use]
    pub fn new(
        cfg: DecoderConfig,
        devices: DeviceMap,
        sids: Box<dyn SidResolver>,
        counters: Arc<EtwCounters>,
    ) -> Self {
        Self {
            procs: ProcessState::new(&cfg),
            files: FileState::new(&cfg),
            keys: KeyNames::new(cfg.key_name_capacity),
            udp: UdpPeers::new(cfg.udp_peer_capacity),
            users: Bounded::new(4_096),
            cfg,
            counters,
            devices,
            sids,
        }
    }

    /// Replaces the device map (drives come and go).
    pub fn set_devices(&mut self, devices: DeviceMap) {
        self.devices = devices;
    }

    /// Routes, parses and applies one record.
    pub fn feed(&mut self, rec: &dyn EtwRecord, out: &mut Vec<Event>) {
        if let Some(parsed) = router::parse(rec, &self.counters) {
            self.apply(parsed, out);
        }
    }

    /// Applies one parsed record.
    pub fn apply(&mut self, parsed: Parsed, out: &mut Vec<Event>) {
        match parsed {
            Parsed::Process(p) => self.process(p, out),
            Parsed::File(f) => self.file(f, out),
            Parsed::Registry(r) => self.registry(r, out),
            Parsed::Network(n) => self.network(n, out),
            Parsed::Dns(d) => self.dns(d, out),
        }
    }

    /// Advances the decoder's clock to `now` (FILETIME): process starts
    /// that waited for their command line and writes that waited for their
    /// file name go out as they are.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
        self.expire_processes(now, out);
        self.expire_writes(now, out);
    }

    /// Sends everything held, at shutdown.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        self.tick(i64::MAX, out);
    }

    pub(crate) fn ms(ms: u32) -> i64 {
        i64::from(ms) * FILETIME_PER_MS
    }

    pub(crate) fn event(&self, ts: i64, process: Process, body: Body) -> Event {
        let unix_ns = filetime_to_unix_ns(ts);
        Event {
            time: Some(timestamp_from_unix_ns(unix_ns)),
            monotonic_ns: unix_ns.saturating_sub(self.cfg.boot_unix_ns),
            process: Some(Box::new(process)),
            body: Some(body),
            ..Event::default()
        }
    }

    /// The drive-letter form of an NT path; the NT form, counted, when no
    /// drive maps it.
    pub(crate) fn dos_path(&self, nt: &str) -> String {
        if let Some(p) = self.devices.to_dos(nt) {
            return p;
        }
        EtwCounters::inc(&self.counters.device_path_unmapped);
        nt.to_owned()
    }

    /// (SID text, account name) of a binary SID.
    pub(crate) fn user(&mut self, sid: &[u8]) -> Option<(String, String)> {
        let text = sid_to_string(sid)?;
        let name = match self.users.get(&text) {
            Some(cached) => cached.clone(),
            None => {
                let name = self.sids.account(sid, &text);
                self.users.insert(text.clone(), name.clone());
                name
            }
        };
        if name.is_none() {
            EtwCounters::inc(&self.counters.sid_unresolved);
        }
        Some((text, name.unwrap_or_default()))
    }
}
