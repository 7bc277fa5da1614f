//! uid -> user name, from /etc/passwd (re-read when a uid is unknown, at
//! most once per interval, so a storm of unknown uids costs nothing).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use super::throttle::Throttle;

pub struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    reload: Throttle,
}

impl Users {
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            names: HashMap::new(),
            reload: Throttle::new(Duration::from_secs(5)),
        }
    }

    fn load(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        self.names = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                let uid = f.nth(1)?.parse().ok()?;
                Some((uid, name.to_owned()))
            })
            .collect();
    }

    /// The user name of `uid`, or an empty string when the host cannot tell.
    pub fn name(&mut self, uid: u32) -> &str {
        if !self.names.contains_key(&uid) && self.reload.ready() {
            self.load();
        }
        self.names.get(&uid).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_passwd_file_and_unknown_uids_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(
            &path,
            "root:x:0:0:root:/root:/bin/bash\nbad line\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        let mut users = Users::new(&path);
        assert_eq!(users.name(0), "root");
        assert_eq!(users.name(1000), "alice");
        assert_eq!(users.name(4242), "");
    }
}
