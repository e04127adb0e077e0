//! VMDK writing: create (monolithicSparse, monolithicFlat,
//! twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized), sparse
//! deltas of a VMDK parent, and a writable open of the top image.
//!
//! A hosted sparse extent is laid out as VMware's own tools lay it out:
//! header, embedded descriptor (monolithicSparse), redundant grain
//! directory and its grain tables, grain directory and its grain tables,
//! all preallocated, then grains appended at the end of the file. Writes
//! go grain data first; the grain tables that point at new grains are
//! written by [`WritableDevice::flush`] after the data is synced (redundant
//! table first), and the grain directories last, so a crash leaves at
//! worst leaked grains, never a table entry pointing at unwritten data.
//! The first write into an image gives it a new CID (and
//! `ddb.longContentID`) before any data, so a child made earlier notices.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::block_device::{
    check_range, inherit_from_parent, push_extent, read_from_parent, BlockDevice, Extent,
    ExtentKind,
};
use crate::context::{is_absolute_anywhere, OpenContext};
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::DiskImage;
use crate::options::OpenOptions;
use crate::pieces::pieces;
use crate::write::file::{random_bytes16, random_u32, Staging, WFile};
use crate::write::parent::Parent;
use crate::write::{CreateOptions, Subformat, WritableDevice};

use super::descriptor::{Descriptor, ExtentType, MAX_DESCRIPTOR_BYTES, NO_PARENT_CID};
use super::occupied::Occupied;
use super::sparse_header::{
    SparseHeader, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_ZEROED_GRAIN_GTE, GD_AT_END, SECTOR,
    SPARSE_MAGIC,
};

/// The default grain: 128 sectors (64 KiB), what VMware writes.
pub(crate) const DEFAULT_GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table, what VMware writes.
pub(crate) const GTES_PER_GT: u64 = 512;
/// Sectors reserved for an embedded descriptor (10 KiB), as VMware does.
const DESCRIPTOR_SECTORS: u64 = 20;
/// The largest extent of a twoGbMaxExtent layout: 2047 MiB, as VMware and
/// qemu-img split.
const SPLIT_BYTES: u64 = 2047 << 20;
/// Header flag: the newline-detection bytes are valid.
const FLAG_NEWLINE: u32 = 1;
/// Header flag: a redundant grain directory is kept.
const FLAG_REDUNDANT: u32 = 2;
/// Dirty grain tables held before a write flushes them itself.
const MAX_DIRTY_TABLES: usize = 4096;
/// Grain tables kept in memory before clean ones are dropped.
const MAX_CACHED_TABLES: usize = 16384;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(Format::Vmdk, e).in_file(path)
}

fn invalid(path: &Path, what: impl Into<String>) -> Error {
    Error::corrupt(Format::Vmdk, Detail::Invalid(what.into())).in_file(path)
}

/// Where a hosted sparse extent keeps its metadata, in sectors.
#[derive(Debug, Clone, Copy)]
struct SparseLayout {
    capacity: u64,
    grain: u64,
    num_gts: u64,
    gd_sectors: u64,
    gt_sectors: u64,
    descriptor_offset: u64,
    descriptor_sectors: u64,
    rgd: u64,
    gd: u64,
    overhead: u64,
}

impl SparseLayout {
    fn new(capacity: u64, grain: u64, embedded: bool) -> Self {
        let num_gts = capacity.div_ceil(grain * GTES_PER_GT);
        let gd_sectors = (num_gts * 4).div_ceil(SECTOR);
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let (descriptor_offset, descriptor_sectors) = if embedded {
            (1, DESCRIPTOR_SECTORS)
        } else {
            (0, 0)
        };
        let rgd = 1 + descriptor_sectors;
        let gd = rgd + gd_sectors + num_gts * gt_sectors;
        let end = gd + gd_sectors + num_gts * gt_sectors;
        SparseLayout {
            capacity,
            grain,
            num_gts,
            gd_sectors,
            gt_sectors,
            descriptor_offset,
            descriptor_sectors,
            rgd,
            gd,
            overhead: end.div_ceil(grain) * grain,
        }
    }
}

/// The fields of a `SparseExtentHeader` this writer sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderFields {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain: u64,
    pub descriptor_offset: u64,
    pub descriptor_sectors: u64,
    pub rgd: u64,
    pub gd: u64,
    pub overhead: u64,
    pub compress: u16,
}

/// The 512 header bytes, little-endian, as "Virtual Disk Format 5.0" lays
/// them out.
pub(crate) fn header_bytes(h: &HeaderFields) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    b.extend_from_slice(&SPARSE_MAGIC.to_le_bytes());
    b.extend_from_slice(&h.version.to_le_bytes());
    b.extend_from_slice(&h.flags.to_le_bytes());
    b.extend_from_slice(&h.capacity.to_le_bytes());
    b.extend_from_slice(&h.grain.to_le_bytes());
    b.extend_from_slice(&h.descriptor_offset.to_le_bytes());
    b.extend_from_slice(&h.descriptor_sectors.to_le_bytes());
    b.extend_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    b.extend_from_slice(&h.rgd.to_le_bytes());
    b.extend_from_slice(&h.gd.to_le_bytes());
    b.extend_from_slice(&h.overhead.to_le_bytes());
    b.push(0); // uncleanShutdown
    b.extend_from_slice(b"\n \r\n");
    b.extend_from_slice(&h.compress.to_le_bytes());
    b.resize(512, 0);
    b
}

/// Writes a new, empty hosted sparse extent (every grain table
/// preallocated, as VMware does) with an optional embedded descriptor.
fn write_sparse_extent(file: &WFile, l: &SparseLayout, descriptor: Option<&str>) -> Result<()> {
    file.set_len(l.overhead * SECTOR)?;
    let header = header_bytes(&HeaderFields {
        version: 1,
        flags: FLAG_NEWLINE | FLAG_REDUNDANT,
        capacity: l.capacity,
        grain: l.grain,
        descriptor_offset: l.descriptor_offset,
        descriptor_sectors: l.descriptor_sectors,
        rgd: l.rgd,
        gd: l.gd,
        overhead: l.overhead,
        compress: 0,
    });
    file.write_all_at(&header, 0)?;
    if let Some(text) = descriptor {
        file.write_all_at(
            &descriptor_area(text, l.descriptor_sectors, file.path())?,
            l.descriptor_offset * SECTOR,
        )?;
    }
    for (dir, tables) in [(l.rgd, l.rgd + l.gd_sectors), (l.gd, l.gd + l.gd_sectors)] {
        let mut gd = Vec::with_capacity((l.num_gts * 4) as usize);
        for i in 0..l.num_gts {
            gd.extend_from_slice(&((tables + i * l.gt_sectors) as u32).to_le_bytes());
        }
        file.write_all_at(&gd, dir * SECTOR)?;
    }
    Ok(())
}

/// A descriptor's text padded with zeros to its reserved area.
fn descriptor_area(text: &str, sectors: u64, path: &Path) -> Result<Vec<u8>> {
    let room = sectors * SECTOR;
    if text.len() as u64 > room {
        return Err(Error::limit(
            Format::Vmdk,
            "embedded descriptor bytes",
            text.len() as u64,
            room,
        )
        .in_file(path));
    }
    let mut area = text.as_bytes().to_vec();
    area.resize(room as usize, 0);
    Ok(area)
}

/// The `ddb.*` lines of a new disk: hardware version, geometry and adapter
/// as VMware's SCSI disks carry them, a new UUID and content ID.
fn new_ddb(capacity_sectors: u64) -> Vec<(String, String)> {
    let (heads, sectors) = (255u64, 63u64);
    let cylinders = (capacity_sectors / (heads * sectors)).clamp(1, 65535);
    let u = random_bytes16();
    let uuid = format!(
        "{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}-{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}",
        u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
    );
    vec![
        ("ddb.virtualHWVersion".into(), "4".into()),
        ("ddb.geometry.cylinders".into(), cylinders.to_string()),
        ("ddb.geometry.heads".into(), heads.to_string()),
        ("ddb.geometry.sectors".into(), sectors.to_string()),
        ("ddb.adapterType".into(), "lsilogic".into()),
        ("ddb.uuid".into(), uuid),
        ("ddb.longContentID".into(), long_content_id()),
        ("ddb.encoding".into(), "UTF-8".into()),
    ]
}

fn long_content_id() -> String {
    random_bytes16()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One extent line of a descriptor being written.
struct Line {
    sectors: u64,
    kind: &'static str,
    file: String,
    flat: bool,
}

/// The text of a descriptor file.
fn descriptor_text(
    cid: u32,
    parent: Option<(u32, &str)>,
    create_type: &str,
    lines: &[Line],
    ddb: &[(String, String)],
) -> String {
    let mut t = String::from("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n");
    t.push_str(&format!("CID={cid:08x}\n"));
    match parent {
        Some((pcid, _)) => t.push_str(&format!("parentCID={pcid:08x}\n")),
        None => t.push_str(&format!("parentCID={NO_PARENT_CID:08x}\n")),
    }
    t.push_str(&format!("createType=\"{create_type}\"\n"));
    if let Some((_, hint)) = parent {
        t.push_str(&format!("parentFileNameHint=\"{hint}\"\n"));
    }
    t.push_str("\n# Extent description\n");
    for l in lines {
        let offset = if l.flat { " 0" } else { "" };
        t.push_str(&format!(
            "RW {} {} \"{}\"{offset}\n",
            l.sectors, l.kind, l.file
        ));
    }
    t.push_str("\n# The Disk Data Base\n#DDB\n\n");
    for (k, v) in ddb {
        t.push_str(&format!("{k} = \"{v}\"\n"));
    }
    t
}

/// The checks every VMDK create makes: 512-byte sectors, a whole number of
/// sectors, a grain VMware reads.
fn check_options(path: &Path, options: &CreateOptions, size: u64) -> Result<u64> {
    if options.sector_size != 512 {
        return Err(Error::unsupported(
            Format::Vmdk,
            format!(
                "a VMDK has 512-byte sectors; a sector size of {} is not written",
                options.sector_size
            ),
        )
        .in_file(path));
    }
    if size == 0 || size % SECTOR != 0 {
        return Err(Error::new(
            ErrorKind::Corrupt,
            Format::Vmdk,
            Detail::BadValue {
                field: "size",
                value: size,
                expected: "a positive multiple of the 512-byte sector".into(),
            },
        )
        .in_file(path));
    }
    Error::ensure_at_most(
        Format::Vmdk,
        "virtual size",
        size,
        super::sparse_header::MAX_CAPACITY_SECTORS * SECTOR,
    )
    .map_err(|e| e.in_file(path))?;
    let grain = options.block_size.unwrap_or(DEFAULT_GRAIN_SECTORS * SECTOR);
    if !grain.is_power_of_two() || !(4096..=1 << 20).contains(&grain) {
        return Err(Error::unsupported(
            Format::Vmdk,
            format!("a grain of {grain} bytes (a power of two from 4 KiB to 1 MiB is written)"),
        )
        .in_file(path));
    }
    Ok(grain / SECTOR)
}

/// The stem of a VMDK file name (`disk` of `disk.vmdk`).
fn stem_of(name: &str) -> &str {
    name.strip_suffix(".vmdk")
        .or_else(|| name.strip_suffix(".VMDK"))
        .unwrap_or(name)
}

/// Creates a VMDK at `path` (or, with a parent, a sparse delta).
pub(crate) fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    if let Some(parent) = &options.parent {
        return create_child(path, parent, options);
    }
    let size = options.size;
    let grain = check_options(path, options, size)?;
    let subformat = options.subformat.unwrap_or(Subformat::MonolithicSparse);
    let capacity = size / SECTOR;
    let new = NewDisk {
        path,
        subformat,
        size,
        grain,
        parent: None,
        ddb: new_ddb(capacity),
        force: options.force,
    };
    new.write()
}

/// A VMDK about to be written: a new disk or, with `parent`, a delta.
struct NewDisk<'a> {
    path: &'a Path,
    subformat: Subformat,
    size: u64,
    grain: u64,
    /// A delta's `parentCID` and `parentFileNameHint`.
    parent: Option<(u32, String)>,
    ddb: Vec<(String, String)>,
    force: bool,
}

impl NewDisk<'_> {
    /// Writes the disk's files in a staging folder and moves them into
    /// place (the descriptor last).
    fn write(&self) -> Result<()> {
        let (path, size, grain, subformat) = (self.path, self.size, self.grain, self.subformat);
        let name = crate::write::raw::file_name(path)?;
        let mut staging = Staging::new(path, Format::Vmdk)?;
        let capacity = size / SECTOR;
        let ddb = &self.ddb;
        let cid = random_u32();
        let parent = self.parent.as_ref().map(|(c, h)| (*c, h.as_str()));
        let stem = stem_of(&name).to_owned();
        match subformat {
            Subformat::MonolithicSparse => {
                staging.check_free(std::slice::from_ref(&name), self.force, Format::Vmdk)?;
                let l = SparseLayout::new(capacity, grain, true);
                let text = descriptor_text(
                    cid,
                    parent,
                    "monolithicSparse",
                    &[Line {
                        sectors: capacity,
                        kind: "SPARSE",
                        file: name.clone(),
                        flat: false,
                    }],
                    ddb,
                );
                let f = WFile::create(&staging.file(&name), Format::Vmdk)?;
                write_sparse_extent(&f, &l, Some(&text))?;
            }
            Subformat::MonolithicFlat
            | Subformat::TwoGbMaxExtentFlat
            | Subformat::TwoGbMaxExtentSparse => {
                let sparse = subformat == Subformat::TwoGbMaxExtentSparse;
                let split = subformat != Subformat::MonolithicFlat;
                let mut pieces = Vec::new();
                let mut left = size;
                while left > 0 {
                    let n = if split { left.min(SPLIT_BYTES) } else { left };
                    let i = pieces.len() + 1;
                    let file = match (split, sparse) {
                        (false, _) => format!("{stem}-flat.vmdk"),
                        (true, true) => format!("{stem}-s{i:03}.vmdk"),
                        (true, false) => format!("{stem}-f{i:03}.vmdk"),
                    };
                    pieces.push(Line {
                        sectors: n / SECTOR,
                        kind: if sparse { "SPARSE" } else { "FLAT" },
                        file,
                        flat: !sparse,
                    });
                    left -= n;
                }
                let mut names: Vec<String> = pieces.iter().map(|p| p.file.clone()).collect();
                names.push(name.clone());
                staging.check_free(&names, self.force, Format::Vmdk)?;
                for p in &pieces {
                    let f = WFile::create(&staging.file(&p.file), Format::Vmdk)?;
                    if sparse {
                        write_sparse_extent(&f, &SparseLayout::new(p.sectors, grain, false), None)?;
                    } else {
                        f.set_len(p.sectors * SECTOR)?;
                    }
                }
                let text = descriptor_text(cid, parent, subformat.as_str(), &pieces, ddb);
                let d = staging.file(&name);
                std::fs::write(&d, text).map_err(|e| io_err(&d, e))?;
            }
            Subformat::StreamOptimized => {
                staging.check_free(std::slice::from_ref(&name), self.force, Format::Vmdk)?;
                let f = WFile::create(&staging.file(&name), Format::Vmdk)?;
                let zeros = ZeroDevice(size);
                super::stream_writer::write(&f, &zeros, &name, grain, &mut |_, _| {})?;
            }
            other => {
                return Err(Error::unsupported(
                    Format::Vmdk,
                    format!("subformat {other} is not a VMDK layout"),
                )
                .in_file(path))
            }
        }
        staging.commit(Format::Vmdk)
    }
}

/// A device of zeros, the source of an empty streamOptimized disk.
struct ZeroDevice(u64);

impl BlockDevice for ZeroDevice {
    fn size(&self) -> u64 {
        self.0
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vmdk, offset, buf.len() as u64, self.0)?;
        buf.fill(0);
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vmdk, offset, len, self.0)?;
        let mut out = Vec::new();
        push_extent(
            &mut out,
            Extent {
                offset,
                len,
                kind: ExtentKind::Unallocated,
            },
        );
        Ok(out)
    }
}

/// The CID a VMDK's descriptor carries (the `cid` property the reader
/// reports).
fn cid_of(image: &DiskImage) -> Option<u32> {
    image
        .info()
        .properties
        .iter()
        .find(|(k, _)| k == "cid")
        .and_then(|(_, v)| u32::from_str_radix(v, 16).ok())
}

/// Creates `path` as a sparse delta of the VMDK `parent` (never written):
/// monolithicSparse, or twoGbMaxExtentSparse (the default for a parent in
/// 2 GiB extents, as VMware Workstation splits the deltas of a split
/// disk).
fn create_child(path: &Path, parent_path: &Path, options: &CreateOptions) -> Result<()> {
    let parent = Parent::open(parent_path, path, Format::Vmdk)?;
    let size = parent.image.device().size();
    let grain = check_options(path, options, size)?;
    let parent_cid = cid_of(&parent.image).ok_or_else(|| {
        invalid(
            parent_path,
            "the parent's descriptor has no CID to chain a delta to",
        )
    })?;
    let hint = parent_hint(parent_path, &parent.named, parent.in_child_folder())?;
    let parent_desc = read_descriptor_of(parent_path)?;
    let split_parent = parent_desc
        .as_ref()
        .and_then(|d| d.create_type.as_deref())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("twogbmaxextent"));
    let subformat = match options.subformat {
        Some(s) => s,
        None if split_parent => Subformat::TwoGbMaxExtentSparse,
        None => Subformat::MonolithicSparse,
    };
    if !matches!(
        subformat,
        Subformat::MonolithicSparse | Subformat::TwoGbMaxExtentSparse
    ) {
        return Err(Error::unsupported(
            Format::Vmdk,
            format!(
                "a delta is written monolithicSparse or twoGbMaxExtentSparse; {subformat} is not"
            ),
        )
        .in_file(path));
    }
    let capacity = size / SECTOR;
    let mut ddb = new_ddb(capacity);
    // The adapter, geometry and hardware version are the parent's.
    if let Some(desc) = &parent_desc {
        for (k, v) in &desc.ddb {
            let lk = k.to_ascii_lowercase();
            if lk == "ddb.adaptertype"
                || lk.starts_with("ddb.geometry.")
                || lk == "ddb.virtualhwversion"
            {
                if let Some(e) = ddb.iter_mut().find(|(dk, _)| dk.eq_ignore_ascii_case(k)) {
                    e.1 = v.clone();
                }
            }
        }
    }
    NewDisk {
        path,
        subformat,
        size,
        grain,
        parent: Some((parent_cid, hint)),
        ddb,
        force: options.force,
    }
    .write()
}

/// The descriptor of the VMDK at `path` (embedded or separate), if any.
fn read_descriptor_of(path: &Path) -> Result<Option<Descriptor>> {
    let f = WFileRead::open(path)?;
    Ok(f.descriptor()?.map(|(d, _)| d))
}

/// Read-only access to a VMDK's first file, for its header and descriptor.
struct WFileRead {
    file: std::fs::File,
    path: PathBuf,
}

/// Where a descriptor lies.
#[derive(Debug, Clone)]
enum DescriptorAt {
    /// Embedded in a sparse extent: byte offset and reserved bytes.
    Embedded { offset: u64, room: u64 },
    /// A text file of its own.
    Separate,
}

impl WFileRead {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        Ok(WFileRead {
            file,
            path: path.to_path_buf(),
        })
    }

    fn read_up_to(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_err(&self.path, e))?;
        let mut out = Vec::new();
        f.take(len)
            .read_to_end(&mut out)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(out)
    }

    /// The header (if the file is a hosted sparse extent) and descriptor.
    fn descriptor(&self) -> Result<Option<(Descriptor, DescriptorAt)>> {
        let head = self.read_up_to(0, 512)?;
        if head.get(..4) == Some(&SPARSE_MAGIC.to_le_bytes()[..]) {
            let h = SparseHeader::parse(&head).map_err(|e| e.at(0).in_file(&self.path))?;
            if h.descriptor_offset == 0 || h.descriptor_size == 0 {
                return Ok(None);
            }
            let room = h.descriptor_size.saturating_mul(SECTOR);
            Error::ensure_at_most(
                Format::Vmdk,
                "embedded descriptor bytes",
                room,
                MAX_DESCRIPTOR_BYTES,
            )
            .map_err(|e| e.at(36).in_file(&self.path))?;
            let offset = h.descriptor_offset.saturating_mul(SECTOR);
            let text = self.read_up_to(offset, room)?;
            let d = Descriptor::parse(&text).map_err(|e| e.at(offset).in_file(&self.path))?;
            return Ok(Some((d, DescriptorAt::Embedded { offset, room })));
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| io_err(&self.path, e))?
            .len();
        let sesparse = head.get(..8) == Some(&super::sesparse::SESPARSE_MAGIC.to_le_bytes()[..]);
        if head.first() == Some(&0) || head.get(..4) == Some(b"COWD") || sesparse {
            return Ok(None);
        }
        Error::ensure_at_most(
            Format::Vmdk,
            "descriptor file bytes",
            len,
            MAX_DESCRIPTOR_BYTES,
        )
        .map_err(|e| e.in_file(&self.path))?;
        let text = self.read_up_to(0, len)?;
        let d = Descriptor::parse(&text).map_err(|e| e.in_file(&self.path))?;
        Ok(Some((d, DescriptorAt::Separate)))
    }
}

/// Replaces the value of `key` (`key=value` or `key = "value"` lines,
/// letter case ignored) in a descriptor's text; appends nothing when the
/// key is absent.
fn set_key(text: &str, key: &str, value: &str, quoted: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let end = &line[body.len()..];
        let k = body.split('=').next().unwrap_or_default().trim();
        if body.contains('=') && k.eq_ignore_ascii_case(key) {
            if quoted {
                out.push_str(&format!("{key} = \"{value}\"{end}"));
            } else {
                out.push_str(&format!("{key}={value}{end}"));
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A descriptor that can be rewritten (CID after the first write,
/// parentCID after a commit).
#[derive(Debug)]
struct DescriptorFile {
    path: PathBuf,
    at: DescriptorAt,
    text: String,
}

impl DescriptorFile {
    fn load(path: &Path) -> Result<Option<(Descriptor, Self)>> {
        let r = WFileRead::open(path)?;
        let Some((d, at)) = r.descriptor()? else {
            return Ok(None);
        };
        let raw = match &at {
            DescriptorAt::Embedded { offset, room } => r.read_up_to(*offset, *room)?,
            DescriptorAt::Separate => r.read_up_to(0, MAX_DESCRIPTOR_BYTES)?,
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned();
        Ok(Some((
            d,
            DescriptorFile {
                path: path.to_path_buf(),
                at,
                text,
            },
        )))
    }

    /// Writes the text back: in place into an embedded area, or by
    /// writing a new file and renaming it over a separate descriptor.
    fn store(&self) -> Result<()> {
        match &self.at {
            DescriptorAt::Embedded { offset, room } => {
                let f = WFile::open(&self.path, Format::Vmdk)?;
                f.write_all_at(
                    &descriptor_area(&self.text, room / SECTOR, &self.path)?,
                    *offset,
                )?;
                f.sync()
            }
            DescriptorAt::Separate => {
                let dir = match self.path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let name = crate::write::raw::file_name(&self.path)?;
                let tmp = dir.join(format!(".{name}.new-{:08x}", random_u32()));
                let f = WFile::create(&tmp, Format::Vmdk)?;
                let done = f
                    .write_all_at(self.text.as_bytes(), 0)
                    .and_then(|()| f.sync())
                    .and_then(|()| {
                        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))
                    });
                if done.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                done
            }
        }
    }
}

/// Sets a child's `parentCID` (after a commit changed its parent's CID).
pub(crate) fn relink(child: &Path, parent_cid: u32) -> Result<()> {
    let Some((_, mut d)) = DescriptorFile::load(child)? else {
        return Err(invalid(child, "no descriptor to relink"));
    };
    d.text = set_key(&d.text, "parentCID", &format!("{parent_cid:08x}"), false);
    d.store()
}

/// Points the delta `child` at `parent`: its `parentCID` becomes the
/// parent's CID and its `parentFileNameHint` the parent's name (relative
/// when both are in one folder). Only the child's descriptor is written.
pub(crate) fn relink_to(child: &Path, parent: &Path) -> Result<()> {
    let cid = read_cid(parent)?.ok_or_else(|| {
        invalid(
            parent,
            "the parent's descriptor has no CID to chain a delta to",
        )
    })?;
    let (named, child_dir) = crate::write::parent::located(parent, child, Format::Vmdk)?;
    let hint = parent_hint(parent, &named, named.parent() == Some(child_dir.as_path()))?;
    let Some((_, mut d)) = DescriptorFile::load(child)? else {
        return Err(invalid(child, "no descriptor to relink"));
    };
    d.text = set_key(&d.text, "parentCID", &format!("{cid:08x}"), false);
    d.text = set_key(&d.text, "parentFileNameHint", &format!("\"{hint}\""), false);
    d.store()
}

/// A delta's `parentFileNameHint` for `parent`: its file name when it is
/// in the delta's folder, else `named` (its path, folder made canonical).
fn parent_hint(parent: &Path, named: &Path, in_child_folder: bool) -> Result<String> {
    if in_child_folder {
        return crate::write::raw::file_name(parent);
    }
    named
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(parent, "the parent's path is not UTF-8"))
}

/// Sets descriptor keys of the VMDK at `path` (a delta made by
/// [`create`](crate::write::create) and then labelled by the program that
/// owns it, such as VirtualBox's `ddb.uuid.*` keys): a key present is
/// replaced, an absent one is appended to the disk database. Keys are
/// written the way VMware's descriptors spell them: `ddb.*` as
/// `key = "value"`, `parentFileNameHint="value"`, `CID`/`parentCID` bare.
/// The descriptor must still fit its embedded area; a value holding a
/// quote, a line break or a NUL is refused. Only the descriptor changes.
pub fn set_descriptor_keys(path: &Path, keys: &[(&str, &str)]) -> Result<()> {
    let Some((_, mut d)) = DescriptorFile::load(path)? else {
        return Err(invalid(path, "no descriptor to set keys in"));
    };
    for (key, value) in keys {
        if value.contains(['"', '\n', '\r', '\0']) || key.contains(['=', '"', '\n', '\r', '\0']) {
            return Err(invalid(
                path,
                format!(
                    "descriptor key {key:?} = {value:?}: quotes, line breaks and NULs are refused"
                ),
            ));
        }
        let lk = key.to_ascii_lowercase();
        let line = if lk.starts_with("ddb.") {
            format!("{key} = \"{value}\"")
        } else if lk == "cid" || lk == "parentcid" {
            format!("{key}={value}")
        } else {
            format!("{key}=\"{value}\"")
        };
        let mut found = false;
        let mut out = String::with_capacity(d.text.len() + line.len() + 1);
        for l in d.text.split_inclusive('\n') {
            let body = l.trim_end_matches(['\n', '\r']);
            let k = body.split('=').next().unwrap_or_default().trim();
            if body.contains('=') && k.eq_ignore_ascii_case(key) {
                found = true;
                out.push_str(&line);
                out.push_str(&l[body.len()..]);
            } else {
                out.push_str(l);
            }
        }
        if !found {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&line);
            out.push('\n');
        }
        d.text = out;
    }
    d.store()
}

/// The CID of the VMDK at `path`, from its descriptor.
pub(crate) fn read_cid(path: &Path) -> Result<Option<u32>> {
    Ok(read_descriptor_of(path)?.and_then(|d| d.cid))
}

/// A hosted sparse extent open for writing: its directories in memory,
/// grain tables loaded when first needed, and the tables changed since
/// the last flush.
#[derive(Debug)]
struct SparseState {
    file: WFile,
    /// Grain size in bytes.
    grain: u64,
    /// Grain directory entries (sectors of grain tables; 0 = none).
    gd: Vec<u32>,
    /// The redundant directory, when kept.
    rgd: Option<Vec<u32>>,
    gd_offset: u64,
    rgd_offset: u64,
    tables: HashMap<usize, Vec<u32>>,
    dirty: BTreeSet<usize>,
    gd_dirty: bool,
    /// Where the next grain or table goes (bytes).
    end: u64,
    zeroed_gte: bool,
    /// Metadata ranges and grains written in place, which writes must not
    /// overlap.
    occupied: Occupied,
}

impl SparseState {
    fn open(file: WFile) -> Result<(Self, u64)> {
        let mut head = vec![0u8; 512];
        file.read_exact_at(&mut head, 0)?;
        let cowd = head.get(..4) == Some(&super::cowd::COWD_MAGIC.to_le_bytes()[..]);
        let sesparse = head.get(..8) == Some(&super::sesparse::SESPARSE_MAGIC.to_le_bytes()[..]);
        if cowd || sesparse {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!(
                    "writing into a {} extent is not supported (it is read only)",
                    if cowd {
                        "COWD (vmfsSparse)"
                    } else {
                        "seSparse"
                    }
                ),
            )
            .in_file(file.path()));
        }
        let h = SparseHeader::parse(&head).map_err(|e| e.at(0).in_file(file.path()))?;
        if h.flags & (FLAG_COMPRESSED | FLAG_MARKERS) != 0 || h.gd_offset == GD_AT_END {
            return Err(Error::unsupported(
                Format::Vmdk,
                "a streamOptimized extent is written once (create or convert) and is not opened for writing",
            )
            .in_file(file.path()));
        }
        if u64::from(h.num_gtes_per_gt) != GTES_PER_GT {
            return Err(Error::unsupported(
                Format::Vmdk,
                format!(
                    "{} grain table entries per table (writing takes 512)",
                    h.num_gtes_per_gt
                ),
            )
            .in_file(file.path()));
        }
        let grain = h.grain_size * SECTOR;
        let span = grain * GTES_PER_GT;
        let cap = h.capacity * SECTOR;
        let n = usize::try_from(cap.div_ceil(span)).unwrap_or(usize::MAX);
        let len = file.len()?;
        let read_dir = |sector: u64| -> Result<Vec<u32>> {
            let bytes = (n as u64) * 4;
            if sector.saturating_mul(SECTOR).saturating_add(bytes) > len {
                return Err(Error::out_of_range(
                    Format::Vmdk,
                    "grain directory",
                    sector.saturating_mul(SECTOR),
                    bytes,
                    len,
                )
                .in_file(file.path()));
            }
            let mut b = vec![0u8; n * 4];
            file.read_exact_at(&mut b, sector * SECTOR)?;
            Ok(b.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect())
        };
        let gd = read_dir(h.gd_offset)?;
        let rgd = if h.flags & FLAG_REDUNDANT != 0 && h.rgd_offset != 0 {
            Some(read_dir(h.rgd_offset)?)
        } else {
            None
        };
        let overhead = h.over_head.saturating_mul(SECTOR);
        if overhead > len {
            return Err(Error::bad_value(
                Format::Vmdk,
                "overHead",
                h.over_head,
                format!("at most the {} sectors of the file", len / SECTOR),
            )
            .in_file(file.path()));
        }
        let tables = GTES_PER_GT * 4;
        let listed = |dir: &[u32]| -> Vec<(u64, u64)> {
            dir.iter()
                .enumerate()
                .filter(|(_, &s)| s != 0)
                .map(|(i, &s)| (i as u64, u64::from(s) * SECTOR))
                .collect()
        };
        let mut all_tables = listed(&gd);
        all_tables.extend(rgd.as_deref().map(listed).unwrap_or_default());
        let dir_bytes = (n as u64) * 4;
        let occupied = Occupied::new(
            file.path(),
            len,
            overhead,
            &[
                (0, SECTOR, "header"),
                (
                    h.descriptor_offset.saturating_mul(SECTOR),
                    h.descriptor_size.saturating_mul(SECTOR),
                    "embedded descriptor",
                ),
                (h.gd_offset * SECTOR, dir_bytes, "grain directory"),
                (
                    h.rgd_offset * SECTOR,
                    if rgd.is_some() { dir_bytes } else { 0 },
                    "redundant grain directory",
                ),
            ],
            all_tables,
            tables,
        )?;
        let end = len.div_ceil(SECTOR) * SECTOR;
        Ok((
            SparseState {
                file,
                grain,
                gd,
                rgd,
                gd_offset: h.gd_offset * SECTOR,
                rgd_offset: h.rgd_offset * SECTOR,
                tables: HashMap::new(),
                dirty: BTreeSet::new(),
                gd_dirty: false,
                end,
                zeroed_gte: h.flags & FLAG_ZEROED_GRAIN_GTE != 0,
                occupied,
            },
            cap,
        ))
    }

    fn table(&mut self, gt: usize) -> Result<Option<&mut Vec<u32>>> {
        let sector = *self.gd.get(gt).ok_or_else(|| {
            Error::out_of_range(
                Format::Vmdk,
                "grain directory",
                gt as u64,
                1,
                self.gd.len() as u64,
            )
            .in_file(self.file.path())
        })?;
        if sector == 0 && !self.tables.contains_key(&gt) {
            return Ok(None);
        }
        if !self.tables.contains_key(&gt) {
            if self.tables.len() >= MAX_CACHED_TABLES {
                let dirty = &self.dirty;
                self.tables.retain(|k, _| dirty.contains(k));
            }
            let mut b = vec![0u8; (GTES_PER_GT * 4) as usize];
            self.file
                .read_exact_at(&mut b, u64::from(sector) * SECTOR)?;
            let t = b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect();
            self.tables.insert(gt, t);
        }
        Ok(self.tables.get_mut(&gt))
    }

    /// The grain table entry of grain `g` (0 = not allocated).
    fn gte(&mut self, g: u64) -> Result<u32> {
        let gt = (g / GTES_PER_GT) as usize;
        let i = (g % GTES_PER_GT) as usize;
        Ok(self.table(gt)?.and_then(|t| t.get(i).copied()).unwrap_or(0))
    }

    fn is_zero_gte(&self, gte: u32) -> bool {
        gte == 1 && self.zeroed_gte
    }

    /// Reads `buf` at byte `at` of this extent; `under` fills what the
    /// extent does not hold (the parent at virtual `virt`, or zeros).
    fn read(
        &mut self,
        buf: &mut [u8],
        at: u64,
        under: &dyn Fn(&mut [u8], u64) -> Result<()>,
        virt: u64,
    ) -> Result<()> {
        for p in pieces(at, buf.len(), self.grain) {
            let chunk = p.of_mut(buf);
            let gte = self.gte(p.index)?;
            if gte == 0 {
                under(chunk, virt + p.done as u64)?;
            } else if self.is_zero_gte(gte) {
                chunk.fill(0);
            } else {
                self.file
                    .read_exact_at(chunk, u64::from(gte) * SECTOR + p.within)?;
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        buf: &[u8],
        at: u64,
        under: &dyn Fn(&mut [u8], u64) -> Result<()>,
        virt: u64,
    ) -> Result<()> {
        for p in pieces(at, buf.len(), self.grain) {
            let (g, in_g, n) = (p.index, p.within, p.len);
            let chunk = p.of(buf);
            let gte = self.gte(g)?;
            if gte != 0 && !self.is_zero_gte(gte) {
                self.occupied.claim_in_place(
                    self.file.path(),
                    g,
                    u64::from(gte) * SECTOR,
                    self.grain,
                )?;
                self.file
                    .write_all_at(chunk, u64::from(gte) * SECTOR + in_g)?;
            } else {
                // A new grain: the rest of it comes from below (copy-on-write).
                let mut grain = vec![0u8; self.grain as usize];
                if n as u64 != self.grain && gte == 0 {
                    let grain_virt = virt + p.done as u64 - in_g;
                    under(&mut grain, grain_virt)?;
                }
                grain
                    .get_mut(in_g as usize..in_g as usize + n)
                    .unwrap_or_default()
                    .copy_from_slice(chunk);
                self.allocate(g, &grain)?;
            }
        }
        if self.dirty.len() >= MAX_DIRTY_TABLES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends grain `g`'s data and points its table entry at it (in
    /// memory until the next flush).
    fn allocate(&mut self, g: u64, data: &[u8]) -> Result<()> {
        let gt = (g / GTES_PER_GT) as usize;
        let i = (g % GTES_PER_GT) as usize;
        if self.table(gt)?.is_none() {
            // No table yet (an image another tool made): one at the end,
            // and its redundant copy.
            let bytes = GTES_PER_GT * 4;
            let sector = self.claim(bytes)?;
            if let Some(slot) = self.gd.get_mut(gt) {
                *slot = sector;
            }
            if self.rgd.is_some() {
                let rsector = self.claim(bytes)?;
                if let Some(slot) = self.rgd.as_mut().and_then(|r| r.get_mut(gt)) {
                    *slot = rsector;
                }
            }
            self.tables.insert(gt, vec![0; GTES_PER_GT as usize]);
            self.gd_dirty = true;
        }
        let sector = self.claim(self.grain)?;
        self.file.write_all_at(data, u64::from(sector) * SECTOR)?;
        self.occupied.appended(g, u64::from(sector) * SECTOR);
        if let Some(e) = self.tables.get_mut(&gt).and_then(|t| t.get_mut(i)) {
            *e = sector;
        }
        self.dirty.insert(gt);
        Ok(())
    }

    /// Reserves `bytes` at the end of the file; its first sector.
    fn claim(&mut self, bytes: u64) -> Result<u32> {
        let sector = u32::try_from(self.end / SECTOR).map_err(|_| {
            Error::limit(
                Format::Vmdk,
                "sparse extent sectors",
                self.end / SECTOR,
                u64::from(u32::MAX),
            )
            .in_file(self.file.path())
        })?;
        self.end += bytes.div_ceil(SECTOR) * SECTOR;
        Ok(sector)
    }

    /// Data synced, then grain tables (redundant first), synced, then the
    /// directories, synced.
    fn flush(&mut self) -> Result<()> {
        if self.dirty.is_empty() && !self.gd_dirty {
            return Ok(());
        }
        self.file.sync()?;
        let dirty: Vec<usize> = self.dirty.iter().copied().collect();
        for gt in dirty {
            let Some(t) = self.tables.get(&gt) else {
                continue;
            };
            let bytes: Vec<u8> = t.iter().flat_map(|e| e.to_le_bytes()).collect();
            if let Some(r) = self
                .rgd
                .as_ref()
                .and_then(|r| r.get(gt))
                .copied()
                .filter(|&s| s != 0)
            {
                self.file.write_all_at(&bytes, u64::from(r) * SECTOR)?;
            }
            if let Some(s) = self.gd.get(gt).copied().filter(|&s| s != 0) {
                self.file.write_all_at(&bytes, u64::from(s) * SECTOR)?;
            }
        }
        self.file.sync()?;
        if self.gd_dirty {
            if let Some(r) = &self.rgd {
                let bytes: Vec<u8> = r.iter().flat_map(|e| e.to_le_bytes()).collect();
                self.file.write_all_at(&bytes, self.rgd_offset)?;
            }
            let bytes: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
            self.file.write_all_at(&bytes, self.gd_offset)?;
            self.file.sync()?;
        }
        self.dirty.clear();
        self.gd_dirty = false;
        Ok(())
    }

    fn map(
        &mut self,
        at: u64,
        len: u64,
        virt: u64,
        parent: Option<&DiskImage>,
        out: &mut Vec<Extent>,
    ) -> Result<()> {
        let mut done = 0u64;
        while done < len {
            let pos = at + done;
            let g = pos / self.grain;
            let n = (self.grain - pos % self.grain).min(len - done);
            let gte = self.gte(g)?;
            let v = virt + done;
            if gte == 0 {
                match parent {
                    Some(p) => {
                        let plen = p.device().size().saturating_sub(v).min(n);
                        if plen > 0 {
                            for e in p.device().map(v, plen)? {
                                push_extent(
                                    out,
                                    Extent {
                                        kind: inherit_from_parent(e.kind),
                                        ..e
                                    },
                                );
                            }
                        }
                        push_extent(
                            out,
                            Extent {
                                offset: v + plen,
                                len: n - plen,
                                kind: ExtentKind::Zero,
                            },
                        );
                    }
                    None => push_extent(
                        out,
                        Extent {
                            offset: v,
                            len: n,
                            kind: ExtentKind::Unallocated,
                        },
                    ),
                }
            } else if self.is_zero_gte(gte) {
                push_extent(
                    out,
                    Extent {
                        offset: v,
                        len: n,
                        kind: ExtentKind::Zero,
                    },
                );
            } else {
                push_extent(
                    out,
                    Extent {
                        offset: v,
                        len: n,
                        kind: ExtentKind::Data,
                    },
                );
            }
            done += n;
        }
        Ok(())
    }
}

/// One extent of a VMDK open for writing.
#[derive(Debug)]
enum WExtent {
    Flat { file: WFile, offset: u64 },
    Zero,
    Sparse(Box<Mutex<SparseState>>),
}

/// A VMDK opened for writing: the top image's extents, and its parent
/// chain opened read-only underneath.
pub struct VmdkWriter {
    extents: Vec<(u64, u64, WExtent)>,
    size: u64,
    parent: Option<DiskImage>,
    descriptor: Mutex<Option<(DescriptorFile, bool)>>,
}

impl std::fmt::Debug for VmdkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkWriter")
            .field("extents", &self.extents.len())
            .field("size", &self.size)
            .field("parent", &self.parent.is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens the VMDK at `path` for writing: a monolithicSparse or delta file,
/// or a descriptor of FLAT, ZERO and SPARSE extents. A changed parent
/// (CID mismatch) is refused.
pub(crate) fn open_writable(path: &Path, options: &OpenOptions) -> Result<VmdkWriter> {
    let loaded = DescriptorFile::load(path)?;
    let mut extents = Vec::new();
    let mut start = 0u64;
    let (desc, dfile) = match loaded {
        Some((d, f)) => (Some(d), Some(f)),
        None => (None, None),
    };
    if let Some(t) = desc.as_ref().and_then(|d| d.create_type.as_deref()) {
        if t.eq_ignore_ascii_case("streamOptimized") {
            return Err(Error::unsupported(
                Format::Vmdk,
                "a streamOptimized VMDK is written once (create or convert) and is not opened for writing",
            )
            .in_file(path));
        }
    }
    match (&desc, dfile.as_ref().map(|f| &f.at)) {
        (Some(_), Some(DescriptorAt::Embedded { .. })) | (None, _) => {
            let (state, cap) = SparseState::open(WFile::open(path, Format::Vmdk)?)?;
            extents.push((0, cap, WExtent::Sparse(Box::new(Mutex::new(state)))));
            start = cap;
        }
        (Some(d), _) => {
            let mut claims = ExtentClaims::new(path)?;
            for line in &d.extents {
                let len = line.sectors.saturating_mul(SECTOR);
                let ext = match line.kind {
                    ExtentType::Flat | ExtentType::Vmfs => {
                        let offset = line.offset.saturating_mul(SECTOR);
                        let file = claims.open(&line.file, offset, Some(len))?;
                        WExtent::Flat { file, offset }
                    }
                    ExtentType::Zero => WExtent::Zero,
                    ExtentType::Sparse => {
                        let file = claims.open(&line.file, 0, None)?;
                        let (s, _) = SparseState::open(file)?;
                        WExtent::Sparse(Box::new(Mutex::new(s)))
                    }
                    other => {
                        return Err(Error::unsupported(
                            Format::Vmdk,
                            format!("writing into a {} extent is not supported", other.as_str()),
                        )
                        .in_file(path))
                    }
                };
                extents.push((start, len, ext));
                start = start.saturating_add(len);
            }
        }
    }
    let parent = match &desc {
        Some(d) if !options.no_parents && d.parent_cid.is_some_and(|c| c != NO_PARENT_CID) => {
            let hint = d
                .parent_file_name_hint
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    invalid(
                        path,
                        "parentCID names a parent but there is no parentFileNameHint",
                    )
                })?;
            let ctx = OpenContext::new(options);
            let parent = ctx.open_parent(Format::Vmdk, path, &[hint.to_owned()])?;
            if let (Some(want), Some(have)) = (d.parent_cid, cid_of(&parent)) {
                if want != have {
                    return Err(Error::corrupt(
                        Format::Vmdk,
                        Detail::Invalid(format!(
                            "parentCID is {want:08x} but the parent {} has CID {have:08x}: the parent changed after this delta was made, and writing into the delta would mix the two",
                            parent.info().path.display()
                        )),
                    )
                    .in_file(path));
                }
            }
            Some(parent)
        }
        _ => None,
    };
    Ok(VmdkWriter {
        extents,
        size: start,
        parent,
        descriptor: Mutex::new(dfile.map(|f| (f, false))),
    })
}

/// The files a descriptor's extents are opened from for writing, and the
/// byte ranges of each already given to an extent: an extent file must be
/// a regular file in the descriptor's folder (not the descriptor itself),
/// and no two extents may share bytes of one file, or a write through one
/// would change what another reads.
struct ExtentClaims<'a> {
    descriptor: &'a Path,
    dir: PathBuf,
    /// (canonical file, start, end) of every extent opened so far.
    taken: Vec<(PathBuf, u64, u64)>,
}

impl<'a> ExtentClaims<'a> {
    fn new(descriptor: &'a Path) -> Result<Self> {
        let canonical = descriptor
            .canonicalize()
            .map_err(|e| io_err(descriptor, e))?;
        Ok(ExtentClaims {
            descriptor,
            dir: canonical.parent().unwrap_or(Path::new("/")).to_path_buf(),
            taken: vec![(canonical, 0, u64::MAX)],
        })
    }

    /// Opens extent file `name` for the bytes `start..start + len` (`None`:
    /// the whole file).
    fn open(&mut self, name: &str, start: u64, len: Option<u64>) -> Result<WFile> {
        let refuse = |why: &str| {
            Error::unsupported(
                Format::Vmdk,
                format!("extent file {name:?} {why}; it is not opened for writing"),
            )
            .in_file(self.descriptor)
        };
        let relative = Path::new(name);
        if is_absolute_anywhere(name)
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(refuse("is not a file name in the descriptor's folder"));
        }
        let path = self.dir.join(relative);
        let canonical = path.canonicalize().map_err(|e| io_err(&path, e))?;
        if canonical.parent() != Some(self.dir.as_path()) || !canonical.is_file() {
            return Err(refuse("is not a regular file in the descriptor's folder"));
        }
        let end = len.map_or(u64::MAX, |l| start.saturating_add(l));
        if let Some((_, s, e)) = self
            .taken
            .iter()
            .find(|(p, s, e)| *p == canonical && start < *e && *s < end)
        {
            let what = if *s == 0 && *e == u64::MAX {
                "is the descriptor or a sparse extent already listed".to_owned()
            } else {
                format!("shares bytes {s:#x}..{e:#x} with another extent")
            };
            return Err(refuse(&what));
        }
        self.taken.push((canonical, start, end));
        WFile::open(&path, Format::Vmdk)
    }
}

impl VmdkWriter {
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&WExtent, u64, u64, usize, usize) -> Result<()>,
    ) -> Result<()> {
        check_range(Format::Vmdk, offset, len, self.size)?;
        let mut done = 0u64;
        for (start, elen, ext) in &self.extents {
            if done >= len {
                break;
            }
            let pos = offset + done;
            if pos >= start + elen || pos < *start {
                continue;
            }
            let n = (start + elen - pos).min(len - done);
            f(ext, pos - start, pos, done as usize, n as usize)?;
            done += n;
        }
        Ok(())
    }

    fn under(&self) -> impl Fn(&mut [u8], u64) -> Result<()> + '_ {
        move |buf: &mut [u8], virt: u64| {
            let dev = self.parent.as_ref().map(|p| p.device());
            read_from_parent(dev.as_deref(), buf, virt)
        }
    }

    /// Gives the image a new CID and content ID before its first write.
    fn touch(&self) -> Result<()> {
        let mut d = lock(&self.descriptor);
        if let Some((file, done)) = d.as_mut() {
            if !*done {
                file.text = set_key(&file.text, "CID", &format!("{:08x}", random_u32()), false);
                if file.text.to_ascii_lowercase().contains("ddb.longcontentid") {
                    file.text = set_key(&file.text, "ddb.longContentID", &long_content_id(), true);
                }
                file.store()?;
                *done = true;
            }
        }
        Ok(())
    }
}

impl BlockDevice for VmdkWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let under = self.under();
        let len = buf.len() as u64;
        self.walk(offset, len, |ext, at, virt, from, n| {
            let chunk = buf.get_mut(from..from + n).unwrap_or_default();
            match ext {
                WExtent::Flat { file, offset } => file.read_exact_at(chunk, offset + at),
                WExtent::Zero => {
                    chunk.fill(0);
                    Ok(())
                }
                WExtent::Sparse(s) => lock(s).read(chunk, at, &under, virt),
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        self.walk(offset, len, |ext, at, virt, _, n| {
            let n = n as u64;
            match ext {
                WExtent::Flat { .. } => {
                    push_extent(
                        &mut out,
                        Extent {
                            offset: virt,
                            len: n,
                            kind: ExtentKind::Data,
                        },
                    );
                    Ok(())
                }
                WExtent::Zero => {
                    push_extent(
                        &mut out,
                        Extent {
                            offset: virt,
                            len: n,
                            kind: ExtentKind::Zero,
                        },
                    );
                    Ok(())
                }
                WExtent::Sparse(s) => lock(s).map(at, n, virt, self.parent.as_ref(), &mut out),
            }
        })?;
        Ok(out)
    }
}

impl WritableDevice for VmdkWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(Format::Vmdk, offset, buf.len() as u64, self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.touch()?;
        let under = self.under();
        self.walk(offset, buf.len() as u64, |ext, at, virt, from, n| {
            let chunk = buf.get(from..from + n).unwrap_or_default();
            match ext {
                WExtent::Flat { file, offset } => file.write_all_at(chunk, offset + at),
                WExtent::Zero => Err(Error::unsupported(
                    Format::Vmdk,
                    "a ZERO extent has no file to write into",
                )),
                WExtent::Sparse(s) => lock(s).write(chunk, at, &under, virt),
            }
        })
    }

    fn flush(&self) -> Result<()> {
        for (_, _, ext) in &self.extents {
            match ext {
                WExtent::Flat { file, .. } => file.sync()?,
                WExtent::Zero => {}
                WExtent::Sparse(s) => lock(s).flush()?,
            }
        }
        Ok(())
    }
}

impl Drop for VmdkWriter {
    fn drop(&mut self) {
        let _ = WritableDevice::flush(self);
    }
}

/// The files a VMDK at `path` is made of (descriptor first), without its
/// parents.
pub(crate) fn own_files(path: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![path.to_path_buf()];
    if let Some((d, f)) = DescriptorFile::load(path)? {
        if matches!(f.at, DescriptorAt::Separate) {
            let dir = path.parent().unwrap_or(Path::new(""));
            for l in &d.extents {
                if l.kind != ExtentType::Zero {
                    out.push(dir.join(&l.file));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `source` as a new VMDK at `path` in `options`' subformat: a
/// streamOptimized file directly, any other layout through a writable
/// open of a fresh image (holes and all-zero grains left unwritten).
pub(crate) fn convert_stream(
    source: &dyn BlockDevice,
    path: &Path,
    options: &CreateOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let size = source.size();
    let grain = check_options(path, options, size)?;
    let name = crate::write::raw::file_name(path)?;
    let mut staging = Staging::new(path, Format::Vmdk)?;
    staging.check_free(std::slice::from_ref(&name), options.force, Format::Vmdk)?;
    let f = WFile::create(&staging.file(&name), Format::Vmdk)?;
    super::stream_writer::write(&f, source, &name, grain, progress)?;
    drop(f);
    staging.commit(Format::Vmdk)
}

/// The descriptor of a new streamOptimized disk of `capacity` sectors.
pub(crate) fn stream_descriptor(name: &str, capacity: u64) -> String {
    descriptor_text(
        random_u32(),
        None,
        "streamOptimized",
        &[Line {
            sectors: capacity,
            kind: "SPARSE",
            file: name.to_owned(),
            flat: false,
        }],
        &new_ddb(capacity),
    )
}

/// Sectors reserved for the embedded descriptor of a streamOptimized file.
pub(crate) const STREAM_DESCRIPTOR_SECTORS: u64 = DESCRIPTOR_SECTORS;

/// `descriptor_area` for the stream writer.
pub(crate) fn stream_descriptor_area(text: &str, path: &Path) -> Result<Vec<u8>> {
    descriptor_area(text, DESCRIPTOR_SECTORS, path)
}
