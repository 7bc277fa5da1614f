//! Kernel-side programs: capture, filter, submit. Enrichment lives in userspace.
//!
//! Only raw tracepoints: on the build kernel fentry/LSM loads fail with EPERM
//! and kprobes are not configured (DEVELOPERS.md). Kernel struct offsets come
//! from the running kernel's BTF, set by userspace as the read-only global
//! `KERNEL_OFFSETS`: constants to the verifier, for plain loads from BTF
//! pointers and for one-read windows over other kernel objects.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: the bpf target has no `AtomicU64::fetch_add` (no CAS), but
// the instruction set has an atomic add (BPF_ATOMIC | BPF_ADD).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod file;
#[cfg(target_arch = "bpf")]
mod file_named;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod process;

/// Host builds (`cargo clippy --workspace`) see an empty program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic makes the verifier reject the program loudly
    // (an infinite loop), rather than behaving undefined.
    loop {}
}

/// Reading kernel memory with bpf_probe_read_kernel needs a GPL-compatible licence.
#[cfg(target_arch = "bpf")]
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
