//! Kernel functions (kfuncs) for the eBPF programs. aya 0.14 resolves no
//! kfunc externs (libbpf's `__ksym`), so a program calls each kfunc by a
//! marker number (`sensor_common::kfunc`), as if it were a helper no kernel
//! has, and this module rewrites those calls in the object before aya loads
//! it: into the kfunc's call where the running kernel takes it, else into
//! `r0 = r1`, with the programs' frozen `KERNEL_LOADS` flag at 0 so that
//! the verifier never walks the code that would use it.

use std::os::fd::{FromRawFd, OwnedFd};

use sensor_common::kfunc;

use crate::btf::Btf;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KfuncError {
    #[error("the eBPF object is not a little-endian ELF64 file: {0}")]
    Elf(&'static str),
}

/// `include/uapi/linux/bpf.h`: an instruction is 8 bytes, `code` then
/// `dst_reg:4 src_reg:4`, a 16-bit offset and a 32-bit immediate.
const INSN: usize = 8;
/// BPF_JMP | BPF_CALL.
const CALL: u8 = 0x85;
/// `src_reg` of a call to a kernel function, whose `imm` is its BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// One instruction's bytes.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; INSN] {
    let mut b = [0; INSN];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..].copy_from_slice(&imm.to_le_bytes());
    b
}

/// What a marked call becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// A call of the kernel function with this BTF id.
    Kfunc(u32),
    /// `r0 = r1`: the call's result is never used (its flag is 0).
    Unused,
}

impl Rewrite {
    fn bytes(self) -> [u8; INSN] {
        match self {
            Self::Kfunc(id) => insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, id as i32),
            // BPF_ALU64 | BPF_MOV | BPF_X
            Self::Unused => insn(0xbf, 0, 1, 0, 0),
        }
    }
}

/// The `N` bytes at `at`, checked against the end (and against overflow).
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], KfuncError> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(KfuncError::Elf("truncated header"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, KfuncError> {
    bytes_at(b, at).map(u16::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, KfuncError> {
    bytes_at(b, at).map(u64::from_le_bytes)
}

/// The byte ranges of the object's executable sections (its programs).
fn code_ranges(elf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, KfuncError> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(KfuncError::Elf("bad identification"));
    }
    const SHT_PROGBITS: u32 = 1;
    const SHF_EXECINSTR: u64 = 4;
    let shoff = usize::try_from(u64_at(elf, 0x28)?).map_err(|_| KfuncError::Elf("shoff"))?;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let mut ranges = Vec::new();
    for i in 0..shnum {
        let at = shoff
            .checked_add(i * shentsize)
            .ok_or(KfuncError::Elf("section header out of bounds"))?;
        let kind: [u8; 4] = bytes_at(elf, at.saturating_add(4))?;
        let flags = u64_at(elf, at.saturating_add(8))?;
        let start = u64_at(elf, at.saturating_add(0x18))?;
        let size = u64_at(elf, at.saturating_add(0x20))?;
        if u32::from_le_bytes(kind) != SHT_PROGBITS || flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let start = usize::try_from(start).map_err(|_| KfuncError::Elf("section offset"))?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= elf.len())
            .ok_or(KfuncError::Elf("section out of bounds"))?;
        ranges.push(start..end);
    }
    Ok(ranges)
}

/// Rewrites every call of helper number `marker` in the object's programs;
/// returns how many there were.
pub fn rewrite_calls(elf: &mut [u8], marker: u32, to: Rewrite) -> Result<usize, KfuncError> {
    let marked = insn(CALL, 0, 0, 0, marker as i32);
    let mut n = 0;
    for range in code_ranges(elf)? {
        for slot in elf[range].chunks_exact_mut(INSN) {
            if *slot == marked {
                slot.copy_from_slice(&to.bytes());
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used here (the
/// kernel takes a shorter attr and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Whether the kernel lets a tracepoint program load through
/// `bpf_rdonly_cast(x, 0)` (the kfunc with BTF id `id`): the untyped cast
/// came in Linux 6.17, the kfunc itself in 6.2. Loads a six-instruction
/// program and lets it go.
fn kernel_takes_untyped_cast(id: u32) -> bool {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
    let program = [
        insn(0xb7, 1, 0, 0, 0), // r1 = 0
        insn(0xb7, 2, 0, 0, 0), // r2 = 0 (no type: untyped memory)
        insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, id as i32),
        insn(0x79, 0, 0, 0, 0), // r0 = *(u64 *)(r0 + 0)
        insn(0xb7, 0, 0, 0, 0), // r0 = 0
        insn(0x95, 0, 0, 0, 0), // exit
    ];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: *b"sensor_kfunc\0\0\0\0",
        ..ProgLoadAttr::default()
    };
    // SAFETY: a valid BPF_PROG_LOAD attr whose pointers outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            size_of::<ProgLoadAttr>(),
        )
    };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: the kernel just handed us this descriptor; dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    true
}

/// The eBPF object with its kfunc calls rewritten for this kernel, 8-byte
/// aligned as the ELF reader wants it.
pub struct Prepared {
    words: Vec<u64>,
    len: usize,
    /// Whether the programs read kernel objects with plain loads.
    pub kernel_loads: bool,
}

impl Prepared {
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Rewrites `object`'s kfunc calls: the cast where `wanted` and the running
/// kernel (described by `btf`) takes it, else the fallback.
pub fn prepare(object: &[u8], btf: &Btf, wanted: bool) -> Result<Prepared, KfuncError> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: `words` has room for `object.len()` bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let cast = if wanted {
        btf.func_id(kfunc::RDONLY_CAST)
            .filter(|&id| kernel_takes_untyped_cast(id))
    } else {
        None
    };
    let to = cast.map_or(Rewrite::Unused, Rewrite::Kfunc);
    rewrite_calls(bytes, kfunc::RDONLY_CAST_MARKER, to)?;
    Ok(Prepared {
        words,
        len: object.len(),
        kernel_loads: cast.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one executable section holding `code` and one
    /// data section holding `data`.
    fn elf(code: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let code_at = out.len();
        out.extend_from_slice(code);
        let data_at = out.len();
        out.extend_from_slice(data);
        let shoff = out.len();
        out[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        let mut section = |kind: u32, flags: u64, at: usize, len: usize| {
            let mut h = [0u8; 64];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(at as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(len as u64).to_le_bytes());
            out.extend_from_slice(&h);
        };
        section(0, 0, 0, 0);
        section(1, 6, code_at, code.len());
        section(1, 2, data_at, data.len());
        out
    }

    #[test]
    fn marked_calls_in_code_become_the_kfunc_and_the_same_bytes_in_data_stay() {
        let marked = insn(CALL, 0, 0, 0, 0x5ec0_ca57);
        let helper = insn(CALL, 0, 0, 0, 6);
        let code = [marked, helper, marked].concat();
        let mut obj = elf(&code, &marked);
        assert_eq!(
            rewrite_calls(&mut obj, 0x5ec0_ca57, Rewrite::Kfunc(65_500)),
            Ok(2)
        );
        let kfunc_call = insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, 65_500);
        assert_eq!(obj[64..72], kfunc_call);
        assert_eq!(obj[72..80], helper);
        assert_eq!(obj[80..88], kfunc_call);
        assert_eq!(obj[88..96], marked, "data is never rewritten");

        let mut obj = elf(&code, &[]);
        assert_eq!(rewrite_calls(&mut obj, 0x5ec0_ca57, Rewrite::Unused), Ok(2));
        assert_eq!(obj[64..72], [0xbf, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_malformed_object_is_an_error_not_a_panic() {
        let mut obj = elf(&[0; 8], &[]);
        obj[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(rewrite_calls(&mut obj, 1, Rewrite::Unused).is_err());
        assert!(rewrite_calls(&mut [0u8; 10], 1, Rewrite::Unused).is_err());
        let mut obj = elf(&[0; 8], &[]);
        let at = obj.len() - 64 * 2 + 0x20;
        obj[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(rewrite_calls(&mut obj, 1, Rewrite::Unused).is_err());
    }

    #[test]
    fn the_running_kernel_takes_the_untyped_cast_and_refuses_a_non_kfunc() {
        let btf = Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux")).unwrap();
        let id = btf
            .func_id(kfunc::RDONLY_CAST)
            .expect("bpf_rdonly_cast in BTF");
        assert!(kernel_takes_untyped_cast(id));
        let not_a_kfunc = btf.func_id("do_exit").expect("do_exit in BTF");
        assert!(!kernel_takes_untyped_cast(not_a_kfunc));
    }
}
