//! The benchmark's floor: the least a program on a tracepoint can cost
//! while still delivering something, a fixed 64-byte record reserved and
//! submitted. `cargo xtask bench` attaches one per sensor program to the same
//! tracepoints and reads both programs' bpf_stats. The sensor never loads them.
//!
//! The floor wakes its consumer as the sensor does (each time another eighth
//! of the ring is waiting; the consumer also polls every 100 ms), so the two
//! differ only in the work each program does. With default flags the ring
//! wakes a sleeping consumer through irq_work on nearly every record, which
//! in a VM costs microseconds per event (kernel/bpf/ringbuf.c,
//! bpf_ringbuf_commit); the sensor measured that before adopting its policy.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::programs::floor::RECORD_BYTES;

use crate::kernel::Reserved;

#[inline(always)]
fn submit_floor() {
    // Kind 0 is no record's: the floor's drops are counted where none are read.
    if let Some(mut reserved) = Reserved::<[u64; RECORD_BYTES / 8]>::new(0) {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        *reserved.record() = [now, 0, 0, 0, 0, 0, 0, 0];
        reserved.submit();
    }
}

macro_rules! floor_tracepoints {
    ($($name:ident),*) => {$(
        #[tracepoint]
        pub fn $name(_ctx: TracePointContext) -> u32 {
            submit_floor();
            0
        }
    )*};
}

macro_rules! floor_raw_tracepoints {
    ($($name:ident),*) => {$(
        #[raw_tracepoint]
        pub fn $name(_ctx: RawTracePointContext) -> u32 {
            submit_floor();
            0
        }
    )*};
}

floor_tracepoints!(
    floor_tp_00,
    floor_tp_01,
    floor_tp_02,
    floor_tp_03,
    floor_tp_04,
    floor_tp_05,
    floor_tp_06,
    floor_tp_07,
    floor_tp_08,
    floor_tp_09,
    floor_tp_10,
    floor_tp_11,
    floor_tp_12,
    floor_tp_13,
    floor_tp_14,
    floor_tp_15,
    floor_tp_16,
    floor_tp_17,
    floor_tp_18,
    floor_tp_19,
    floor_tp_20,
    floor_tp_21,
    floor_tp_22,
    floor_tp_23,
    floor_tp_24,
    floor_tp_25,
    floor_tp_26,
    floor_tp_27,
    floor_tp_28,
    floor_tp_29,
    floor_tp_30,
    floor_tp_31
);
floor_raw_tracepoints!(floor_raw_0, floor_raw_1, floor_raw_2, floor_raw_3);
