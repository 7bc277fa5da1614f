//! The newest bytes of the spool's last segment, kept in memory.
//!
//! Records are appended here, and a flush writes what the segment file lacks
//! and keeps it. The shipper mostly trails the writer by a batch or two, so
//! it takes those records from here instead of reading back, and checking
//! the CRC of, what this process has just written: the read's copy and the
//! CRC of every event were 4-5% of the sensor's CPU at 500,000 events/s.
//! This buffer replaces the file's write buffer, so no byte is copied more
//! often than before. Two halves: when the newer one has grown past
//! [`HALF`] at a flush, it becomes the older one and the older one's
//! allocation is reused, so at least `HALF` flushed bytes stay readable.

use std::io::{self, Write};

/// Bytes a half holds before it turns older: about 20 batches of typical
/// events (~400 bytes each), 10 ms at 400,000 events/s, at a cost of at
/// most 8 MiB of memory. At 1 MiB a shipper near capacity still read most
/// batches back from the file; at 400,000 events/s and 4 MiB it reads none.
/// A shipper further behind (an outage, overload) reads the file.
const HALF: usize = 4 << 20;

#[derive(Debug, Default)]
pub(super) struct Tail {
    segment: u64,
    /// The segment offset of `older[0]`; `newer` follows `older`.
    start: u64,
    older: Vec<u8>,
    newer: Vec<u8>,
    /// The segment offset up to which the bytes are in the file.
    written: u64,
}

impl Tail {
    /// Starts over at `offset` of `segment`, all of whose earlier bytes are
    /// in its file (a new segment at 0, a reopened one at its end).
    pub(super) fn reset(&mut self, segment: u64, offset: u64) {
        self.segment = segment;
        self.start = offset;
        self.written = offset;
        self.older.clear();
        self.newer.clear();
    }

    pub(super) fn append(&mut self, record: &[u8]) {
        self.newer.extend_from_slice(record);
    }

    fn newer_start(&self) -> u64 {
        self.start + self.older.len() as u64
    }

    fn end(&self) -> u64 {
        self.newer_start() + self.newer.len() as u64
    }

    /// Writes to `file` what it lacks. `written` advances with each write,
    /// so after an error a retry writes no byte twice.
    pub(super) fn flush(&mut self, file: &mut impl Write) -> io::Result<()> {
        while self.written < self.end() {
            let from = usize::try_from(self.written - self.newer_start())
                .map_err(|_| io::Error::other("spool tail offset out of range"))?;
            match file.write(&self.newer[from..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.newer.len() >= HALF {
            self.start = self.newer_start();
            std::mem::swap(&mut self.older, &mut self.newer);
            self.newer.clear();
        }
        Ok(())
    }

    /// The bytes of `segment` from `offset` up to `end` (or to the end of
    /// the half that holds `offset`), if `offset` is still in memory.
    /// Records never span the two halves: they turn over at a flush.
    pub(super) fn get(&self, segment: u64, offset: u64, end: u64) -> Option<&[u8]> {
        if segment != self.segment || offset < self.start || offset >= end.min(self.end()) {
            return None;
        }
        let (half, base) = if offset < self.newer_start() {
            (&self.older, self.start)
        } else {
            (&self.newer, self.newer_start())
        };
        let lo = usize::try_from(offset - base).ok()?;
        let hi = usize::try_from(end.min(base + half.len() as u64) - base).ok()?;
        half.get(lo..hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushed_bytes_stay_readable_across_a_turnover_and_none_is_written_twice() {
        let mut tail = Tail::default();
        tail.reset(3, 100);
        let mut file = Vec::new();
        let big = vec![7u8; HALF];
        tail.append(b"ab");
        tail.append(&big);
        tail.flush(&mut file).unwrap();
        // The newer half was past HALF: it is now the older one.
        tail.append(b"cd");
        tail.flush(&mut file).unwrap();
        assert_eq!(file.len(), 2 + HALF + 2, "each byte written once");
        let end = 100 + file.len() as u64;
        assert_eq!(&tail.get(3, 100, end).unwrap()[..2], b"ab");
        assert_eq!(tail.get(3, 100, end).unwrap().len(), 2 + HALF);
        assert_eq!(tail.get(3, 102 + HALF as u64, end).unwrap(), b"cd");
        assert_eq!(
            tail.get(3, 103 + HALF as u64, end - 1),
            None,
            "not yet readable"
        );
        assert_eq!(tail.get(3, 99, end), None, "before the tail: on disk");
        assert_eq!(tail.get(4, 100, end), None, "another segment");
        // The next turnover drops the old half: its bytes are on disk only.
        tail.append(&big);
        tail.flush(&mut file).unwrap();
        assert_eq!(tail.get(3, 100, 100 + file.len() as u64), None);
        assert_eq!(
            tail.get(3, 102 + HALF as u64, 100 + file.len() as u64)
                .unwrap()
                .len(),
            2 + HALF
        );
    }

    /// Writes at most 3 bytes, then fails once.
    struct Choppy {
        got: Vec<u8>,
        fail_next: bool,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.fail_next) {
                return Err(io::Error::other("disk full"));
            }
            self.fail_next = true;
            let n = buf.len().min(3);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_retried_from_where_it_stopped() {
        let mut tail = Tail::default();
        let mut file = Choppy {
            got: Vec::new(),
            fail_next: false,
        };
        tail.append(b"0123456789");
        let mut errors = 0;
        while tail.flush(&mut file).is_err() {
            errors += 1;
        }
        assert_eq!(file.got, b"0123456789");
        assert_eq!(errors, 3);
    }
}
