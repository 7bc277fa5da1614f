//! The raw kernel-record decoder: ring-buffer bytes are written by eBPF
//! programs, but a verifier-accepted bug or a kernel ABI drift would hand
//! the decoder anything, so any bytes must decode or be refused, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_user::decode::{Record, decode};

/// Paths the decoder builds from kernel walks or caller names are absolute.
fn assert_absolute(what: &str, path: Option<&[u8]>) {
    if let Some(p) = path {
        assert!(p.starts_with(b"/"), "{what} {p:?} is not absolute");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(record) = decode(data) else {
        return;
    };
    match &record {
        Record::Exec(exec) => {
            assert_absolute("exe", exec.exe.as_deref());
            assert_absolute("cwd", exec.cwd.as_deref());
            let argv_bytes: usize = exec.argv.iter().map(|a| a.len() + 1).sum();
            assert!(argv_bytes <= sensor_common::ARGV_BUF + 1);
        }
        Record::File(file) => assert_absolute("path", file.path.as_deref()),
        Record::Dns(dns) => {
            if let Some(q) = &dns.message.question {
                assert!(!q.name.is_empty());
            }
        }
        Record::Fork(_) | Record::Exit(_) | Record::Result(_) | Record::Net(_) => {}
    }
    // Reads every field, as the enrich and encode stages do.
    let _ = format!("{record:?}");
});
