//! [`MemoryBudget`]: the per-open memory ceiling.
//!
//! Every file of one `open` call — the image, its extents and split parts,
//! and every link of its parent chain — shares one budget (it travels in
//! the [`OpenContext`](crate::OpenContext) and in each [`ImageFile`](crate::ImageFile)).
//! What an opened image keeps in memory is charged to it:
//!
//! - tables it needs for as long as it is open (VMDK grain directories,
//!   the VHD and VHDX BATs, VHDX log replay data, the slots of the grain
//!   table caches) take a [`Reservation`] with [`MemoryBudget::reserve`];
//!   past the ceiling the open fails with an
//!   [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded) error;
//! - cache entries (grain tables, sector bitmaps) take one with
//!   [`MemoryBudget::try_reserve`]; past the ceiling the entry is used for
//!   the one lookup and not kept, so reads go on, only slower.
//!
//! Without a budget, the sum is unbounded: up to 255 links, each with up
//! to 100,000 extents, each with a cache of 4,096 grain tables of up to
//! 256 KiB that a crafted file can make all distinct (tables may overlap
//! in the file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Format, Result};

/// Cached bytes by key, each kept with its charge to the budget (the VHD
/// and VHDX sector-bitmap caches).
pub(crate) type ChargedBytes<K> = std::collections::HashMap<K, (Arc<[u8]>, Reservation)>;

/// The default per-open memory ceiling: 1 GiB. The largest legitimate
/// table is far below it (a 128 TiB VMDK's grain directory is 64 MiB, a
/// 64 TiB VHDX's BAT with 1 MiB blocks 512 MiB; a replayed log at most 256 MiB).
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;

/// How much memory the tables and caches of one open image may hold.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// The ceiling in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: u64) -> std::result::Result<(), u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .map(|_| ())
            .map_err(|used| used.saturating_add(bytes))
    }

    /// Reserves `bytes` for a table the image keeps while it is open; an
    /// [`ErrorKind::LimitExceeded`](crate::ErrorKind::LimitExceeded) error
    /// (labelled `format`, naming `what`) when the ceiling would be passed.
    pub fn reserve(self: &Arc<Self>, format: Format, bytes: u64) -> Result<Reservation> {
        self.take(bytes).map_err(|wanted| {
            Error::limit(format, "memory for one open image", wanted, self.limit)
        })?;
        Ok(Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Reserves `bytes` for a cache entry, or `None` when that would pass the ceiling.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.take(bytes).ok().map(|()| Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            limit: DEFAULT_MEMORY_LIMIT,
            used: AtomicU64::new(0),
        }
    }
}

/// Bytes held from a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_device::BlockDevice;
    use crate::context::{MemoryFiles, OpenContext};
    use crate::error::ErrorKind;
    use crate::options::OpenOptions;
    use std::path::{Path, PathBuf};

    /// Grain tables in the crafted sparse extent.
    const TABLES: u64 = 64;
    /// Bytes of one of its grain tables (512 entries).
    const TABLE_BYTES: u64 = 2048;

    /// A hosted sparse extent of 64 grain tables that all overlap: every
    /// directory entry names the table at sector 2, every table entry the
    /// grain at sector 6 (4 KiB of 0xab). 7 KiB of file, 128 MiB of disk,
    /// and 64 distinct cache entries when read whole.
    fn overlapping_tables() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
        b[8..12].copy_from_slice(&1u32.to_le_bytes()); // newline test, no redundant directory
        b[12..20].copy_from_slice(&(TABLES * 512 * 8).to_le_bytes()); // capacity (sectors)
        b[20..28].copy_from_slice(&8u64.to_le_bytes()); // grain: 8 sectors
        b[44..48].copy_from_slice(&512u32.to_le_bytes()); // entries per table
        b[56..64].copy_from_slice(&1u64.to_le_bytes()); // directory at sector 1
        b[64..72].copy_from_slice(&6u64.to_le_bytes()); // overhead
        b[73..77].copy_from_slice(b"\n \r\n");
        b.resize(14 * 512, 0);
        for i in 0..TABLES as usize {
            b[512 + 4 * i..512 + 4 * i + 4].copy_from_slice(&2u32.to_le_bytes());
        }
        for i in 0..512 {
            b[1024 + 4 * i..1024 + 4 * i + 4].copy_from_slice(&6u32.to_le_bytes());
        }
        b[6 * 512..].fill(0xab);
        b
    }

    fn files() -> MemoryFiles {
        let mut f = MemoryFiles::new();
        f.insert(PathBuf::from("s.vmdk"), Arc::from(overlapping_tables()));
        f
    }

    fn limited(limit: u64) -> OpenOptions {
        OpenOptions {
            memory_limit: Some(limit),
            ..OpenOptions::default()
        }
    }

    /// Reads the whole disk, checking every byte and that the budget holds.
    fn read_all(img: &dyn BlockDevice, budget: &MemoryBudget) {
        let mut buf = vec![0u8; 1 << 20];
        for off in (0..img.size()).step_by(buf.len()) {
            img.read_at(&mut buf, off).unwrap();
            assert!(buf.iter().all(|&b| b == 0xab), "at {off}");
            assert!(budget.used() <= budget.limit());
        }
    }

    #[test]
    fn grain_tables_are_cached_within_the_budget_and_reads_stay_right() {
        let files = files();
        // With the default ceiling every table is kept: the charge grows by one table each.
        let opts = OpenOptions::default();
        let ctx = OpenContext::in_memory(&opts, &files);
        let img = crate::probe::open_with(&ctx, Path::new("s.vmdk")).unwrap();
        let at_open = ctx.budget().used();
        assert!(at_open >= TABLES * 4, "directory charged: {at_open}");
        read_all(&img, ctx.budget());
        assert_eq!(ctx.budget().used(), at_open + TABLES * TABLE_BYTES);
        drop(img);
        assert_eq!(ctx.budget().used(), 0, "everything given back on close");
        // With room for three tables only, the same reads give the same bytes.
        let opts = limited(at_open + 3 * TABLE_BYTES + 100);
        let ctx = OpenContext::in_memory(&opts, &files);
        let img = crate::probe::open_with(&ctx, Path::new("s.vmdk")).unwrap();
        read_all(&img, ctx.budget());
        assert!(ctx.budget().used() <= at_open + 3 * TABLE_BYTES);
        // Without room for the directory and the cache's slots, the open fails.
        let opts = limited(at_open - 1);
        let ctx = OpenContext::in_memory(&opts, &files);
        let e = crate::probe::open_with(&ctx, Path::new("s.vmdk")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
        assert!(e.to_string().contains("memory for one open image"), "{e}");
        assert_eq!(e.path(), Some(Path::new("s.vmdk")), "{e}");
    }

    #[test]
    fn a_chain_shares_one_budget() {
        // 50 descriptors, each a link whose extent is the crafted sparse
        // file (opened once per link, so charged once per link).
        let mut files = files();
        let extent = format!("RW {} SPARSE \"s.vmdk\"", TABLES * 512 * 8);
        files.extend(crate::fuzzing::vmdk_descriptor_chain(
            50,
            "monolithicSparse",
            &extent,
        ));
        let opts = OpenOptions::default();
        let one = OpenContext::in_memory(&opts, &files);
        let img = crate::probe::open_with(&one, Path::new("l49.vmdk")).unwrap();
        let per_link = one.budget().used();
        drop(img);
        let ctx = OpenContext::in_memory(&opts, &files);
        let img = crate::probe::open_with(&ctx, Path::new("l0.vmdk")).unwrap();
        assert_eq!(ctx.budget().used(), 50 * per_link);
        assert_eq!(img.info().chain().count(), 50);
        let opts = limited(10 * per_link);
        let ctx = OpenContext::in_memory(&opts, &files);
        let e = crate::probe::open_with(&ctx, Path::new("l0.vmdk")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
        assert!(e.to_string().contains("memory for one open image"), "{e}");
    }

    #[test]
    fn reservations_are_given_back_when_dropped() {
        let b = MemoryBudget::new(100);
        let r = b.reserve(Format::Vmdk, 60).unwrap();
        assert_eq!(b.used(), 60);
        assert!(b.try_reserve(41).is_none());
        let e = b.reserve(Format::Vhd, 41).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(
            e.to_string().contains("is 101, more than the limit of 100"),
            "{e}"
        );
        let s = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(r);
        drop(s);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_reservation_never_overflows() {
        let b = MemoryBudget::new(u64::MAX);
        let _r = b.reserve(Format::Vmdk, u64::MAX - 1).unwrap();
        assert!(b.try_reserve(2).is_none());
    }
}
