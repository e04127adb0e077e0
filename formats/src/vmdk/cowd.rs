//! ESX Server sparse extents (`COWD`, "Virtual Disk Format 5.0", section
//! "ESX Server Sparse Extent Header"): the `VMFSSPARSE` delta extents of
//! `vmfsSparse` snapshots (ESXi before 6.5 and VMFS5). A 2,048-byte
//! little-endian header, then a grain directory of u32 sector offsets of
//! grain tables of 4,096 u32 entries each (0: unallocated; otherwise the
//! grain's sector). The header's own parent fields are not used: the
//! descriptor's `parentFileNameHint` names the parent.
//!
//! The lookup logic is the hosted sparse one: the header is translated into
//! a [`SparseHeader`] and read by [`SparseExtent`].

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::image::Warnings;
use crate::image_file::ImageFile;
use crate::layout::{self, Layout};

use super::grain_table::SparseExtent;
use super::sparse_header::{SparseHeader, MAX_CAPACITY_SECTORS, MAX_GRAIN_SECTORS};

/// `COWD` read as a little-endian u32.
pub const COWD_MAGIC: u32 = 0x4457_4f43;
/// Size of the COWD header in bytes.
pub const COWD_HEADER_LEN: u64 = 2048;
/// Grain table entries per table (fixed by the format).
pub const COWD_GTES_PER_GT: u32 = 4096;
/// Offset of `version` in the header.
const VERSION_AT: u64 = 4;
/// Offset of `grainSize` in the header.
const GRAIN_SIZE_AT: u64 = 16;
/// Offset of `numGDEntries` in the header.
const NUM_GD_ENTRIES_AT: u64 = 24;

/// The header as it lies on disk ("Virtual Disk Format 5.0", section "ESX
/// Server Sparse Extent Header", `COWDisk_Header`): sizes and offsets in
/// sectors.
#[derive(BinRead, Debug)]
#[br(little)]
struct CowdDiskHeader {
    magic_number: u32,
    version: u32,
    flags: u32,
    num_sectors: u32,
    grain_size: u32,
    gd_offset: u32,
    /// Followed by `freeSector`, the root/child union (a child's parent
    /// file name and generation), `generation`, `name`, `description`,
    /// `savedGeneration`, `reserved`, `uncleanShutdown` and padding, none
    /// of which the reader uses.
    #[br(pad_after = COWD_HEADER_LEN - 28)]
    num_gd_entries: u32,
}

impl Layout for CowdDiskHeader {
    const SIZE: usize = COWD_HEADER_LEN as usize;
    const NAME: &'static str = "COWD header";
}

/// The COWD header fields the reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CowdHeader {
    pub version: u32,
    pub flags: u32,
    /// `numSectors`: the extent's capacity.
    pub num_sectors: u32,
    /// `grainSize`, in sectors.
    pub grain_size: u32,
    /// `gdOffset`, in sectors.
    pub gd_offset: u32,
    /// `numGDEntries`.
    pub num_gd_entries: u32,
}

fn bad(field: &'static str, value: u64, expected: String, at: u64) -> Error {
    Error::bad_value(Format::Vmdk, field, value, expected).at(at)
}

impl CowdHeader {
    /// Parses and checks the header.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let raw = layout::read::<CowdDiskHeader>(b)
            .ok()
            .filter(|raw| raw.magic_number == COWD_MAGIC);
        let Some(raw) = raw else {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::BadSignature {
                    what: "COWD header magic",
                    expected: "COWD and 2048 header bytes".into(),
                    found: hex_preview(b.get(..4).unwrap_or(b)),
                },
            )
            .at(0));
        };
        let h = CowdHeader {
            version: raw.version,
            flags: raw.flags,
            num_sectors: raw.num_sectors,
            grain_size: raw.grain_size,
            gd_offset: raw.gd_offset,
            num_gd_entries: raw.num_gd_entries,
        };
        if h.version != 1 {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!("COWD version {} (only 1 is read)", h.version),
            )
            .at(VERSION_AT));
        }
        let grain = u64::from(h.grain_size);
        if !grain.is_power_of_two() || grain > MAX_GRAIN_SECTORS {
            return Err(bad(
                "grainSize",
                grain,
                "a power of two <= 2048 sectors".into(),
                GRAIN_SIZE_AT,
            ));
        }
        let tables = u64::from(h.num_sectors)
            .div_ceil(grain)
            .div_ceil(u64::from(COWD_GTES_PER_GT));
        if u64::from(h.num_gd_entries) < tables {
            return Err(bad(
                "numGDEntries",
                u64::from(h.num_gd_entries),
                format!("at least {tables} for {} sectors", h.num_sectors),
                NUM_GD_ENTRIES_AT,
            ));
        }
        Ok(h)
    }

    /// The same geometry as a hosted sparse header (no flags, no redundant
    /// directory, no descriptor), for [`SparseExtent`].
    pub fn as_sparse(&self) -> SparseHeader {
        SparseHeader {
            version: 1,
            flags: 0,
            capacity: u64::from(self.num_sectors).min(MAX_CAPACITY_SECTORS),
            grain_size: u64::from(self.grain_size),
            descriptor_offset: 0,
            descriptor_size: 0,
            num_gtes_per_gt: COWD_GTES_PER_GT,
            rgd_offset: 0,
            gd_offset: u64::from(self.gd_offset),
            over_head: 0,
            unclean_shutdown: false,
            newline_chars: *b"\n \r\n",
            compress_algorithm: 0,
        }
    }
}

/// Opens a COWD extent file.
pub(crate) fn open(file: ImageFile, w: &mut Warnings) -> Result<(SparseExtent, CowdHeader)> {
    let path = file.path().to_path_buf();
    let head = file.read_up_to(0, COWD_HEADER_LEN as usize)?;
    let h = CowdHeader::parse(&head).map_err(|e| e.in_file(&path))?;
    Ok((SparseExtent::open(file, h.as_sparse(), w)?, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn golden() -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        b[0..4].copy_from_slice(b"COWD");
        for (at, v) in [(4, 1u32), (8, 3), (12, 8192), (16, 1), (20, 4), (24, 2)] {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn declaration_reads_the_header_length() {
        assert_eq!(
            layout::declared_len::<CowdDiskHeader>(),
            Some(COWD_HEADER_LEN)
        );
    }

    #[test]
    fn golden_header() {
        let h = CowdHeader::parse(&golden()).unwrap();
        assert_eq!(h.num_sectors, 8192);
        let s = h.as_sparse();
        assert_eq!(s.gd_entries(), 2);
        assert_eq!(s.grain_bytes(), 512);
    }

    fn mutate(at: usize, v: u32) -> ErrorKind {
        let mut b = golden();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        CowdHeader::parse(&b).unwrap_err().kind()
    }

    #[test]
    fn one_field_mutations() {
        assert_eq!(mutate(0, 0), ErrorKind::Corrupt);
        assert_eq!(mutate(4, 2), ErrorKind::Unsupported);
        assert_eq!(mutate(16, 3), ErrorKind::Corrupt);
        assert_eq!(mutate(16, 4096), ErrorKind::Corrupt);
        assert_eq!(mutate(24, 1), ErrorKind::Corrupt);
        assert!(CowdHeader::parse(&golden()[..100]).is_err());
    }
}
