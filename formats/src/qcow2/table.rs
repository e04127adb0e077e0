//! L1/L2 lookup: from a guest cluster to what holds its bytes.
//!
//! The L1 table is read whole at open (its size checked against the
//! virtual size, [`MAX_L1_ENTRIES`] and the open's memory budget first).
//! L2 tables are read on demand into a bounded direct-mapped cache, one
//! lock per slot, held only to look a table up or store it, never during
//! I/O; each cached table is charged to the budget and a table that does
//! not fit is used for one lookup only.

use std::sync::{Arc, Mutex};

use crate::budget::{MemoryBudget, Reservation};
use crate::error::{Error, Format, Result};
use crate::image_file::ImageFile;

use super::header::{Header, MAX_L1_ENTRIES};

/// How many L2 tables are cached at most (each one cluster, up to 2 MiB).
pub const MAX_CACHED_L2: u64 = 64;
/// Bytes of L2 tables cached at most per image (16 tables of 2 MiB clusters).
pub const MAX_L2_CACHE_BYTES: u64 = 32 << 20;

/// Bits 9-55 of an L1 or standard L2 entry: a host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 63 ("copied", refcount is one): no effect on reads.
const COPIED: u64 = 1 << 63;
/// L2 entry bit 0: the cluster reads as zeros (without extended L2).
const ZERO: u64 = 1;

/// What one guest cluster maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Not in this image: the backing file, or zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored verbatim at this host offset (of the data file, when there is one).
    Data(u64),
    /// Deflated at `offset`, at most `len` bytes of the image file.
    Compressed {
        /// Host byte offset of the compressed stream.
        offset: u64,
        /// Bytes the L2 entry reserves for it.
        len: u64,
    },
    /// Extended L2: 32 subclusters with their own states.
    Sub {
        /// Host offset of the cluster (0 when none is allocated).
        host: u64,
        /// Bit n: subcluster n is stored at `host + n * subcluster size`.
        alloc: u32,
        /// Bit n: subcluster n reads as zeros.
        zero: u32,
    },
}

/// One L2 cache slot: the L1 index of the table it holds, the table, its charge.
type Slot = Mutex<Option<(usize, Arc<[u64]>, Reservation)>>;

/// Geometry and tables of one image.
pub struct Tables {
    file: ImageFile,
    cluster_bits: u32,
    extended: bool,
    l1: Vec<u64>,
    _l1_held: Reservation,
    cache: Vec<Slot>,
    _cache_held: Reservation,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("cluster_bits", &self.cluster_bits)
            .field("extended", &self.extended)
            .field("l1_entries", &self.l1.len())
            .finish_non_exhaustive()
    }
}

impl Tables {
    /// Reads the active L1 table of `file` after checking its size.
    pub fn open(file: ImageFile, h: &Header) -> Result<Self> {
        let path = file.path().to_path_buf();
        let cluster = h.cluster_size();
        let entry = if h.extended_l2() { 16 } else { 8 };
        let per_l2 = cluster / entry;
        let needed = h.size.div_ceil(cluster).div_ceil(per_l2);
        Error::ensure_at_most(Format::Qcow2, "L1 entries", needed, MAX_L1_ENTRIES)
            .map_err(|e| e.at(24).in_file(&path))?;
        let l1_size = u64::from(h.l1_size);
        if l1_size < needed {
            return Err(Error::bad_value(
                Format::Qcow2,
                "l1_size",
                l1_size,
                format!("at least {needed} for a virtual size of {} bytes", h.size),
            )
            .at(36)
            .in_file(&path));
        }
        Error::ensure_at_most(Format::Qcow2, "l1_size", l1_size, MAX_L1_ENTRIES)
            .map_err(|e| e.at(36).in_file(&path))?;
        if h.l1_table_offset % cluster != 0 && needed > 0 {
            return Err(Error::bad_value(
                Format::Qcow2,
                "l1_table_offset",
                h.l1_table_offset,
                format!("a multiple of the cluster size {cluster}"),
            )
            .at(40)
            .in_file(&path));
        }
        // Only the entries the virtual size needs are read and kept.
        file.check_range(h.l1_table_offset, needed * 8)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let budget = Arc::clone(file.budget());
        let l1_held = budget.reserve(Format::Qcow2, needed * 8)?;
        let raw = file
            .read_vec(h.l1_table_offset, needed * 8)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let slots = needed
            .min(MAX_CACHED_L2)
            .min(MAX_L2_CACHE_BYTES / cluster)
            .max(1);
        let cache_held =
            budget.reserve(Format::Qcow2, slots * std::mem::size_of::<Slot>() as u64)?;
        Ok(Tables {
            file,
            cluster_bits: h.cluster_bits,
            extended: h.extended_l2(),
            l1,
            _l1_held: l1_held,
            cache: (0..slots).map(|_| Mutex::new(None)).collect(),
            _cache_held: cache_held,
            budget,
        })
    }

    /// The image file the tables are in.
    pub fn file(&self) -> &ImageFile {
        &self.file
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended { 16 } else { 8 }
    }

    /// L1 entries that point to an L2 table.
    pub fn allocated_l2_tables(&self) -> usize {
        self.l1.iter().filter(|&&e| e & OFFSET_MASK != 0).count()
    }

    fn l2(&self, index: usize, offset: u64) -> Result<Arc<[u64]>> {
        let slot = self.cache.get(index % self.cache.len().max(1));
        if let Some(Ok(guard)) = slot.map(Mutex::lock) {
            if let Some((i, t, _)) = guard.as_ref() {
                if *i == index {
                    return Ok(Arc::clone(t));
                }
            }
        }
        let raw = self
            .file
            .read_vec(offset, self.cluster_size())
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let table: Arc<[u64]> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if let Some(Ok(mut guard)) = slot.map(Mutex::lock) {
            *guard = None;
            if let Some(held) = self.budget.try_reserve(self.cluster_size()) {
                *guard = Some((index, Arc::clone(&table), held));
            }
        }
        Ok(table)
    }

    /// When guest cluster `n` lies in the range of an L1 entry without an
    /// L2 table (or past the L1 table), how many clusters from `n` to the
    /// end of that range are unallocated: lets a walk skip them at once.
    pub fn unallocated_span(&self, n: u64) -> Option<u64> {
        let per_l2 = self.l2_entries();
        let l1e = usize::try_from(n / per_l2)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        (l1e & OFFSET_MASK == 0).then(|| per_l2 - n % per_l2)
    }

    /// What guest cluster `n` maps to.
    pub fn cluster(&self, n: u64) -> Result<Cluster> {
        let path = self.file.path();
        let per_l2 = self.l2_entries();
        let l1_index = n / per_l2;
        let Some(&l1e) = usize::try_from(l1_index).ok().and_then(|i| self.l1.get(i)) else {
            return Ok(Cluster::Unallocated);
        };
        let l2_offset = l1e & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(Cluster::Unallocated);
        }
        if l2_offset % self.cluster_size() != 0 {
            return Err(Error::bad_value(
                Format::Qcow2,
                "L1 entry (L2 table offset)",
                l2_offset,
                format!("a multiple of the cluster size {}", self.cluster_size()),
            )
            .in_file(path));
        }
        let table = self.l2(l1_index as usize, l2_offset)?;
        let words = if self.extended { 2 } else { 1 };
        let i = ((n % per_l2) * words) as usize;
        let entry = table.get(i).copied().unwrap_or(0);
        let bitmap = table.get(i + 1).copied().unwrap_or(0);
        let entry_at = l2_offset + i as u64 * 8;
        if entry & COMPRESSED != 0 {
            // Bits 0..x-1: host offset; x..61: additional 512-byte sectors.
            let x = 62 - (self.cluster_bits - 8);
            let offset = entry & ((1 << x) - 1);
            let sectors = (entry & !(COPIED | COMPRESSED)) >> x;
            let len = (sectors + 1) * 512 - (offset & 511);
            return Ok(Cluster::Compressed { offset, len });
        }
        let host = entry & OFFSET_MASK;
        if host % self.cluster_size() != 0 {
            return Err(Error::bad_value(
                Format::Qcow2,
                "L2 entry (cluster offset)",
                host,
                format!("a multiple of the cluster size {}", self.cluster_size()),
            )
            .at(entry_at)
            .in_file(path));
        }
        if self.extended {
            let alloc = bitmap as u32;
            let zero = (bitmap >> 32) as u32;
            if alloc & zero != 0 {
                return Err(Error::bad_value(
                    Format::Qcow2,
                    "subcluster bitmap",
                    bitmap,
                    "no subcluster both allocated and zero",
                )
                .at(entry_at + 8)
                .in_file(path));
            }
            if alloc != 0 && host == 0 && entry & COPIED == 0 {
                return Err(Error::bad_value(
                    Format::Qcow2,
                    "subcluster bitmap",
                    bitmap,
                    "no allocated subcluster in a cluster without a host offset",
                )
                .at(entry_at + 8)
                .in_file(path));
            }
            return Ok(Cluster::Sub { host, alloc, zero });
        }
        if entry & ZERO != 0 {
            return Ok(Cluster::Zero);
        }
        // Offset 0 with bit 63 set is host offset 0 of an external data file.
        if host == 0 && entry & COPIED == 0 {
            return Ok(Cluster::Unallocated);
        }
        Ok(Cluster::Data(host))
    }
}
