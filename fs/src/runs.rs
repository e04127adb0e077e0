//! The one run-list reader of the crate: a file's bytes as runs on the
//! volume, read through `Read + Seek` with holes and the unwritten tail as
//! zeros. NTFS (data runs, initialized size), ext2/3/4 (extents and block
//! maps, holes, unwritten extents), exFAT (cluster runs, ValidDataLength)
//! and ISO 9660 (multi-extent files) describe their files this way.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, Result};
use crate::file_system::StoredRun;

/// `len` bytes of a file from byte `file_offset`, stored from byte `at` of
/// the volume, or not stored (`at: None`: a hole, a sparse or unwritten
/// run), which reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRun {
    /// Offset in the file, in bytes.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset on the volume, in bytes; `None` reads as zeros.
    pub at: Option<u64>,
}

impl DataRun {
    /// The file offset just past the run (saturating).
    pub fn end(&self) -> u64 {
        self.file_offset.saturating_add(self.len)
    }
}

/// Copies `buf.len()` bytes of the file from `offset` through `runs`
/// (sorted by file offset, not overlapping): bytes no stored run covers
/// are zeros.
pub fn read_runs(
    device: &dyn BlockDevice,
    runs: &[DataRun],
    buf: &mut [u8],
    offset: u64,
) -> Result<()> {
    buf.fill(0);
    let end = offset.saturating_add(buf.len() as u64);
    let first = runs.partition_point(|r| r.end() <= offset);
    for r in runs.get(first..).unwrap_or_default() {
        if r.file_offset >= end {
            break;
        }
        let Some(at) = r.at else { continue };
        let (s, e) = (r.file_offset.max(offset), r.end().min(end));
        if s >= e {
            continue;
        }
        let dst = usize::try_from(s - offset).unwrap_or(usize::MAX);
        let n = usize::try_from(e - s).unwrap_or(0);
        if let Some(d) = dst.checked_add(n).and_then(|to| buf.get_mut(dst..to)) {
            device.read_at(d, at + (s - r.file_offset))?;
        }
    }
    Ok(())
}

/// The stored parts of `runs` up to `size` bytes of the file, in file
/// order, as [`StoredRun`]s for a kernel copy; `None` when a hole or an
/// unstored run lies inside that range (the copy must then go through
/// the reader).
pub fn stored_runs(runs: &[DataRun], size: u64) -> Option<Vec<StoredRun>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for r in runs {
        if at >= size {
            break;
        }
        let volume = r.at?;
        if r.file_offset != at {
            return None;
        }
        let len = r.len.min(size - at);
        if len > 0 {
            out.push(StoredRun { at: volume, len });
        }
        at = at.checked_add(len)?;
    }
    (at >= size).then_some(out)
}

/// `Read + Seek` over a file of `size` bytes mapped by runs.
pub struct RunReader {
    device: Arc<dyn BlockDevice>,
    runs: Vec<DataRun>,
    size: u64,
    valid: u64,
    pos: u64,
}

impl RunReader {
    /// A reader of `size` bytes mapped by `runs` (sorted by file offset,
    /// not overlapping).
    pub fn new(device: Arc<dyn BlockDevice>, runs: Vec<DataRun>, size: u64) -> Self {
        RunReader {
            device,
            runs,
            size,
            valid: size,
            pos: 0,
        }
    }

    /// Bytes from `valid` on read as zeros without touching the volume
    /// (NTFS's initialized size, exFAT's ValidDataLength).
    pub fn valid_to(mut self, valid: u64) -> Self {
        self.valid = valid.min(self.size);
        self
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` from file `offset` (clipped to the file's size); the
    /// number of bytes given.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(0);
        let Some(buf) = buf.get_mut(..n) else {
            return Ok(0);
        };
        let stored = usize::try_from(self.valid.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(n);
        let (head, tail) = buf.split_at_mut(stored);
        read_runs(self.device.as_ref(), &self.runs, head, offset)?;
        tail.fill(0);
        Ok(n)
    }
}

impl Read for RunReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = RunReader::read_at(self, buf, self.pos).map_err(Error::into_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RunReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    fn device() -> Arc<dyn BlockDevice> {
        Arc::new(MemoryDevice::new(
            (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
        ))
    }

    fn run(file_offset: u64, len: u64, at: Option<u64>) -> DataRun {
        DataRun {
            file_offset,
            len,
            at,
        }
    }

    #[test]
    fn holes_gaps_and_the_unwritten_tail_read_as_zeros() {
        // 0..4 at 100, 4..8 a hole, 8..10 not covered, 10..12 at 200.
        let runs = vec![run(0, 4, Some(100)), run(4, 4, None), run(10, 2, Some(200))];
        let mut r = RunReader::new(device(), runs.clone(), 14);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, [100, 101, 102, 103, 0, 0, 0, 0, 0, 0, 200, 201, 0, 0]);
        let r = RunReader::new(device(), runs, 14).valid_to(2);
        let mut buf = [9u8; 6];
        assert_eq!(r.read_at(&mut buf, 1).unwrap(), 6);
        assert_eq!(buf, [101, 0, 0, 0, 0, 0]);
        assert_eq!(r.read_at(&mut buf, 14).unwrap(), 0);
    }

    #[test]
    fn stored_runs_only_for_a_file_stored_end_to_end() {
        let whole = [run(0, 4, Some(100)), run(4, 8, Some(50))];
        assert_eq!(
            stored_runs(&whole, 10),
            Some(vec![
                StoredRun { at: 100, len: 4 },
                StoredRun { at: 50, len: 6 }
            ])
        );
        assert_eq!(
            stored_runs(&[run(0, 4, Some(100)), run(4, 8, None)], 10),
            None
        );
        assert_eq!(stored_runs(&[run(0, 4, Some(100))], 10), None);
        assert_eq!(stored_runs(&[run(2, 4, Some(100))], 4), None);
    }
}
