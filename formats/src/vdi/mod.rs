//! VirtualBox disk images, VDI (VirtualBox's `VDICore.h` and `VDI.cpp`;
//! qemu's `block/vdi.c`).
//!
//! Opening reads the pre-header and header (`header`: versions 0 and
//! 1.x) and the whole block map (`block_map`); reads go block by block:
//! data blocks from the data area (`offData + index * (cbBlock +
//! cbBlockExtra) + cbBlockExtra`), `ZERO` blocks as zeros, `FREE` blocks
//! from the parent of a differencing image, or as zeros. Any power-of-two
//! block size from 512 bytes to 1 GiB is read (VirtualBox and qemu make
//! 1 MiB blocks).
//!
//! Types: normal (dynamic), fixed and differencing images; undo images
//! (VirtualBox 1.x) are refused as [`Unsupported`](crate::ErrorKind::Unsupported).
//! A differencing image names its parent only by UUID (`uuidLinkage`, the
//! parent's `uuidCreate`): the caller's [`ParentResolver`](crate::ParentResolver)
//! is asked first (a `.vbox` media registry answers it), then every `.vdi`
//! file of the child's folder whose header carries that UUID (`chain`).
//! A parent whose modification UUID differs from the child's
//! `uuidParentModify` opens with a warning (the parent changed after the
//! child was made), as VirtualBox itself tolerates.
//!
//! `info` properties: `version`, `image_type` (`normal`, `fixed`, `diff`),
//! `flags`, `comment` (when not empty), `block_size`, `block_extra`,
//! `blocks`, `blocks_allocated` (the header's count), `blocks_in_map`
//! (entries holding data), `blocks_zero`, `offset_blocks`, `offset_data`,
//! `uuid`, `modification_uuid`, `parent_uuid` and
//! `parent_modification_uuid` (differencing images), `file_info` (the
//! pre-header text). UUIDs print as VirtualBox prints them.
//!
//! Limits: the block map (at most 2^32 - 1 entries by the format) must lie
//! inside the file and is charged to the open's memory budget before it is
//! read; a data block pointing outside the file is an error naming the
//! block-map entry.

pub(crate) mod block_map;
pub(crate) mod chain;
pub(crate) mod header;

use std::sync::Arc;

use crate::block_device::{check_range, BlockDevice, Extent, FileRange};
use crate::context::OpenContext;
use crate::error::{Detail, Error, Format, Result};
use crate::image::{DiskImage, ImageInfo, Warnings};
use crate::image_file::ImageFile;
use crate::table_runs::{self, Run, TableMapped};

use block_map::{Block, BlockMap};
pub use header::{Header, ImageType};

/// An opened VDI image: the [`BlockDevice`] of its virtual disk.
pub struct VdiImage {
    file: ImageFile,
    map: BlockMap,
    size: u64,
    sector_size: u32,
    block_size: u64,
    block_extra: u64,
    offset_blocks: u64,
    offset_data: u64,
    parent: Option<DiskImage>,
}

impl std::fmt::Debug for VdiImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VdiImage")
            .field("file", &self.file)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("has_parent", &self.parent.is_some())
            .finish_non_exhaustive()
    }
}

impl VdiImage {
    /// Calls `f` for each run of `len` bytes from virtual `offset`, one
    /// block at a time (contiguous blocks of the file merged).
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()> {
        let bs = self.block_size;
        let end = offset + len;
        let mut pos = offset;
        let mut pending: Option<(u64, u64, Run)> = None;
        while pos < end {
            let n = pos / bs;
            let within = pos % bs;
            let stop = (bs - within).min(end - pos);
            let run = match self.map.block(n) {
                Block::Free => Run::Absent,
                Block::Zero => Run::Zero,
                Block::Data(i) => Run::File(self.host_offset(n, i, within, stop)?),
            };
            pending = match pending {
                Some((o, l, r)) if mergeable(r, run, l) => Some((o, l + stop, r)),
                Some((o, l, r)) => {
                    f(o, l, r)?;
                    Some((pos, stop, run))
                }
                None => Some((pos, stop, run)),
            };
            pos += stop;
        }
        if let Some((o, l, r)) = pending {
            f(o, l, r)?;
        }
        Ok(())
    }

    /// The file offset of byte `within` of block `n`, stored at data index
    /// `index`, checked to hold `len` bytes inside the file.
    fn host_offset(&self, n: u64, index: u32, within: u64, len: u64) -> Result<u64> {
        let at = self.offset_data
            + u64::from(index) * (self.block_size + self.block_extra)
            + self.block_extra
            + within;
        if at.checked_add(len).is_none_or(|e| e > self.file.len()) {
            return Err(Error::out_of_range(
                Format::Vdi,
                "image file (data block of a block-map entry)",
                at,
                len,
                self.file.len(),
            )
            .at(self.offset_blocks + n * 4)
            .in_file(self.file.path()));
        }
        Ok(at)
    }

    fn read_absent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::block_device::read_from_parent(
            self.parent.as_ref().map(|p| p as &dyn BlockDevice),
            buf,
            offset,
        )
    }
}

/// Whether `next` continues `prev` (of `len` bytes) in one read.
fn mergeable(prev: Run, next: Run, len: u64) -> bool {
    match (prev, next) {
        (Run::File(a), Run::File(b)) => a + len == b,
        (Run::Zero, Run::Zero) | (Run::Absent, Run::Absent) => true,
        _ => false,
    }
}

impl BlockDevice for VdiImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vdi, offset, buf.len() as u64, self.size)?;
        self.walk(offset, buf.len() as u64, |o, l, run| {
            let (Ok(lo), Ok(n)) = (usize::try_from(o - offset), usize::try_from(l)) else {
                return Ok(());
            };
            let Some(dst) = buf.get_mut(lo..lo.saturating_add(n)) else {
                return Ok(());
            };
            match run {
                Run::File(at) => self
                    .file
                    .read_exact_at(dst, at)
                    .map_err(|e| e.in_format(Format::Vdi)),
                Run::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Run::Absent => self.read_absent(dst, o),
                Run::Compressed { .. } => Err(Error::corrupt(
                    Format::Vdi,
                    Detail::Invalid("a compressed run in a VDI".into()),
                )),
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vdi, offset, len, self.size)?;
        table_runs::map(self, offset, len)
    }

    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        check_range(Format::Vdi, offset, len, self.size).ok()?;
        table_runs::file_range(self, offset, len)
    }
}

impl TableMapped for VdiImage {
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
        self.file.file_range(at, len)
    }
}

/// Opens a VDI file (see the module documentation).
pub(crate) fn open(ctx: &OpenContext<'_>, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let mut w = Warnings::new(ctx.options());
    let h = Header::read(&file)?;
    let map = BlockMap::read(&file, &h)?;

    let mut info = ImageInfo::new(&path, Format::Vdi, h.disk_size, h.logical_sector_size());
    info.subformat = Some(h.image_type.subformat().to_owned());
    info.property("version", format!("{}.{}", h.major, h.minor));
    info.property("image_type", h.image_type.as_str());
    info.property("flags", format!("{:#x}", h.flags));
    if !h.comment.is_empty() {
        info.property("comment", &h.comment);
    }
    info.property("block_size", h.block_size);
    info.property("block_extra", h.block_extra);
    info.property("blocks", h.blocks);
    info.property("blocks_allocated", h.blocks_allocated);
    info.property("blocks_in_map", map.allocated());
    info.property("blocks_zero", map.zero());
    info.property("offset_blocks", h.offset_blocks);
    info.property("offset_data", h.offset_data);
    info.property("uuid", h.uuid);
    info.property("modification_uuid", h.modify_uuid);
    if h.image_type == ImageType::Diff {
        info.property("parent_uuid", h.parent_uuid);
        info.property("parent_modification_uuid", h.parent_modify_uuid);
    }
    info.property("file_info", &h.file_info);

    let mut parent = None;
    if h.image_type == ImageType::Diff && !ctx.options().no_parents {
        let p = chain::open_parent(ctx, &path, &h, &mut w)?;
        info.parent = Some(Box::new(p.info().clone()));
        parent = Some(p);
    }
    info.warnings = w.into_vec();
    let image = VdiImage {
        size: h.disk_size,
        sector_size: h.logical_sector_size(),
        block_size: u64::from(h.block_size),
        block_extra: u64::from(h.block_extra),
        offset_blocks: h.offset_blocks,
        offset_data: h.offset_data,
        file,
        map,
        parent,
    };
    Ok(DiskImage::new(Arc::new(image), info))
}
