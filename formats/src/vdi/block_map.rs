//! The block map: one little-endian `u32` per block of the virtual disk,
//! the index of the block in the data area, or a marker.
//!
//! `0xFFFFFFFF` (`VDI_IMAGE_BLOCK_FREE`): not in this image — the parent's
//! bytes for a differencing image, zeros otherwise. `0xFFFFFFFE`
//! (`VDI_IMAGE_BLOCK_ZERO`): zeros, whatever the parent holds. The map is
//! read whole at open, its size charged to the open's memory budget first.

use crate::budget::Reservation;
use crate::error::{Format, Result};
use crate::image_file::ImageFile;

use super::header::Header;

/// The block-map value of a block that is not in this image.
pub const BLOCK_FREE: u32 = 0xFFFF_FFFF;
/// The block-map value of a block that reads as zeros.
pub const BLOCK_ZERO: u32 = 0xFFFF_FFFE;

/// What one block of the virtual disk maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Not in this image: the parent, or zeros.
    Free,
    /// Reads as zeros.
    Zero,
    /// Stored in the data area at this index.
    Data(u32),
}

/// The block map of one image.
#[derive(Debug)]
pub struct BlockMap {
    entries: Vec<u32>,
    _held: Reservation,
}

impl BlockMap {
    /// Reads the `cBlocks` entries at `offBlocks` (the header checked that
    /// they lie inside the file), charging them to the file's budget.
    pub fn read(file: &ImageFile, h: &Header) -> Result<BlockMap> {
        let bytes = u64::from(h.blocks) * 4;
        let held = file
            .budget()
            .reserve(Format::Vdi, bytes)
            .map_err(|e| e.at(h.offset_blocks).in_file(file.path()))?;
        let raw = file
            .read_vec(h.offset_blocks, bytes)
            .map_err(|e| e.in_format(Format::Vdi))?;
        let entries = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0xff; 4])))
            .collect();
        Ok(BlockMap {
            entries,
            _held: held,
        })
    }

    /// What block `n` maps to (blocks past the map are free).
    pub fn block(&self, n: u64) -> Block {
        let v = usize::try_from(n)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(BLOCK_FREE);
        match v {
            BLOCK_FREE => Block::Free,
            BLOCK_ZERO => Block::Zero,
            i => Block::Data(i),
        }
    }

    /// Blocks stored in the data area.
    pub fn allocated(&self) -> u64 {
        self.entries.iter().filter(|&&v| v < BLOCK_ZERO).count() as u64
    }

    /// Blocks marked zero.
    pub fn zero(&self) -> u64 {
        self.entries.iter().filter(|&&v| v == BLOCK_ZERO).count() as u64
    }
}
