//! cgroup id -> cgroup path -> container id.
//!
//! A cgroup v2 id is the inode number of its directory in cgroupfs, so one
//! walk of /sys/fs/cgroup maps ids to paths; it is redone on a miss, at most
//! once per interval.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::throttle::Throttle;

/// Where the unified (v2) hierarchy is mounted: `/sys/fs/cgroup` on most
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones. The walk must stay on that
/// filesystem, since inode numbers repeat across filesystems.
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

pub struct Cgroups {
    root: PathBuf,
    paths: HashMap<u64, String>,
    rescan: Throttle,
}

impl Cgroups {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            paths: HashMap::new(),
            rescan: Throttle::new(Duration::from_secs(1)),
        }
    }

    fn scan(&mut self) {
        self.paths.clear();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
            self.paths
                .insert(meta.ino(), format!("/{}", rel.to_string_lossy()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// The cgroup path (relative to the cgroup2 root) of `id`, or empty.
    pub fn path(&mut self, id: u64) -> String {
        if !self.paths.contains_key(&id) && self.rescan.ready() {
            self.scan();
        }
        self.paths.get(&id).cloned().unwrap_or_default()
    }
}

/// The container id in a cgroup path, as docker, containerd, CRI-O and
/// podman name their scopes: 64 hex characters, possibly with a runtime
/// prefix (`docker-`, `cri-containerd-`, `crio-`, `libpod-`) and `.scope`.
#[must_use]
pub fn container_id(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_found_in_runtime_scopes() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!("/kubepods/burstable/pod1/{id}")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!("/kubepods.slice/cri-containerd-{id}.scope")),
            Some(id)
        );
        assert_eq!(
            container_id("/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id(""), None);
    }

    #[test]
    fn this_process_cgroup_id_maps_to_its_path() {
        let root = cgroup2_mount().expect("a cgroup2 mount");
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            panic!("no /proc/self/cgroup");
        };
        let Some(rel) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            panic!("this test needs the unified cgroup v2 hierarchy");
        };
        let ino = std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut cgroups = Cgroups::new(&root);
        assert_eq!(cgroups.path(ino), rel);
    }
}
