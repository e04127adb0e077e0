//! Writing VHDX ([MS-VHDX] v1): [`create`] (fixed, dynamic, differencing)
//! and [`open_writable`], a [`WritableDevice`] over an existing VHDX.
//!
//! Layout as Hyper-V writes it: the file type identifier, both headers
//! and both region tables in the first MiB, a 1 MiB log at 1 MiB, the
//! metadata region at 2 MiB (file parameters, virtual disk size, logical
//! and physical sector size, page 83 data, and for a differencing disk
//! the parent locator), the BAT at 3 MiB, then a differencing disk's
//! sector bitmap blocks (all of them, zeroed, as Hyper-V makes them) and
//! the payload blocks.
//!
//! Writes. The first write after opening gives the headers a new
//! `FileWriteGuid` and `DataWriteGuid` (both headers, one after the
//! other, each with the next sequence number). Payload data is written in
//! place; a new block is appended at the end of the file (1 MiB aligned;
//! a differencing disk's chunk gets a sector bitmap block the same way).
//! Every metadata change — BAT entries, sector bitmap bits — is kept in
//! memory as whole 4 KiB pages until [`WritableDevice::flush`], which
//! syncs the data, sets the headers' `LogGuid` (once), writes the pages as
//! log entries and syncs, writes them to their places and syncs (the
//! [MS-VHDX] 2.3 order), so that a crash at any point is replayed by any
//! reader. Closing clears `LogGuid` again. Opening an image whose log
//! needs replay replays it into the file first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::block_device::{
    check_range, push_extent, read_from_parent, BlockDevice, Extent, ExtentKind,
};
use crate::crc32c;
use crate::error::{Error, Format, Result};
use crate::guid::Guid;
use crate::image::{DiskImage, Warnings};
use crate::image_file::ImageFile;
use crate::options::OpenOptions;
use crate::pieces::pieces;
use crate::write::file::{create_staged, random_guid, WFile};
use crate::write::parent::Parent;
use crate::write::sector_groups::widen_to_groups;
use crate::write::{CreateOptions, Subformat, WritableDevice};

use super::bat::{
    Geometry, PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_PARTIALLY_PRESENT, PAYLOAD_BLOCK_ZERO,
    SB_BLOCK_PRESENT,
};
use super::file_view::FileView;
use super::header::{Header, HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE, KIB, MIB};
use super::metadata::{
    FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, MAX_BLOCK_SIZE, MAX_VIRTUAL_DISK_SIZE, MIN_BLOCK_SIZE,
    PAGE_83_DATA, PARENT_LOCATOR, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_SIZE,
};
use super::parent_locator::VHDX_LOCATOR_TYPE;
use super::region_table::{BAT_GUID, METADATA_GUID, REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET};

/// The default block size: 32 MiB, as Hyper-V.
pub const DEFAULT_BLOCK_SIZE: u64 = 32 * MIB;
/// Where the log is, and its length.
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
/// Where the metadata region is, and its length.
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
/// Where the BAT is.
const BAT_OFFSET: u64 = 3 * MIB;
/// Metadata and log pages.
const PAGE: u64 = 4 * KIB;
/// Data descriptors in one log entry (its header sectors and data
/// sectors stay well inside the 1 MiB log).
const MAX_DESCRIPTORS: usize = 200;
/// Dirty pages held before a write flushes by itself.
const MAX_DIRTY: usize = 2048;
/// Clean sector bitmap pages kept in memory.
const MAX_CLEAN_PAGES: usize = 4096;

/// Creates the VHDX `path` as `options` say: dynamic (the default),
/// fixed or, with [`CreateOptions::parent`], differencing. The parent is
/// only read.
pub fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    let parent = match &options.parent {
        Some(p) => Some(ParentFacts::read(p, path)?),
        None => None,
    };
    let sector = parent
        .as_ref()
        .map_or(options.sector_size, |p| p.sector_size);
    if sector != 512 && sector != 4096 {
        return Err(bad_option(format!("sector size {sector} (512 or 4096)")).in_file(path));
    }
    let size = parent.as_ref().map_or(options.size, |p| p.size);
    if size == 0 || size % u64::from(sector) != 0 || size > MAX_VIRTUAL_DISK_SIZE {
        return Err(bad_option(format!(
            "virtual size {size} (a non-zero multiple of the {sector}-byte sector up to {MAX_VIRTUAL_DISK_SIZE})"
        ))
        .in_file(path));
    }
    let fixed = match (&parent, options.subformat) {
        (Some(_), None | Some(Subformat::Dynamic)) | (None, None | Some(Subformat::Dynamic)) => {
            false
        }
        (None, Some(Subformat::Fixed)) => true,
        (_, Some(s)) => {
            return Err(bad_option(format!(
                "subformat {s} ({})",
                if parent.is_some() {
                    "a child is differencing"
                } else {
                    "one of: dynamic, fixed"
                }
            ))
            .in_file(path))
        }
    };
    let block_size = options.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two()
        || !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
    {
        return Err(bad_option(format!(
            "block size {block_size} (a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE})"
        ))
        .in_file(path));
    }
    let g = Geometry::new(
        size,
        u32::try_from(block_size).unwrap_or(0),
        sector,
        parent.is_some(),
    );
    let bat_len = (g.total_entries * 8).div_ceil(MIB).max(1) * MIB;
    let data_start = BAT_OFFSET + bat_len;
    let mut bat = vec![0u8; usize::try_from(bat_len).map_err(|_| bad_option("BAT size".into()))?];
    let mut end = data_start;
    if fixed {
        for b in 0..g.data_blocks {
            let index = b + b / g.chunk_ratio;
            let entry = u64::from(PAYLOAD_BLOCK_FULLY_PRESENT) | (end / MIB) << 20;
            put(
                &mut bat,
                usize::try_from(index * 8).unwrap_or(usize::MAX),
                &entry.to_le_bytes(),
            );
            end += block_size;
        }
    }
    if parent.is_some() {
        // Every chunk's sector bitmap block up front, zeroed, as Hyper-V
        // creates them (libvhdi reads a differencing disk's chunk with no
        // sector bitmap block wrongly).
        for chunk in 0..g.data_blocks.div_ceil(g.chunk_ratio) {
            let index = chunk * (g.chunk_ratio + 1) + g.chunk_ratio;
            let entry = u64::from(SB_BLOCK_PRESENT) | (end / MIB) << 20;
            put(
                &mut bat,
                usize::try_from(index * 8).unwrap_or(usize::MAX),
                &entry.to_le_bytes(),
            );
            end += MIB;
        }
    }
    let file_write = random_guid();
    let data_write = random_guid();
    create_staged(path, options.force, Format::Vhdx, |file| {
        // File type identifier.
        let mut id = vec![0u8; 64 * KIB as usize];
        put(&mut id, 0, b"vhdxfile");
        let creator = format!("diskimage {}", env!("CARGO_PKG_VERSION"));
        let units: Vec<u8> = creator.encode_utf16().flat_map(u16::to_le_bytes).collect();
        put(&mut id, 8, &units);
        file.write_all_at(&id, 0)?;
        let h = Header {
            copy: 1,
            sequence_number: 0,
            file_write_guid: file_write,
            data_write_guid: data_write,
            log_guid: Guid::NIL,
            log_version: 0,
            version: 1,
            log_length: LOG_LENGTH as u32,
            log_offset: LOG_OFFSET,
        };
        file.write_all_at(&header_bytes(&h), HEADER_1_OFFSET)?;
        let h2 = Header {
            sequence_number: 1,
            ..h
        };
        file.write_all_at(&header_bytes(&h2), HEADER_2_OFFSET)?;
        let rt = region_table(bat_len);
        file.write_all_at(&rt, REGION_TABLE_1_OFFSET)?;
        file.write_all_at(&rt, REGION_TABLE_2_OFFSET)?;
        let meta = metadata(size, block_size, sector, fixed, parent.as_ref());
        file.write_all_at(&meta, METADATA_OFFSET)?;
        file.write_all_at(&bat, BAT_OFFSET)?;
        file.set_len(end)
    })
}

/// Sets the `parent_linkage` of the differencing disk `child` to the
/// current DataWriteGuid of `parent`, after a commit wrote the parent.
/// The locator's page is written through the log, as every metadata
/// change.
pub(crate) fn relink(child: &Path, parent: &Path) -> Result<()> {
    let file = ImageFile::open(parent, &OpenOptions::new().mmap(false))?;
    let mut w = Warnings::new(&OpenOptions::default());
    let header = super::header::read_current(&file, &mut w).map_err(|e| e.in_file(parent))?;
    let writer = VhdxWriter::open(child, &OpenOptions::new(), true)?;
    let Some((at, len)) = writer
        .locator
        .as_ref()
        .and_then(|l| l.value_span("parent_linkage"))
    else {
        return Err(Error::unsupported(
            Format::Vhdx,
            "relinking a child with no parent_linkage in its parent locator",
        )
        .in_file(child));
    };
    let value: Vec<u8> = format!("{{{}}}", header.data_write_guid)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    if value.len() as u64 != len {
        return Err(Error::unsupported(
            Format::Vhdx,
            format!("relinking a parent_linkage of {len} bytes (a braced GUID is 76)"),
        )
        .at(at)
        .in_file(child));
    }
    let mut s = writer.lock();
    s.header.file_write_guid = random_guid();
    writer.update_headers(&mut s, None)?;
    s.headers_updated = true;
    let mut done = 0u64;
    while done < len {
        let pos = at + done;
        let page_at = pos / PAGE * PAGE;
        let n = (PAGE - (pos - page_at)).min(len - done);
        let src = value
            .get(usize::try_from(done).unwrap_or(usize::MAX)..)
            .and_then(|v| v.get(..usize::try_from(n).unwrap_or(usize::MAX)))
            .unwrap_or_default();
        let page = writer.page(&mut s, page_at)?;
        put(
            page,
            usize::try_from(pos - page_at).unwrap_or(usize::MAX),
            src,
        );
        s.dirty_bitmaps.insert(page_at);
        done += n;
    }
    writer.flush_locked(&mut s)
}

/// Opens the VHDX `path` for writing (its parent, for a differencing disk,
/// read-only underneath).
pub fn open_writable(path: &Path, options: &OpenOptions) -> Result<Box<dyn WritableDevice>> {
    Ok(Box::new(VhdxWriter::open(path, options, false)?))
}

/// What a child records about its parent.
struct ParentFacts {
    size: u64,
    sector_size: u32,
    data_write_guid: Guid,
    relative: String,
    absolute: String,
}

impl ParentFacts {
    fn read(parent: &Path, child: &Path) -> Result<Self> {
        let p = Parent::open(parent, child, Format::Vhdx)?;
        let file = ImageFile::open(parent, &OpenOptions::default())?;
        let mut w = Warnings::new(&OpenOptions::default());
        let header = super::header::read_current(&file, &mut w).map_err(|e| e.in_file(parent))?;
        Ok(ParentFacts {
            size: p.image.size(),
            sector_size: p.image.device().sector_size(),
            data_write_guid: header.data_write_guid,
            relative: p.windows_relative(),
            absolute: p.absolute_text(),
        })
    }
}

/// A header's 4 KiB, checksummed.
fn header_bytes(h: &Header) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE as usize];
    put(&mut b, 0, b"head");
    put(&mut b, 8, &h.sequence_number.to_le_bytes());
    put(&mut b, 16, &h.file_write_guid.to_le_bytes());
    put(&mut b, 32, &h.data_write_guid.to_le_bytes());
    put(&mut b, 48, &h.log_guid.to_le_bytes());
    put(&mut b, 64, &h.log_version.to_le_bytes());
    put(&mut b, 66, &h.version.to_le_bytes());
    put(&mut b, 68, &h.log_length.to_le_bytes());
    put(&mut b, 72, &h.log_offset.to_le_bytes());
    let crc = crc32c::checksum_with_hole(&b, 4);
    put(&mut b, 4, &crc.to_le_bytes());
    b
}

/// A region table (64 KiB) naming the BAT and the metadata region.
fn region_table(bat_len: u64) -> Vec<u8> {
    let mut b = vec![0u8; 64 * KIB as usize];
    put(&mut b, 0, b"regi");
    put(&mut b, 8, &2u32.to_le_bytes());
    for (i, (guid, at, len)) in [
        (BAT_GUID, BAT_OFFSET, bat_len),
        (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH),
    ]
    .into_iter()
    .enumerate()
    {
        let e = 16 + 32 * i;
        put(&mut b, e, &guid.to_le_bytes());
        put(&mut b, e + 16, &at.to_le_bytes());
        put(
            &mut b,
            e + 24,
            &u32::try_from(len).unwrap_or(0).to_le_bytes(),
        );
        put(&mut b, e + 28, &1u32.to_le_bytes());
    }
    let crc = crc32c::checksum_with_hole(&b, 4);
    put(&mut b, 4, &crc.to_le_bytes());
    b
}

/// The metadata region's table and items.
fn metadata(
    size: u64,
    block_size: u64,
    sector: u32,
    fixed: bool,
    parent: Option<&ParentFacts>,
) -> Vec<u8> {
    const IS_VIRTUAL_DISK: u32 = 2;
    const IS_REQUIRED: u32 = 4;
    let flags = u32::from(fixed) | if parent.is_some() { 2 } else { 0 };
    let mut file_params = (u32::try_from(block_size).unwrap_or(0))
        .to_le_bytes()
        .to_vec();
    file_params.extend_from_slice(&flags.to_le_bytes());
    let mut items: Vec<(Guid, Vec<u8>, u32)> = vec![
        (FILE_PARAMETERS, file_params, IS_REQUIRED),
        (
            VIRTUAL_DISK_SIZE,
            size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE,
            sector.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            4096u32.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PAGE_83_DATA,
            random_guid().to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
    ];
    if let Some(p) = parent {
        items.push((PARENT_LOCATOR, parent_locator(p), IS_REQUIRED));
    }
    let mut b = vec![0u8; METADATA_LENGTH as usize];
    put(&mut b, 0, b"metadata");
    put(
        &mut b,
        10,
        &u16::try_from(items.len()).unwrap_or(0).to_le_bytes(),
    );
    let mut at = 64 * KIB as usize;
    for (i, (guid, data, flags)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        put(&mut b, e, &guid.to_le_bytes());
        put(
            &mut b,
            e + 16,
            &u32::try_from(at).unwrap_or(0).to_le_bytes(),
        );
        put(
            &mut b,
            e + 20,
            &u32::try_from(data.len()).unwrap_or(0).to_le_bytes(),
        );
        put(&mut b, e + 24, &flags.to_le_bytes());
        put(&mut b, at, data);
        at += data.len();
    }
    b
}

/// The parent locator item: `parent_linkage`, `relative_path`,
/// `absolute_win32_path` (UTF-16LE keys and values after the entries).
fn parent_locator(p: &ParentFacts) -> Vec<u8> {
    let linkage = format!("{{{}}}", p.data_write_guid);
    let pairs = [
        ("parent_linkage", linkage.as_str()),
        ("relative_path", p.relative.as_str()),
        ("absolute_win32_path", p.absolute.as_str()),
    ];
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let mut head = Vec::new();
    head.extend_from_slice(&VHDX_LOCATOR_TYPE.to_le_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&u16::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    let mut body = Vec::new();
    let base = head.len() + 12 * pairs.len();
    let mut entries = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (utf16(k), utf16(v));
        let ko = base + body.len();
        body.extend_from_slice(&k);
        let vo = base + body.len();
        body.extend_from_slice(&v);
        entries.extend_from_slice(&u32::try_from(ko).unwrap_or(0).to_le_bytes());
        entries.extend_from_slice(&u32::try_from(vo).unwrap_or(0).to_le_bytes());
        entries.extend_from_slice(&u16::try_from(k.len()).unwrap_or(0).to_le_bytes());
        entries.extend_from_slice(&u16::try_from(v.len()).unwrap_or(0).to_le_bytes());
    }
    head.extend_from_slice(&entries);
    head.extend_from_slice(&body);
    head
}

/// Copies `src` into `dst` at `at` (the layouts above are in range).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = at
        .checked_add(src.len())
        .and_then(|end| dst.get_mut(at..end))
    {
        d.copy_from_slice(src);
    }
}

/// The error for an option the format cannot take.
fn bad_option(what: String) -> Error {
    Error::unsupported(Format::Vhdx, what)
}

/// What an open writer changes.
struct State {
    /// The BAT as readers will see it after the next flush.
    bat: Vec<u64>,
    /// BAT pages (by index) changed since the last flush.
    dirty_bat: BTreeSet<u64>,
    /// Metadata pages by file offset: sector bitmap pages changed (dirty)
    /// and clean ones read before, and a relinked parent locator's page.
    bitmap_pages: HashMap<u64, Vec<u8>>,
    dirty_bitmaps: BTreeSet<u64>,
    /// Where the next block goes (1 MiB aligned).
    file_end: u64,
    /// The current header (the one with the highest sequence number).
    header: Header,
    /// Whether this open has given the headers new write GUIDs.
    headers_updated: bool,
    /// Where the next log entry goes, and its sequence number.
    log_head: u64,
    log_sequence: u64,
}

/// An open VHDX taking writes.
struct VhdxWriter {
    file: WFile,
    g: Geometry,
    bat_offset: u64,
    parent: Option<DiskImage>,
    /// A differencing disk's parent locator.
    locator: Option<super::parent_locator::ParentLocator>,
    state: Mutex<State>,
}

impl std::fmt::Debug for VhdxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxWriter")
            .field("path", &self.file.path())
            .field("size", &self.g.size)
            .finish_non_exhaustive()
    }
}

/// A BAT entry's state and file offset.
fn split(entry: u64) -> (u8, u64) {
    ((entry & 7) as u8, (entry >> 20) * MIB)
}

impl VhdxWriter {
    /// Opens `path`; `relinking` leaves the parent unopened (only the
    /// child's metadata is about to change).
    fn open(path: &Path, options: &OpenOptions, relinking: bool) -> Result<Self> {
        let ro = OpenOptions {
            mmap: false,
            ..options.clone()
        };
        let image_file = ImageFile::open(path, &ro)?;
        let mut w = Warnings::new(options);
        super::header::read_file_type(&image_file).map_err(|e| e.in_file(path))?;
        let header =
            super::header::read_current(&image_file, &mut w).map_err(|e| e.in_file(path))?;
        let mut view = FileView::new(image_file);
        let replayed = super::log::replay(&mut view, &header, &mut w)?.is_some();
        let file = WFile::open(path, Format::Vhdx)?;
        if replayed {
            // Replay into the file ([MS-VHDX] 2.3.3) before anything else.
            for (at, len, bytes) in view.overlay() {
                let zeros;
                let data = match bytes {
                    Some(b) => b,
                    None => {
                        zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
                        zeros.as_slice()
                    }
                };
                file.write_all_at(data, at)?;
            }
            if file.len()? < view.len() {
                file.set_len(view.len())?;
            }
            file.sync()?;
        }
        let regions = super::region_table::read(&view, &mut w)?;
        let meta = super::metadata::read(&view, regions.metadata)?;
        let g = Geometry::new(
            meta.virtual_disk_size,
            meta.block_size,
            meta.logical_sector_size,
            meta.has_parent,
        );
        // Checks every entry against the file.
        super::bat::Bat::read(&view, regions.bat, g)?;
        let raw = view.read_vec(regions.bat.file_offset, g.total_entries * 8)?;
        let bat: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| crate::bytes::le_u64(c, 0).unwrap_or(0))
            .collect();
        let len = view.len();
        let mut file_end = len.div_ceil(MIB) * MIB;
        for &e in &bat {
            let (state, at) = split(e);
            let span = if state == SB_BLOCK_PRESENT && at != 0 {
                MIB
            } else {
                g.block_size
            };
            if state >= PAYLOAD_BLOCK_FULLY_PRESENT || (state == SB_BLOCK_PRESENT && at != 0) {
                file_end = file_end.max(at + span);
            }
        }
        let parent = if meta.has_parent && !relinking {
            Some(crate::write::parent::open_for_writing(
                path,
                options,
                Format::Vhdx,
            )?)
        } else {
            None
        };
        let writer = VhdxWriter {
            file,
            g,
            bat_offset: regions.bat.file_offset,
            parent,
            locator: meta.parent_locator,
            state: Mutex::new(State {
                bat,
                dirty_bat: BTreeSet::new(),
                bitmap_pages: HashMap::new(),
                dirty_bitmaps: BTreeSet::new(),
                file_end,
                header: header.clone(),
                headers_updated: false,
                log_head: 0,
                log_sequence: 1,
            }),
        };
        if replayed || !header.log_guid.is_nil() {
            // The log is applied: the headers no longer name it.
            let mut s = writer.lock();
            s.header.log_guid = Guid::NIL;
            writer.update_headers(&mut s, None)?;
        }
        Ok(writer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the header twice, each time to the slot not current, with
    /// the next sequence number ([MS-VHDX] 2.2.2.1), syncing after each.
    /// `log_guid`: `Some` sets it.
    fn update_headers(&self, s: &mut State, log_guid: Option<Guid>) -> Result<()> {
        if let Some(l) = log_guid {
            s.header.log_guid = l;
        }
        for _ in 0..2 {
            let next = Header {
                copy: 3 - s.header.copy,
                sequence_number: s.header.sequence_number + 1,
                ..s.header.clone()
            };
            let at = if next.copy == 1 {
                HEADER_1_OFFSET
            } else {
                HEADER_2_OFFSET
            };
            self.file.write_all_at(&header_bytes(&next), at)?;
            self.file.sync()?;
            s.header = next;
        }
        Ok(())
    }

    /// The first write of this open: new FileWriteGuid and DataWriteGuid.
    fn before_first_write(&self, s: &mut State) -> Result<()> {
        if s.headers_updated {
            return Ok(());
        }
        s.header.file_write_guid = random_guid();
        s.header.data_write_guid = random_guid();
        self.update_headers(s, None)?;
        s.headers_updated = true;
        Ok(())
    }

    fn bat_index(&self, block: u64) -> usize {
        usize::try_from(block + block / self.g.chunk_ratio).unwrap_or(usize::MAX)
    }

    fn bitmap_index(&self, block: u64) -> usize {
        let cr = self.g.chunk_ratio;
        usize::try_from((block / cr) * (cr + 1) + cr).unwrap_or(usize::MAX)
    }

    fn set_entry(&self, s: &mut State, index: usize, entry: u64) {
        if let Some(e) = s.bat.get_mut(index) {
            *e = entry;
        }
        s.dirty_bat.insert(index as u64 * 8 / PAGE);
    }

    /// The file offset of the bitmap bit of `sector` of `block`, as (page
    /// offset, byte in page, bit).
    fn bitmap_bit(&self, s: &State, block: u64, sector: u64) -> Option<(u64, usize, u8)> {
        let entry = *s.bat.get(self.bitmap_index(block))?;
        let (state, at) = split(entry);
        if state != SB_BLOCK_PRESENT {
            return None;
        }
        let sectors_per_block = self.g.block_size / self.g.sector_size;
        let n = (block % self.g.chunk_ratio) * sectors_per_block + sector;
        let byte = n / 8;
        Some((
            at + byte / PAGE * PAGE,
            usize::try_from(byte % PAGE).ok()?,
            (n % 8) as u8,
        ))
    }

    fn page<'s>(&self, s: &'s mut State, at: u64) -> Result<&'s mut Vec<u8>> {
        match s.bitmap_pages.entry(at) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut p = vec![0u8; PAGE as usize];
                self.file.read_exact_at(&mut p, at)?;
                Ok(e.insert(p))
            }
        }
    }

    fn present(&self, s: &mut State, block: u64, sector: u64) -> Result<bool> {
        let Some((page, byte, bit)) = self.bitmap_bit(s, block, sector) else {
            return Ok(false);
        };
        let p = self.page(s, page)?;
        Ok(p.get(byte).is_some_and(|b| b >> bit & 1 != 0))
    }

    /// Reads within one block.
    fn read_block(&self, s: &mut State, buf: &mut [u8], block: u64, in_block: u64) -> Result<()> {
        let vstart = block * self.g.block_size;
        let entry = s.bat.get(self.bat_index(block)).copied().unwrap_or(0);
        let (state, at) = split(entry);
        match state {
            PAYLOAD_BLOCK_FULLY_PRESENT => self.file.read_exact_at(buf, at + in_block),
            PAYLOAD_BLOCK_PARTIALLY_PRESENT => {
                let ss = self.g.sector_size;
                let mut done = 0usize;
                while done < buf.len() {
                    let pos = in_block + done as u64;
                    let sector = pos / ss;
                    let here = self.present(s, block, sector)?;
                    let mut end_sector = sector + 1;
                    let last = (in_block + buf.len() as u64).div_ceil(ss);
                    while end_sector < last && self.present(s, block, end_sector)? == here {
                        end_sector += 1;
                    }
                    let run_end = (end_sector * ss).min(in_block + buf.len() as u64);
                    let n = usize::try_from(run_end - pos).unwrap_or(0);
                    let dst = buf.get_mut(done..done + n).unwrap_or_default();
                    if here {
                        self.file.read_exact_at(dst, at + pos)?;
                    } else {
                        read_from_parent(self.parent_device(), dst, vstart + pos)?;
                    }
                    done += n;
                }
                Ok(())
            }
            PAYLOAD_BLOCK_ZERO => {
                buf.fill(0);
                Ok(())
            }
            _ => read_from_parent(self.parent_device(), buf, vstart + in_block),
        }
    }

    fn parent_device(&self) -> Option<&dyn BlockDevice> {
        self.parent.as_ref().map(|p| p as &dyn BlockDevice)
    }

    /// `len` bytes of new, zeroed space at the end of the file.
    fn allocate(&self, s: &mut State, len: u64) -> Result<u64> {
        let at = s.file_end;
        s.file_end = at + len;
        self.file.set_len(s.file_end)?;
        Ok(at)
    }

    /// Writes within one block.
    fn write_block(&self, s: &mut State, buf: &[u8], block: u64, in_block: u64) -> Result<()> {
        let index = self.bat_index(block);
        let (state, at) = split(s.bat.get(index).copied().unwrap_or(0));
        let data = match state {
            PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT => at,
            _ if self.parent.is_none() || state == PAYLOAD_BLOCK_ZERO => {
                let at = self.allocate(s, self.g.block_size)?;
                self.set_entry(
                    s,
                    index,
                    u64::from(PAYLOAD_BLOCK_FULLY_PRESENT) | (at / MIB) << 20,
                );
                at
            }
            _ => {
                let bi = self.bitmap_index(block);
                let (bstate, _) = split(s.bat.get(bi).copied().unwrap_or(0));
                if bstate != SB_BLOCK_PRESENT {
                    let b = self.allocate(s, MIB)?;
                    self.set_entry(s, bi, u64::from(SB_BLOCK_PRESENT) | (b / MIB) << 20);
                }
                let at = self.allocate(s, self.g.block_size)?;
                self.set_entry(
                    s,
                    index,
                    u64::from(PAYLOAD_BLOCK_PARTIALLY_PRESENT) | (at / MIB) << 20,
                );
                at
            }
        };
        let (state, _) = split(s.bat.get(index).copied().unwrap_or(0));
        if state != PAYLOAD_BLOCK_PARTIALLY_PRESENT {
            return self.file.write_all_at(buf, data + in_block);
        }
        // Whole 4 KiB groups of sectors, the parts not written completed
        // from what reads there now (the parent's bytes where not yet
        // present), as Hyper-V's 4 KiB I/O leaves them.
        let ss = self.g.sector_size;
        let (start, whole) =
            widen_to_groups(buf, in_block, ss.max(PAGE), self.g.block_size, |b, at| {
                self.read_block(s, b, block, at)
            })?;
        let (first, last) = (start / ss, (start + whole.len() as u64).div_ceil(ss));
        self.file.write_all_at(&whole, data + start)?;
        for sector in first..last {
            if let Some((page, byte, bit)) = self.bitmap_bit(s, block, sector) {
                let p = self.page(s, page)?;
                if let Some(b) = p.get_mut(byte) {
                    *b |= 1 << bit;
                }
                s.dirty_bitmaps.insert(page);
            }
        }
        Ok(())
    }

    /// The dirty pages: (file offset, 4 KiB).
    fn dirty_pages(&self, s: &State) -> Vec<(u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for &p in &s.dirty_bat {
            let first = usize::try_from(p * PAGE / 8).unwrap_or(usize::MAX);
            let mut bytes: Vec<u8> = s
                .bat
                .iter()
                .skip(first)
                .take((PAGE / 8) as usize)
                .flat_map(|e| e.to_le_bytes())
                .collect();
            // The BAT region is 1 MiB aligned: the page lies inside it.
            bytes.resize(PAGE as usize, 0);
            out.insert(self.bat_offset + p * PAGE, bytes);
        }
        for &p in &s.dirty_bitmaps {
            if let Some(b) = s.bitmap_pages.get(&p) {
                out.insert(p, b.clone());
            }
        }
        out.into_iter().collect()
    }

    /// Writes `bytes` at `offset` of the circular log.
    fn write_log(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let log_at = LOG_OFFSET;
        let first = usize::try_from(LOG_LENGTH - offset)
            .unwrap_or(0)
            .min(bytes.len());
        let (a, b) = bytes.split_at(first);
        self.file.write_all_at(a, log_at + offset)?;
        if !b.is_empty() {
            self.file.write_all_at(b, log_at)?;
        }
        Ok(())
    }

    /// One log entry holding `pages`.
    fn log_entry(&self, s: &State, pages: &[(u64, Vec<u8>)], file_len: u64) -> Vec<u8> {
        let seq = s.log_sequence;
        let head_len = (64 + 32 * pages.len() as u64).div_ceil(PAGE) * PAGE;
        let len = head_len + PAGE * pages.len() as u64;
        let mut e = vec![0u8; usize::try_from(len).unwrap_or(0)];
        put(&mut e, 0, b"loge");
        put(&mut e, 8, &u32::try_from(len).unwrap_or(0).to_le_bytes());
        put(
            &mut e,
            12,
            &u32::try_from(s.log_head).unwrap_or(0).to_le_bytes(),
        );
        put(&mut e, 16, &seq.to_le_bytes());
        put(
            &mut e,
            24,
            &u32::try_from(pages.len()).unwrap_or(0).to_le_bytes(),
        );
        put(&mut e, 32, &s.header.log_guid.to_le_bytes());
        put(&mut e, 48, &file_len.to_le_bytes());
        put(&mut e, 56, &file_len.to_le_bytes());
        for (i, (at, page)) in pages.iter().enumerate() {
            let d = 64 + 32 * i;
            put(&mut e, d, b"desc");
            put(&mut e, d + 4, page.get(4092..4096).unwrap_or_default());
            put(&mut e, d + 8, page.get(..8).unwrap_or_default());
            put(&mut e, d + 16, &at.to_le_bytes());
            put(&mut e, d + 24, &seq.to_le_bytes());
            let sector = usize::try_from(head_len + PAGE * i as u64).unwrap_or(usize::MAX);
            put(&mut e, sector, b"data");
            put(&mut e, sector + 4, &((seq >> 32) as u32).to_le_bytes());
            put(&mut e, sector + 8, page.get(8..4092).unwrap_or_default());
            put(&mut e, sector + 4092, &(seq as u32).to_le_bytes());
        }
        let crc = crc32c::checksum_with_hole(&e, 4);
        put(&mut e, 4, &crc.to_le_bytes());
        e
    }

    fn flush_locked(&self, s: &mut State) -> Result<()> {
        self.file.sync()?;
        let pages = self.dirty_pages(s);
        if pages.is_empty() {
            return Ok(());
        }
        if s.header.log_guid.is_nil() {
            self.update_headers(s, Some(random_guid()))?;
        }
        let file_len = self.file.len()?;
        for chunk in pages.chunks(MAX_DESCRIPTORS) {
            let entry = self.log_entry(s, chunk, file_len);
            self.write_log(s.log_head, &entry)?;
            self.file.sync()?;
            for (at, page) in chunk {
                self.file.write_all_at(page, *at)?;
            }
            self.file.sync()?;
            s.log_head = (s.log_head + entry.len() as u64) % LOG_LENGTH;
            s.log_sequence += 1;
        }
        s.dirty_bat.clear();
        s.dirty_bitmaps.clear();
        if s.bitmap_pages.len() > MAX_CLEAN_PAGES {
            s.bitmap_pages.clear();
        }
        Ok(())
    }
}

impl BlockDevice for VhdxWriter {
    fn size(&self) -> u64 {
        self.g.size
    }

    fn sector_size(&self) -> u32 {
        u32::try_from(self.g.sector_size).unwrap_or(512)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vhdx, offset, buf.len() as u64, self.g.size)?;
        let mut s = self.lock();
        for p in pieces(offset, buf.len(), self.g.block_size) {
            self.read_block(&mut s, p.of_mut(buf), p.index, p.within)?;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vhdx, offset, len, self.g.size)?;
        let s = self.lock();
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let block = pos / self.g.block_size;
            let end = ((block + 1) * self.g.block_size).min(offset + len);
            let (state, _) = split(s.bat.get(self.bat_index(block)).copied().unwrap_or(0));
            let kind = match state {
                PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT => ExtentKind::Data,
                PAYLOAD_BLOCK_ZERO => ExtentKind::Zero,
                _ if self.parent.is_some() => ExtentKind::Data,
                _ => ExtentKind::Unallocated,
            };
            push_extent(
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

impl WritableDevice for VhdxWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(Format::Vhdx, offset, buf.len() as u64, self.g.size)?;
        let mut s = self.lock();
        self.before_first_write(&mut s)?;
        for p in pieces(offset, buf.len(), self.g.block_size) {
            self.write_block(&mut s, p.of(buf), p.index, p.within)?;
        }
        if s.dirty_bat.len() + s.dirty_bitmaps.len() >= MAX_DIRTY {
            self.flush_locked(&mut s)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.lock();
        self.flush_locked(&mut s)
    }
}

impl Drop for VhdxWriter {
    fn drop(&mut self) {
        let mut s = self.lock();
        let _ = self.flush_locked(&mut s);
        if !s.header.log_guid.is_nil() {
            s.header.log_guid = Guid::NIL;
            let _ = self.update_headers(&mut s, None);
        }
    }
}
