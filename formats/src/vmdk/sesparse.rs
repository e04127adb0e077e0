//! seSparse extents (ESXi 6.5+ snapshots, `SESPARSE` in a descriptor, or
//! a bare file starting with magic `0xCAFEBABE`): a constant header at
//! sector 0, a volatile header, a journal, a grain directory of u64
//! entries, grain tables of u64 entries, and 4 KiB grains. All little-endian.
//!
//! Grain table entries, by their top nibble: 0 unallocated (read from the
//! parent), 1 "SCSI-unmapped", 2 zero, 3 allocated (the grain index is
//! `((e >> 48) & 0xfff) | ((e & 0xffff_ffff_ffff) << 12)`). Unmapped grains
//! read as **zeros**, as VMware does after a guest UNMAP/TRIM; dissect
//! instead reads them from the parent. Zeros is the choice here because an
//! unmapped range must not resurrect the parent's stale data.
//!
//! A volatile header asking for a journal replay is refused (never written).

use binrw::BinRead;

use crate::error::{hex_preview, Detail, Error, Format, Result};
use crate::image_file::ImageFile;
use crate::layout::{self, Layout};

use super::grain_table::{Grain, GrainSource, TableCache, MAX_GD_ENTRIES};
use super::sparse_header::{MAX_CAPACITY_SECTORS, SECTOR};

/// The constant header magic (u64 little-endian).
pub const SESPARSE_MAGIC: u64 = 0xcafe_babe;
/// The volatile header magic.
pub const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// The only version read: 2.1 (`0x0000_0002_0000_0001`).
pub const SESPARSE_VERSION: u64 = 0x0000_0002_0000_0001;
/// Largest accepted grain, in sectors (ESXi writes 8).
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest accepted grain table, in sectors (ESXi writes 64).
pub const MAX_GT_SECTORS: u64 = 4096;

/// Size of the constant header, bytes.
const CONST_HEADER_LEN: usize = 512;
/// Bytes of the volatile header the reader uses (its magic and the replay flag).
const VOLATILE_HEADER_LEN: u64 = 32;
/// Offset of `grain_size` in the constant header.
const GRAIN_SIZE_AT: u64 = 24;
/// Offset of `grain_table_size` in the constant header.
const GRAIN_TABLE_SIZE_AT: u64 = 32;
/// Offset of `grain_dir_size` in the constant header.
const GRAIN_DIR_SIZE_AT: u64 = 136;
/// Offset of `replay_journal` in the volatile header.
const REPLAY_JOURNAL_AT: u64 = 24;

const NIBBLE_MASK: u64 = 0xf000_0000_0000_0000;

/// The constant header as it lies on disk (sector 0; VMware publishes no
/// specification, the field names are those of the format's readers):
/// offsets and sizes in sectors.
#[derive(BinRead, Debug)]
#[br(little)]
struct SeSparseConstHeader {
    magic: u64,
    version: u64,
    capacity: u64,
    grain_size: u64,
    /// Followed by `flags` and four reserved u64s.
    #[br(pad_after = 40)]
    grain_table_size: u64,
    /// Followed by `volatile_header_size` and the journal header's and
    /// the journal's offsets and sizes.
    #[br(pad_after = 40)]
    volatile_header_offset: u64,
    grain_dir_offset: u64,
    grain_dir_size: u64,
    grain_tables_offset: u64,
    /// Followed by the free bitmap's and the backmap's offsets and sizes.
    #[br(pad_after = 32)]
    grain_tables_size: u64,
    grains_offset: u64,
    /// Followed by padding to 512 bytes.
    #[br(pad_after = 304)]
    grains_size: u64,
}

impl Layout for SeSparseConstHeader {
    const SIZE: usize = CONST_HEADER_LEN;
    const NAME: &'static str = "seSparse constant header";
}

/// The start of the volatile header (at `volatile_header_offset`).
#[derive(BinRead, Debug)]
#[br(little)]
struct SeSparseVolatileHeader {
    /// Followed by `free_gt_number` and `next_txn_seq_number`.
    #[br(pad_after = 16)]
    magic: u64,
    /// Non-zero: the journal must be replayed before the file is read.
    replay_journal: u64,
}

impl Layout for SeSparseVolatileHeader {
    const SIZE: usize = VOLATILE_HEADER_LEN as usize;
    const NAME: &'static str = "seSparse volatile header";
}

/// The constant header's fields this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeSparseHeader {
    pub capacity: u64,
    pub grain_size: u64,
    pub grain_table_size: u64,
    pub volatile_header_offset: u64,
    pub grain_dir_offset: u64,
    pub grain_dir_size: u64,
    pub grain_tables_offset: u64,
    pub grain_tables_size: u64,
    pub grains_offset: u64,
    pub grains_size: u64,
}

impl SeSparseHeader {
    /// Parses and checks the constant header (512 bytes).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let raw = layout::read::<SeSparseConstHeader>(b)
            .ok()
            .filter(|raw| raw.magic == SESPARSE_MAGIC);
        let Some(raw) = raw else {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::BadSignature {
                    what: "seSparse header magic",
                    expected: "be ba fe ca 00 00 00 00".into(),
                    found: hex_preview(b.get(..8).unwrap_or(b)),
                },
            ));
        };
        let version = raw.version;
        if version != SESPARSE_VERSION {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!("seSparse version {version:#x} (only 2.1 is read)"),
            ));
        }
        let h = SeSparseHeader {
            capacity: raw.capacity,
            grain_size: raw.grain_size,
            grain_table_size: raw.grain_table_size,
            volatile_header_offset: raw.volatile_header_offset,
            grain_dir_offset: raw.grain_dir_offset,
            grain_dir_size: raw.grain_dir_size,
            grain_tables_offset: raw.grain_tables_offset,
            grain_tables_size: raw.grain_tables_size,
            grains_offset: raw.grains_offset,
            grains_size: raw.grains_size,
        };
        Error::ensure_at_most(
            Format::Vmdk,
            "seSparse capacity in sectors",
            h.capacity,
            MAX_CAPACITY_SECTORS,
        )?;
        if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
            return Err(Error::bad_value(
                Format::Vmdk,
                "grain_size",
                h.grain_size,
                "a power of two <= 2048 sectors",
            )
            .at(GRAIN_SIZE_AT));
        }
        if h.grain_table_size == 0 || h.grain_table_size > MAX_GT_SECTORS {
            return Err(Error::bad_value(
                Format::Vmdk,
                "grain_table_size",
                h.grain_table_size,
                "1 to 4096 sectors",
            )
            .at(GRAIN_TABLE_SIZE_AT));
        }
        Ok(h)
    }

    /// Entries in one grain table.
    pub fn gtes_per_gt(&self) -> u64 {
        self.grain_table_size * SECTOR / 8
    }
}

/// An opened seSparse extent.
pub(crate) struct SeSparseExtent {
    file: ImageFile,
    header: SeSparseHeader,
    gd: Vec<u64>,
    cache: TableCache<u64>,
    /// The grain directory's charge to the open's memory budget.
    _gd_held: crate::budget::Reservation,
}

impl SeSparseExtent {
    /// Opens `file` (its first 512 bytes are the constant header).
    pub fn open(file: ImageFile) -> Result<Self> {
        let path = file.path().to_path_buf();
        let head = file.read_vec(0, CONST_HEADER_LEN as u64)?;
        let header = SeSparseHeader::parse(&head).map_err(|e| e.in_file(&path))?;
        let vol_at = header.volatile_header_offset.saturating_mul(SECTOR);
        let vol_bytes = file.read_vec(vol_at, VOLATILE_HEADER_LEN)?;
        let vol: SeSparseVolatileHeader = layout::read(&vol_bytes)
            .map_err(|d| Error::corrupt(Format::Vmdk, d).at(vol_at).in_file(&path))?;
        if vol.magic != VOLATILE_MAGIC {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::BadSignature {
                    what: "seSparse volatile header magic",
                    expected: "fe ca fe ca 00 00 00 00".into(),
                    found: hex_preview(vol_bytes.get(..8).unwrap_or_default()),
                },
            )
            .at(vol_at)
            .in_file(&path));
        }
        if vol.replay_journal != 0 {
            return Err(Error::unsupported(
                Format::Vmdk,
                "seSparse journal must be replayed (unclean ESXi shutdown); replaying it is \
                 not implemented and the file is never written",
            )
            .at(vol_at + REPLAY_JOURNAL_AT)
            .in_file(&path));
        }
        let grains = header.capacity.div_ceil(header.grain_size);
        let entries = grains.div_ceil(header.gtes_per_gt());
        let room = header.grain_dir_size.saturating_mul(SECTOR / 8);
        if entries > room {
            return Err(Error::bad_value(
                Format::Vmdk,
                "grain_dir_size",
                header.grain_dir_size,
                "room for every table",
            )
            .at(GRAIN_DIR_SIZE_AT)
            .in_file(&path));
        }
        Error::ensure_at_most(
            Format::Vmdk,
            "seSparse grain directory entries",
            entries,
            MAX_GD_ENTRIES,
        )
        .map_err(|e| e.in_file(&path))?;
        let gd_at = header.grain_dir_offset.saturating_mul(SECTOR);
        let gd_held = file
            .budget()
            .reserve(Format::Vmdk, entries.saturating_mul(8))
            .map_err(|e| e.in_file(&path))?;
        let gd = file
            .read_vec(gd_at, entries * 8)
            .map_err(|e| e.in_format(Format::Vmdk))?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(SeSparseExtent {
            cache: TableCache::new(entries, file.budget()).map_err(|e| e.in_file(&path))?,
            file,
            header,
            gd,
            _gd_held: gd_held,
        })
    }

    /// The constant header.
    pub fn header(&self) -> &SeSparseHeader {
        &self.header
    }

    fn corrupt_entry(&self, what: &str, entry: u64, at: u64) -> Error {
        Error::corrupt(
            Format::Vmdk,
            Detail::Invalid(format!("seSparse {what} {entry:#018x} is not valid")),
        )
        .at(at)
        .in_file(self.file.path())
    }
}

impl GrainSource for SeSparseExtent {
    fn grain_bytes(&self) -> u64 {
        self.header.grain_size * SECTOR
    }

    fn capacity_bytes(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    fn lookup(&self, index: u64) -> Result<(Grain, u64)> {
        let per = self.header.gtes_per_gt();
        let gd_index = index / per;
        let in_table = index % per;
        let gde_at = self
            .header
            .grain_dir_offset
            .saturating_mul(SECTOR)
            .saturating_add(gd_index * 8);
        let gde = usize::try_from(gd_index)
            .ok()
            .and_then(|i| self.gd.get(i))
            .copied()
            .unwrap_or(0);
        if gde == 0 {
            return Ok((
                Grain::Unallocated,
                super::grain_table::absent_run(&self.gd, gd_index, in_table, per),
            ));
        }
        let gt_index = gde & !NIBBLE_MASK;
        let tables = self.header.grain_tables_size / self.header.grain_table_size;
        if gde & NIBBLE_MASK != 0x1000_0000_0000_0000 || gt_index >= tables {
            return Err(self.corrupt_entry("grain directory entry", gde, gde_at));
        }
        let gt_at = self
            .header
            .grain_tables_offset
            .saturating_add(gt_index * self.header.grain_table_size)
            .saturating_mul(SECTOR);
        let table = self.cache.get(gd_index, || {
            Ok(self
                .file
                .read_vec(gt_at, per * 8)
                .map_err(|e| e.in_format(Format::Vmdk))?
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect())
        })?;
        let gte = usize::try_from(in_table)
            .ok()
            .and_then(|i| table.get(i))
            .copied()
            .unwrap_or(0);
        let gte_at = gt_at + in_table * 8;
        let grain = match gte & NIBBLE_MASK {
            0 if gte == 0 => Grain::Unallocated,
            0x1000_0000_0000_0000 | 0x2000_0000_0000_0000 => Grain::Zero,
            0x3000_0000_0000_0000 => {
                let n = ((gte >> 48) & 0xfff) | ((gte & 0xffff_ffff_ffff) << 12);
                if n.saturating_mul(self.header.grain_size) >= self.header.grains_size {
                    return Err(self.corrupt_entry("grain table entry", gte, gte_at));
                }
                Grain::Data(
                    self.header
                        .grains_offset
                        .saturating_add(n * self.header.grain_size)
                        .saturating_mul(SECTOR),
                )
            }
            _ => return Err(self.corrupt_entry("grain table entry", gte, gte_at)),
        };
        Ok((grain, 1))
    }

    fn file(&self) -> &ImageFile {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// The layout of ESXi's 512 MiB seSparse file, with one allocated grain.
    fn golden() -> Vec<u8> {
        let mut d = vec![0u8; 0x3001 * 512];
        let put =
            |d: &mut Vec<u8>, at: usize, v: u64| d[at..at + 8].copy_from_slice(&v.to_le_bytes());
        for (at, v) in [
            (0, SESPARSE_MAGIC),
            (8, SESPARSE_VERSION),
            (16, 0x10_0000),
            (24, 8),
            (32, 64),
            (80, 1),
            (128, 0x1000),
            (136, 0x800),
            (144, 0x1800),
            (152, 0x800),
            (192, 0x3000),
            (200, 0x10_0000),
        ] {
            put(&mut d, at, v);
        }
        put(&mut d, 512, VOLATILE_MAGIC);
        put(&mut d, 0x1000 * 512, 0x1000_0000_0000_0000);
        put(&mut d, 0x1800 * 512, 0x3000_0000_0000_0000);
        put(&mut d, 0x1800 * 512 + 8, 0x1000_0000_0000_0000);
        put(&mut d, 0x1800 * 512 + 16, 0x2000_0000_0000_0000);
        put(&mut d, 0x1800 * 512 + 24, 0x4000_0000_0000_0000);
        d
    }

    #[test]
    fn declarations_read_their_lengths() {
        assert_eq!(
            layout::declared_len::<SeSparseConstHeader>(),
            Some(CONST_HEADER_LEN as u64)
        );
        assert_eq!(
            layout::declared_len::<SeSparseVolatileHeader>(),
            Some(VOLATILE_HEADER_LEN)
        );
    }

    #[test]
    fn golden_lookups() {
        let s = SeSparseExtent::open(ImageFile::from_bytes("s", golden())).unwrap();
        assert_eq!(s.lookup(0).unwrap().0, Grain::Data(0x3000 * 512));
        assert_eq!(s.lookup(1).unwrap().0, Grain::Zero);
        assert_eq!(s.lookup(2).unwrap().0, Grain::Zero);
        assert_eq!(s.lookup(3).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(s.lookup(4).unwrap().0, Grain::Unallocated);
        // The last table is absent: unallocated to the end of the directory.
        assert_eq!(s.lookup(4096).unwrap(), (Grain::Unallocated, u64::MAX));
    }

    fn mutate(at: usize, v: u64) -> ErrorKind {
        let mut d = golden();
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
        SeSparseExtent::open(ImageFile::from_bytes("s", d))
            .err()
            .unwrap()
            .kind()
    }

    #[test]
    fn one_field_mutations() {
        assert_eq!(mutate(0, 1), ErrorKind::Corrupt);
        assert_eq!(mutate(8, 1), ErrorKind::Unsupported);
        assert_eq!(mutate(16, 1 << 60), ErrorKind::LimitExceeded);
        assert_eq!(mutate(24, 3), ErrorKind::Corrupt);
        assert_eq!(mutate(136, 0), ErrorKind::Corrupt);
        assert_eq!(mutate(512, 0), ErrorKind::Corrupt);
        assert_eq!(mutate(512 + 24, 1), ErrorKind::Unsupported);
        assert_eq!(mutate(128, 1 << 40), ErrorKind::OutOfBounds);
    }
}
