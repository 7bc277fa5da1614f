//! The collector's request handling: the bytes of one `EventBatch` message
//! from a gRPC stream (any client that reaches the port can send them) go
//! through what `server.rs` and the writer do with them: decode, the batch
//! limit, `validate_event`, the indicators, and the SQLite insert.

#![no_main]

use std::{cell::RefCell, path::PathBuf};

use collector::{
    Store,
    indicators::{IndicatorType, IndicatorValue, indicators_of},
    server::DEFAULT_MAX_BATCH_EVENTS,
    store::validate_event,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sensor_proto::v1::EventBatch;

/// Rows after which the database is replaced, so a long run does not slow
/// down on an ever-growing file.
const ROTATE_AFTER: u64 = 20_000;

struct Db {
    /// One directory per process; removed when the process exits normally.
    dir: tempfile::TempDir,
    store: Store,
    generation: u64,
    rows: u64,
}

impl Db {
    fn new() -> Self {
        // Memory-backed when the host has it: the insert path, not the disk,
        // is what is under test.
        let dir = tempfile::Builder::new()
            .prefix("collector-fuzz")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
        let store = Store::open(&Self::path(&dir, 0)).expect("opening a fresh store");
        Self {
            dir,
            store,
            generation: 0,
            rows: 0,
        }
    }

    fn path(dir: &tempfile::TempDir, generation: u64) -> PathBuf {
        dir.path().join(format!("events-{generation}.db"))
    }

    fn rotate(&mut self) {
        let old = Self::path(&self.dir, self.generation);
        self.generation += 1;
        self.store =
            Store::open(&Self::path(&self.dir, self.generation)).expect("rotating the store");
        for suffix in ["", "-wal", "-shm"] {
            let mut p = old.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        self.rows = 0;
    }
}

thread_local! {
    static DB: RefCell<Option<Db>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = EventBatch::decode(data) else {
        return;
    };
    // server.rs refuses larger batches before looking at them.
    if batch.events.len() > DEFAULT_MAX_BATCH_EVENTS {
        return;
    }
    let mut valid = true;
    for event in &batch.events {
        for indicator in indicators_of(event) {
            match (indicator.kind, &indicator.value) {
                (IndicatorType::Path, IndicatorValue::Text(t)) => assert!(!t.is_empty()),
                (IndicatorType::Domain, IndicatorValue::Text(t)) => {
                    assert!(t.ends_with('.') && t.len() > 1, "domain key {t:?}");
                }
                (IndicatorType::Port, IndicatorValue::Int(n)) => assert!((1..=65535).contains(n)),
                (IndicatorType::Ip, IndicatorValue::Ip(_)) => {}
                other => panic!("indicator of a mismatched column: {other:?}"),
            }
        }
        valid &= validate_event(event).is_ok();
    }
    // An invalid event refuses the whole batch before the writer sees it.
    if !valid || batch.events.is_empty() {
        return;
    }
    DB.with(|db| {
        let mut db = db.borrow_mut();
        let db = db.get_or_insert_with(Db::new);
        // Every batch that passed validation must store: a failure here is a
        // batch the sensor would resend forever.
        let outcome = db
            .store
            .insert_batch(&batch.events)
            .unwrap_or_else(|e| panic!("a valid batch did not store: {e}"));
        assert_eq!(
            outcome.inserted + outcome.duplicates,
            batch.events.len() as u64
        );
        db.rows += outcome.inserted;
        if db.rows >= ROTATE_AFTER {
            db.rotate();
        }
    });
});
