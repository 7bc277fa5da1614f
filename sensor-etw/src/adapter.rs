//! The Windows side: three real-time sessions through ferrisetw 1.2.0, and
//! the ETW control calls ferrisetw lacks (QUERY for losses, FLUSH,
//! CAPTURE_STATE) through the `windows` crate. The only module that names
//! ferrisetw types.
//!
//! - `sensor-process` (UserTrace): Kernel-Process 1/2/5/15, flushed every
//!   `flush_ms` so starts arrive before short-lived processes are gone;
//! - `sensor-main` (UserTrace): Kernel-File, Kernel-Registry,
//!   Kernel-Network and DNS-Client, flushed every `main_flush_ms` unless the
//!   decoder is behind;
//! - `sensor-classic` (KernelTrace, PROCESS flag): command lines and SIDs.
//!
//! Callbacks route on the header, read properties through TDH, and
//! `try_send` the parsed record to the decoder thread; a full queue is
//! counted, never waited on. Nothing on the callback path can panic: no
//! unwrap, no indexing, and strings are decoded from bytes here rather than
//! through ferrisetw's `String` parse (its counted-string arm is
//! `unimplemented!()`, and a panic in a callback exits the process).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use ferrisetw::{
    EventRecord, GUID, KernelTrace, SchemaLocator, UserTrace,
    parser::{Parser, Pointer},
    provider::{EventFilter, Provider, kernel_providers},
    trace::{TraceProperties, stop_trace_by_name},
};
use sensor_proto::v1::Event;
use windows::{
    Win32::{
        Foundation::{ERROR_SUCCESS, PSID},
        Security::{LookupAccountSidW, SID_NAME_USE},
        Storage::FileSystem::QueryDosDeviceW,
        System::{
            Diagnostics::Etw::{
                CONTROLTRACE_HANDLE, ControlTraceW, EVENT_CONTROL_CODE_CAPTURE_STATE,
                EVENT_TRACE_CONTROL, EVENT_TRACE_CONTROL_FLUSH, EVENT_TRACE_CONTROL_QUERY,
                EVENT_TRACE_PROPERTIES, EnableTraceEx2,
            },
            SystemInformation::GetTickCount64,
        },
    },
    core::{PCWSTR, PWSTR},
};

use crate::{
    EtwCounters, EtwError, EtwOptions,
    decoder::Decoder,
    identity::UNIX_EPOCH_FILETIME,
    paths::{DeviceMap, SidResolver},
    providers::{self, ids, keywords},
    record::{EtwRecord, Guid},
    router::{self, Parsed},
};

pub(crate) const PROCESS_SESSION: &str = "sensor-process";
pub(crate) const MAIN_SESSION: &str = "sensor-main";
pub(crate) const CLASSIC_SESSION: &str = "sensor-classic";

/// `EVENT_HEADER_FLAG_32_BIT_HEADER` (evntcons.h).
const HEADER_FLAG_32_BIT: u16 = 0x0020;
/// Kernel-Process keyword for process events, for CAPTURE_STATE.
const PROCESS_KEYWORD: u64 = 0x10;

fn to_guid(g: GUID) -> Guid {
    Guid {
        data1: g.data1,
        data2: g.data2,
        data3: g.data3,
        data4: g.data4,
    }
}

fn from_guid(g: Guid) -> GUID {
    GUID::from_values(g.data1, g.data2, g.data3, g.data4)
}

/// Header fields only, for routing before any TDH work.
struct HeaderView<'a>(&'a EventRecord);

/// A record with its TDH parser.
struct Rec<'a> {
    record: &'a EventRecord,
    parser: Parser<'a, 'a>,
}

macro_rules! header_getters {
    ($rec:expr) => {
        fn provider(&self) -> Guid {
            to_guid($rec(self).provider_id())
        }
        fn event_id(&self) -> u16 {
            $rec(self).event_id()
        }
        fn opcode(&self) -> u8 {
            $rec(self).opcode()
        }
        fn version(&self) -> u8 {
            $rec(self).version()
        }
        fn process_id(&self) -> u32 {
            $rec(self).process_id()
        }
        fn thread_id(&self) -> u32 {
            $rec(self).thread_id()
        }
        fn timestamp(&self) -> i64 {
            // System time (FILETIME): ferrisetw does not ask for raw stamps.
            $rec(self).raw_timestamp()
        }
        fn pointer_size(&self) -> usize {
            if $rec(self).event_flags() & HEADER_FLAG_32_BIT != 0 {
                4
            } else {
                8
            }
        }
    };
}

impl EtwRecord for HeaderView<'_> {
    header_getters!(|s: &Self| s.0);
    fn u8(&self, _: &str) -> Option<u8> {
        None
    }
    fn u16(&self, _: &str) -> Option<u16> {
        None
    }
    fn u32(&self, _: &str) -> Option<u32> {
        None
    }
    fn u64(&self, _: &str) -> Option<u64> {
        None
    }
    fn i32(&self, _: &str) -> Option<i32> {
        None
    }
    fn pointer(&self, _: &str) -> Option<u64> {
        None
    }
    fn string(&self, _: &str) -> Option<String> {
        None
    }
    fn ansi(&self, _: &str) -> Option<String> {
        None
    }
    fn bytes(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn ip(&self, _: &str) -> Option<IpAddr> {
        None
    }
}

impl EtwRecord for Rec<'_> {
    header_getters!(|s: &Self| s.record);
    fn u8(&self, name: &str) -> Option<u8> {
        self.parser.try_parse(name).ok()
    }
    fn u16(&self, name: &str) -> Option<u16> {
        self.parser.try_parse(name).ok()
    }
    fn u32(&self, name: &str) -> Option<u32> {
        self.parser.try_parse(name).ok()
    }
    fn u64(&self, name: &str) -> Option<u64> {
        self.parser.try_parse(name).ok()
    }
    fn i32(&self, name: &str) -> Option<i32> {
        self.parser.try_parse(name).ok()
    }
    fn pointer(&self, name: &str) -> Option<u64> {
        let p: Pointer = self.parser.try_parse(name).ok()?;
        u64::try_from(*p).ok()
    }
    fn string(&self, name: &str) -> Option<String> {
        let b: Vec<u8> = self.parser.try_parse(name).ok()?;
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        let end = units.iter().position(|u| *u == 0).unwrap_or(units.len());
        Some(String::from_utf16_lossy(
            units.get(..end).unwrap_or_default(),
        ))
    }
    fn ansi(&self, name: &str) -> Option<String> {
        let b: Vec<u8> = self.parser.try_parse(name).ok()?;
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        Some(String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned())
    }
    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.parser.try_parse(name).ok()
    }
    fn ip(&self, name: &str) -> Option<IpAddr> {
        self.parser.try_parse(name).ok()
    }
}

/// The callback of every provider: route, parse, hand over.
fn callback(
    tx: Sender<Parsed>,
    counters: Arc<EtwCounters>,
) -> impl FnMut(&EventRecord, &SchemaLocator) + Send + Sync + 'static {
    move |record: &EventRecord, locator: &SchemaLocator| {
        EtwCounters::inc(&counters.records);
        let Some(route) = router::route(&HeaderView(record)) else {
            EtwCounters::inc(&counters.unrouted);
            return;
        };
        let Ok(schema) = locator.event_schema(record) else {
            EtwCounters::inc(router::malformed_counter(route, &counters));
            return;
        };
        let rec = Rec {
            record,
            parser: Parser::create(record, &schema),
        };
        if let Some(parsed) = router::parse_route(route, &rec, &counters)
            && tx.try_send(parsed).is_err()
        {
            EtwCounters::inc(&counters.decode_queue_dropped);
        }
    }
}

fn provider(
    guid: Guid,
    any: u64,
    event_ids: &[u16],
    tx: &Sender<Parsed>,
    counters: &Arc<EtwCounters>,
) -> Provider {
    let mut p = Provider::by_guid(from_guid(guid));
    if any != 0 {
        p = p.any(any);
    }
    p.add_filter(EventFilter::ByEventIds(event_ids.to_vec()))
        .add_callback(callback(tx.clone(), Arc::clone(counters)))
        .build()
}

fn session_error(session: &str, e: impl std::fmt::Debug) -> EtwError {
    EtwError::Session {
        session: session.to_owned(),
        reason: format!("{e:?}"),
    }
}

/// EVENT_TRACE_PROPERTIES with room for the logger and file names, as
/// ControlTraceW wants it.
#[repr(C)]
struct PropertiesBuf {
    props: EVENT_TRACE_PROPERTIES,
    names: [u16; 1024],
}

/// ControlTraceW by session name; the filled properties on success.
fn control(name: &str, code: EVENT_TRACE_CONTROL) -> Option<EVENT_TRACE_PROPERTIES> {
    let mut buf = PropertiesBuf {
        props: EVENT_TRACE_PROPERTIES::default(),
        names: [0; 1024],
    };
    let props_size = u32::try_from(std::mem::size_of::<EVENT_TRACE_PROPERTIES>()).ok()?;
    buf.props.Wnode.BufferSize = u32::try_from(std::mem::size_of::<PropertiesBuf>()).ok()?;
    buf.props.LoggerNameOffset = props_size;
    buf.props.LogFileNameOffset = props_size + 1024;
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    // SAFETY: `buf` is a properties block of the size it declares, with
    // room for both names at the offsets it declares; `wide` is
    // NUL-terminated and outlives the call.
    let rc = unsafe {
        ControlTraceW(
            CONTROLTRACE_HANDLE::default(),
            PCWSTR(wide.as_ptr()),
            &mut buf.props,
            code,
        )
    };
    (rc == ERROR_SUCCESS).then_some(buf.props)
}

/// Asks Kernel-Process for its rundown (event 15) of running processes.
fn capture_state(counters: &EtwCounters) {
    let Some(props) = control(PROCESS_SESSION, EVENT_TRACE_CONTROL_QUERY) else {
        EtwCounters::inc(&counters.session_control_failed);
        return;
    };
    // SAFETY: after a QUERY the union holds the session's handle
    // (HistoricalContext); reading a u64 from it is always defined.
    let handle = CONTROLTRACE_HANDLE {
        Value: unsafe { props.Wnode.Anonymous1.HistoricalContext },
    };
    let guid = from_guid(providers::KERNEL_PROCESS);
    // SAFETY: plain values and a GUID that outlives the call.
    let rc = unsafe {
        EnableTraceEx2(
            handle,
            &guid,
            EVENT_CONTROL_CODE_CAPTURE_STATE.0,
            5,
            PROCESS_KEYWORD,
            0,
            0,
            None,
        )
    };
    if rc != ERROR_SUCCESS {
        EtwCounters::inc(&counters.session_control_failed);
    }
}

/// Stores a session's loss totals (they are the session's own counts).
fn poll_losses(name: &str, events: &AtomicU64, buffers: &AtomicU64, counters: &EtwCounters) {
    match control(name, EVENT_TRACE_CONTROL_QUERY) {
        Some(p) => {
            events.store(u64::from(p.EventsLost), Ordering::Relaxed);
            buffers.store(u64::from(p.RealTimeBuffersLost), Ordering::Relaxed);
        }
        None => EtwCounters::inc(&counters.session_control_failed),
    }
}

fn poll_all_losses(c: &EtwCounters) {
    poll_losses(
        PROCESS_SESSION,
        &c.process_session_events_lost,
        &c.process_session_buffers_lost,
        c,
    );
    poll_losses(
        MAIN_SESSION,
        &c.main_session_events_lost,
        &c.main_session_buffers_lost,
        c,
    );
    poll_losses(
        CLASSIC_SESSION,
        &c.classic_session_events_lost,
        &c.classic_session_buffers_lost,
        c,
    );
}

fn flush(name: &str, counters: &EtwCounters) {
    if control(name, EVENT_TRACE_CONTROL_FLUSH).is_none() {
        EtwCounters::inc(&counters.session_control_failed);
    }
}

/// Drive letters to NT devices, from QueryDosDeviceW.
fn device_map() -> DeviceMap {
    let mut map = DeviceMap::new();
    map.insert(r"\Device\Mup", r"\");
    for letter in 'A'..='Z' {
        let drive = format!("{letter}:");
        let wide: Vec<u16> = drive.encode_utf16().chain(std::iter::once(0)).collect();
        let mut target = [0u16; 1024];
        // SAFETY: `wide` is NUL-terminated; the target is a valid slice.
        let n = unsafe { QueryDosDeviceW(PCWSTR(wide.as_ptr()), Some(&mut target)) };
        let Ok(n) = usize::try_from(n) else { continue };
        // The answer is a list of NUL-terminated names; the first is current.
        let first = target.get(..n).unwrap_or_default();
        let end = first.iter().position(|u| *u == 0).unwrap_or(first.len());
        let device = String::from_utf16_lossy(first.get(..end).unwrap_or_default());
        if !device.is_empty() {
            map.insert(&device, &drive);
        }
    }
    map
}

/// SIDs to `DOMAIN\name` through LookupAccountSidW.
struct AccountLookup;

impl SidResolver for AccountLookup {
    fn account(&mut self, sid: &[u8], _text: &str) -> Option<String> {
        let mut copy = sid.to_vec();
        let mut name = [0u16; 256];
        let mut domain = [0u16; 256];
        let mut name_len = 256u32;
        let mut domain_len = 256u32;
        let mut use_ = SID_NAME_USE::default();
        // SAFETY: `copy` holds a whole SID (sid_to_string checked its
        // length); the buffers are as long as the lengths passed.
        let ok = unsafe {
            LookupAccountSidW(
                PCWSTR::null(),
                PSID(copy.as_mut_ptr().cast()),
                PWSTR(name.as_mut_ptr()),
                &mut name_len,
                PWSTR(domain.as_mut_ptr()),
                &mut domain_len,
                &mut use_,
            )
        };
        ok.ok()?;
        let name = String::from_utf16_lossy(name.get(..usize::try_from(name_len).ok()?)?);
        let domain = String::from_utf16_lossy(domain.get(..usize::try_from(domain_len).ok()?)?);
        Some(if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        })
    }
}

fn now_filetime() -> i64 {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    i64::try_from(ns / 100)
        .unwrap_or(i64::MAX)
        .saturating_add(UNIX_EPOCH_FILETIME)
}

fn boot_unix_ns() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    // SAFETY: no arguments.
    let up_ms = unsafe { GetTickCount64() };
    now.saturating_sub(up_ms.saturating_mul(1_000_000))
}

fn send(out: &Sender<Event>, counters: &EtwCounters, events: &mut Vec<Event>) {
    for e in events.drain(..) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = out.try_send(e) {
            EtwCounters::inc(&counters.queue_dropped);
        }
    }
}

/// The decoder thread: applies parsed records, ticks the clock, refreshes
/// drive letters, and drains everything at stop.
fn decode_loop(
    mut decoder: Decoder,
    rx: Receiver<Parsed>,
    out: Sender<Event>,
    counters: Arc<EtwCounters>,
    stop: Arc<AtomicBool>,
) {
    let mut events = Vec::new();
    let mut last_tick = Instant::now();
    let mut last_devices = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(p) => decoder.apply(p, &mut events),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            decoder.tick(now_filetime(), &mut events);
            last_tick = Instant::now();
        }
        if last_devices.elapsed() >= Duration::from_secs(60) {
            decoder.set_devices(device_map());
            last_devices = Instant::now();
        }
        send(&out, &counters, &mut events);
        if stop.load(Ordering::Relaxed) && rx.is_empty() {
            break;
        }
    }
    while let Ok(p) = rx.try_recv() {
        decoder.apply(p, &mut events);
    }
    decoder.drain(&mut events);
    send(&out, &counters, &mut events);
}

/// The control thread: forced flushes and loss polling.
fn control_loop(
    options: &EtwOptions,
    rx_len: impl Fn() -> usize,
    counters: &EtwCounters,
    stop: &AtomicBool,
) {
    let fast = Duration::from_millis(u64::from(options.flush_ms.max(1)));
    let main_every = Duration::from_millis(u64::from(options.main_flush_ms.max(1)));
    let mut last_main = Instant::now();
    let mut last_poll = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(fast);
        flush(PROCESS_SESSION, counters);
        flush(CLASSIC_SESSION, counters);
        // Flushing the busy session only adds work while the decoder is
        // behind; its buffers deliver when full anyway.
        if last_main.elapsed() >= main_every && rx_len() < options.decode_queue / 2 {
            flush(MAIN_SESSION, counters);
            last_main = Instant::now();
        }
        if last_poll.elapsed() >= Duration::from_secs(1) {
            poll_all_losses(counters);
            last_poll = Instant::now();
        }
    }
}

pub(crate) struct Running {
    process: Option<UserTrace>,
    main: Option<UserTrace>,
    classic: Option<KernelTrace>,
    /// Stops flushing and polling.
    stop_control: Arc<AtomicBool>,
    /// Tells the decoder to drain and end, once the traces are stopped.
    stop_decoder: Arc<AtomicBool>,
    control: Option<JoinHandle<()>>,
    decoder: Option<JoinHandle<()>>,
    counters: Arc<EtwCounters>,
}

impl Running {
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop_control.store(true, Ordering::Relaxed);
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
        poll_all_losses(&self.counters);
        // Stopping the traces ends their callbacks; the decoder then drains.
        if let Some(t) = self.process.take() {
            let _ = t.stop();
        }
        if let Some(t) = self.main.take() {
            let _ = t.stop();
        }
        if let Some(t) = self.classic.take() {
            let _ = t.stop();
        }
        self.stop_decoder.store(true, Ordering::Relaxed);
        if let Some(h) = self.decoder.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn start(
    options: &EtwOptions,
    out: Sender<Event>,
    counters: Arc<EtwCounters>,
) -> Result<(Running, Vec<String>), EtwError> {
    // Sessions outlive a crashed sensor; take their names back.
    for name in [PROCESS_SESSION, MAIN_SESSION, CLASSIC_SESSION] {
        let _ = stop_trace_by_name(name);
    }
    let (tx, rx) = bounded::<Parsed>(options.decode_queue.max(1));
    let props = TraceProperties {
        buffer_size: options.buffer_kb,
        min_buffer: options.min_buffers,
        max_buffer: options.max_buffers,
        ..TraceProperties::default()
    };

    let mut decoder_cfg = options.decoder.clone();
    decoder_cfg.boot_unix_ns = boot_unix_ns();
    if decoder_cfg.boot_id.is_empty() {
        // Stable for this boot to the second; the sensor should pass its own.
        decoder_cfg.boot_id = format!("boot-{}", decoder_cfg.boot_unix_ns / 1_000_000_000);
    }
    let decoder = Decoder::new(
        decoder_cfg,
        device_map(),
        Box::new(AccountLookup),
        Arc::clone(&counters),
    );
    let stop_control = Arc::new(AtomicBool::new(false));
    let stop_decoder = Arc::new(AtomicBool::new(false));
    let decoder_thread = {
        let (rx, out, counters, stop) = (
            rx.clone(),
            out,
            Arc::clone(&counters),
            Arc::clone(&stop_decoder),
        );
        std::thread::Builder::new()
            .name("etw-decode".into())
            .spawn(move || decode_loop(decoder, rx, out, counters, stop))
            .map_err(|e| session_error("decoder", e))?
    };
    let mut running = Running {
        process: None,
        main: None,
        classic: None,
        stop_control: Arc::clone(&stop_control),
        stop_decoder,
        control: None,
        decoder: Some(decoder_thread),
        counters: Arc::clone(&counters),
    };

    // The classic session first: its DCStart rundown and Start records
    // carry the command lines the process session's starts wait for.
    let classic = KernelTrace::new()
        .named(CLASSIC_SESSION.to_owned())
        .set_trace_properties(props)
        .enable(
            Provider::kernel(&kernel_providers::PROCESS_PROVIDER)
                .add_callback(callback(tx.clone(), Arc::clone(&counters)))
                .build(),
        )
        .start_and_process()
        .map_err(|e| session_error(CLASSIC_SESSION, e))?;
    running.classic = Some(classic);

    let process = UserTrace::new()
        .named(PROCESS_SESSION.to_owned())
        .set_trace_properties(props)
        .enable(provider(
            providers::KERNEL_PROCESS,
            keywords::KERNEL_PROCESS,
            &ids::PROCESS,
            &tx,
            &counters,
        ))
        .start_and_process()
        .map_err(|e| session_error(PROCESS_SESSION, e))?;
    running.process = Some(process);

    let main = UserTrace::new()
        .named(MAIN_SESSION.to_owned())
        .set_trace_properties(props)
        .enable(provider(
            providers::KERNEL_FILE,
            keywords::KERNEL_FILE,
            &ids::FILE,
            &tx,
            &counters,
        ))
        .enable(provider(
            providers::KERNEL_REGISTRY,
            keywords::KERNEL_REGISTRY,
            &ids::REGISTRY,
            &tx,
            &counters,
        ))
        .enable(provider(
            providers::KERNEL_NETWORK,
            keywords::KERNEL_NETWORK,
            &ids::NETWORK,
            &tx,
            &counters,
        ))
        .enable(provider(
            providers::DNS_CLIENT,
            keywords::DNS_CLIENT,
            &ids::DNS,
            &tx,
            &counters,
        ))
        .start_and_process()
        .map_err(|e| session_error(MAIN_SESSION, e))?;
    running.main = Some(main);
    drop(tx);

    capture_state(&counters);

    let control = {
        let (options, counters, stop) = (options.clone(), Arc::clone(&counters), stop_control);
        std::thread::Builder::new()
            .name("etw-control".into())
            .spawn(move || control_loop(&options, || rx.len(), &counters, &stop))
            .map_err(|e| session_error("control", e))?
    };
    running.control = Some(control);

    let hooks = vec![
        format!("etw:{PROCESS_SESSION}:Microsoft-Windows-Kernel-Process"),
        format!("etw:{MAIN_SESSION}:Microsoft-Windows-Kernel-File"),
        format!("etw:{MAIN_SESSION}:Microsoft-Windows-Kernel-Registry"),
        format!("etw:{MAIN_SESSION}:Microsoft-Windows-Kernel-Network"),
        format!("etw:{MAIN_SESSION}:Microsoft-Windows-DNS-Client"),
        format!("etw:{CLASSIC_SESSION}:NT Kernel Process"),
    ];
    Ok((running, hooks))
}
