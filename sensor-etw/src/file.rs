//! Files: Microsoft-Windows-Kernel-File 12/30 (create), 16 (write),
//! 26 (delete path), 27 (rename path), with the name bookkeeping that
//! writes need: FileObject -> path from creates (12/30), FileKey -> path
//! from NameCreate/NameDelete (10/11) and the classic FileIo name records
//! (Name 0, FileCreate 32, FileRundown 36, whose `FileObject` is really the
//! FileKey); Close (14) ends a FileObject.
//!
//! Layouts: jdu2600/Windows10EtwEvents manifest/Microsoft-Windows-Kernel-File.tsv
//! (v0 carries `ThreadId` as a Pointer, v1 `IssuingThreadId` as UInt32) and
//! the MOF `FileIo_Name` class (learn.microsoft.com "FileIo_Name class").
//!
//! A write is reported once per FileObject (the first write through an
//! open file, like the Linux sensor). A write whose FileObject and FileKey
//! have no name yet is held up to `file_hold_ms` for a create that names
//! it (events of different CPUs can arrive out of order), then sent with
//! an empty path and counted.

use sensor_proto::v1::{Event, FileEvent, FileOp, event::Body};

use crate::{
    counters::EtwCounters,
    decoder::{Decoder, DecoderConfig},
    record::EtwRecord,
    router::{Header, Route},
    state::Bounded,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileRecord {
    /// FileKey -> name (NameCreate 10, classic name records).
    Name {
        key: u64,
        name: String,
    },
    /// NameDelete 11.
    NameDelete {
        key: u64,
    },
    /// Create 12 (any open) or CreateNewFile 30 (`new_file`).
    Create {
        hdr: Header,
        object: u64,
        name: String,
        new_file: bool,
    },
    Close {
        object: u64,
        key: u64,
    },
    Write {
        hdr: Header,
        object: u64,
        key: u64,
    },
    DeletePath {
        hdr: Header,
        path: String,
    },
    /// RenamePath 27 carries the old path only (reference §3).
    RenamePath {
        hdr: Header,
        path: String,
    },
}

/// The issuing thread: `IssuingThreadId` (v1), `ThreadId` (v0, a Pointer),
/// else the header's.
fn thread(rec: &dyn EtwRecord, hdr: &mut Header) {
    if let Some(t) = rec
        .u32("IssuingThreadId")
        .or_else(|| rec.pointer("ThreadId").and_then(|t| u32::try_from(t).ok()))
    {
        hdr.tid = t;
    }
}

pub fn parse(route: Route, rec: &dyn EtwRecord) -> Option<FileRecord> {
    let mut hdr = Header::of(rec);
    thread(rec, &mut hdr);
    Some(match route {
        Route::FileNameCreate => FileRecord::Name {
            key: rec.pointer("FileKey")?,
            name: rec.string("FileName")?,
        },
        Route::ClassicFileName => FileRecord::Name {
            key: rec.pointer("FileObject")?,
            name: rec.string("FileName")?,
        },
        Route::FileNameDelete => FileRecord::NameDelete {
            key: rec.pointer("FileKey")?,
        },
        Route::FileCreate | Route::FileCreateNew => FileRecord::Create {
            hdr,
            object: rec.pointer("FileObject")?,
            name: rec.string("FileName")?,
            new_file: route == Route::FileCreateNew,
        },
        Route::FileClose => FileRecord::Close {
            object: rec.pointer("FileObject")?,
            key: rec.pointer("FileKey").unwrap_or(0),
        },
        Route::FileWrite => FileRecord::Write {
            hdr,
            object: rec.pointer("FileObject")?,
            key: rec.pointer("FileKey").unwrap_or(0),
        },
        Route::FileDeletePath => FileRecord::DeletePath {
            hdr,
            path: rec.string("FilePath")?,
        },
        Route::FileRenamePath => FileRecord::RenamePath {
            hdr,
            path: rec.string("FilePath")?,
        },
        _ => return None,
    })
}

struct HeldWrite {
    hdr: Header,
    key: u64,
    deadline: i64,
}

pub(crate) struct FileState {
    objects: Bounded<u64, String>,
    keys: Bounded<u64, String>,
    /// FileObjects already reported written.
    written: Bounded<u64, ()>,
    held: Bounded<u64, HeldWrite>,
}

impl FileState {
    pub(crate) fn new(cfg: &DecoderConfig) -> Self {
        Self {
            objects: Bounded::new(cfg.file_name_capacity),
            keys: Bounded::new(cfg.file_name_capacity),
            written: Bounded::new(cfg.file_name_capacity),
            held: Bounded::new(cfg.hold_capacity),
        }
    }
}

fn file_event(op: FileOp, path: String, old_path: String) -> Body {
    Body::File(FileEvent {
        op: op.into(),
        path,
        old_path,
        ..FileEvent::default()
    })
}

impl Decoder {
    pub(crate) fn file(&mut self, r: FileRecord, out: &mut Vec<Event>) {
        match r {
            FileRecord::Name { key, name } => {
                let path = self.dos_path(&name);
                let evicted = self.files.keys.insert(key, path);
                self.count_name_evictions(evicted.len());
            }
            FileRecord::NameDelete { key } => {
                self.files.keys.remove(&key);
            }
            FileRecord::Create {
                hdr,
                object,
                name,
                new_file,
            } => {
                let path = self.dos_path(&name);
                // A FileObject is reused once closed: a new create starts its
                // first-write tracking afresh.
                self.files.written.remove(&object);
                let evicted = self.files.objects.insert(object, path.clone());
                self.count_name_evictions(evicted.len());
                if new_file {
                    let p = self.context(hdr.pid, hdr.tid);
                    out.push(self.event(
                        hdr.ts,
                        p,
                        file_event(FileOp::Create, path.clone(), String::new()),
                    ));
                }
                if let Some(w) = self.files.held.remove(&object) {
                    EtwCounters::inc(&self.counters.file_write_late_resolved);
                    self.files.written.insert(object, ());
                    self.send_write(&w.hdr, path, out);
                }
            }
            FileRecord::Close { object, key } => {
                self.files.objects.remove(&object);
                self.files.written.remove(&object);
                if let Some(w) = self.files.held.remove(&object) {
                    // The object ends unnamed; its FileKey may still tell.
                    let key = if key == 0 { w.key } else { key };
                    let path = self.files.keys.get(&key).cloned();
                    self.send_held_write(&w, path, out);
                }
            }
            FileRecord::Write { hdr, object, key } => {
                if self.files.written.contains(&object) || self.files.held.contains(&object) {
                    return;
                }
                let path = self
                    .files
                    .objects
                    .get(&object)
                    .or_else(|| self.files.keys.get(&key))
                    .cloned();
                match path {
                    Some(path) => {
                        self.files.written.insert(object, ());
                        self.send_write(&hdr, path, out);
                    }
                    None => {
                        EtwCounters::inc(&self.counters.file_write_held);
                        let deadline = hdr.ts.saturating_add(Self::ms(self.cfg.file_hold_ms));
                        let evicted = self
                            .files
                            .held
                            .insert(object, HeldWrite { hdr, key, deadline });
                        for (_, w) in evicted {
                            EtwCounters::inc(&self.counters.file_write_hold_dropped);
                            self.send_held_write(&w, None, out);
                        }
                    }
                }
            }
            FileRecord::DeletePath { hdr, path } => {
                let path = self.dos_path(&path);
                let p = self.context(hdr.pid, hdr.tid);
                out.push(self.event(hdr.ts, p, file_event(FileOp::Unlink, path, String::new())));
            }
            FileRecord::RenamePath { hdr, path } => {
                // ETW names the source only; the new name has no ETW source
                // (reference §3), so `path` stays empty.
                let old = self.dos_path(&path);
                let p = self.context(hdr.pid, hdr.tid);
                out.push(self.event(hdr.ts, p, file_event(FileOp::Rename, String::new(), old)));
            }
        }
    }

    fn count_name_evictions(&self, n: usize) {
        for _ in 0..n {
            EtwCounters::inc(&self.counters.file_names_evicted);
        }
    }

    fn send_write(&mut self, hdr: &Header, path: String, out: &mut Vec<Event>) {
        let p = self.context(hdr.pid, hdr.tid);
        out.push(self.event(hdr.ts, p, file_event(FileOp::Write, path, String::new())));
    }

    /// A held write goes out, named if `path` is known, else unresolved.
    fn send_held_write(&mut self, w: &HeldWrite, path: Option<String>, out: &mut Vec<Event>) {
        let path = match path {
            Some(p) => {
                EtwCounters::inc(&self.counters.file_write_late_resolved);
                p
            }
            None => {
                EtwCounters::inc(&self.counters.file_path_unresolved);
                String::new()
            }
        };
        self.send_write(&w.hdr, path, out);
    }

    pub(crate) fn expire_writes(&mut self, now: i64, out: &mut Vec<Event>) {
        let mut due = self.files.held.drain_where(|_, w| w.deadline <= now);
        due.sort_by_key(|(object, w)| (w.hdr.ts, *object));
        for (object, w) in due {
            let path = self.files.keys.get(&w.key).cloned();
            self.files.written.insert(object, ());
            self.send_held_write(&w, path, out);
        }
    }
}
