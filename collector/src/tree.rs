//! The ancestry of a process image: follow `parent_exec_id` to the root.

use std::collections::HashSet;

use sensor_proto::v1::Event;

use crate::store::{ImageEvent, Store, StoreError};

/// How many ancestors [`ancestry`] follows at most by default.
pub const MAX_DEPTH: usize = 1024;

/// Why the ancestry of an exec_id cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("no event for exec_id {0:?} is stored")]
    UnknownExecId(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One process image of an ancestry chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Ancestor {
    pub exec_id: String,
    /// Empty when the image's parent is unknown (e.g. pid 1).
    pub parent_exec_id: String,
    pub pid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// The stored event this ancestor was read from (usually its exec).
    pub event: Event,
}

/// Why the walk stopped at the root of [`Ancestry::chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The root has no parent_exec_id.
    NoParent,
    /// The root's parent is not stored (it began before the sensor saw it,
    /// or its events were lost).
    ParentNotStored(String),
    /// The root's parent is already in the chain: the data has a cycle.
    Cycle(String),
    /// The chain reached the depth limit.
    DepthLimit,
}

/// A process image and its ancestors.
#[derive(Debug, Clone, PartialEq)]
pub struct Ancestry {
    /// Root first; the last element is the image that was asked about.
    pub chain: Vec<Ancestor>,
    pub stop: Stop,
}

/// Walks from `exec_id` up through `parent_exec_id` until an image has no
/// parent, its parent is not stored, an image repeats, or `max_depth`
/// images have been collected.
///
/// # Errors
/// No event for `exec_id` is stored, or SQLite fails.
pub fn ancestry(store: &Store, exec_id: &str, max_depth: usize) -> Result<Ancestry, TreeError> {
    let first = store
        .find_image(exec_id, None)?
        .ok_or_else(|| TreeError::UnknownExecId(exec_id.to_owned()))?;
    let sensor_id = first.event.sensor_id.clone();
    let mut chain = vec![ancestor_of(exec_id, first)];
    let mut seen: HashSet<String> = HashSet::from([exec_id.to_owned()]);
    let stop = loop {
        let parent_id = match chain.last() {
            Some(a) if a.parent_exec_id.is_empty() => break Stop::NoParent,
            Some(a) => a.parent_exec_id.clone(),
            None => break Stop::NoParent,
        };
        if seen.contains(&parent_id) {
            break Stop::Cycle(parent_id);
        }
        if chain.len() >= max_depth.max(1) {
            break Stop::DepthLimit;
        }
        match store.find_image(&parent_id, Some(&sensor_id))? {
            Some(found) => {
                seen.insert(parent_id.clone());
                chain.push(ancestor_of(&parent_id, found));
            }
            None => break Stop::ParentNotStored(parent_id),
        }
    };
    chain.reverse();
    Ok(Ancestry { chain, stop })
}

/// Reads the image out of the event found for it: the event's process.
fn ancestor_of(exec_id: &str, found: ImageEvent) -> Ancestor {
    let event = found.event;
    let process = event.process.clone().unwrap_or_default();
    Ancestor {
        exec_id: exec_id.to_owned(),
        parent_exec_id: process.parent_exec_id,
        pid: process.pid,
        exe: process.exe,
        argv: process.argv,
        event,
    }
}

/// One line of the text tree:
/// `<indent><exec_id> pid=<pid> exe=<exe> argv=<arg> <arg> ...`, indented by
/// two spaces per depth. An exe or argument that is empty or contains
/// whitespace, quotes, backslashes or control characters is JSON-quoted.
#[must_use]
pub fn format_line(depth: usize, ancestor: &Ancestor) -> String {
    let argv: Vec<String> = ancestor.argv.iter().map(|a| quote_if_needed(a)).collect();
    format!(
        "{:indent$}{} pid={} exe={} argv={}",
        "",
        ancestor.exec_id,
        ancestor.pid,
        quote_if_needed(&ancestor.exe),
        argv.join(" "),
        indent = depth * 2
    )
}

fn quote_if_needed(s: &str) -> String {
    let needs = s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
    if needs {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ancestor(argv: &[&str]) -> Ancestor {
        Ancestor {
            exec_id: "e1".into(),
            parent_exec_id: String::new(),
            pid: 7,
            exe: "/bin/sh".into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            event: Event {
                process: Some(Box::default()),
                ..Event::default()
            },
        }
    }

    #[test]
    fn arguments_with_spaces_or_quotes_are_json_quoted() {
        assert_eq!(
            format_line(2, &ancestor(&["sh", "-c", "echo \"hi\" there", ""])),
            r#"    e1 pid=7 exe=/bin/sh argv=sh -c "echo \"hi\" there" """#
        );
    }

    #[test]
    fn plain_arguments_are_printed_as_they_are() {
        assert_eq!(
            format_line(0, &ancestor(&["sh", "-e"])),
            "e1 pid=7 exe=/bin/sh argv=sh -e"
        );
    }
}
