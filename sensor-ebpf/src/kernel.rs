//! Maps and the small readers every program shares: kernel struct fields at
//! BTF offsets, the current task's identity, and the dentry walk.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    ptr::{null, read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task_btf, bpf_ktime_get_boot_ns,
            bpf_probe_read_kernel as bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str,
            bpf_ringbuf_output, bpf_ringbuf_query, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    programs::TracePointContext,
};
use sensor_common::{
    Config, Header, KernelOffsets, NAME_READ, OFFSET_MISSING, PATH_BUF, PATH_DEPTH, ResultEvent,
    SYSCALL_SPEC_SLOTS, SyscallSpec, TaskInfo, counter, kfunc, kind,
};

/// include/uapi/linux/bpf.h: `bpf_ringbuf_query` and output flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Every record, in reservation order. Userspace sets the real size at load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Records lost because the ring was full, per CPU, indexed by kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// What programs did instead of sending a record (other than drop it), per
/// CPU, indexed by `counter::*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// `struct syscall_trace_enter { struct trace_entry ent; int nr; unsigned long args[6]; }`
/// and `struct syscall_trace_exit { ...; int nr; long ret; }`
/// (kernel/trace/trace_syscalls.c): argument `i` is at 16 + 8 i, the return
/// value at 16. This layout is the tracepoint ABI, unchanged since 2.6.
pub const fn arg(i: usize) -> usize {
    16 + 8 * i
}
pub const RET: usize = 16;

/// How each file syscall's arguments map onto a record, indexed by syscall
/// number (an array: a lookup is an index, not a hash); `op` 0 marks the
/// syscalls without a spec.
#[map]
pub static SYSCALL_SPECS: Array<SyscallSpec> = Array::with_max_entries(SYSCALL_SPEC_SLOTS, 0);

/// The field at `off` of this tracepoint's record, with a plain load: the
/// verifier lets a tracepoint program load its record (tp_prog_is_valid_access
/// in kernel/trace/bpf_trace.c) at constant, aligned offsets from 8 on, where
/// aya's `read_at` copies it with a helper call.
#[inline(always)]
pub fn record<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: `off` is a constant inside the record (callers pass `RET`,
    // `arg(i)` or 8); the verifier checks it.
    unsafe { read_volatile(ctx.as_ptr().cast::<u8>().add(off).cast::<T>()) }
}

/// The spec of the syscall that fired, by its number at offset 8. (The
/// record's `common_type` is not there for BPF: perf_call_bpf_enter() in
/// kernel/trace/trace_syscalls.c puts a pt_regs pointer in its place.)
#[inline(always)]
pub fn syscall_spec(ctx: &TracePointContext) -> Option<SyscallSpec> {
    let nr: i32 = record(ctx, 8);
    SYSCALL_SPECS
        .get(nr as u32)
        .copied()
        .filter(|spec| spec.op != 0)
}

/// The current task's user registers, as `bpf_task_pt_regs` finds them.
/// They keep a syscall's arguments until it returns: the syscall writes its
/// value to ax only. Programs that pick arguments by a spec's index read them
/// here, not from their record: loading the record at an argument a syscall
/// lacks would make the kernel refuse to attach the program to that
/// syscall's tracepoint (perf_event_set_bpf_prog: max_ctx_offset). (The
/// pt_regs pointer at the head of a syscall tracepoint's record is no use at
/// exit: in current kernels perf_call_bpf_exit() in
/// kernel/trace/trace_syscalls.c passes the tracer's own registers there.)
/// `task` is the current task's BTF pointer (`current_task_btf`).
///
/// The registers sit at a distance from the task's stack page that is fixed
/// for a kernel build (task_pt_regs(): THREAD_SIZE less the pt_regs and any
/// padding, arch/x86/include/asm/processor.h), but that no BTF type states.
/// Where the programs load kernel memory directly (`kernel_loads`), the
/// first call asks the helper and keeps the distance; later calls add it to
/// `task->stack`, a load where the helper was a call and a return (~30 ns
/// through this CPU's return thunk) on every hooked syscall. Elsewhere the
/// helper answers every call: before Linux 6.17 the verifier refuses the
/// subtraction below (a pointer less a number of unknown range), and it
/// never walks the branch that a constant `kernel_loads` rules out.
#[inline(always)]
pub fn task_regs(task: *const u8) -> u64 {
    // SAFETY: a helper taking the task's BTF pointer.
    let ask = || unsafe { bpf_task_pt_regs(task.cast_mut().cast()) as u64 };
    if !kernel_loads() {
        return ask();
    }
    let Some(known) = REGS_FROM_STACK.get_ptr_mut(0) else {
        return ask();
    };
    let known = known.cast::<u64>();
    let stack: u64 = read(task as u64, koff!(task_stack)).unwrap_or(0);
    if stack == 0 {
        return ask();
    }
    // SAFETY: word 0 of the map value; a torn read is impossible for a u64.
    let distance = unsafe { read_volatile(known) };
    if distance != 0 {
        return stack + distance;
    }
    let regs = ask();
    // The helper's pointer as a plain number, through word 1 of the map
    // value: the verifier allows no arithmetic between it and `stack`.
    // SAFETY: word 1 of the map value.
    let regs_number = unsafe {
        write_volatile(known.add(1), regs);
        read_volatile(known.add(1))
    };
    let distance = regs_number.wrapping_sub(stack);
    if regs_number > stack && distance < MAX_REGS_FROM_STACK {
        // SAFETY: word 0 of the map value; every CPU that races here
        // stores the same distance.
        unsafe { write_volatile(known, distance) };
    }
    regs
}

/// Word 0: bytes from `task->stack` to the task's user registers once
/// learned (`task_regs`), 0 before; word 1: where `task_regs` turns the
/// helper's pointer into a number.
#[map]
static REGS_FROM_STACK: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// Kernel stacks are 16 KiB on x86-64 (32 KiB with KASAN; arm64 likewise):
/// a distance beyond this is not the stack's top, and is never kept.
const MAX_REGS_FROM_STACK: u64 = 1 << 20;

/// Argument `idx` (0-5) of the syscall in `regs` (`task_regs`). The
/// offsets sit in an 8-slot table indexed by `idx & 7` taken through a
/// volatile copy: LLVM, which knows `idx <= 5`, would drop a plain mask,
/// and the verifier, which does not, would refuse the variable read.
#[inline(always)]
pub fn regs_syscall_arg(regs: u64, idx: u8) -> u64 {
    if idx > 5 {
        return 0;
    }
    let at = koff!(syscall_regs);
    let table = [
        at[0],
        at[1],
        at[2],
        at[3],
        at[4],
        at[5],
        OFFSET_MISSING,
        OFFSET_MISSING,
    ];
    // SAFETY: a local.
    let slot = unsafe { read_volatile(&idx) } & 7;
    read(regs, table[usize::from(slot)]).unwrap_or(0)
}

/// tgids of the sensor's own process tree (the sensor adds itself; the fork
/// program adds its children), whose activity is never reported.
#[map]
pub static OWN_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Mount ids whose files are never reported (from the ignored path
/// prefixes), as a bitmap: checking one is an array load (the verifier
/// inlines array lookups), where a hash lookup was a helper call and a hash
/// on every file event.
#[map]
pub static IGNORED_MOUNTS: Array<u64> =
    Array::with_max_entries(sensor_common::maps::IGNORED_MOUNT_WORDS, 0);

/// Whether the mount of `path` is ignored. Checked before any walk, so
/// ignored files (e.g. /proc) cost one read and one lookup.
#[inline(always)]
pub fn on_ignored_mount(path: &PathRef) -> bool {
    if path.mnt == 0 || koff!(mount_mnt) == OFFSET_MISSING {
        return false;
    }
    let Some(id) = read::<i32>(path.mnt - u64::from(koff!(mount_mnt)), koff!(mount_mnt_id)) else {
        return false;
    };
    bit_set(&IGNORED_MOUNTS, id as u32)
}

/// Whether bit `n` (bit `n % 64` of word `n / 64`) of a bitmap map is set:
/// an array load, which the verifier inlines, where a hash lookup would be
/// a helper call.
#[inline(always)]
pub fn bit_set(bitmap: &Array<u64>, n: u32) -> bool {
    bitmap
        .get(n / 64)
        .is_some_and(|word| word >> (n % 64) & 1 != 0)
}

/// How many tgids `OWN_TGIDS` holds: the sensor's live descendants. While
/// there are none, as is usual, the own-tree check is one comparison instead
/// of a hash lookup (~150 ns in this VM).
#[map]
static OWN_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (two's complement for a subtraction) to `OWN_COUNT`.
#[inline(always)]
fn add_own_count(delta: u64) {
    if let Some(n) = OWN_COUNT.get_ptr_mut(0) {
        // SAFETY: a u64 map value shared between CPUs: an atomic add.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(n, delta) };
    }
}

/// Whether `tgid` is the sensor or one of its descendants.
#[inline(always)]
pub fn is_own(cfg: &Config, tgid: u32) -> bool {
    tgid == cfg.sensor_tgid
        // SAFETY: a u64 map value; a torn read is impossible for a u64 load.
        || (OWN_COUNT.get_ptr(0).is_some_and(|n| unsafe { read_volatile(n) } != 0)
            // SAFETY: plain integer key; the value is not kept.
            && unsafe { OWN_TGIDS.get(&tgid) }.is_some())
}

/// A child of the sensor's tree joins it. The fork tracepoint fires before
/// the child is first woken (kernel_clone(), kernel/fork.c), so no event of
/// the child is checked before both writes. A full map only lets the child be
/// reported.
#[inline(always)]
pub fn join_own_tree(tgid: u32) {
    if OWN_TGIDS.insert(&tgid, &1, 0).is_ok() {
        add_own_count(1);
    }
}

/// A process leaves the sensor's tree at its exit, if it was in it.
#[inline(always)]
pub fn leave_own_tree(cfg: &Config, tgid: u32) {
    if tgid != cfg.sensor_tgid && is_own(cfg, tgid) && OWN_TGIDS.remove(&tgid).is_ok() {
        add_own_count(1u64.wrapping_neg());
    }
}

/// The loaded configuration, or `None` before userspace wrote it.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// The configuration, unless `task` (the current task's BTF pointer) is in
/// the sensor's own tree (whose activity is never reported).
#[inline(always)]
pub fn config_for_others(task: *const u8) -> Option<&'static Config> {
    let cfg = config()?;
    (!is_own(cfg, task_tgid(task))).then_some(cfg)
}

/// Counts a record the ring could not take.
#[inline(always)]
pub fn count_drop(record_kind: u32) {
    bump(&DROPS, record_kind);
}

/// Adds one to a `counter::*`.
#[inline(always)]
pub fn count(index: u32) {
    bump(&COUNTERS, index);
}

/// Per-CPU, so no atomics needed.
#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the map value is a u64 owned by this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// Output flags for a record of `size` bytes: wake the consumer only when
/// the bytes waiting in the ring cross a multiple of `wakeup_bytes` (it also
/// polls every 100 ms, `capture::POLL_MS`). A wakeup is an irq_work, a
/// self-IPI that costs microseconds in a VM, and bpf_ringbuf_commit raises
/// it for every forced record (kernel/bpf/ringbuf.c): waking on every record
/// above the mark would tax each event exactly while the consumer is behind.
/// Each later multiple wakes again, so two CPUs racing past one mark without
/// either waking cost at most one more mark's worth of delay. `reserved`:
/// the bytes of this record already reserved in the ring (0 or `size`).
#[inline(always)]
fn wakeup_flags(size: u64, reserved: u64) -> u64 {
    let ring = (&raw const EVENTS).cast_mut().cast();
    let wakeup_bytes = config().map_or(0, |c| u64::from(c.wakeup_bytes));
    if wakeup_bytes == 0 {
        return BPF_RB_FORCE_WAKEUP;
    }
    // SAFETY: querying our own ring map.
    let waiting = unsafe { bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) }.wrapping_sub(reserved);
    // wakeup_bytes is a power of two (an eighth of the ring, whose size the
    // kernel requires to be one): the multiples below each count are a mask
    // apart, where dividing was two 64-bit divisions per record.
    let multiple = !(wakeup_bytes - 1);
    if waiting & multiple != (waiting + size) & multiple {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends the first `size` bytes of a per-CPU scratch record (its header
/// already filled), counting a drop of `record_kind` when the ring is full.
/// For variable-length records, which send only the used part of their last
/// area; a fixed-size record is built in the ring itself (`Reserved`).
#[inline(always)]
pub fn output_prefix<T>(record: &mut T, size: usize, record_kind: u32) -> bool {
    if size > core::mem::size_of::<T>() {
        return false;
    }
    let ring = (&raw const EVENTS).cast_mut().cast();
    let flags = wakeup_flags(size as u64, 0);
    // SAFETY: `record` is `size_of::<T>()` readable bytes and size fits in it.
    let rc = unsafe { bpf_ringbuf_output(ring, (record as *mut T).cast(), size as u64, flags) };
    if rc != 0 {
        count_drop(record_kind);
    }
    rc == 0
}

/// A fixed-size record reserved in the ring, built there in place and then
/// submitted. Building it in a scratch area (or on the stack) and copying it
/// with bpf_ringbuf_output cost more, though a reservation and a submit are
/// two helper calls where the copy is one: in an A/B over the bind/listen and
/// connect/accept loops, listen went from 292 to 262 ns and accept from 483
/// to 383 ns. The verifier refuses a program that can return without
/// submitting one.
pub struct Reserved<T: 'static>(RingBufEntry<T>);

impl<T: 'static> Reserved<T> {
    /// Room for a `T` in the ring; `None`, counting a drop of
    /// `record_kind`, when the ring is full.
    #[inline(always)]
    pub fn new(record_kind: u32) -> Option<Self> {
        let entry = EVENTS.reserve::<T>(0);
        if entry.is_none() {
            count_drop(record_kind);
        }
        entry.map(Self)
    }

    /// The record, whose every field the caller writes: the records are
    /// plain integers with explicit padding, so the ring's old bytes there
    /// are a valid `T`, and none of them survive.
    #[inline(always)]
    pub fn record(&mut self) -> &mut T {
        // SAFETY: ring memory reserved for this run, `size_of::<T>()` bytes.
        unsafe { &mut *self.0.as_mut_ptr() }
    }

    #[inline(always)]
    pub fn submit(self) {
        let size = size_of::<T>() as u64;
        self.0.submit(wakeup_flags(size, size));
    }
}

/// At the exit of a syscall whose entry may have sent a record (a named
/// change, an fd change, a failed open when failures are reported): sends
/// its result, unless the sensor's own tree made it. Userspace joins it to
/// the thread's waiting record and drops it when there is none (the entry
/// was filtered out). Sent unconditionally: remembering the reported
/// entries cost a hash update at the entry and a lookup and a delete here,
/// more than the whole floor program, for every such syscall.
#[inline(always)]
pub fn send_result(task: *const u8, ret: i64) {
    let Some(cfg) = config() else { return };
    if is_own(cfg, task_tgid(task)) {
        return;
    }
    let Some(mut reserved) = Reserved::new(kind::RESULT) else {
        return;
    };
    *reserved.record() = ResultEvent {
        header: header(kind::RESULT, size_of::<ResultEvent>()),
        tid: field(task, koff!(task_pid)).unwrap_or(0),
        _pad0: 0,
        ret,
    };
    reserved.submit();
}

/// Stores `value` in `place` with a store of its own. LLVM merges adjacent
/// zero stores (and zero-filled arrays) into a `memset`, which the BPF
/// backend emits as a call to a byte-at-a-time subprogram: five
/// instructions per byte. A volatile store is never merged.
#[inline(always)]
pub fn set<T>(place: &mut T, value: T) {
    // SAFETY: a valid, aligned place.
    unsafe { write_volatile(place, value) }
}

/// Zeroes `place` one word at a time (see `set`): for the records' plain
/// integer structs, whose sizes are multiples of 8.
#[inline(always)]
pub fn zero_words<T>(place: &mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let words = (place as *mut T).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word i of `place`, inside it and aligned (asserted above).
        unsafe { write_volatile(words.add(i), 0) };
    }
}

/// An IPv4 address in the first four bytes of a 16-byte address, built as
/// two words (see `set`). `v4` is the address as memory holds it (network
/// order) loaded as one little-endian word: loaded as bytes it took four
/// loads and four stack slots.
#[inline(always)]
pub fn v4_addr(v4: u32) -> [u8; 16] {
    words_bytes(0, u64::from(v4))
}

/// An IPv4 address (as for `v4_addr`) as v4-mapped IPv6
/// (`::ffff:a.b.c.d`), built as two words.
#[inline(always)]
pub fn v4_mapped(v4: u32) -> [u8; 16] {
    words_bytes(u64::from(v4) << 32 | 0xffff_0000, 0)
}

/// 16 bytes (an address, a name) from two little-endian words: bytes 8-15,
/// bytes 0-7.
#[inline(always)]
fn words_bytes(high: u64, low: u64) -> [u8; 16] {
    // SAFETY: any 16 bytes are a valid [u8; 16]; the bpfel target is
    // little-endian, like the words' byte order here.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([low, high]) }
}

/// Set by the loader (`.rodata`, frozen before the programs load): 1 where
/// the kernel took the `bpf_rdonly_cast` kfunc (`kernel_mem`), so kernel
/// objects reached through plain numbers are read with plain loads; 0 where
/// each read is a `bpf_probe_read_kernel` call. A constant to the verifier,
/// so it never walks the branch not taken.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_LOADS: u32 = 0;

#[inline(always)]
fn kernel_loads() -> bool {
    // SAFETY: reading our own static; volatile so that LLVM does not fold
    // in the value it was compiled with.
    unsafe { read_volatile(&raw const KERNEL_LOADS) != 0 }
}

/// `addr` as memory the program may load from: `bpf_rdonly_cast(addr, 0)`,
/// which the verifier turns into a register copy and whose loads the JIT
/// makes fault-safe (BPF_PROBE_MEM: a bad address reads as zeros). A helper
/// call costs ~30-50 ns on a CPU whose returns go through a return thunk;
/// a load costs about nothing. Called by the marker number the loader
/// rewrites (`sensor_common::kfunc`); only where `kernel_loads()`.
#[inline(always)]
fn kernel_mem(addr: u64) -> *const u8 {
    // SAFETY: a call by number, as aya-ebpf makes its helper calls; the
    // loader turns it into the kfunc's call (or `r0 = r1`, unused then).
    unsafe {
        let cast: unsafe extern "C" fn(u64, u32) -> *const u8 =
            core::mem::transmute(kfunc::RDONLY_CAST_MARKER as usize);
        cast(addr, 0)
    }
}

/// Reads a `T` at `base + off`; `None` for a null base or a field the running
/// kernel does not have. An unreadable address is `None` with the helper
/// and zeros with plain loads: callers treat both as "nothing there".
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == OFFSET_MISSING {
        return None;
    }
    let addr = base + u64::from(off);
    if kernel_loads() {
        // SAFETY: a fault-safe load (see `kernel_mem`) of a kernel field.
        return Some(unsafe { read_volatile(kernel_mem(addr).cast::<T>()) });
    }
    probe_read(addr)
}

/// Copies a `T` at `addr` with bpf_probe_read_kernel.
#[inline(always)]
fn probe_read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address, faulting safely.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// The first `W` words of a kernel object, copied with one helper read: each
/// field inside then costs a load instead of a helper call (~30 ns apiece
/// on a CPU whose returns go through a return thunk). The windows are sized
/// for the fields the programs read (the offsets of Linux 6.x); a field
/// beyond the window on another kernel is read alone. The copy lives at word
/// `AT` of a per-CPU scratch area, not on the 512-byte stack: each kind of
/// window has its own place there, so the ones a program holds at once never
/// overlap.
pub struct Window<const AT: usize, const W: usize> {
    base: u64,
    words: *const u8,
}

/// Room for every kind of window (see the aliases below).
const WINDOW_WORDS: usize = 64;

#[map]
static WINDOWS: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

impl<const AT: usize, const W: usize> Window<AT, W> {
    const FITS: () = assert!(AT + W <= WINDOW_WORDS);

    /// The object's address.
    #[inline(always)]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// `None` for a null or unreadable object. Where the programs load
    /// kernel memory directly, the window is the object itself: no copy.
    #[inline(always)]
    pub fn of(base: u64) -> Option<Self> {
        let () = Self::FITS;
        if base == 0 {
            return None;
        }
        if kernel_loads() {
            return Some(Self {
                base,
                words: kernel_mem(base),
            });
        }
        let area = WINDOWS.get_ptr_mut(0)?;
        // SAFETY: AT + W <= WINDOW_WORDS, inside this CPU's scratch area.
        let words = unsafe { area.cast::<u64>().add(AT) };
        // SAFETY: the helper writes W * 8 bytes there and copes with any
        // source address, faulting safely.
        let rc = unsafe {
            bpf_probe_read_kernel_buf(words.cast(), (W * 8) as u32, base as *const c_void)
        };
        (rc == 0).then_some(Self {
            base,
            words: words.cast_const().cast(),
        })
    }

    /// The field at `off`; `None` for a field the running kernel lacks.
    #[inline(always)]
    pub fn get<T: Copy>(&self, off: u32) -> Option<T> {
        if off == OFFSET_MISSING {
            return None;
        }
        if kernel_loads() || off as usize + size_of::<T>() <= W * 8 {
            // SAFETY: the object itself, or off + size_of::<T>() <= the
            // window's bytes; a kernel field of type T is aligned for it.
            Some(unsafe { read_volatile(self.words.add(off as usize).cast::<T>()) })
        } else {
            probe_read(self.base + u64::from(off))
        }
    }

    /// A 16-byte address at `off` (an `in6_addr`), read as two words:
    /// read as bytes it took sixteen loads, and as many stack slots.
    #[inline(always)]
    pub fn get_addr16(&self, off: u32) -> Option<[u8; 16]> {
        if off == OFFSET_MISSING {
            return None;
        }
        let low = self.get(off)?;
        Some(words_bytes(self.get(off + 8)?, low))
    }

    /// The `struct path` embedded at `off`.
    #[inline(always)]
    pub fn path(&self, off: u32) -> PathRef {
        if off == OFFSET_MISSING {
            return PathRef::NONE;
        }
        PathRef {
            mnt: self.get(off + koff!(path_mnt)).unwrap_or(0),
            dentry: self.get(off + koff!(path_dentry)).unwrap_or(0),
        }
    }
}

/// A `struct path`: a mount (its `struct vfsmount`) and a dentry in it.
pub struct PathRef {
    pub mnt: u64,
    pub dentry: u64,
}

impl PathRef {
    pub const NONE: Self = Self { mnt: 0, dentry: 0 };

    /// The `struct path` at `addr`, with one read.
    #[inline(always)]
    pub fn at(addr: u64) -> Self {
        PathWindow::of(addr).map_or(Self::NONE, |w| w.path(0))
    }

    /// The `struct path` at `off` in a BTF object (plain loads).
    #[inline(always)]
    pub fn in_btf(base: *const u8, off: u32) -> Self {
        if base.is_null() || off == OFFSET_MISSING {
            return Self::NONE;
        }
        Self {
            mnt: field(base, off + koff!(path_mnt)).unwrap_or(0),
            dentry: field(base, off + koff!(path_dentry)).unwrap_or(0),
        }
    }
}

/// `struct file` up to `f_path` (80 bytes on Linux 6.x): mode, inode,
/// private data and path in one read.
pub type FileWindow = Window<0, 10>;
/// `struct inode` up to `i_ino` (72 bytes): mode, owner, superblock, number.
pub type InodeWindow = Window<10, 9>;
/// `struct dentry` up to `d_name.name` (56 bytes): parent and name.
type DentryWindow = Window<19, 7>;
/// `struct mount` up to its vfsmount's root (40 bytes): parent, mountpoint, root.
type MountWindow = Window<26, 5>;
/// `struct sock` up to `skc_v6_rcv_saddr` (88 bytes): both ends' addresses
/// and ports, IPv4 and IPv6.
pub type SockWindow = Window<31, 11>;
/// A `struct path`.
type PathWindow = Window<42, 2>;

/// A record's header, stamped now (CLOCK_BOOTTIME).
#[inline(always)]
pub fn header(record_kind: u32, size: usize) -> Header {
    // SAFETY: helper without preconditions.
    header_at(record_kind, size, unsafe { bpf_ktime_get_boot_ns() })
}

/// A record's header stamped `ktime_ns`, a CLOCK_BOOTTIME time the program
/// already has (a clock read is a helper call).
#[inline(always)]
pub fn header_at(record_kind: u32, size: usize, ktime_ns: u64) -> Header {
    Header {
        kind: record_kind,
        size: size as u32,
        ktime_ns,
    }
}

/// The running kernel's offsets as constants: the loader sets this
/// (`.rodata`, frozen before the programs load), so the verifier knows each
/// value and lets a BTF pointer's field be read with a plain load.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::MISSING;

macro_rules! koff {
    ($($f:tt)+) => {
        // SAFETY: reading our own static; volatile so that LLVM does not
        // fold in the placeholder it was compiled with.
        unsafe { core::ptr::read_volatile(&raw const crate::kernel::KERNEL_OFFSETS.$($f)+) }
    };
}
pub(crate) use koff;

/// A field of a kernel object the verifier knows by BTF, read with a plain
/// load (the JIT turns it into a faulting-safe BPF_PROBE_MEM load, no helper
/// call); `None` for a field the running kernel does not have.
#[inline(always)]
pub fn field<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if off == OFFSET_MISSING {
        return None;
    }
    // SAFETY: `base` is a BTF pointer and `off` a known constant, so the
    // verifier checks the access against the type and the JIT makes it safe.
    Some(unsafe { read_volatile(base.add(off as usize).cast::<T>()) })
}

/// The current task as a BTF pointer. A helper call: a program takes it
/// once and hands it on.
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The thread group (process) id of `task`, a BTF pointer: a load, where
/// bpf_get_current_pid_tgid() is a helper call.
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    field(task, koff!(task_tgid)).unwrap_or(0)
}

/// What bpf_get_current_pid_tgid() returns for `task`: tgid << 32 | tid.
#[inline(always)]
pub fn task_pid_tgid(task: *const u8) -> u64 {
    let tid: u32 = field(task, koff!(task_pid)).unwrap_or(0);
    u64::from(task_tgid(task)) << 32 | u64::from(tid)
}

/// `task_info` of the current task.
#[inline(always)]
pub fn current_task_info() -> TaskInfo {
    task_info(current_task_btf())
}

/// Who `task` (the current task's BTF pointer) is: ids, credentials,
/// cgroup, name, read with plain loads. A helper call per field (each a
/// call and a return through the kernel's return thunk on this CPU) cost
/// ~30 ns apiece; these loads cost about nothing.
#[inline(always)]
pub fn task_info(task: *const u8) -> TaskInfo {
    let parent: *const u8 = field(task, koff!(task_real_parent)).unwrap_or(null());
    let cred: *const u8 = field(task, koff!(task_cred)).unwrap_or(null());
    TaskInfo {
        start_boottime_ns: leader_start_boottime(task),
        cgroup_id: task_cgroup_id(task),
        tid: field(task, koff!(task_pid)).unwrap_or(0),
        tgid: task_tgid(task),
        ppid: field(parent, koff!(task_tgid)).unwrap_or(0),
        uid: field(cred, koff!(cred_uid)).unwrap_or(u32::MAX),
        gid: field(cred, koff!(cred_gid)).unwrap_or(u32::MAX),
        euid: field(cred, koff!(cred_euid)).unwrap_or(u32::MAX),
        egid: field(cred, koff!(cred_egid)).unwrap_or(u32::MAX),
        login_uid: field(task, koff!(task_loginuid)).unwrap_or(u32::MAX),
        session_id: field(task, koff!(task_sessionid)).unwrap_or(u32::MAX),
        _pad0: 0,
        comm: task_comm(task),
    }
}

/// `task->comm`, read as two words: read as bytes it took sixteen loads,
/// sixteen stack slots and sixteen stores, in every record.
#[inline(always)]
fn task_comm(task: *const u8) -> [u8; 16] {
    let off = koff!(task_comm);
    if off == OFFSET_MISSING {
        return [0; 16];
    }
    words_bytes(
        field(task, off + 8).unwrap_or(0),
        field(task, off).unwrap_or(0),
    )
}

/// When the thread group of `task` (a BTF pointer) began: its leader's
/// start time, which with the tgid names a process across pid reuse.
#[inline(always)]
pub fn leader_start_boottime(task: *const u8) -> u64 {
    let leader: *const u8 = field(task, koff!(task_group_leader)).unwrap_or(task);
    field(leader, koff!(task_start_boottime)).unwrap_or(0)
}

/// What bpf_get_current_cgroup_id() returns, read with loads:
/// task->cgroups->dfl_cgrp->kn->id (kernel/bpf/helpers.c).
#[inline(always)]
fn task_cgroup_id(task: *const u8) -> u64 {
    let css_set: *const u8 = field(task, koff!(task_cgroups)).unwrap_or(null());
    let cgroup: *const u8 = field(css_set, koff!(css_set_dfl_cgrp)).unwrap_or(null());
    let kn: *const u8 = field(cgroup, koff!(cgroup_kn)).unwrap_or(null());
    field(kn, koff!(kernfs_node_id)).unwrap_or(0)
}

/// The file behind descriptor `fd` of `task` (the current task's BTF
/// pointer): files->fdt->fd[fd].
/// The table is reached with loads; the slot, a `struct file **` element
/// (a plain number to the verifier), with a `read`.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: u64) -> u64 {
    let files: *const u8 = field(task, koff!(task_files)).unwrap_or(null());
    let fdt: *const u8 = field(files, koff!(files_fdt)).unwrap_or(null());
    let max_fds: u32 = field(fdt, koff!(fdtable_max_fds)).unwrap_or(0);
    if fd >= u64::from(max_fds) {
        return 0;
    }
    let fds: u64 = field(fdt, koff!(fdtable_fd)).unwrap_or(0);
    if fds == 0 {
        return 0;
    }
    read(fds + fd * 8, 0).unwrap_or(0)
}

/// What a walk needs of a `struct mount`, read once per mount crossed.
struct MountLinks {
    /// The mount's root dentry (its vfsmount's `mnt_root`).
    root: u64,
    /// The mount it is mounted on, and the dentry there.
    parent: u64,
    mountpoint: u64,
}

impl MountLinks {
    /// Plain values, not an `Option` of a window: a `None` would carry
    /// undefined bytes that the verifier refuses to see copied.
    #[inline(always)]
    fn of(mnt: u64) -> Self {
        match MountWindow::of(mnt) {
            Some(m) => Self {
                root: m.get(koff!(mount_mnt) + koff!(vfsmount_root)).unwrap_or(0),
                parent: m.get(koff!(mount_parent)).unwrap_or(0),
                mountpoint: m.get(koff!(mount_mountpoint)).unwrap_or(0),
            },
            None => Self {
                root: 0,
                parent: 0,
                mountpoint: 0,
            },
        }
    }
}

/// Names shorter than this (most path components) are loaded as two words
/// where the programs load kernel memory directly: a copy with
/// bpf_probe_read_kernel_str was a call and a return (through this CPU's
/// return thunk) and a byte-at-a-time loop (strncpy_from_kernel_nofault,
/// mm/maccess.c) for every component of every path.
const SHORT_NAME: u32 = 16;

/// The name of dentry `d` (at `name`) as 16 bytes, loaded as two words,
/// with zeros from its end on (its NUL among them), and the bytes it takes
/// with that NUL; `None` for a longer name, or where kernel memory is copied
/// with helpers. The zeros also keep whatever follows a name in memory
/// out of the record.
#[inline(always)]
fn short_name(d: &DentryWindow, name: u64) -> Option<([u8; 16], i64)> {
    if !kernel_loads() {
        return None;
    }
    let len: u32 = d.get(koff!(dentry_name_len))?;
    // Tested on a copy that the verifier cannot relate to `len`: bounding
    // `len` itself gave a walk's length a narrower range on this path than
    // on the helper's, and the verifier's states multiplied with every
    // component instead of converging (it gave up at a million instructions).
    // SAFETY: a local.
    if unsafe { read_volatile(&(len / SHORT_NAME)) } != 0 {
        return None;
    }
    let low: u64 = read(name, 0)?;
    let high: u64 = read(name, 8)?;
    // The low `bytes` bytes of a word (bytes <= 8).
    let keep = |bytes: u32| {
        if bytes >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * bytes)) - 1
        }
    };
    Some((
        words_bytes(high & keep(len.saturating_sub(8)), low & keep(len)),
        i64::from(len) + 1,
    ))
}

/// Stores a `short_name`'s 16 bytes at `place` one byte at a time: a
/// component starts anywhere, and an unaligned word store is not one the
/// language allows (the BPF backend would split it into bytes anyway).
#[inline(always)]
fn put_name(place: *mut u8, bytes: [u8; 16]) {
    for (i, byte) in bytes.into_iter().enumerate() {
        // SAFETY: `place` has room for SHORT_NAME bytes (the caller's
        // NAME_READ); a volatile store is never merged into a memset.
        unsafe { write_volatile(place.add(i), byte) };
    }
}

/// The outcome of a dentry walk.
pub struct Walk {
    pub len: u32,
    pub truncated: bool,
}

/// Writes the components of `path` into `buf` (a `PATH_BUF` area), leaf
/// first, each NUL-terminated; userspace reverses them. Crosses mount points
/// up to the root of the mount tree. An empty, complete walk is `/`; a walk
/// that could not start is empty and truncated.
///
/// Walking leaf-first avoids the variable-offset backwards writes that C
/// sensors use, which the verifier finds hard to bound in Rust codegen.
/// With plain loads (`kernel_loads`) a walk takes a helper call only for a
/// name of `SHORT_NAME` bytes or more; otherwise each component's name
/// takes one and its dentry's head another, and each mount crossed one.
#[inline(always)]
pub fn walk_path(path: PathRef, buf: *mut u8) -> Walk {
    let mut out = Walk {
        len: 0,
        truncated: true,
    };
    if path.mnt == 0 || path.dentry == 0 || koff!(mount_mnt) == OFFSET_MISSING {
        return out;
    }
    let mut dentry = path.dentry;
    // struct vfsmount is embedded in struct mount: container_of().
    let mut mnt = path.mnt - u64::from(koff!(mount_mnt));
    let mut links = MountLinks::of(mnt);
    let mut done = false;
    for _ in 0..PATH_DEPTH {
        let Some(d) = DentryWindow::of(dentry) else {
            break;
        };
        let parent: u64 = d.get(koff!(dentry_parent)).unwrap_or(0);
        if dentry == links.root || dentry == parent || parent == 0 {
            if links.parent == mnt || links.parent == 0 {
                done = true;
                break;
            }
            dentry = links.mountpoint;
            mnt = links.parent;
            links = MountLinks::of(mnt);
            continue;
        }
        let Some(name) = d.get::<u64>(koff!(dentry_name)) else {
            break;
        };
        if out.len >= (PATH_BUF - NAME_READ) as u32 {
            break;
        }
        let at = (out.len as usize) & (PATH_BUF - 1);
        // SAFETY: at + NAME_READ < PATH_BUF by the check above.
        let place = unsafe { buf.add(at) };
        let n = match short_name(&d, name) {
            Some((bytes, n)) => {
                put_name(place, bytes);
                n
            }
            // SAFETY: NAME_READ bytes from `place` are inside `buf`.
            None => unsafe {
                bpf_probe_read_kernel_str(place.cast(), NAME_READ as u32, name as *const _)
            },
        };
        if n <= 0 {
            break;
        }
        // The mask changes nothing (len < PATH_BUF - NAME_READ, n <= NAME_READ)
        // but gives the verifier one range for every path through the loop,
        // so its states converge instead of multiplying per iteration.
        out.len = (out.len + n as u32) & (PATH_BUF as u32 - 1);
        dentry = parent;
    }
    out.truncated = !done;
    out
}
