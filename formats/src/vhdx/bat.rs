//! The block allocation table ([MS-VHDX] 2.5): one 64-bit entry per payload
//! block, with one sector-bitmap entry after every `chunk_ratio` payload
//! entries. Each entry holds a state (bits 0-2) and a file offset in MiB
//! (bits 20-63).

use crate::error::{Detail, Error, Format, Result};

use super::file_view::FileView;
use super::header::MIB;
use super::region_table::Region;

/// Payload block state: not present (parent in a differencing disk, else zeros).
pub(crate) const PAYLOAD_BLOCK_NOT_PRESENT: u8 = 0;
/// Payload block state: undefined content (treated as not present).
pub(crate) const PAYLOAD_BLOCK_UNDEFINED: u8 = 1;
/// Payload block state: reads as zeros.
pub(crate) const PAYLOAD_BLOCK_ZERO: u8 = 2;
/// Payload block state: unmapped by a trim (treated as not present).
pub(crate) const PAYLOAD_BLOCK_UNMAPPED: u8 = 3;
/// The value pre-1.0 writers used for unmapped blocks.
pub(crate) const PAYLOAD_BLOCK_UNMAPPED_V095: u8 = 5;
/// Payload block state: fully present in the file.
pub(crate) const PAYLOAD_BLOCK_FULLY_PRESENT: u8 = 6;
/// Payload block state: partly present; the sector bitmap says which sectors.
pub(crate) const PAYLOAD_BLOCK_PARTIALLY_PRESENT: u8 = 7;
/// Sector bitmap block state: not present.
pub(crate) const SB_BLOCK_NOT_PRESENT: u8 = 0;
/// Sector bitmap block state: present.
pub(crate) const SB_BLOCK_PRESENT: u8 = 6;
/// Size of a sector bitmap block.
pub(crate) const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
/// Sectors one sector bitmap block covers (2^23 bits).
const SECTORS_PER_BITMAP: u64 = 1 << 23;
/// Size of one BAT entry.
const ENTRY_SIZE: u64 = 8;
/// Bits of an entry that hold the state.
const STATE_MASK: u64 = 0x7;
/// The file offset in MiB starts at this bit.
const FILE_OFFSET_SHIFT: u32 = 20;

/// What one payload block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// Not here: from the parent in a differencing disk, else zeros
    /// (NOT_PRESENT, UNDEFINED, UNMAPPED).
    Absent,
    /// Reads as zeros (ZERO).
    Zero,
    /// All of it at this file offset (FULLY_PRESENT).
    Present(u64),
    /// At this file offset where the chunk's sector bitmap has a bit set,
    /// from the parent elsewhere (PARTIALLY_PRESENT).
    Partial(u64),
}

/// The BAT's geometry, from the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Virtual disk size in bytes.
    pub(crate) size: u64,
    /// Block size in bytes.
    pub(crate) block_size: u64,
    /// Logical sector size in bytes.
    pub(crate) sector_size: u64,
    /// Payload blocks per sector bitmap block.
    pub(crate) chunk_ratio: u64,
    /// Payload blocks of the disk.
    pub(crate) data_blocks: u64,
    /// Entries the BAT must hold.
    pub(crate) total_entries: u64,
}

impl Geometry {
    /// The geometry of a disk ([MS-VHDX] 2.5 gives the formulas).
    pub(crate) fn new(size: u64, block_size: u32, sector_size: u32, has_parent: bool) -> Self {
        let block_size = u64::from(block_size.max(1));
        let sector_size = u64::from(sector_size.max(1));
        let chunk_ratio = (SECTORS_PER_BITMAP * sector_size / block_size).max(1);
        let data_blocks = size.div_ceil(block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let total_entries = if has_parent {
            bitmap_blocks * (chunk_ratio + 1)
        } else if data_blocks == 0 {
            0
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        Geometry {
            size,
            block_size,
            sector_size,
            chunk_ratio,
            data_blocks,
            total_entries,
        }
    }

    /// Bytes of the virtual disk that block `block` covers (less for the last one).
    pub(crate) fn block_len(&self, block: u64) -> u64 {
        let start = block.saturating_mul(self.block_size);
        self.size.saturating_sub(start).min(self.block_size)
    }
}

/// The loaded, checked BAT.
#[derive(Debug)]
pub(crate) struct Bat {
    entries: Vec<u64>,
    geometry: Geometry,
    /// The entries' charge to the open's memory budget.
    _held: crate::budget::Reservation,
}

fn state(entry: u64) -> u8 {
    (entry & STATE_MASK) as u8
}

fn file_offset(entry: u64) -> u64 {
    (entry >> FILE_OFFSET_SHIFT).saturating_mul(MIB)
}

impl Bat {
    /// Reads the BAT region and checks every entry: known states, and
    /// present blocks and bitmaps inside the (replayed) file.
    pub(crate) fn read(view: &FileView, region: Region, geometry: Geometry) -> Result<Bat> {
        let needed = geometry.total_entries.saturating_mul(ENTRY_SIZE);
        if needed > region.length {
            return Err(Error::corrupt(
                Format::Vhdx,
                Detail::Truncated {
                    what: format!("BAT of {} entries", geometry.total_entries),
                    needed,
                    available: region.length,
                },
            )
            .at(region.file_offset));
        }
        let held = view
            .file()
            .budget()
            .reserve(Format::Vhdx, needed)
            .map_err(|e| e.at(region.file_offset).in_file(view.file().path()))?;
        let raw = view.read_vec(region.file_offset, needed)?;
        let entries: Vec<u64> = raw
            .chunks_exact(ENTRY_SIZE as usize)
            .map(|c| super::fields::le_u64(c, 0))
            .collect();
        let bat = Bat {
            entries,
            geometry,
            _held: held,
        };
        bat.check(view.len(), region.file_offset)?;
        Ok(bat)
    }

    fn check(&self, file_len: u64, bat_offset: u64) -> Result<()> {
        let g = &self.geometry;
        for (i, &entry) in self.entries.iter().enumerate() {
            let i = i as u64;
            let at = bat_offset + i * ENTRY_SIZE;
            let is_bitmap = (i + 1) % (g.chunk_ratio + 1) == 0;
            let s = state(entry);
            let (len, known) = if is_bitmap {
                (
                    SECTOR_BITMAP_BLOCK_SIZE,
                    matches!(s, SB_BLOCK_NOT_PRESENT | SB_BLOCK_PRESENT),
                )
            } else {
                let block = i - i / (g.chunk_ratio + 1);
                (
                    g.block_len(block),
                    matches!(
                        s,
                        PAYLOAD_BLOCK_NOT_PRESENT
                            | PAYLOAD_BLOCK_UNDEFINED
                            | PAYLOAD_BLOCK_ZERO
                            | PAYLOAD_BLOCK_UNMAPPED
                            | PAYLOAD_BLOCK_UNMAPPED_V095
                            | PAYLOAD_BLOCK_FULLY_PRESENT
                            | PAYLOAD_BLOCK_PARTIALLY_PRESENT
                    ),
                )
            };
            if !known {
                return Err(Error::bad_value(
                    Format::Vhdx,
                    if is_bitmap {
                        "sector bitmap BAT entry state"
                    } else {
                        "payload BAT entry state"
                    },
                    s.into(),
                    if is_bitmap {
                        "0 or 6"
                    } else {
                        "0, 1, 2, 3, 5, 6 or 7"
                    },
                )
                .at(at));
            }
            let present = s == PAYLOAD_BLOCK_FULLY_PRESENT
                || (!is_bitmap && s == PAYLOAD_BLOCK_PARTIALLY_PRESENT);
            if present && len > 0 {
                let off = file_offset(entry);
                if off < MIB || off.checked_add(len).is_none_or(|e| e > file_len) {
                    return Err(Error::new(
                        crate::ErrorKind::OutOfBounds,
                        Format::Vhdx,
                        Detail::Invalid(format!(
                            "BAT entry {i} places {len} bytes at file offset {off:#x}, outside the {file_len} bytes of the file"
                        )),
                    )
                    .at(at));
                }
            }
        }
        Ok(())
    }

    /// The geometry.
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// What payload block `block` holds.
    pub(crate) fn block(&self, block: u64) -> BlockState {
        let cr = self.geometry.chunk_ratio;
        let index = block.saturating_add(block / cr);
        let entry = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(0);
        match state(entry) {
            PAYLOAD_BLOCK_ZERO => BlockState::Zero,
            PAYLOAD_BLOCK_FULLY_PRESENT => BlockState::Present(file_offset(entry)),
            PAYLOAD_BLOCK_PARTIALLY_PRESENT => BlockState::Partial(file_offset(entry)),
            _ => BlockState::Absent,
        }
    }

    /// The file offset of the sector bitmap block of `block`'s chunk, when present.
    pub(crate) fn bitmap_of(&self, block: u64) -> Option<u64> {
        let cr = self.geometry.chunk_ratio;
        let chunk = block / cr;
        let index = chunk.checked_mul(cr + 1)?.checked_add(cr)?;
        let entry = *self.entries.get(usize::try_from(index).ok()?)?;
        (state(entry) == SB_BLOCK_PRESENT).then(|| file_offset(entry))
    }

    /// Where in its chunk's bitmap block the bits of `block` start, in bytes,
    /// and how many bytes they take.
    pub(crate) fn bitmap_span(&self, block: u64) -> (u64, u64) {
        let g = &self.geometry;
        let sectors_per_block = g.block_size / g.sector_size;
        let first_sector = (block % g.chunk_ratio) * sectors_per_block;
        (first_sector / 8, sectors_per_block.div_ceil(8))
    }

    /// How many payload blocks are in each state: (present, partial, zero, absent).
    pub(crate) fn counts(&self) -> (u64, u64, u64, u64) {
        let mut c = (0, 0, 0, 0);
        for b in 0..self.geometry.data_blocks {
            match self.block(b) {
                BlockState::Present(_) => c.0 += 1,
                BlockState::Partial(_) => c.1 += 1,
                BlockState::Zero => c.2 += 1,
                BlockState::Absent => c.3 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_file::ImageFile;
    use crate::ErrorKind;

    #[test]
    fn geometry_follows_the_spec_formulas() {
        let g = Geometry::new(10 << 30, 32 << 20, 512, false);
        assert_eq!(g.chunk_ratio, 128);
        assert_eq!(g.data_blocks, 320);
        assert_eq!(g.total_entries, 320 + 2);
        let g = Geometry::new(10 << 30, 32 << 20, 512, true);
        assert_eq!(g.total_entries, 3 * 129);
        let g = Geometry::new(1 << 20, 1 << 20, 4096, false);
        assert_eq!(g.chunk_ratio, 32768);
        assert_eq!(g.total_entries, 1);
        assert_eq!(Geometry::new(0, 1 << 20, 512, false).total_entries, 0);
        assert_eq!(
            Geometry::new(3 << 19, 1 << 20, 512, false).block_len(1),
            1 << 19
        );
    }

    /// A 4 MiB file with a BAT at 1 MiB for a 3 MiB disk of 1 MiB blocks.
    fn golden() -> Vec<u8> {
        let mut f = vec![0u8; 4 << 20];
        let entries: [u64; 3] = [
            (2 << 20) | 6, // block 0 at 2 MiB
            2,             // block 1 zero
            0,             // block 2 not present
        ];
        for (i, e) in entries.iter().enumerate() {
            f[(1 << 20) + 8 * i..][..8].copy_from_slice(&e.to_le_bytes());
        }
        f
    }

    fn load(f: Vec<u8>, has_parent: bool) -> Result<Bat> {
        let view = FileView::new(ImageFile::from_bytes("b.vhdx", f));
        let region = Region {
            file_offset: MIB,
            length: MIB,
        };
        Bat::read(
            &view,
            region,
            Geometry::new(3 << 20, 1 << 20, 512, has_parent),
        )
    }

    #[test]
    fn golden_bat_reads_each_state() {
        let bat = load(golden(), false).unwrap();
        assert_eq!(bat.block(0), BlockState::Present(2 << 20));
        assert_eq!(bat.block(1), BlockState::Zero);
        assert_eq!(bat.block(2), BlockState::Absent);
        assert_eq!(bat.counts(), (1, 0, 1, 1));
    }

    #[test]
    fn one_field_mutations_give_the_exact_error() {
        let cases: [(usize, u8, ErrorKind); 4] = [
            (0, 4, ErrorKind::Corrupt),        // state 4 is not a payload state
            (3, 0x40, ErrorKind::OutOfBounds), // block past the end of the file
            (2, 0x00, ErrorKind::OutOfBounds), // block at offset 0 (inside the headers)
            (8, 7, ErrorKind::OutOfBounds),    // partial block at offset 0
        ];
        for (byte, value, kind) in cases {
            let mut f = golden();
            f[(1 << 20) + byte] = value;
            let e = load(f, false).unwrap_err();
            assert_eq!(e.kind(), kind, "byte {byte}: {e}");
        }
    }

    #[test]
    fn differencing_bat_has_a_bitmap_entry_per_chunk() {
        let mut f = golden();
        // chunk ratio 4096: the bitmap entry is entry 4096, past the 1 MiB region? No:
        // 4097 entries * 8 bytes fit in 1 MiB.
        f[(1 << 20) + 8 * 4096..][..8].copy_from_slice(&((3u64 << 20) | 6).to_le_bytes());
        let bat = load(f, true).unwrap();
        assert_eq!(bat.bitmap_of(2), Some(3 << 20));
        assert_eq!(bat.bitmap_span(2), (512, 256));
    }
}
