//! The sensor's disk spool at start-up: a segment file may hold anything a
//! crash, a full disk or a flipped bit left behind. The scanner must find the
//! valid records, and `Spool::open` must repair the segment without
//! panicking, leaving a spool that reopens clean.
//!
//! Input: one mode byte, then the segment's bytes. Mode bit 0 reseals every
//! record header found (recomputes its CRC), so the fuzzer reaches what
//! happens after the CRC check (seqs, gaps, payloads) instead of stopping at
//! a CRC it cannot forge.

#![no_main]

use std::{cell::RefCell, fs, path::Path};

use libfuzzer_sys::fuzz_target;
use sensor_proto::v1::Event;
use sensor_user::{
    spool::{FullPolicy, Spool, SpoolConfig, scan_records},
    stats::Stats,
};

const MAGIC: u32 = 0x4c4f_5053;
const MAGIC_GAP: u32 = 0x4750_5053;
const HEADER: usize = 20;

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Gives every complete record in `bytes` a correct CRC, walking them as the
/// scanner does.
fn reseal(bytes: &mut [u8]) {
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let magic = le32(bytes, at).unwrap_or(0);
        let len = le32(bytes, at + 4).unwrap_or(0) as usize;
        let end = at + HEADER + len;
        if (magic == MAGIC || magic == MAGIC_GAP) && end <= bytes.len() {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes[at + 8..at + 16]);
            hasher.update(&bytes[at + HEADER..end]);
            bytes[at + 16..at + 20].copy_from_slice(&hasher.finalize().to_le_bytes());
            at = end;
        } else {
            at += 1;
        }
    }
}

fn open(dir: &Path, stats: &Stats) -> Spool {
    let cfg = SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: 1 << 20,
        policy: FullPolicy::DropOldest,
    };
    Spool::open(cfg, 1, Event::default(), stats).expect("opening the spool")
}

thread_local! {
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut segment = bytes.to_vec();
    if mode & 1 != 0 {
        reseal(&mut segment);
    }
    let found = scan_records(&segment);
    assert!(found <= segment.len() / HEADER);

    DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        let root = dir.get_or_insert_with(|| {
            // Memory-backed when the host has it: each run rewrites files.
            tempfile::Builder::new()
                .prefix("spool-fuzz")
                .tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
                .expect("a temporary directory")
        });
        let spool_dir = root.path().join("spool");
        let _ = fs::remove_dir_all(&spool_dir);
        fs::create_dir_all(&spool_dir).expect("creating the spool directory");
        fs::write(spool_dir.join("00000000000000000001.seg"), &segment)
            .expect("writing the segment");

        let stats = Stats::default();
        let mut spool = open(&spool_dir, &stats);
        let mut cursor = spool.cursor();
        spool
            .read(&mut cursor, usize::MAX)
            .expect("reading the spool");
        drop(spool);

        // The repair is complete: a restart finds nothing left to cut.
        let again = Stats::default();
        let mut spool = open(&spool_dir, &again);
        assert_eq!(
            Stats::get(&again.spool_corrupt),
            0,
            "a repaired spool was damaged again on reopen"
        );
        let mut cursor = spool.cursor();
        spool
            .read(&mut cursor, usize::MAX)
            .expect("rereading the spool");
    });
});
