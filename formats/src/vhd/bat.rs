//! The block allocation table of a dynamic or differencing VHD ("Block
//! Allocation Table and Data Blocks") and the per-block sector bitmaps.
//!
//! Each BAT entry is a big-endian sector number where the block starts in
//! the file, or `0xFFFFFFFF` for a block that is not allocated. A block
//! starts with its sector bitmap (one bit per sector, most significant bit
//! first, padded to a 512-byte boundary), followed by the block's data.
//! A sector whose bit is clear, like a whole unallocated block, is absent:
//! it reads from the parent in a differencing disk and as zeros in a
//! dynamic disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::budget::{ChargedBytes, Reservation};
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image_file::ImageFile;

use super::dynamic_header::DynamicHeader;
use super::footer::SECTOR;

/// The BAT entry of a block that is not allocated.
pub const UNUSED_ENTRY: u32 = u32::MAX;
/// How many sector bitmaps are kept in memory at most (512 bytes each for
/// 2 MiB blocks: 4 MiB); the cache is emptied when it is full.
pub const MAX_CACHED_BITMAPS: usize = 8192;

/// Where the bytes of a run of the virtual disk come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Stored in this file from this byte offset.
    File(u64),
    /// Not stored here: the parent's, or zeros.
    Absent,
}

/// A run of the virtual disk with one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub offset: u64,
    pub len: u64,
    pub source: Source,
}

fn push_run(out: &mut Vec<Run>, run: Run) {
    if run.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        let touches = last.offset + last.len == run.offset;
        let same = match (last.source, run.source) {
            (Source::Absent, Source::Absent) => true,
            (Source::File(a), Source::File(b)) => a + last.len == b,
            _ => false,
        };
        if touches && same {
            last.len += run.len;
            return;
        }
    }
    out.push(run);
}

/// The BAT with its sector-bitmap cache.
#[derive(Debug)]
pub(crate) struct Bat {
    entries: Vec<u32>,
    block_size: u64,
    bitmap_len: u64,
    bitmaps: Mutex<ChargedBytes<u32>>,
    /// The entries' charge to the open's memory budget.
    _held: Reservation,
}

impl Bat {
    /// Reads the BAT the header describes and checks that every block a
    /// disk of `size` bytes uses lies inside the file.
    /// `header_offset` is where the dynamic header is in the file.
    pub fn read(
        file: &ImageFile,
        header: &DynamicHeader,
        header_offset: u64,
        size: u64,
    ) -> Result<Self> {
        let block_size = u64::from(header.block_size);
        let needed = size.div_ceil(block_size);
        let count = u64::from(header.max_table_entries);
        if count < needed {
            return Err(Error::bad_value(
                Format::Vhd,
                "max table entries",
                count,
                format!("at least {needed} for a disk of {size} bytes"),
            )
            .at(header_offset.saturating_add(28)));
        }
        // Only the entries the disk uses are read: the table may be longer.
        let held = file
            .budget()
            .reserve(Format::Vhd, needed * 4)
            .map_err(|e| e.at(header.table_offset).in_file(file.path()))?;
        let bytes = file
            .read_vec(header.table_offset, needed * 4)
            .map_err(|e| e.in_format(Format::Vhd))?;
        let entries: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| {
                let mut a = [0u8; 4];
                a.copy_from_slice(c);
                u32::from_be_bytes(a)
            })
            .collect();
        let sectors = block_size / SECTOR;
        let bitmap_len = sectors.div_ceil(8).div_ceil(SECTOR) * SECTOR;
        for (i, &e) in entries.iter().enumerate() {
            if e == UNUSED_ENTRY {
                continue;
            }
            let block_start = i as u64 * block_size;
            let used = block_size.min(size - block_start);
            let start = u64::from(e) * SECTOR;
            let end = start + bitmap_len + used;
            if end > file.len() {
                return Err(Error::new(
                    ErrorKind::OutOfBounds,
                    Format::Vhd,
                    Detail::OutOfRange {
                        what: "the file (BAT entry's block)",
                        offset: start,
                        len: bitmap_len + used,
                        size: file.len(),
                    },
                )
                .at(header.table_offset + 4 * i as u64));
            }
        }
        Ok(Bat {
            entries,
            block_size,
            bitmap_len,
            bitmaps: Mutex::new(HashMap::new()),
            _held: held,
        })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// How many blocks are allocated.
    pub fn allocated_blocks(&self) -> usize {
        self.entries.iter().filter(|&&e| e != UNUSED_ENTRY).count()
    }

    fn bitmap(&self, file: &ImageFile, block: u32, entry: u32) -> Result<Arc<[u8]>> {
        let cache = |m: &Mutex<ChargedBytes<u32>>| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&block)
                .map(|(b, _)| Arc::clone(b))
        };
        if let Some(b) = cache(&self.bitmaps) {
            return Ok(b);
        }
        let bytes: Arc<[u8]> = file
            .read_vec(u64::from(entry) * SECTOR, self.bitmap_len)
            .map_err(|e| e.in_format(Format::Vhd))?
            .into();
        let mut map = self.bitmaps.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CACHED_BITMAPS {
            map.clear();
        }
        // Over the open's memory budget: empty the cache, then keep this
        // bitmap only if it fits.
        let held = file.budget().try_reserve(self.bitmap_len).or_else(|| {
            map.clear();
            file.budget().try_reserve(self.bitmap_len)
        });
        if let Some(held) = held {
            map.insert(block, (Arc::clone(&bytes), held));
        }
        Ok(bytes)
    }

    /// The runs covering `len` bytes from virtual `offset` (already checked
    /// against the disk size), appended to `out` in order and coalesced.
    pub fn runs(&self, file: &ImageFile, offset: u64, len: u64, out: &mut Vec<Run>) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let block = pos / self.block_size;
            let in_block = pos % self.block_size;
            let n = (self.block_size - in_block).min(end - pos);
            let entry = usize::try_from(block)
                .ok()
                .and_then(|b| self.entries.get(b))
                .copied()
                .unwrap_or(UNUSED_ENTRY);
            if entry == UNUSED_ENTRY {
                push_run(
                    out,
                    Run {
                        offset: pos,
                        len: n,
                        source: Source::Absent,
                    },
                );
            } else {
                let block_no = u32::try_from(block).unwrap_or(u32::MAX);
                let bitmap = self.bitmap(file, block_no, entry)?;
                let data = u64::from(entry) * SECTOR + self.bitmap_len;
                bitmap_runs(&bitmap, pos - in_block, data, in_block, n, out);
            }
            pos += n;
        }
        Ok(())
    }
}

/// Whether sector `s` of a block is present (MSB-first bitmap).
fn bit(bitmap: &[u8], s: u64) -> bool {
    usize::try_from(s / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|b| b & (0x80 >> (s % 8)) != 0)
}

/// The runs of `n` bytes from `in_block` within one allocated block that
/// starts at virtual `block_start` and whose data is at file offset `data`.
fn bitmap_runs(
    bitmap: &[u8],
    block_start: u64,
    data: u64,
    in_block: u64,
    n: u64,
    out: &mut Vec<Run>,
) {
    let end = in_block + n;
    let mut pos = in_block;
    while pos < end {
        let s = pos / SECTOR;
        let present = bit(bitmap, s);
        // Extend over the following sectors with the same bit, a whole byte at a time where possible.
        let mut next = s + 1;
        while next * SECTOR < end {
            if next % 8 == 0 {
                let full = if present { 0xff } else { 0x00 };
                let byte = usize::try_from(next / 8).ok().and_then(|i| bitmap.get(i));
                if byte == Some(&full) {
                    next += 8;
                    continue;
                }
            }
            if bit(bitmap, next) != present {
                break;
            }
            next += 1;
        }
        let stop = (next * SECTOR).min(end);
        let source = if present {
            Source::File(data + pos)
        } else {
            Source::Absent
        };
        push_run(
            out,
            Run {
                offset: block_start + pos,
                len: stop - pos,
                source,
            },
        );
        pos = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_runs_split_at_clear_bits_and_partial_sectors() {
        let mut bitmap = vec![0u8; 512];
        bitmap[0] = 0b1100_0000; // sectors 0 and 1 present
        bitmap[2] = 0xff; // sectors 16..24 present
        let mut out = Vec::new();
        bitmap_runs(&bitmap, 4096, 1000, 100, 24 * 512, &mut out);
        assert_eq!(
            out,
            vec![
                Run {
                    offset: 4196,
                    len: 924,
                    source: Source::File(1100)
                },
                Run {
                    offset: 4096 + 1024,
                    len: 14 * 512,
                    source: Source::Absent
                },
                Run {
                    offset: 4096 + 16 * 512,
                    len: 8 * 512,
                    source: Source::File(1000 + 16 * 512)
                },
                Run {
                    offset: 4096 + 24 * 512,
                    len: 100,
                    source: Source::Absent
                },
            ]
        );
    }

    fn header(entries: u32, table_offset: u64) -> DynamicHeader {
        DynamicHeader {
            table_offset,
            header_version: 0x0001_0000,
            max_table_entries: entries,
            block_size: 4096,
            checksum: 0,
            parent_unique_id: [0; 16],
            parent_time_stamp: 0,
            parent_unicode_name: String::new(),
            parent_locators: Vec::new(),
            computed_checksum: 0,
        }
    }

    #[test]
    fn entries_are_checked_against_the_file() {
        // BAT at 0 with two entries: block 0 at sector 1, block 1 unused.
        let mut file = vec![0u8; 512 + 512 + 4096];
        file[..4].copy_from_slice(&1u32.to_be_bytes());
        file[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        file[512] = 0x80;
        let f = ImageFile::from_bytes("d.vhd", file.clone());
        let bat = Bat::read(&f, &header(2, 0), 0, 8192).unwrap();
        assert_eq!(bat.allocated_blocks(), 1);
        let mut out = Vec::new();
        bat.runs(&f, 0, 8192, &mut out).unwrap();
        assert_eq!(
            out[0],
            Run {
                offset: 0,
                len: 512,
                source: Source::File(1024)
            }
        );
        assert_eq!(
            out[1],
            Run {
                offset: 512,
                len: 8192 - 512,
                source: Source::Absent
            }
        );
        // An entry past the end of the file.
        file[..4].copy_from_slice(&100u32.to_be_bytes());
        let f = ImageFile::from_bytes("d.vhd", file);
        let e = Bat::read(&f, &header(2, 0), 0, 8192).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert_eq!(e.offset(), Some(0));
        // Too few entries for the size, and a table past the end.
        let e = Bat::read(&f, &header(1, 0), 0, 8192).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = Bat::read(&f, &header(2, 1 << 40), 0, 8192).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    }
}
