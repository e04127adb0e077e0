//! Writing VHDs: [`create`] (fixed, dynamic, differencing) and
//! [`open_writable`], a [`WritableDevice`] over an existing VHD.
//!
//! What is written is what Hyper-V writes: creator application `win `,
//! version 10.0, host `Wi2k`, the footer's current size exactly the
//! requested size (readers that follow Hyper-V, qemu included, take the
//! size from there rather than from the CHS geometry, which is computed as
//! the specification's appendix says), the footer copy at offset 0, the
//! dynamic header at 512, the BAT at 1,536, and each block's sector bitmap
//! placed so that its data starts on a 4 KiB boundary.
//!
//! Crash consistency. A new block is appended where the footer was: the
//! footer is first written again past the block's end (the file always
//! ends with a valid footer; the old one is left in the gap before the
//! block's bitmap), then the bitmap and data. A block's BAT entry and a
//! differencing disk's bitmap updates are kept in memory and written by
//! [`WritableDevice::flush`] only after the data is synced: data, sync,
//! bitmaps, sync, BAT entries, sync. A crash loses the writes since the
//! last flush into blocks that were new (their space stays allocated but
//! unreferenced) and never makes a BAT entry point at unwritten data. The
//! footer itself never changes after creation.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::block_device::{check_range, read_from_parent, BlockDevice, Extent, ExtentKind};
use crate::error::{Detail, Error, Format, Result};
use crate::image::DiskImage;
use crate::image_file::ImageFile;
use crate::options::OpenOptions;
use crate::pieces::pieces;
use crate::write::file::{create_staged, random_guid, WFile};
use crate::write::parent::Parent;
use crate::write::sector_groups::widen_to_groups;
use crate::write::{CreateOptions, Subformat, WritableDevice};

use super::dynamic_header::{
    DynamicHeader, HEADER_COOKIE, HEADER_LEN, MAX_BLOCK_SIZE, PARENT_LOCATOR_ENTRIES,
    PARENT_NAME_LEN,
};
use super::footer::{
    ones_complement_checksum, DiskType, VhdFooter, FOOTER_COOKIE, FOOTER_LEN, NO_DATA_OFFSET,
    SECTOR, VHD_EPOCH_UNIX_SECONDS,
};
use super::RelativeTo;

/// The default block size of a dynamic or differencing disk: 2 MiB, as
/// Hyper-V and Virtual PC write.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 << 20;
/// The smallest block size [`create`] takes.
pub const MIN_BLOCK_SIZE: u64 = 4096;
/// The largest virtual size [`create`] takes: 2,040 GiB, Hyper-V's limit
/// for VHD (BAT entries are 32-bit sector numbers).
pub const MAX_SIZE: u64 = 2040 << 30;
/// Where the BAT starts, as Hyper-V places it (after the footer copy and
/// the dynamic header).
const BAT_OFFSET: u64 = FOOTER_LEN as u64 + HEADER_LEN as u64;
/// Block data starts on this boundary (Hyper-V's 4 KiB alignment).
const DATA_ALIGN: u64 = 4096;
/// A differencing disk's writes are completed to whole groups of this
/// many bytes (eight sectors).
const GROUP: u64 = 4096;
/// Unused BAT entry.
const UNUSED: u32 = u32::MAX;
/// Sector bitmaps of a differencing disk kept in memory after a flush.
const MAX_CLEAN_BITMAPS: usize = 4096;
/// Seconds a parent's modification time may pass the child's record of it
/// (file systems that keep times at a 2-second granularity).
const MTIME_SLACK: u32 = 2;
/// BAT entries held back before a write flushes by itself.
const MAX_PENDING: usize = 4096;

/// Creates the VHD `path` as `options` say: fixed, dynamic (the default)
/// or, with [`CreateOptions::parent`], differencing. The parent is only
/// read.
pub fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    if options.sector_size != 512 {
        return Err(bad_option(format!(
            "sector size {} (a VHD has 512-byte sectors)",
            options.sector_size
        ))
        .in_file(path));
    }
    let parent = match &options.parent {
        Some(p) => Some(ParentFacts::read(p, path)?),
        None => None,
    };
    let size = parent.as_ref().map_or(options.size, |p| p.size);
    if size == 0 || size % SECTOR != 0 || size > MAX_SIZE {
        return Err(bad_option(format!(
            "virtual size {size} (a non-zero multiple of 512 up to {MAX_SIZE})"
        ))
        .in_file(path));
    }
    let disk_type = match (&parent, options.subformat) {
        (Some(_), None | Some(Subformat::Dynamic)) => DiskType::Differencing,
        (Some(_), Some(s)) => {
            return Err(
                bad_option(format!("subformat {s} for a child (it is differencing)")).in_file(path),
            )
        }
        (None, None | Some(Subformat::Dynamic)) => DiskType::Dynamic,
        (None, Some(Subformat::Fixed)) => DiskType::Fixed,
        (None, Some(s)) => {
            return Err(bad_option(format!("subformat {s} (one of: dynamic, fixed)")).in_file(path))
        }
    };
    let block_size = options.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if disk_type != DiskType::Fixed
        && (!block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size))
    {
        return Err(bad_option(format!(
            "block size {block_size} (a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE})"
        ))
        .in_file(path));
    }
    let unique_id = random_guid();
    let footer = footer_bytes(size, disk_type, unique_id.0);
    create_staged(path, options.force, Format::Vhd, |file| {
        if disk_type == DiskType::Fixed {
            file.set_len(size)?;
            return file.write_all_at(&footer, size);
        }
        let entries = size.div_ceil(block_size);
        let bat_len = align_up(entries * 4, SECTOR);
        // Parent locators (differencing) after the BAT, 512-byte aligned.
        let (locators, tail) = match &parent {
            Some(p) => parent_locators(p, BAT_OFFSET + bat_len),
            None => (Vec::new(), BAT_OFFSET + bat_len),
        };
        let header = header_bytes(
            BAT_OFFSET,
            u32::try_from(entries).unwrap_or(u32::MAX),
            u32::try_from(block_size).unwrap_or(u32::MAX),
            parent.as_ref(),
            &locators,
        );
        let bat = vec![0xffu8; usize::try_from(bat_len).unwrap_or(0)];
        file.write_all_at(&footer, 0)?;
        file.write_all_at(&header, FOOTER_LEN as u64)?;
        file.write_all_at(&bat, BAT_OFFSET)?;
        write_locators(file, &locators)?;
        file.write_all_at(&footer, tail)
    })
}

/// Opens the VHD `path` for writing (its parent, for a differencing disk,
/// read-only underneath).
pub fn open_writable(path: &Path, options: &OpenOptions) -> Result<Box<dyn WritableDevice>> {
    Ok(Box::new(VhdWriter::open(path, options)?))
}

/// What a child records about its parent.
struct ParentFacts {
    size: u64,
    unique_id: [u8; 16],
    time_stamp: u32,
    /// The file name (the dynamic header's parent name).
    name: String,
    /// The path relative to the child's folder, Windows style (`.\p.vhd`).
    relative: String,
    /// The absolute path.
    absolute: String,
}

impl ParentFacts {
    fn read(parent: &Path, child: &Path) -> Result<Self> {
        let p = Parent::open(parent, child, Format::Vhd)?;
        let file = ImageFile::open(parent, &OpenOptions::new().mmap(false))?;
        let mut tail = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut tail, file.len().saturating_sub(FOOTER_LEN as u64))?;
        let footer = VhdFooter::parse(&tail).map_err(|e| e.in_file(parent))?;
        let mtime = mtime_of(parent)?;
        Ok(ParentFacts {
            size: p.image.size(),
            unique_id: footer.unique_id,
            time_stamp: vhd_seconds(mtime),
            name: p.file_name(),
            relative: p.windows_relative(),
            absolute: p.absolute_text(),
        })
    }
}

/// A file's modification time in Unix seconds.
fn mtime_of(path: &Path) -> Result<u64> {
    let m = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(Format::Vhd, e).in_file(path))?;
    Ok(m.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// A parent locator as written: platform code, file offset, data.
type Locator = ([u8; 4], u64, Vec<u8>);

/// The parent locators a differencing disk records for `p`: its path
/// relative to the child (`W2ru`) and absolute (`W2ku`), UTF-16
/// little-endian as Hyper-V writes them, laid out from `at` each in whole
/// sectors. Returns them and the offset past the last one.
fn parent_locators(p: &ParentFacts, at: u64) -> (Vec<Locator>, u64) {
    let mut tail = at;
    let mut out = Vec::new();
    for (code, text) in [(*b"W2ru", &p.relative), (*b"W2ku", &p.absolute)] {
        let data: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let space = locator_space(data.len());
        out.push((code, tail, data));
        tail += space;
    }
    (out, tail)
}

/// Bytes a locator of `len` bytes takes in the file: whole sectors, one
/// at least.
fn locator_space(len: usize) -> u64 {
    align_up(len as u64, SECTOR).max(SECTOR)
}

/// Writes each locator's data, padded with zeros to its space.
fn write_locators(file: &WFile, locators: &[Locator]) -> Result<()> {
    for (_, at, data) in locators {
        let mut padded = data.clone();
        padded.resize(usize::try_from(locator_space(data.len())).unwrap_or(0), 0);
        file.write_all_at(&padded, *at)?;
    }
    Ok(())
}

/// A differencing disk's footer (the one at the end of the file) and
/// dynamic header, read and checked before a relink rewrites the header.
struct Linked {
    /// Where the footer is: the file's last 512 bytes.
    footer_at: u64,
    footer: [u8; FOOTER_LEN],
    size: u64,
    header_at: u64,
    header: [u8; HEADER_LEN],
    parsed: DynamicHeader,
}

impl Linked {
    fn read(file: &WFile, path: &Path) -> Result<Self> {
        let (footer_at, footer, f) = end_footer(file, path)?;
        if f.disk_type != DiskType::Differencing {
            return Err(Error::unsupported(
                Format::Vhd,
                format!(
                    "relinking a {} disk (only a differencing disk has a parent)",
                    f.disk_type.as_str()
                ),
            )
            .at(footer_at + 60)
            .in_file(path));
        }
        let header_at = f.data_offset;
        let (header, parsed) = checked_header(file, path, header_at)?;
        Ok(Linked {
            footer_at,
            footer,
            size: f.current_size,
            header_at,
            header,
            parsed,
        })
    }
}

/// The footer at the end of a VHD about to be written (opened for
/// writing, relinked): where it is, its bytes and what they say. A file
/// shorter than a footer, or a footer that does not parse or fails its
/// checksum, is refused before anything is written.
fn end_footer(file: &WFile, path: &Path) -> Result<(u64, [u8; FOOTER_LEN], VhdFooter)> {
    let len = file.len()?;
    let footer_at = len.checked_sub(FOOTER_LEN as u64).ok_or_else(|| {
        Error::corrupt(
            Format::Vhd,
            Detail::Truncated {
                what: "footer".into(),
                needed: FOOTER_LEN as u64,
                available: len,
            },
        )
        .at(0)
        .in_file(path)
    })?;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, footer_at)?;
    let f = VhdFooter::parse(&footer).map_err(|e| e.relative_to(footer_at).in_file(path))?;
    if !f.checksum_ok() {
        return Err(f.checksum_error().at(footer_at).in_file(path));
    }
    Ok((footer_at, footer, f))
}

/// The dynamic header at `at` of a VHD about to be written: its bytes and
/// what they say. A header past the end of the file, or one that does not
/// parse or fails its checksum, is refused before anything is written.
fn checked_header(file: &WFile, path: &Path, at: u64) -> Result<([u8; HEADER_LEN], DynamicHeader)> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, at).map_err(|_| {
        Error::corrupt(
            Format::Vhd,
            Detail::Invalid("dynamic header past the end of the file".into()),
        )
        .at(at)
        .in_file(path)
    })?;
    let parsed = DynamicHeader::parse(&header).map_err(|e| e.relative_to(at).in_file(path))?;
    if !parsed.checksum_ok() {
        return Err(parsed.checksum_error().at(at + 36).in_file(path));
    }
    Ok((header, parsed))
}

/// Sets the parent time stamp of the differencing disk `child` to its
/// parent's modification time, after a commit wrote the parent (the
/// parent's unique ID is unchanged). One header sector is rewritten.
pub(crate) fn relink(child: &Path, parent: &Path) -> Result<()> {
    let file = WFile::open(child, Format::Vhd)?;
    let Linked {
        header_at: at,
        header: mut h,
        ..
    } = Linked::read(&file, child)?;
    put(&mut h, 56, &vhd_seconds(mtime_of(parent)?).to_be_bytes());
    let sum = ones_complement_checksum(&h, 36);
    put(&mut h, 36, &sum.to_be_bytes());
    // The time stamp and checksum share the header's first sector.
    file.write_all_at(h.get(..SECTOR as usize).unwrap_or_default(), at)?;
    file.sync()
}

/// Points the differencing disk `child` at another parent, `parent`, that
/// reads as its old one did (the old parent merged into its own parent,
/// which takes its place): the dynamic header's parent unique ID, time
/// stamp and Unicode name, and its parent locators (`W2ru` and `W2ku` as
/// [`create`] writes them; other entries, which name the old parent, are
/// cleared), with the header checksum. The parent is only read.
///
/// Crash consistency: nothing the old header points at is overwritten.
/// The new locator data goes where the footer was, after the footer was
/// first written again past it (the file always ends with a valid
/// footer; the footer's bytes, and so its copy at offset 0, do not
/// change), and is synced before the header is rewritten to point at it,
/// by one write of its 1,024 bytes. An interruption leaves the child
/// linked to its old parent or to the new one; the old locators' space is
/// left unused.
pub(crate) fn relink_to(child: &Path, parent: &Path) -> Result<()> {
    let file = WFile::open(child, Format::Vhd)?;
    let linked = Linked::read(&file, child)?;
    let facts = ParentFacts::read(parent, child)?;
    if facts.size != linked.size {
        return Err(Error::unsupported(
            Format::Vhd,
            format!(
                "relinking to {} of {} bytes: the child is {} bytes",
                parent.display(),
                facts.size,
                linked.size
            ),
        )
        .at(linked.footer_at + 48)
        .in_file(child));
    }
    let (locators, end) = parent_locators(&facts, align_up(linked.footer_at, SECTOR));
    file.write_all_at(&linked.footer, end)?;
    file.sync()?;
    write_locators(&file, &locators)?;
    file.sync()?;
    let h = header_bytes(
        linked.parsed.table_offset,
        linked.parsed.max_table_entries,
        linked.parsed.block_size,
        Some(&facts),
        &locators,
    );
    file.write_all_at(&h, linked.header_at)?;
    file.sync()
}

/// Seconds since the VHD epoch (2000-01-01 UTC) for Unix seconds.
fn vhd_seconds(unix: u64) -> u32 {
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX_SECONDS as u64)).unwrap_or(u32::MAX)
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The CHS geometry for `size` bytes, as the VHD specification's appendix
/// computes it (capped at 65535/16/255).
pub(crate) fn chs_geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / SECTOR).min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    let cylinders = cth / heads;
    (
        u16::try_from(cylinders).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

/// A footer as Hyper-V writes it.
fn footer_bytes(size: u64, disk_type: DiskType, unique_id: [u8; 16]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    let (c, h, s) = chs_geometry(size);
    let data_offset = if disk_type == DiskType::Fixed {
        NO_DATA_OFFSET
    } else {
        FOOTER_LEN as u64
    };
    let code: u32 = match disk_type {
        DiskType::Fixed => 2,
        DiskType::Dynamic => 3,
        DiskType::Differencing => 4,
    };
    put(&mut f, 0, FOOTER_COOKIE);
    put(&mut f, 8, &2u32.to_be_bytes()); // features: reserved bit set
    put(&mut f, 12, &0x0001_0000u32.to_be_bytes());
    put(&mut f, 16, &data_offset.to_be_bytes());
    put(&mut f, 24, &vhd_seconds(now_unix()).to_be_bytes());
    put(&mut f, 28, b"win ");
    put(&mut f, 32, &0x000a_0000u32.to_be_bytes());
    put(&mut f, 36, b"Wi2k");
    put(&mut f, 40, &size.to_be_bytes());
    put(&mut f, 48, &size.to_be_bytes());
    put(&mut f, 56, &c.to_be_bytes());
    put(&mut f, 58, &[h, s]);
    put(&mut f, 60, &code.to_be_bytes());
    put(&mut f, 68, &unique_id);
    let sum = ones_complement_checksum(&f, 64);
    put(&mut f, 64, &sum.to_be_bytes());
    f
}

/// A dynamic header; `locators` are (platform code, file offset, data).
fn header_bytes(
    bat_offset: u64,
    entries: u32,
    block_size: u32,
    parent: Option<&ParentFacts>,
    locators: &[([u8; 4], u64, Vec<u8>)],
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    put(&mut h, 0, HEADER_COOKIE);
    put(&mut h, 8, &NO_DATA_OFFSET.to_be_bytes());
    put(&mut h, 16, &bat_offset.to_be_bytes());
    put(&mut h, 24, &0x0001_0000u32.to_be_bytes());
    put(&mut h, 28, &entries.to_be_bytes());
    put(&mut h, 32, &block_size.to_be_bytes());
    if let Some(p) = parent {
        put(&mut h, 40, &p.unique_id);
        put(&mut h, 56, &p.time_stamp.to_be_bytes());
        let name: Vec<u8> = p
            .name
            .encode_utf16()
            .take(PARENT_NAME_LEN / 2 - 1)
            .flat_map(u16::to_be_bytes)
            .collect();
        put(&mut h, 64, &name);
    }
    for (i, (code, at, data)) in locators.iter().take(PARENT_LOCATOR_ENTRIES).enumerate() {
        let e = 576 + i * 24;
        let len = u32::try_from(data.len()).unwrap_or(0);
        let space = u32::try_from(locator_space(data.len()) / SECTOR).unwrap_or(0);
        put(&mut h, e, code);
        put(&mut h, e + 4, &space.to_be_bytes());
        put(&mut h, e + 8, &len.to_be_bytes());
        put(&mut h, e + 16, &at.to_be_bytes());
    }
    let sum = ones_complement_checksum(&h, 36);
    put(&mut h, 36, &sum.to_be_bytes());
    h
}

/// Copies `src` into `dst` at `at` (the layouts above are fixed, in range).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}

/// `v` rounded up to a multiple of `to` (a power of two).
fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The error for an option the format cannot take.
fn bad_option(what: String) -> Error {
    Error::unsupported(Format::Vhd, what)
}

/// The sparse state of a dynamic or differencing disk.
struct Sparse {
    block_size: u64,
    /// Bytes of each block's sector bitmap (a multiple of 512).
    bitmap_len: u64,
    bat_offset: u64,
    /// The BAT as readers will see it after the next flush.
    bat: Vec<u32>,
    /// Blocks whose BAT entries are not on disk yet.
    pending: BTreeSet<u32>,
    /// Sector bitmaps of a differencing disk's blocks, by block.
    bitmaps: HashMap<u32, Vec<u8>>,
    /// Bitmaps changed since the last flush.
    dirty: BTreeSet<u32>,
    /// Where the footer at the end of the file is.
    footer_at: u64,
    footer: [u8; FOOTER_LEN],
}

/// An open VHD taking writes.
struct VhdWriter {
    file: WFile,
    size: u64,
    /// `None` for a fixed disk.
    sparse: Option<Mutex<Sparse>>,
    /// A differencing disk's parent, read-only.
    parent: Option<DiskImage>,
    differencing: bool,
}

impl std::fmt::Debug for VhdWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdWriter")
            .field("path", &self.file.path())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl VhdWriter {
    fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let corrupt = |what: String, at: u64| {
            Error::corrupt(Format::Vhd, Detail::Invalid(what))
                .at(at)
                .in_file(path)
        };
        let file = WFile::open(path, Format::Vhd)?;
        let (footer_at, footer, parsed) = end_footer(&file, path)?;
        let size = parsed.current_size;
        if parsed.disk_type == DiskType::Fixed {
            if footer_at < size {
                return Err(corrupt(
                    format!("a fixed disk of {size} bytes cut short at {footer_at}; not written"),
                    footer_at,
                ));
            }
            return Ok(VhdWriter {
                file,
                size,
                sparse: None,
                parent: None,
                differencing: false,
            });
        }
        let at = parsed.data_offset;
        let (_, header) = checked_header(&file, path, at)?;
        let block_size = u64::from(header.block_size);
        let entries = u64::from(header.max_table_entries);
        if entries * block_size < size || entries > MAX_SIZE / SECTOR {
            return Err(corrupt(
                format!("{entries} BAT entries of {block_size} bytes do not cover {size} bytes"),
                at + 28,
            ));
        }
        let bat_bytes = entries * 4;
        if header.table_offset.saturating_add(bat_bytes) > footer_at {
            return Err(corrupt(
                "BAT past the end of the file".into(),
                header.table_offset,
            ));
        }
        let mut raw = vec![0u8; usize::try_from(bat_bytes).unwrap_or(0)];
        file.read_exact_at(&mut raw, header.table_offset)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| crate::bytes::be_u32(c, 0).unwrap_or(UNUSED))
            .collect();
        let bitmap_len = align_up((block_size / SECTOR).div_ceil(8), SECTOR);
        let mut end = footer_at;
        for (i, &e) in bat.iter().enumerate() {
            if e == UNUSED {
                continue;
            }
            let block_end = u64::from(e) * SECTOR + bitmap_len + block_size;
            if block_end > footer_at + FOOTER_LEN as u64 {
                return Err(corrupt(
                    format!("BAT entry {i} points past the end of the file"),
                    header.table_offset + 4 * i as u64,
                ));
            }
            end = end.max(block_end);
        }
        let differencing = parsed.disk_type == DiskType::Differencing;
        let parent = if differencing {
            let p = crate::write::parent::open_for_writing(path, options, Format::Vhd)?;
            // The parent's modification time, recorded when the child was
            // made (Virtual PC's check): a parent written since is newer.
            let now = vhd_seconds(mtime_of(&p.info().path)?);
            if now > header.parent_time_stamp.saturating_add(MTIME_SLACK) {
                return Err(crate::write::parent::parent_changed(
                    Format::Vhd,
                    path,
                    &format!(
                        "{} was modified at {}, after the time stamp {} the child records",
                        p.info().path.display(),
                        super::footer::format_time_stamp(now),
                        super::footer::format_time_stamp(header.parent_time_stamp)
                    ),
                ));
            }
            Some(p)
        } else {
            None
        };
        let sparse = Sparse {
            block_size,
            bitmap_len,
            bat_offset: header.table_offset,
            bat,
            pending: BTreeSet::new(),
            bitmaps: HashMap::new(),
            dirty: BTreeSet::new(),
            footer_at: end.max(footer_at),
            footer,
        };
        Ok(VhdWriter {
            file,
            size,
            sparse: Some(Mutex::new(sparse)),
            parent,
            differencing,
        })
    }

    fn lock<'m>(&self, m: &'m Mutex<Sparse>) -> std::sync::MutexGuard<'m, Sparse> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bitmap of an allocated block of a differencing disk.
    fn bitmap<'s>(&self, s: &'s mut Sparse, block: u32) -> Result<&'s mut Vec<u8>> {
        if !s.bitmaps.contains_key(&block) {
            let at = u64::from(s.bat.get(block as usize).copied().unwrap_or(UNUSED)) * SECTOR;
            let mut b = vec![0u8; usize::try_from(s.bitmap_len).unwrap_or(0)];
            self.file.read_exact_at(&mut b, at)?;
            s.bitmaps.insert(block, b);
        }
        s.bitmaps
            .get_mut(&block)
            .ok_or_else(|| Error::unsupported(Format::Vhd, "bitmap cache"))
    }

    /// Reads within one block (`in_block..in_block+buf.len()`).
    fn read_block(&self, s: &mut Sparse, buf: &mut [u8], block: u32, in_block: u64) -> Result<()> {
        let vstart = u64::from(block) * s.block_size + in_block;
        let entry = s.bat.get(block as usize).copied().unwrap_or(UNUSED);
        if entry == UNUSED {
            return read_from_parent(self.parent_device(), buf, vstart);
        }
        let data = u64::from(entry) * SECTOR + s.bitmap_len;
        if !self.differencing {
            return self.file.read_exact_at(buf, data + in_block);
        }
        let bitmap = self.bitmap(s, block)?.clone();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = in_block + done as u64;
            let sector = pos / SECTOR;
            let present = bit(&bitmap, sector);
            // The run of sectors with the same presence.
            let mut end_sector = sector + 1;
            let last = (in_block + buf.len() as u64).div_ceil(SECTOR);
            while end_sector < last && bit(&bitmap, end_sector) == present {
                end_sector += 1;
            }
            let run_end = (end_sector * SECTOR).min(in_block + buf.len() as u64);
            let n = usize::try_from(run_end - pos).unwrap_or(0);
            let dst = buf
                .get_mut(done..done + n)
                .ok_or_else(|| Error::unsupported(Format::Vhd, "read split"))?;
            if present {
                self.file.read_exact_at(dst, data + pos)?;
            } else {
                read_from_parent(self.parent_device(), dst, vstart - in_block + pos)?;
            }
            done += n;
        }
        Ok(())
    }

    fn parent_device(&self) -> Option<&dyn BlockDevice> {
        self.parent.as_ref().map(|p| p as &dyn BlockDevice)
    }

    /// Allocates `block` at the end of the file; returns its data offset.
    fn allocate(&self, s: &mut Sparse, block: u32) -> Result<u64> {
        let bitmap_at =
            align_up(s.footer_at + FOOTER_LEN as u64 + s.bitmap_len, DATA_ALIGN) - s.bitmap_len;
        let data_at = bitmap_at + s.bitmap_len;
        let new_footer = data_at + s.block_size;
        let entry = u32::try_from(bitmap_at / SECTOR).map_err(|_| {
            Error::limit(
                Format::Vhd,
                "file offset of a new block",
                bitmap_at,
                u64::from(u32::MAX) * SECTOR,
            )
            .in_file(self.file.path())
        })?;
        // The footer first (the file always ends with one), then the bitmap.
        self.file.write_all_at(&s.footer, new_footer)?;
        let fill = if self.differencing { 0 } else { 0xff };
        let bitmap = vec![fill; usize::try_from(s.bitmap_len).unwrap_or(0)];
        self.file.write_all_at(&bitmap, bitmap_at)?;
        if self.differencing {
            s.bitmaps.insert(block, bitmap);
        }
        if let Some(e) = s.bat.get_mut(block as usize) {
            *e = entry;
        }
        s.pending.insert(block);
        s.footer_at = new_footer;
        Ok(data_at)
    }

    /// Writes within one block.
    fn write_block(&self, s: &mut Sparse, buf: &[u8], block: u32, in_block: u64) -> Result<()> {
        let entry = s.bat.get(block as usize).copied().unwrap_or(UNUSED);
        let data = if entry == UNUSED {
            self.allocate(s, block)?
        } else {
            u64::from(entry) * SECTOR + s.bitmap_len
        };
        if !self.differencing {
            return self.file.write_all_at(buf, data + in_block);
        }
        // Whole 4 KiB groups of sectors, the parts not written completed
        // from what reads there now (the parent's bytes where not yet
        // present): libvhdi, like Hyper-V's 4 KiB I/O, takes a bitmap's
        // sectors eight at a time, and reads a group whose first sector
        // is present wholly from the child.
        let block_size = s.block_size;
        let (start, whole) = widen_to_groups(buf, in_block, GROUP, block_size, |b, at| {
            self.read_block(s, b, block, at)
        })?;
        let (first, last) = (
            start / SECTOR,
            (start + whole.len() as u64).div_ceil(SECTOR),
        );
        self.file.write_all_at(&whole, data + start)?;
        let bitmap = self.bitmap(s, block)?;
        for sector in first..last {
            if let Some(b) = bitmap.get_mut(usize::try_from(sector / 8).unwrap_or(usize::MAX)) {
                *b |= 0x80 >> (sector % 8);
            }
        }
        s.dirty.insert(block);
        Ok(())
    }

    fn flush_sparse(&self, s: &mut Sparse) -> Result<()> {
        self.file.sync()?;
        if !s.dirty.is_empty() {
            for &block in &s.dirty {
                let at = u64::from(s.bat.get(block as usize).copied().unwrap_or(UNUSED)) * SECTOR;
                if let Some(b) = s.bitmaps.get(&block) {
                    self.file.write_all_at(b, at)?;
                }
            }
            s.dirty.clear();
            self.file.sync()?;
        }
        if !s.pending.is_empty() {
            // Whole BAT sectors holding pending entries.
            let sectors: BTreeSet<u64> = s
                .pending
                .iter()
                .map(|&b| u64::from(b) * 4 / SECTOR)
                .collect();
            for sector in sectors {
                let first = usize::try_from(sector * SECTOR / 4).unwrap_or(usize::MAX);
                let bytes: Vec<u8> = s
                    .bat
                    .iter()
                    .skip(first)
                    .take(SECTOR as usize / 4)
                    .flat_map(|e| e.to_be_bytes())
                    .collect();
                self.file
                    .write_all_at(&bytes, s.bat_offset + sector * SECTOR)?;
            }
            s.pending.clear();
            self.file.sync()?;
        }
        if s.bitmaps.len() > MAX_CLEAN_BITMAPS {
            s.bitmaps.clear();
        }
        Ok(())
    }
}

/// Whether sector `s` is present in an MSB-first bitmap.
fn bit(bitmap: &[u8], s: u64) -> bool {
    usize::try_from(s / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|b| b & (0x80 >> (s % 8)) != 0)
}

impl BlockDevice for VhdWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vhd, offset, buf.len() as u64, self.size)?;
        let Some(m) = &self.sparse else {
            return self.file.read_exact_at(buf, offset);
        };
        let mut s = self.lock(m);
        for p in pieces(offset, buf.len(), s.block_size) {
            let block = u32::try_from(p.index).unwrap_or(u32::MAX);
            self.read_block(&mut s, p.of_mut(buf), block, p.within)?;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vhd, offset, len, self.size)?;
        let mut out = Vec::new();
        let Some(m) = &self.sparse else {
            crate::block_device::push_extent(
                &mut out,
                Extent {
                    offset,
                    len,
                    kind: ExtentKind::Data,
                },
            );
            return Ok(out);
        };
        let s = self.lock(m);
        let mut pos = offset;
        while pos < offset + len {
            let block = pos / s.block_size;
            let end = ((block + 1) * s.block_size).min(offset + len);
            let entry = s.bat.get(block as usize).copied().unwrap_or(UNUSED);
            // A differencing disk's absent blocks are its parent's data.
            let kind = if entry != UNUSED || self.parent.is_some() {
                ExtentKind::Data
            } else {
                ExtentKind::Unallocated
            };
            crate::block_device::push_extent(
                &mut out,
                Extent {
                    offset: pos,
                    len: end - pos,
                    kind,
                },
            );
            pos = end;
        }
        Ok(out)
    }
}

impl WritableDevice for VhdWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(Format::Vhd, offset, buf.len() as u64, self.size)?;
        let Some(m) = &self.sparse else {
            return self.file.write_all_at(buf, offset);
        };
        let mut s = self.lock(m);
        for p in pieces(offset, buf.len(), s.block_size) {
            let block = u32::try_from(p.index).unwrap_or(u32::MAX);
            self.write_block(&mut s, p.of(buf), block, p.within)?;
        }
        if s.pending.len() >= MAX_PENDING || s.dirty.len() >= MAX_PENDING {
            self.flush_sparse(&mut s)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        match &self.sparse {
            None => self.file.sync(),
            Some(m) => {
                let mut s = self.lock(m);
                self.flush_sparse(&mut s)
            }
        }
    }
}

impl Drop for VhdWriter {
    fn drop(&mut self) {
        let _ = WritableDevice::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // Windows 10's 10 MiB disk (dissect's dynamic.vhd): 301/4/17.
        assert_eq!(chs_geometry(10 << 20), (301, 4, 17));
        // The cap.
        assert_eq!(chs_geometry(4 << 40), (65535, 16, 255));
    }
}
