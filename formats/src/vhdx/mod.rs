//! Hyper-V VHDX images ([MS-VHDX] v1): fixed, dynamic and differencing,
//! with the log replayed in memory.
//!
//! Opening reads, in order: the file type identifier and creator
//! (`header`), both headers (the valid one with the higher sequence
//! number), the log when `LogGuid` is set (`log`, replayed into an
//! in-memory overlay of the file: `file_view`; the file is never
//! written), the region tables (`region_table`), the metadata
//! (`metadata`, `parent_locator`) and the BAT (`bat`). A
//! differencing disk's parent is opened through the caller's context
//! unless `no_parents` is set, and its DataWriteGuid is checked against
//! the child's `parent_linkage`.
//!
//! Limits: block size a power of two from 1 MiB to 256 MiB, sector sizes
//! 512 or 4096, virtual size up to 64 TiB, log up to
//! 256 MiB (`log::MAX_LOG_LENGTH`), every table inside the file.

pub(crate) mod bat;
pub(crate) mod fields;
pub(crate) mod file_view;
pub(crate) mod header;
pub(crate) mod log;
pub(crate) mod metadata;
pub(crate) mod parent_locator;
pub(crate) mod region_table;
pub mod writer;

pub use writer::{create, open_writable};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::block_device::{check_range, BlockDevice, Extent, FileRange};
use crate::budget::ChargedBytes;
use crate::context::OpenContext;
use crate::error::{Detail, Error, Format, Result};
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;
use crate::table_runs::{self, Run, TableMapped};

use bat::{Bat, BlockState, Geometry};
use file_view::FileView;

/// How many blocks' sector bitmaps are kept in memory (each at most 64 KiB).
pub const MAX_CACHED_BITMAPS: usize = 4096;

/// An opened VHDX image: the [`BlockDevice`] of its virtual disk.
pub struct VhdxImage {
    view: FileView,
    bat: Bat,
    has_parent: bool,
    parent: Option<DiskImage>,
    /// Sector bitmap bytes of partially present blocks, by block number.
    bitmaps: RwLock<ChargedBytes<u64>>,
}

impl std::fmt::Debug for VhdxImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxImage")
            .field("file", self.view.file())
            .field("geometry", self.bat.geometry())
            .field("has_parent", &self.has_parent)
            .finish_non_exhaustive()
    }
}

impl VhdxImage {
    /// The bytes of the sector bitmap that cover `block`.
    fn bitmap(&self, block: u64) -> Result<Arc<[u8]>> {
        if let Ok(cache) = self.bitmaps.read() {
            if let Some((b, _)) = cache.get(&block) {
                return Ok(Arc::clone(b));
            }
        }
        let Some(at) = self.bat.bitmap_of(block) else {
            return Err(Error::corrupt(
                Format::Vhdx,
                Detail::Invalid(format!(
                    "block {block} is partially present but its chunk has no sector bitmap"
                )),
            )
            .in_file(self.view.file().path()));
        };
        let (skip, len) = self.bat.bitmap_span(block);
        let bytes: Arc<[u8]> = Arc::from(self.view.read_vec(at + skip, len)?);
        if let Ok(mut cache) = self.bitmaps.write() {
            if cache.len() >= MAX_CACHED_BITMAPS {
                cache.clear();
            }
            // Over the open's memory budget: empty the cache, then keep
            // this bitmap only if it fits.
            let budget = self.view.file().budget();
            let held = budget.try_reserve(len).or_else(|| {
                cache.clear();
                budget.try_reserve(len)
            });
            if let Some(held) = held {
                cache.insert(block, (Arc::clone(&bytes), held));
            }
        }
        Ok(bytes)
    }

    /// The runs of `len` bytes at virtual `offset`, all inside one block.
    fn runs(&self, offset: u64, len: u64, out: &mut Vec<(u64, u64, Run)>) -> Result<()> {
        let g = self.bat.geometry();
        let block = offset / g.block_size;
        let in_block = offset % g.block_size;
        let mut push = |o: u64, l: u64, r: Run| match out.last_mut() {
            Some(last) if last.2 == Run::Absent && r == Run::Absent && last.0 + last.1 == o => {
                last.1 += l;
            }
            _ => out.push((o, l, r)),
        };
        match self.bat.block(block) {
            BlockState::Present(at) => push(offset, len, Run::File(at + in_block)),
            BlockState::Zero => push(offset, len, Run::Zero),
            BlockState::Absent => push(offset, len, Run::Absent),
            BlockState::Partial(at) => {
                let bits = self.bitmap(block)?;
                let ss = g.sector_size;
                let end = in_block + len;
                let mut pos = in_block;
                while pos < end {
                    let sector = pos / ss;
                    let set = bit(&bits, sector);
                    // Extend while the bits agree (whole bytes at a time when they can).
                    let mut next = sector + 1;
                    while next * ss < end {
                        let byte = bits.get((next / 8) as usize).copied().unwrap_or(0);
                        if next % 8 == 0 && (byte == 0xFF && set || byte == 0 && !set) {
                            next += 8;
                        } else if bit(&bits, next) == set {
                            next += 1;
                        } else {
                            break;
                        }
                    }
                    let stop = (next * ss).min(end);
                    let start = offset + (pos - in_block);
                    let run = if set {
                        Run::File(at + pos)
                    } else {
                        Run::Absent
                    };
                    push(start, stop - pos, run);
                    pos = stop;
                }
            }
        }
        Ok(())
    }

    /// Walks `len` bytes from `offset` block by block, calling `f` per run.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()> {
        let bs = self.bat.geometry().block_size;
        let mut pos = offset;
        let end = offset + len;
        let mut runs = Vec::new();
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            runs.clear();
            self.runs(pos, n, &mut runs)?;
            for &(o, l, r) in &runs {
                f(o, l, r)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Reads an absent range: from the parent, zeros where it has none.
    fn read_absent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::block_device::read_from_parent(
            self.parent.as_ref().map(|p| p as &dyn BlockDevice),
            buf,
            offset,
        )
    }
}

fn bit(bits: &[u8], sector: u64) -> bool {
    let byte = usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .copied()
        .unwrap_or(0);
    byte >> (sector % 8) & 1 != 0
}

impl BlockDevice for VhdxImage {
    fn size(&self) -> u64 {
        self.bat.geometry().size
    }

    fn sector_size(&self) -> u32 {
        u32::try_from(self.bat.geometry().sector_size).unwrap_or(512)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vhdx, offset, buf.len() as u64, self.size())?;
        self.walk(offset, buf.len() as u64, |o, l, run| {
            let (Ok(lo), Ok(n)) = (usize::try_from(o - offset), usize::try_from(l)) else {
                return Ok(());
            };
            let Some(dst) = buf.get_mut(lo..lo.saturating_add(n)) else {
                return Ok(());
            };
            match run {
                Run::File(at) => self.view.read_exact_at(dst, at),
                Run::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Run::Absent => self.read_absent(dst, o),
                // `runs` gives none: VHDX stores nothing compressed.
                Run::Compressed { .. } => Err(Error::unsupported(
                    Format::Vhdx,
                    "a compressed run in a VHDX",
                )
                .in_file(self.view.file().path())),
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vhdx, offset, len, self.size())?;
        table_runs::map(self, offset, len)
    }

    /// Payload bytes of the file itself; `None` wherever a replayed log
    /// write lies over them (the file's bytes are then not the disk's).
    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        check_range(Format::Vhdx, offset, len, self.size()).ok()?;
        let bs = self.bat.geometry().block_size;
        table_runs::file_range(self, offset, (bs - offset % bs).min(len))
    }
}

impl TableMapped for VhdxImage {
    fn walk_runs(
        &self,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()> {
        self.walk(offset, len, f)
    }

    fn parent_device(&self) -> Option<&dyn BlockDevice> {
        self.parent.as_ref().map(|p| p as &dyn BlockDevice)
    }

    fn data_range(&self, at: u64, len: u64) -> Option<FileRange<'_>> {
        self.view.file_range(at, len)
    }
}

/// Opens a VHDX file (see the module documentation for the order of checks).
pub(crate) fn open(ctx: &OpenContext<'_>, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let mut w = Warnings::new(ctx.options());
    let creator = header::read_file_type(&file)?;
    let current = header::read_current(&file, &mut w)?;
    let mut view = FileView::new(file);
    let replayed = log::replay(&mut view, &current, &mut w)?;
    if let Some(r) = &replayed {
        w.note(
            WarningKind::LogReplayed,
            &path,
            Some(current.log_offset),
            format!(
                "log replayed in memory: {} entries (sequence {}..{}), {} descriptors; the file was not changed",
                r.entries, r.sequences.0, r.sequences.1, r.descriptors
            ),
        );
    }
    let regions = region_table::read(&view, &mut w)?;
    let meta = metadata::read(&view, regions.metadata)?;
    let geometry = Geometry::new(
        meta.virtual_disk_size,
        meta.block_size,
        meta.logical_sector_size,
        meta.has_parent,
    );
    let bat = Bat::read(&view, regions.bat, geometry)?;

    let mut info = ImageInfo::new(
        &path,
        Format::Vhdx,
        meta.virtual_disk_size,
        meta.logical_sector_size,
    );
    info.subformat = Some(
        if meta.has_parent {
            "differencing"
        } else if meta.leave_block_allocated {
            "fixed"
        } else {
            "dynamic"
        }
        .to_owned(),
    );
    info.property("creator", &creator);
    info.property("header_in_use", current.copy);
    info.property("header_sequence_number", current.sequence_number);
    info.property("file_write_guid", current.file_write_guid);
    info.property("data_write_guid", current.data_write_guid);
    info.property("log_guid", current.log_guid);
    info.property("log_offset", current.log_offset);
    info.property("log_length", current.log_length);
    info.property(
        "log_replayed",
        match &replayed {
            Some(r) => format!(
                "yes, in memory: {} entries (sequence {}..{}), {} descriptors",
                r.entries, r.sequences.0, r.sequences.1, r.descriptors
            ),
            None => "no".to_owned(),
        },
    );
    info.property("region_table_in_use", regions.copy);
    info.property("block_size", meta.block_size);
    info.property("leave_block_allocated", meta.leave_block_allocated);
    info.property("has_parent", meta.has_parent);
    info.property("virtual_disk_id", meta.virtual_disk_id);
    info.property("logical_sector_size", meta.logical_sector_size);
    info.property("physical_sector_size", meta.physical_sector_size);
    info.property("chunk_ratio", geometry.chunk_ratio);
    let (present, partial, zero, absent) = bat.counts();
    info.property("blocks_fully_present", present);
    info.property("blocks_partially_present", partial);
    info.property("blocks_zero", zero);
    info.property("blocks_not_present", absent);

    let mut parent = None;
    if let Some(locator) = &meta.parent_locator {
        info.property("parent_locator_type", locator.locator_type);
        for (k, v) in &locator.entries {
            info.property(format!("parent_locator.{k}"), v);
        }
        if !ctx.options().no_parents {
            let p = ctx.open_parent(Format::Vhdx, &path, &locator.hints())?;
            let parent_guid = p
                .info()
                .properties
                .iter()
                .find(|(k, _)| k == "data_write_guid")
                .map(|(_, v)| v.clone());
            match parent_guid {
                Some(g) if locator.links_to(&g) => {
                    info.property("parent_linkage_check", "matches the parent's DataWriteGuid");
                }
                Some(g) => {
                    info.property(
                        "parent_linkage_check",
                        format!("mismatch: parent DataWriteGuid is {{{g}}}"),
                    );
                    w.tolerate(
                        WarningKind::ParentMismatch,
                        Error::corrupt(
                            Format::Vhdx,
                            Detail::Invalid(format!(
                                "parent_linkage {} does not name the parent's DataWriteGuid {{{g}}} ({}): the parent changed after this child was made",
                                locator.get("parent_linkage").unwrap_or("(none)"),
                                p.info().path.display()
                            )),
                        )
                        .in_file(&path),
                    )?;
                }
                None => info.property("parent_linkage_check", "parent is not VHDX; not checked"),
            }
            if p.size() != meta.virtual_disk_size {
                w.tolerate(
                    WarningKind::ParentMismatch,
                    Error::corrupt(
                        Format::Vhdx,
                        Detail::Invalid(format!(
                            "parent {} is {} bytes, this child {} bytes",
                            p.info().path.display(),
                            p.size(),
                            meta.virtual_disk_size
                        )),
                    )
                    .in_file(&path),
                )?;
            }
            info.parent = Some(Box::new(p.info().clone()));
            parent = Some(p);
        }
    }
    info.warnings = w.into_vec();
    let image = VhdxImage {
        view,
        bat,
        has_parent: meta.has_parent,
        parent,
        bitmaps: RwLock::new(HashMap::new()),
    };
    Ok(DiskImage::new(Arc::new(image), info))
}
