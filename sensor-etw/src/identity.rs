//! Process identity and time on Windows: `exec_id` is unique per host
//! across pid reuse because it hashes the process's creation FILETIME,
//! the same idea as the Linux sensor's (boot id, tgid, start time).

use sha2::{Digest, Sha256};

/// FILETIME of the Unix epoch (100 ns intervals since 1601-01-01).
pub const UNIX_EPOCH_FILETIME: i64 = 116_444_736_000_000_000;

/// 32 hex characters: a SHA-256 prefix of (boot/host id, pid, creation
/// FILETIME). Windows processes never replace their image, so one id per
/// process is one id per image.
#[must_use]
pub fn exec_id(boot_id: &str, pid: u32, create_filetime: i64) -> String {
    let mut h = Sha256::new();
    h.update(boot_id.as_bytes());
    h.update(pid.to_le_bytes());
    h.update(b"win-create");
    h.update(create_filetime.to_le_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Nanoseconds since the Unix epoch of a FILETIME; 0 before 1970.
#[must_use]
pub fn filetime_to_unix_ns(ft: i64) -> u64 {
    u64::try_from(ft.saturating_sub(UNIX_EPOCH_FILETIME))
        .unwrap_or(0)
        .saturating_mul(100)
}

/// 100 ns ticks in a millisecond, for FILETIME arithmetic.
pub const FILETIME_PER_MS: i64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_boot_pid_and_creation_time_and_are_stable() {
        let a = exec_id("boot-a", 10, 5);
        assert_eq!(a, exec_id("boot-a", 10, 5));
        assert_eq!(a.len(), 32);
        assert_ne!(a, exec_id("boot-b", 10, 5));
        assert_ne!(a, exec_id("boot-a", 11, 5));
        assert_ne!(a, exec_id("boot-a", 10, 6));
    }

    #[test]
    fn filetimes_become_unix_nanoseconds() {
        assert_eq!(filetime_to_unix_ns(UNIX_EPOCH_FILETIME), 0);
        assert_eq!(filetime_to_unix_ns(UNIX_EPOCH_FILETIME + 15), 1_500);
        assert_eq!(filetime_to_unix_ns(0), 0);
        // 2026-01-01T00:00:00Z
        assert_eq!(
            filetime_to_unix_ns(134_116_992_000_000_000),
            1_767_225_600_000_000_000
        );
    }
}
