//! Mount points from /proc/self/mountinfo: which mounts lie at or under an
//! ignored path prefix, so the kernel can discard their files by mount id
//! before walking any path.

use std::path::Path;

/// Unescapes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| field.get(i + 1..i + 4))
            .flatten()
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// (mount id, mount point) of each line of a mountinfo text.
#[must_use]
pub fn parse_mountinfo(text: &str) -> Vec<(u32, Vec<u8>)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let point = fields.nth(3)?;
            Some((id, unescape(point)))
        })
        .collect()
}

/// Ids of the mounts whose mount point is at or under one of `prefixes`.
#[must_use]
pub fn ignored_mount_ids(mounts: &[(u32, Vec<u8>)], prefixes: &[String]) -> Vec<u32> {
    mounts
        .iter()
        .filter(|(_, point)| {
            prefixes.iter().any(|p| {
                let p = p.trim_end_matches('/').as_bytes();
                point
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
                    && !p.is_empty()
            })
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The ignored mount ids of this host (empty when mountinfo is unreadable:
/// userspace still filters by prefix).
#[must_use]
pub fn host_ignored_mount_ids(prefixes: &[String]) -> Vec<u32> {
    let text = std::fs::read_to_string(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    ignored_mount_ids(&parse_mountinfo(&text), prefixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw shared:8 - cgroup2 cgroup2 rw
26 22 0:24 / /dev/pts rw shared:3 - devpts devpts rw
27 22 0:25 / /processes rw - tmpfs tmpfs rw
28 22 0:26 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_at_or_under_a_prefix_are_ignored_and_lookalikes_are_not() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts[6], (28, b"/mnt/with space".to_vec()));
        let ids = ignored_mount_ids(
            &mounts,
            &["/proc".into(), "/sys/".into(), "/dev/pts".into()],
        );
        assert_eq!(ids, [23, 24, 25, 26]);
    }

    #[test]
    fn the_running_host_has_proc_mounted() {
        assert!(!host_ignored_mount_ids(&["/proc".into()]).is_empty());
    }
}
