//! [`FileView`]: the VHDX file as the reader sees it — the file's own
//! bytes with the replayed log laid over them in memory.
//!
//! Log replay ([MS-VHDX] 2.3.3) would normally write the log's sectors into
//! the file; this library never writes an input file, so the writes are
//! kept in an ordered map of non-overlapping pieces and every read of the
//! file goes through it. The file on disk is never changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::block_device::FileRange;
use crate::error::{Error, Format, Result};
use crate::image_file::ImageFile;

/// Where the bytes of one overlay piece come from.
#[derive(Clone, Debug)]
enum Source {
    /// Zeros (a log zero descriptor).
    Zero,
    /// `data[skip..]` (a log data sector).
    Bytes { data: Arc<[u8]>, skip: usize },
}

impl Source {
    /// The same source, `by` bytes further on.
    fn advanced(&self, by: u64) -> Source {
        match self {
            Source::Zero => Source::Zero,
            Source::Bytes { data, skip } => Source::Bytes {
                data: Arc::clone(data),
                skip: skip.saturating_add(usize::try_from(by).unwrap_or(usize::MAX)),
            },
        }
    }
}

/// One overlay piece: file bytes `[start, end)` replaced by `source`.
#[derive(Clone, Debug)]
struct Piece {
    end: u64,
    source: Source,
}

/// The file plus its in-memory log overlay.
#[derive(Debug)]
pub(crate) struct FileView {
    file: ImageFile,
    /// The file's length after replay (at least the file's own length).
    len: u64,
    /// Replayed writes keyed by their start offset; never overlapping.
    pieces: BTreeMap<u64, Piece>,
    /// The overlay's charge to the open's memory budget.
    held: Option<crate::budget::Reservation>,
}

impl FileView {
    /// The file as it is, with nothing replayed.
    pub(crate) fn new(file: ImageFile) -> Self {
        let len = file.len();
        FileView {
            file,
            len,
            pieces: BTreeMap::new(),
            held: None,
        }
    }

    /// Keeps `held` (the replayed log's charge to the memory budget) as
    /// long as the view and its overlay live.
    pub(crate) fn hold(&mut self, held: crate::budget::Reservation) {
        self.held = Some(held);
    }

    /// The underlying file.
    pub(crate) fn file(&self) -> &ImageFile {
        &self.file
    }

    /// The length of the file after replay.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether any log write was laid over the file.
    #[cfg(test)]
    pub(crate) fn has_overlay(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// `len` bytes at `offset` of the file itself, when no replayed write
    /// lies over any of them (the file's bytes are then the view's).
    pub(crate) fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        if self.overlaid(offset, len) {
            return None;
        }
        self.file.file_range(offset, len)
    }

    /// Whether a replayed write lies over any of `len` bytes at `offset`.
    fn overlaid(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.pieces
            .range(..end)
            .next_back()
            .is_some_and(|(_, p)| p.end > offset)
    }

    /// The replayed writes, in file order: `(offset, bytes)`, `None`
    /// bytes for a run of zeros of the given length (the writer applies
    /// them to the file before it writes).
    pub(crate) fn overlay(&self) -> Vec<(u64, u64, Option<&[u8]>)> {
        self.pieces
            .iter()
            .map(|(&start, p)| {
                let len = p.end - start;
                let bytes = match &p.source {
                    Source::Zero => None,
                    Source::Bytes { data, skip } => usize::try_from(len)
                        .ok()
                        .and_then(|n| data.get(*skip..skip.checked_add(n)?)),
                };
                (start, len, bytes)
            })
            .collect()
    }

    /// Extends the replayed file to at least `len` bytes (reads as zeros).
    pub(crate) fn extend_to(&mut self, len: u64) {
        self.len = self.len.max(len);
    }

    /// Lays `data` over the file at `offset`.
    pub(crate) fn write(&mut self, offset: u64, data: Arc<[u8]>) {
        let len = data.len() as u64;
        self.insert(offset, len, Source::Bytes { data, skip: 0 });
    }

    /// Lays `len` zero bytes over the file at `offset`.
    pub(crate) fn write_zeros(&mut self, offset: u64, len: u64) {
        self.insert(offset, len, Source::Zero);
    }

    fn insert(&mut self, start: u64, len: u64, source: Source) {
        let end = start.saturating_add(len);
        if end <= start {
            return;
        }
        let overlapping: Vec<u64> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.end > start)
            .map(|(&s, _)| s)
            .collect();
        for s in overlapping {
            let Some(old) = self.pieces.remove(&s) else {
                continue;
            };
            if s < start {
                self.pieces.insert(
                    s,
                    Piece {
                        end: start,
                        source: old.source.clone(),
                    },
                );
            }
            if old.end > end {
                self.pieces.insert(
                    end,
                    Piece {
                        end: old.end,
                        source: old.source.advanced(end - s),
                    },
                );
            }
        }
        self.pieces.insert(start, Piece { end, source });
        self.len = self.len.max(end);
    }

    /// Fills `buf` from `offset` of the replayed file; past the file's own
    /// end (but within the replayed length) it reads zeros.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = buf.len() as u64;
        let end = match offset.checked_add(n) {
            Some(e) if e <= self.len => e,
            _ => {
                return Err(
                    Error::out_of_range(Format::Vhdx, "file", offset, n, self.len)
                        .in_file(self.file.path()),
                )
            }
        };
        let file_len = self.file.len();
        let from_file = file_len.saturating_sub(offset).min(n);
        let split = usize::try_from(from_file).unwrap_or(buf.len());
        let (head, tail) = buf.split_at_mut(split.min(buf.len()));
        if !head.is_empty() {
            self.file
                .read_exact_at(head, offset)
                .map_err(|e| e.in_format(Format::Vhdx))?;
        }
        tail.fill(0);
        if self.pieces.is_empty() {
            return Ok(());
        }
        for (&start, piece) in self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.end > offset)
        {
            let lo = start.max(offset);
            let hi = piece.end.min(end);
            let (Ok(dst_lo), Ok(dst_hi)) =
                (usize::try_from(lo - offset), usize::try_from(hi - offset))
            else {
                continue;
            };
            let Some(dst) = buf.get_mut(dst_lo..dst_hi) else {
                continue;
            };
            match &piece.source {
                Source::Zero => dst.fill(0),
                Source::Bytes { data, skip } => {
                    let from = usize::try_from(lo - start)
                        .ok()
                        .and_then(|d| d.checked_add(*skip));
                    let src = from.and_then(|f| data.get(f..f.checked_add(dst.len())?));
                    match src {
                        Some(s) => dst.copy_from_slice(s),
                        None => dst.fill(0),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new vector, checking the range
    /// against the replayed length before allocating.
    pub(crate) fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(
                Error::out_of_range(Format::Vhdx, "file", offset, len, self.len)
                    .in_file(self.file.path()),
            );
        }
        let n = usize::try_from(len)
            .map_err(|_| Error::limit(Format::Vhdx, "read length", len, usize::MAX as u64))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> FileView {
        FileView::new(ImageFile::from_bytes("v.vhdx", vec![1u8; 64]))
    }

    #[test]
    fn file_range_only_where_no_write_lies_over_the_file() {
        let mut v = view();
        assert!(v.file_range(0, 8).is_none(), "bytes in memory are no file");
        v.write(16, Arc::from(vec![1u8; 8]));
        assert!(!v.overlaid(10, 6));
        assert!(v.overlaid(20, 10));
        assert!(v.overlaid(0, 17));
        assert!(v.overlaid(23, 1));
        assert!(!v.overlaid(24, 40));
        assert!(!v.overlaid(8, 8));
    }

    #[test]
    fn later_writes_win_and_split_earlier_ones() {
        let mut v = view();
        v.write(8, Arc::from(vec![2u8; 16]));
        v.write_zeros(12, 4);
        v.write(20, Arc::from(vec![3u8; 2]));
        let mut buf = [9u8; 32];
        v.read_exact_at(&mut buf, 0).unwrap();
        let mut want = [1u8; 32];
        want[8..24].fill(2);
        want[12..16].fill(0);
        want[20..22].fill(3);
        assert_eq!(buf, want);
        assert_eq!(v.pieces.len(), 5);
    }

    #[test]
    fn writes_past_the_end_extend_the_file_with_zeros_between() {
        let mut v = view();
        v.write(100, Arc::from(vec![5u8; 4]));
        assert_eq!(v.len(), 104);
        let buf = v.read_vec(60, 44).unwrap();
        assert_eq!(&buf[..4], &[1; 4]);
        assert!(buf[4..40].iter().all(|&b| b == 0));
        assert_eq!(&buf[40..], &[5; 4]);
        assert!(v.read_vec(100, 5).is_err());
        assert_eq!(v.file().len(), 64);
    }
}
