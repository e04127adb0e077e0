//! The virtual→file mapping of sparse extents: the [`Grain`] a lookup
//! returns, the [`GrainSource`] every sparse extent kind implements
//! (hosted sparse, streamOptimized, seSparse), a bounded [`TableCache`],
//! and the hosted sparse grain directory + grain tables ("Virtual Disk
//! Format 5.0", section "Grain Directory and Grain Tables").
//!
//! The grain directory is read whole at open (its size is checked against
//! the file and [`MAX_GD_ENTRIES`]); grain tables are read on first use and
//! kept in a direct-mapped cache of at most [`MAX_CACHED_TABLES`] tables,
//! so a 2 TiB image opens without reading its tables and memory stays
//! bounded whatever is read.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::budget::{MemoryBudget, Reservation};
use crate::error::{Detail, Error, Format, Result};
use crate::image::{WarningKind, Warnings};
use crate::image_file::ImageFile;

use super::sparse_header::{SparseHeader, SECTOR};
use super::stream;

/// The most grain directory entries read (a 62 TiB disk of 64 KiB grains needs 2^21).
pub const MAX_GD_ENTRIES: u64 = 1 << 24;
/// The most grain tables one extent keeps in memory (4,096 × 2 KiB = 8 MiB for VMware's tables).
pub const MAX_CACHED_TABLES: u64 = 4096;
/// How many grain tables are compared with their redundant copies at open.
pub const MAX_COMPARED_TABLES: u64 = 16;

/// Where one grain of a sparse extent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grain {
    /// Not allocated here: from the parent, or zeros.
    Unallocated,
    /// Known zeros (zeroed-grain entry, seSparse zero/unmapped grain).
    Zero,
    /// Stored as is at this byte offset of the extent file.
    Data(u64),
    /// Stored deflated, with its marker, at this byte offset.
    Compressed(u64),
}

/// A sparse extent: grain lookups plus the file they point into.
pub(crate) trait GrainSource: Send + Sync {
    /// Grain size in bytes.
    fn grain_bytes(&self) -> u64;
    /// The extent's own virtual size in bytes (its header's capacity).
    fn capacity_bytes(&self) -> u64;
    /// The grain `index` and how many grains from it (at least 1) are known
    /// to be in the same state (a whole missing table).
    fn lookup(&self, index: u64) -> Result<(Grain, u64)>;
    /// The extent file.
    fn file(&self) -> &ImageFile;
    /// Inflates the compressed grain `index` stored at byte `at` and copies
    /// its bytes from `skip` into `dst`.
    fn read_compressed(&self, at: u64, index: u64, skip: u64, dst: &mut [u8]) -> Result<()> {
        let _ = (at, index, skip, dst);
        Err(Error::corrupt(
            Format::Vmdk,
            Detail::Invalid("compressed grain in an extent without compression".into()),
        ))
    }
}

/// Grain-directory entries looked at per lookup when skipping a run of
/// absent tables: bounds the work of one lookup while a run of a million
/// absent tables (a 2 TiB extent with little data) still takes few calls.
const MAX_ABSENT_SCAN: usize = 4096;

/// How many grains from grain `in_table` of table `gd_index` on read as
/// unallocated because their directory entries are 0 (absent): the rest of
/// this table and the following absent ones, or every grain (`u64::MAX`)
/// when the directory ends first, as it does past a header's capacity.
pub(crate) fn absent_run<T: Copy + Into<u64>>(
    gd: &[T],
    gd_index: u64,
    in_table: u64,
    per: u64,
) -> u64 {
    let start = usize::try_from(gd_index).unwrap_or(usize::MAX);
    let Some(rest) = gd.get(start..) else {
        return u64::MAX;
    };
    let absent = rest
        .iter()
        .take(MAX_ABSENT_SCAN)
        .take_while(|e| (**e).into() == 0)
        .count();
    if absent == rest.len() {
        return u64::MAX;
    }
    (absent.max(1) as u64)
        .saturating_mul(per)
        .saturating_sub(in_table)
}

/// A bounded, direct-mapped cache of tables, one lock per slot (never held
/// during I/O). Its slots and every table it keeps are charged to the
/// open's [`MemoryBudget`]: a table that does not fit is used once and not kept.
pub(crate) struct TableCache<T> {
    slots: Vec<Slot<T>>,
    budget: Arc<MemoryBudget>,
    _slots_held: Reservation,
}

/// One cache slot: the index of the table it holds, the table, and its charge.
type Slot<T> = Mutex<Option<(u64, Arc<[T]>, Reservation)>>;

impl<T> TableCache<T> {
    /// A cache for an extent with `tables` tables, charged to `budget`
    /// (a [`LimitExceeded`](crate::ErrorKind::LimitExceeded) error when
    /// even its empty slots do not fit).
    pub fn new(tables: u64, budget: &Arc<MemoryBudget>) -> Result<Self> {
        let n = tables.clamp(1, MAX_CACHED_TABLES);
        let held = budget.reserve(Format::Vmdk, n * std::mem::size_of::<Slot<T>>() as u64)?;
        Ok(TableCache {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            budget: Arc::clone(budget),
            _slots_held: held,
        })
    }

    /// Table `index`, loaded with `load` when it is not cached.
    pub fn get(&self, index: u64, load: impl FnOnce() -> Result<Vec<T>>) -> Result<Arc<[T]>> {
        let slot = usize::try_from(index % self.slots.len() as u64)
            .ok()
            .and_then(|i| self.slots.get(i));
        if let Some(slot) = slot {
            if let Ok(guard) = slot.lock() {
                if let Some((i, t, _)) = guard.as_ref() {
                    if *i == index {
                        return Ok(Arc::clone(t));
                    }
                }
            }
        }
        let table: Arc<[T]> = load()?.into();
        if let Some(slot) = slot {
            if let Ok(mut guard) = slot.lock() {
                // The slot's old table goes first, so its charge is free for the new one.
                *guard = None;
                let bytes = (table.len() * std::mem::size_of::<T>()) as u64;
                if let Some(held) = self.budget.try_reserve(bytes) {
                    *guard = Some((index, Arc::clone(&table), held));
                }
            }
        }
        Ok(table)
    }
}

/// A hosted sparse extent (`KDMV`): monolithicSparse, twoGbMaxExtentSparse
/// parts, and streamOptimized (compressed grains behind markers).
pub(crate) struct SparseExtent {
    file: ImageFile,
    header: SparseHeader,
    gd: Vec<u32>,
    cache: TableCache<u32>,
    /// The grain directory's charge to the open's memory budget.
    _gd_held: Reservation,
}

fn read_u32s(file: &ImageFile, offset: u64, count: u64) -> Result<Vec<u32>> {
    let bytes = file.read_vec(offset, count.saturating_mul(4))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        .collect())
}

impl SparseExtent {
    /// Opens the grain directory of `file` described by `header` (the
    /// footer's header for a streamOptimized extent). Uses the redundant
    /// directory when the primary is damaged (a warning, an error in strict
    /// mode) and notes when the two disagree.
    pub fn open(file: ImageFile, header: SparseHeader, w: &mut Warnings) -> Result<Self> {
        let path = file.path().to_path_buf();
        let entries = header.gd_entries();
        Error::ensure_at_most(
            Format::Vmdk,
            "grain directory entries",
            entries,
            MAX_GD_ENTRIES,
        )
        .map_err(|e| e.in_file(&path))?;
        let gt_bytes = u64::from(header.num_gtes_per_gt) * 4;
        let load = |gd_sector: u64| -> Result<(Vec<u32>, Reservation)> {
            let held = file
                .budget()
                .reserve(Format::Vmdk, entries.saturating_mul(4))?;
            let at = gd_sector.checked_mul(SECTOR).ok_or_else(|| {
                Error::bad_value(
                    Format::Vmdk,
                    "gdOffset",
                    gd_sector,
                    "a sector inside the file",
                )
            })?;
            let gd = read_u32s(&file, at, entries).map_err(|e| e.at(at))?;
            for (i, &gde) in gd.iter().enumerate() {
                let gt = u64::from(gde) * SECTOR;
                if gde != 0 && gt.saturating_add(gt_bytes) > file.len() {
                    return Err(Error::new(
                        crate::ErrorKind::OutOfBounds,
                        Format::Vmdk,
                        Detail::OutOfRange {
                            what: "extent file (grain table)",
                            offset: gt,
                            len: gt_bytes,
                            size: file.len(),
                        },
                    )
                    .at(at + 4 * i as u64));
                }
            }
            Ok((gd, held))
        };
        let primary = load(header.gd_offset).map_err(|e| e.in_file(&path));
        let redundant = (header.rgd_offset != 0 && header.rgd_offset != header.gd_offset)
            .then(|| load(header.rgd_offset).map_err(|e| e.in_file(&path)));
        let (gd, gd_held) = match (primary, redundant) {
            (Ok(gd), Some(Ok(rgd))) => {
                compare_tables(&file, &gd.0, &rgd.0, gt_bytes, w, &path)?;
                gd
            }
            (Ok(gd), _) => gd,
            (Err(e), Some(Ok(rgd))) => {
                w.tolerate(WarningKind::RedundantCopyUsed, e)?;
                rgd
            }
            (Err(e), _) => return Err(e),
        };
        Ok(SparseExtent {
            cache: TableCache::new(entries, file.budget()).map_err(|e| e.in_file(&path))?,
            file,
            header,
            gd,
            _gd_held: gd_held,
        })
    }

    fn table(&self, gd_index: u64, gde: u32) -> Result<Arc<[u32]>> {
        self.cache.get(gd_index, || {
            let at = u64::from(gde) * SECTOR;
            read_u32s(&self.file, at, u64::from(self.header.num_gtes_per_gt))
                .map_err(|e| e.in_format(Format::Vmdk))
        })
    }
}

/// Compares the first few grain tables of the primary and redundant
/// directories and notes a disagreement. Each directory's tables are read
/// in one piece when they lie together, as writers lay them out (a split
/// disk's 1,024 extents: two reads each instead of thirty-two).
fn compare_tables(
    file: &ImageFile,
    gd: &[u32],
    rgd: &[u32],
    gt_bytes: u64,
    w: &mut Warnings,
    path: &Path,
) -> Result<()> {
    let n = MAX_COMPARED_TABLES as usize;
    let (gd, rgd) = (
        gd.get(..n.min(gd.len())).unwrap_or_default(),
        rgd.get(..n.min(rgd.len())).unwrap_or_default(),
    );
    let primary = TableSpan::read(file, gd, gt_bytes)?;
    let redundant = TableSpan::read(file, rgd, gt_bytes)?;
    for (i, (&a, &b)) in gd.iter().zip(rgd).enumerate() {
        let same = match (a, b) {
            (0, 0) => true,
            (0, _) | (_, 0) => false,
            _ => primary.table(file, a, gt_bytes)? == redundant.table(file, b, gt_bytes)?,
        };
        if !same {
            w.note(
                WarningKind::CopiesDisagree,
                path,
                Some(u64::from(a) * SECTOR),
                format!(
                    "grain table {i} differs from its redundant copy at sector {b}; the primary is used"
                ),
            );
            break;
        }
    }
    Ok(())
}

/// The bytes of a few grain tables read at once, when the span from the
/// first to the end of the last is no longer than the tables themselves.
struct TableSpan {
    start: u64,
    bytes: Vec<u8>,
}

impl TableSpan {
    fn read(file: &ImageFile, entries: &[u32], gt_bytes: u64) -> Result<Self> {
        let sectors = entries.iter().filter(|&&e| e != 0).map(|&e| u64::from(e));
        let (Some(lo), Some(hi)) = (sectors.clone().min(), sectors.max()) else {
            return Ok(TableSpan::empty());
        };
        let (start, end) = (lo * SECTOR, hi * SECTOR + gt_bytes);
        if end - start > entries.len() as u64 * gt_bytes || end > file.len() {
            return Ok(TableSpan::empty());
        }
        Ok(TableSpan {
            start,
            bytes: file.read_vec(start, end - start)?,
        })
    }

    fn empty() -> Self {
        TableSpan {
            start: 0,
            bytes: Vec::new(),
        }
    }

    /// The table at `sector`, from the span or read on its own.
    fn table(&self, file: &ImageFile, sector: u32, gt_bytes: u64) -> Result<Cow<'_, [u8]>> {
        let at = u64::from(sector) * SECTOR;
        let from = at.checked_sub(self.start).map(|o| o as usize);
        match from.and_then(|o| self.bytes.get(o..o + gt_bytes as usize)) {
            Some(t) => Ok(Cow::Borrowed(t)),
            None => Ok(Cow::Owned(file.read_vec(at, gt_bytes)?)),
        }
    }
}

impl GrainSource for SparseExtent {
    fn grain_bytes(&self) -> u64 {
        self.header.grain_bytes()
    }

    fn capacity_bytes(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    fn lookup(&self, index: u64) -> Result<(Grain, u64)> {
        let per = u64::from(self.header.num_gtes_per_gt);
        let gd_index = index / per;
        let in_table = index % per;
        let gde = usize::try_from(gd_index)
            .ok()
            .and_then(|i| self.gd.get(i))
            .copied()
            .unwrap_or(0);
        if gde == 0 {
            return Ok((
                Grain::Unallocated,
                absent_run(&self.gd, gd_index, in_table, per),
            ));
        }
        let table = self.table(gd_index, gde)?;
        let gte = usize::try_from(in_table)
            .ok()
            .and_then(|i| table.get(i))
            .copied()
            .unwrap_or(0);
        let grain = match gte {
            0 => Grain::Unallocated,
            1 if self.header.zeroed_grain_gte() => Grain::Zero,
            1 => {
                return Err(Error::corrupt(
                    Format::Vmdk,
                    Detail::Invalid(format!(
                        "grain {index} has table entry 1 (zeroed grain) but the header's \
                         zeroed-grain flag is not set"
                    )),
                )
                .at(u64::from(gde) * SECTOR + in_table * 4)
                .in_file(self.file.path()))
            }
            s if self.header.compressed() => Grain::Compressed(u64::from(s) * SECTOR),
            s => Grain::Data(u64::from(s) * SECTOR),
        };
        Ok((grain, 1))
    }

    fn file(&self) -> &ImageFile {
        &self.file
    }

    fn read_compressed(&self, at: u64, index: u64, skip: u64, dst: &mut [u8]) -> Result<()> {
        stream::inflate_grain(&self.file, &self.header, at, index, skip, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OpenOptions;
    use crate::ErrorKind;

    fn header(flags: u32, rgd: u64) -> SparseHeader {
        let mut b = super::super::sparse_header::tests::golden();
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&(128u64 * 512 * 2).to_le_bytes()); // 2 tables
        b[48..56].copy_from_slice(&rgd.to_le_bytes());
        b[56..64].copy_from_slice(&4u64.to_le_bytes());
        SparseHeader::parse(&b).unwrap()
    }

    /// GD at sector 4 (two entries: GT at sector 8, none), GT: grain 0 at sector 64, grain 1 zeroed.
    fn image(gt_sector: u32) -> Vec<u8> {
        let mut d = vec![0u8; 96 * 512];
        d[4 * 512..4 * 512 + 4].copy_from_slice(&gt_sector.to_le_bytes());
        d[8 * 512..8 * 512 + 4].copy_from_slice(&64u32.to_le_bytes());
        d[8 * 512 + 4..8 * 512 + 8].copy_from_slice(&1u32.to_le_bytes());
        d
    }

    #[test]
    fn lookups_zeroed_grain_and_missing_table() {
        let mut w = Warnings::new(&OpenOptions::default());
        let f = ImageFile::from_bytes("s.vmdk", image(8));
        let s = SparseExtent::open(f, header(3 | 4, 0), &mut w).unwrap();
        assert_eq!(s.lookup(0).unwrap(), (Grain::Data(64 * 512), 1));
        assert_eq!(s.lookup(1).unwrap(), (Grain::Zero, 1));
        assert_eq!(s.lookup(2).unwrap(), (Grain::Unallocated, 1));
        // The last table is absent: unallocated to the end of the directory.
        assert_eq!(s.lookup(512).unwrap(), (Grain::Unallocated, u64::MAX));
        let f = ImageFile::from_bytes("s.vmdk", image(8));
        let s = SparseExtent::open(f, header(3, 0), &mut w).unwrap();
        assert_eq!(s.lookup(1).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn table_past_the_end_uses_the_redundant_copy_or_fails() {
        let mut d = image(5000);
        // Redundant directory at sector 6 pointing at the good table.
        d[6 * 512..6 * 512 + 4].copy_from_slice(&8u32.to_le_bytes());
        let mut w = Warnings::new(&OpenOptions::default());
        let f = ImageFile::from_bytes("s.vmdk", d.clone());
        let s = SparseExtent::open(f, header(3, 6), &mut w).unwrap();
        assert_eq!(s.lookup(0).unwrap().0, Grain::Data(64 * 512));
        assert_eq!(w.into_vec()[0].kind, WarningKind::RedundantCopyUsed);
        let strict = OpenOptions {
            strict: true,
            ..OpenOptions::default()
        };
        let mut w = Warnings::new(&strict);
        let f = ImageFile::from_bytes("s.vmdk", d);
        let e = SparseExtent::open(f, header(3, 6), &mut w).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        let mut w = Warnings::new(&OpenOptions::default());
        let f = ImageFile::from_bytes("s.vmdk", image(5000));
        let e = SparseExtent::open(f, header(3, 0), &mut w).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    }

    #[test]
    fn redundant_tables_are_compared_together_or_one_by_one() {
        let opened = |d: Vec<u8>| {
            let mut w = Warnings::new(&OpenOptions::default());
            let f = ImageFile::from_bytes("s.vmdk", d);
            SparseExtent::open(f, header(3, 6), &mut w).unwrap();
            w.into_vec()
                .iter()
                .map(|x| (x.kind, x.offset))
                .collect::<Vec<_>>()
        };
        let put = |d: &mut Vec<u8>, sector: usize, entry: usize, value: u32| {
            let at = sector * 512 + entry * 4;
            d[at..at + 4].copy_from_slice(&value.to_le_bytes());
        };
        // Primary tables at sectors 8 and 80 (apart: read one by one),
        // redundant ones at 12 and 16 (together: read at once).
        let mut d = image(8);
        put(&mut d, 4, 1, 80);
        put(&mut d, 6, 0, 12);
        put(&mut d, 6, 1, 16);
        d.copy_within(8 * 512..12 * 512, 12 * 512);
        put(&mut d, 80, 0, 90);
        put(&mut d, 16, 0, 90);
        assert_eq!(opened(d.clone()), vec![]);
        // The second redundant table differs: named by the primary's offset.
        put(&mut d, 16, 0, 91);
        assert_eq!(
            opened(d.clone()),
            vec![(WarningKind::CopiesDisagree, Some(80 * 512))]
        );
        // The first differs: the comparison stops there.
        put(&mut d, 12, 0, 65);
        assert_eq!(
            opened(d),
            vec![(WarningKind::CopiesDisagree, Some(8 * 512))]
        );
    }

    #[test]
    fn absent_runs_skip_whole_tables_and_the_end_of_the_directory() {
        let gd: [u32; 6] = [5, 0, 0, 7, 0, 0];
        // Table 1 and 2 are absent: from grain 3 of table 1, 2 * 512 - 3.
        assert_eq!(absent_run(&gd, 1, 3, 512), 1021);
        // The last two are absent and the directory ends: everything.
        assert_eq!(absent_run(&gd, 4, 0, 512), u64::MAX);
        // Past the directory (beyond the header's capacity): everything.
        assert_eq!(absent_run(&gd, 9, 0, 512), u64::MAX);
        assert_eq!(absent_run(&gd, u64::MAX, 0, 512), u64::MAX);
        // A long run is looked at in bounded steps.
        let long = vec![0u32; MAX_ABSENT_SCAN * 3];
        let mut with_end = long.clone();
        with_end.push(1);
        assert_eq!(absent_run(&with_end, 0, 0, 2), (MAX_ABSENT_SCAN * 2) as u64);
        // Bounded even when the rest is absent to the end: the next
        // lookup goes on from there.
        assert_eq!(absent_run(&long, 0, 0, 2), (MAX_ABSENT_SCAN * 2) as u64);
        assert_eq!(
            absent_run(&long, (MAX_ABSENT_SCAN * 2) as u64, 1, 2),
            u64::MAX
        );
    }
}
