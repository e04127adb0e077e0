//! ISO 9660 (ECMA-119) with Joliet and Rock Ridge, our own reader.
//!
//! # Which names
//! Rock Ridge names when the primary tree carries Rock Ridge (an `SP` in
//! the root's `.` record, or RR entries there): they keep case, POSIX
//! modes, owners, link counts, inode numbers, symlinks and times. Else the
//! Joliet tree (UCS-2/UTF-16BE names, up to 64 characters, 103 with
//! `-joliet-long`) when a Joliet supplementary descriptor exists. Else the
//! primary names. The version suffix `;1` is stripped, and a primary name's
//! trailing `.` (a file without extension) too. Rock Ridge and Joliet names
//! are looked up exactly; primary names exactly first, then ignoring ASCII
//! case (`case_sensitive()` is false only for primary-only volumes).
//!
//! # What is read
//! Directory records across sectors (zero padding to a sector end),
//! multi-extent files (consecutive records of one name, flag bit 7:
//! concatenated), extended attribute records (data starts after them),
//! hidden files (listed), associated files (skipped, as Linux and 7-Zip
//! do). Rock Ridge: PX, PN, SL, NM (with CONTINUE), TF (short and long
//! forms), CL/RE (relocated deep directories shown at their original
//! place, the RE copy hidden; the `rr_moved` directory itself stays
//! visible as in Linux and xorriso), CE continuation areas, SP skip
//! length, ST. zisofs (ZF `pz`) files are decompressed (`zisofs`).
//! Interleaved files (file unit size or gap not zero) are refused with
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) on `open`.
//!
//! # Times
//! `modified` is the Rock Ridge TF modify time, else the recording date of
//! the directory record; `created`, `accessed`, `changed` come from TF
//! only. All are UTC (the GMT offset applied), TF long form with its
//! hundredths of a second.
//!
//! # El Torito
//! The boot catalog's entries are given by [`IsoFs::boot_entries`]
//! (platform, emulation, load segment, sector count, image LBA) and, as
//! 7-Zip does, as files of a virtual `/[BOOT]` directory (named like
//! `1-BIOS-none.img`, sized as the emulated floppy or the loaded sectors)
//! unless the root holds a real `[BOOT]`.
//!
//! # Bounds
//! Directories are at most [`MAX_DIR_BYTES`] and within the volume; a
//! directory reached again below itself is a corrupt loop; paths are at
//! most [`MAX_DEPTH`] deep; multi-extent files have at most
//! [`MAX_EXTENTS`] parts; CE chains at most `susp::MAX_CE` long.

pub(crate) mod descriptor;
pub(crate) mod eltorito;
mod record;
pub(crate) mod susp;
pub(crate) mod time;
pub(crate) mod zisofs;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, encode_name, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir,
};
use crate::runs::{DataRun, RunReader};
use crate::FsKind;
pub use eltorito::BootEntry;
use record::{parse_record, strip_version, Record};

const FS: FsName = FsName::Iso9660;
/// ISO 9660 sectors (directory records never cross one) are 2048 bytes.
const SECTOR: u64 = 2048;
/// Largest directory read, in bytes.
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// Deepest path looked up.
pub const MAX_DEPTH: usize = 256;
/// Most extents of one multi-extent file.
pub const MAX_EXTENTS: usize = 4096;
/// Directories kept parsed in memory.
const CACHE_DIRS: usize = 256;
/// The virtual directory of El Torito boot images.
pub const BOOT_DIR: &str = "[BOOT]";

/// Which names the reader uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Rock Ridge on the primary tree.
    RockRidge,
    /// The Joliet tree.
    Joliet,
    /// Primary (ISO 9660) names.
    Primary,
}

impl Names {
    /// `rock-ridge`, `joliet` or `primary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Names::RockRidge => "rock-ridge",
            Names::Joliet => "joliet",
            Names::Primary => "primary",
        }
    }
}

diskimage_formats::display_as_str!(Names);

#[derive(Debug, Clone)]
struct Node {
    name: String,
    raw: Vec<u8>,
    meta: Metadata,
    /// Data (or directory) extents as (byte offset, length).
    extents: Vec<(u64, u64)>,
    /// Byte offset of the directory record.
    record: u64,
    target: Option<String>,
    zf: Option<susp::Zf>,
    interleaved: bool,
    /// Index into the boot entries, for the virtual `[BOOT]` files.
    boot: Option<usize>,
}

/// An ISO 9660 file system.
pub struct IsoFs {
    device: Arc<dyn BlockDevice>,
    block: u64,
    names: Names,
    skip: usize,
    root: Node,
    label: Option<String>,
    serial: Option<String>,
    boot: Vec<BootEntry>,
    cache: RefCell<HashMap<u64, Rc<Vec<Node>>>>,
}

impl IsoFs {
    /// Opens the ISO 9660 file system on `device`.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        let d = descriptor::read(device.as_ref())?;
        let block = d.block_size;
        let (proot, poff) = d.primary_root.clone();
        let primary_root = parse_record(&proot, poff)?;
        let mut fs = IsoFs {
            device,
            block,
            names: Names::Primary,
            skip: 0,
            root: Node {
                name: String::new(),
                raw: Vec::new(),
                meta: Metadata::bare(FileType::Directory),
                extents: Vec::new(),
                record: poff,
                target: None,
                zf: None,
                interleaved: false,
                boot: None,
            },
            label: d.joliet_volume_id.clone().or(d.volume_id.clone()),
            serial: d.serial.clone(),
            boot: Vec::new(),
            cache: RefCell::new(HashMap::new()),
        };
        let start = (primary_root.lba + primary_root.xar) * block;
        fs.check_extent(start, primary_root.size, poff, "/")?;
        // Rock Ridge: SP (or RR entries) in the root's "." record.
        let mut first = vec![0u8; usize::try_from(primary_root.size.min(SECTOR)).unwrap_or(0)];
        fs.device.read_at(&mut first, start)?;
        let dot = parse_record(&first, start)?;
        let entries = susp::parse(
            fs.device.as_ref(),
            dot.system_use,
            start + dot.su_at as u64,
            0,
            block,
        )?;
        let mut root_entries = None;
        if entries.sp.is_some() || entries.rock_ridge {
            fs.names = Names::RockRidge;
            fs.skip = usize::from(entries.sp.unwrap_or(0));
            root_entries = Some(entries);
        }
        let (root_rec, root_off) = match (fs.names, &d.joliet_root) {
            (Names::Primary, Some((j, joff))) => {
                fs.names = Names::Joliet;
                (j.clone(), *joff)
            }
            _ => (proot, poff),
        };
        let r = parse_record(&root_rec, root_off)?;
        let rstart = (r.lba + r.xar) * block;
        fs.check_extent(rstart, r.size, root_off, "/")?;
        fs.root.extents = vec![(rstart, r.size)];
        fs.root.record = root_off;
        fs.root.meta.size = r.size;
        fs.root.meta.modified = r.recorded;
        fs.root.meta.inode = Some(root_off);
        if let Some(e) = root_entries {
            let mut meta = fs.root.meta.clone();
            fs.apply_rr(&mut meta, &e);
            fs.root.meta = meta;
        }
        if let Some(cat) = d.boot_catalog {
            // A broken catalog hides the boot entries, not the files.
            fs.boot = eltorito::read(fs.device.as_ref(), cat).unwrap_or_default();
        }
        Ok(fs)
    }

    /// Which names this volume is read with.
    pub fn names(&self) -> Names {
        self.names
    }

    /// The El Torito boot entries (empty without a boot catalog).
    pub fn boot_entries(&self) -> &[BootEntry] {
        &self.boot
    }

    fn check_extent(&self, start: u64, len: u64, record: u64, path: &str) -> Result<()> {
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.device.size())
        {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!("extent {start:#x}+{len:#x} past the end of the volume"),
            )
            .at(record));
        }
        Ok(())
    }

    fn apply_rr(&self, meta: &mut Metadata, e: &susp::Entries) {
        if let Some(px) = e.px {
            meta.mode = Some(px.mode);
            meta.uid = Some(px.uid);
            meta.gid = Some(px.gid);
            meta.nlink = Some(u64::from(px.nlink));
            if let Some(ino) = px.ino.filter(|&i| i != 0) {
                meta.inode = Some(u64::from(ino));
            }
        }
        if e.modified.is_some() {
            meta.modified = e.modified;
        }
        meta.created = e.created.or(meta.created);
        meta.accessed = e.accessed.or(meta.accessed);
        meta.changed = e.changed.or(meta.changed);
    }

    fn decode_name(&self, raw: &[u8], rr: Option<&susp::Entries>) -> String {
        if let Some(n) = rr.and_then(|e| e.name.as_ref()) {
            return encode_name(n);
        }
        match self.names {
            Names::Joliet => {
                let units: Vec<u16> = raw
                    .chunks(2)
                    .map(|c| {
                        u16::from_be_bytes([
                            c.first().copied().unwrap_or(0),
                            c.get(1).copied().unwrap_or(0),
                        ])
                    })
                    .collect();
                strip_version(String::from_utf16_lossy(&units), false)
            }
            _ => strip_version(encode_name(raw), true),
        }
    }

    /// Parses the directory `dir` (at `path`), bounded, cached.
    fn entries(&self, dir: &Node, path: &str) -> Result<Rc<Vec<Node>>> {
        let Some(&(start, len)) = dir.extents.first() else {
            return Ok(Rc::new(Vec::new()));
        };
        if let Some(hit) = self.cache.borrow().get(&start) {
            return Ok(hit.clone());
        }
        if len > MAX_DIR_BYTES {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("directory of {len} bytes (limit {MAX_DIR_BYTES})"),
            ));
        }
        self.check_extent(start, len, dir.record, path)?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.device.read_at(&mut buf, start)?;
        let mut out: Vec<Node> = Vec::new();
        let mut open_multi = false;
        let mut pos = 0usize;
        while pos < buf.len() {
            let sector_end = ((pos / SECTOR as usize) + 1) * SECTOR as usize;
            let sector_end = sector_end.min(buf.len());
            let l = usize::from(buf.get(pos).copied().unwrap_or(0));
            if l == 0 {
                pos = sector_end;
                continue;
            }
            let off = start + pos as u64;
            if pos + l > sector_end {
                return Err(Error::corrupt(
                    FS,
                    Some(path),
                    "directory record crosses a sector end",
                )
                .at(off));
            }
            let rec = parse_record(buf.get(pos..pos + l).unwrap_or_default(), off)?;
            pos += rec.len;
            if rec.name == [0] || rec.name == [1] || rec.flags & 0x04 != 0 {
                continue; // ".", "..", associated file
            }
            if rec.name.is_empty() {
                return Err(
                    Error::corrupt(FS, Some(path), "directory record with an empty name").at(off),
                );
            }
            let rr = if self.names == Names::RockRidge {
                Some(susp::parse(
                    self.device.as_ref(),
                    rec.system_use,
                    off + rec.su_at as u64,
                    self.skip,
                    self.block,
                )?)
            } else {
                None
            };
            if rr.as_ref().is_some_and(|e| e.relocated) {
                continue;
            }
            let data_start = (rec.lba + rec.xar).saturating_mul(self.block);
            // A continuation of a multi-extent file.
            if open_multi {
                if let Some(prev) = out.last_mut() {
                    if prev.raw == rec.name {
                        if prev.extents.len() >= MAX_EXTENTS {
                            return Err(Error::limit(
                                FS,
                                Some(path),
                                format!("file of more than {MAX_EXTENTS} extents"),
                            ));
                        }
                        prev.extents.push((data_start, rec.size));
                        prev.meta.size = prev.meta.size.saturating_add(rec.size);
                        prev.meta.allocated =
                            Some(prev.meta.size.div_ceil(self.block) * self.block);
                        open_multi = rec.flags & 0x80 != 0;
                        continue;
                    }
                }
            }
            open_multi = rec.flags & 0x80 != 0;
            out.push(self.node(&rec, rr, off, data_start, path)?);
        }
        let out = Rc::new(out);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_DIRS {
            cache.clear();
        }
        cache.insert(start, out.clone());
        Ok(out)
    }

    fn node(
        &self,
        rec: &Record<'_>,
        rr: Option<susp::Entries>,
        off: u64,
        data_start: u64,
        path: &str,
    ) -> Result<Node> {
        let name = self.decode_name(rec.name, rr.as_ref());
        let mut meta = Metadata::bare(FileType::File);
        meta.modified = rec.recorded;
        meta.inode = Some(off);
        meta.size = rec.size;
        meta.allocated = Some(rec.size.div_ceil(self.block) * self.block);
        let mut extents = vec![(data_start, rec.size)];
        let mut target = None;
        let mut zf = None;
        if rec.flags & 0x02 != 0 {
            meta.file_type = FileType::Directory;
        }
        if let Some(e) = &rr {
            self.apply_rr(&mut meta, e);
            if let Some(cl) = e.child_link {
                // The relocated directory: its "." record gives extent and attributes.
                let at = cl.saturating_mul(self.block);
                self.check_extent(at, 34, off, path)?;
                let mut first =
                    vec![0u8; usize::try_from(SECTOR.min(self.device.size() - at)).unwrap_or(0)];
                self.device.read_at(&mut first, at)?;
                let dot = parse_record(&first, at)?;
                let de = susp::parse(
                    self.device.as_ref(),
                    dot.system_use,
                    at + dot.su_at as u64,
                    self.skip,
                    self.block,
                )?;
                meta.file_type = FileType::Directory;
                meta.size = dot.size;
                meta.modified = dot.recorded;
                self.apply_rr(&mut meta, &de);
                extents = vec![((dot.lba + dot.xar).saturating_mul(self.block), dot.size)];
            } else if let Some(t) = &e.symlink {
                meta.file_type = FileType::Symlink;
                meta.size = t.len() as u64;
                target = Some(encode_name(t));
                extents.clear();
            } else if e.device.is_some()
                || e.px.is_some_and(|p| {
                    matches!(p.mode & 0o170000, 0o010000 | 0o020000 | 0o060000 | 0o140000)
                })
            {
                meta.file_type = FileType::Special;
                meta.size = 0;
                extents.clear();
            } else if meta.file_type == FileType::File {
                if let Some(z) = e.zf {
                    meta.size = z.size;
                    zf = Some(z);
                }
            }
        }
        Ok(Node {
            name,
            raw: rec.name.to_vec(),
            meta,
            extents,
            record: off,
            target,
            zf,
            interleaved: rec.interleaved,
            boot: None,
        })
    }

    fn boot_nodes(&self) -> Vec<Node> {
        self.boot
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut meta = Metadata::bare(FileType::File);
                meta.size = b.size();
                Node {
                    name: b.file_name(i),
                    raw: Vec::new(),
                    meta,
                    extents: vec![(u64::from(b.lba) * SECTOR, b.size())],
                    record: 0,
                    target: None,
                    zf: None,
                    interleaved: false,
                    boot: Some(i),
                }
            })
            .collect()
    }

    fn boot_dir(&self) -> Node {
        Node {
            name: BOOT_DIR.to_string(),
            raw: Vec::new(),
            meta: Metadata::bare(FileType::Directory),
            extents: Vec::new(),
            record: 0,
            target: None,
            zf: None,
            interleaved: false,
            boot: Some(usize::MAX),
        }
    }

    /// The children of `dir` at `path`, with the virtual `[BOOT]` in the root.
    fn children(&self, dir: &Node, path: &str, is_root: bool) -> Result<Rc<Vec<Node>>> {
        if dir.boot == Some(usize::MAX) {
            return Ok(Rc::new(self.boot_nodes()));
        }
        let list = self.entries(dir, path)?;
        if is_root && !self.boot.is_empty() && !list.iter().any(|n| n.name == BOOT_DIR) {
            let mut v = (*list).clone();
            v.push(self.boot_dir());
            return Ok(Rc::new(v));
        }
        Ok(list)
    }

    fn lookup(&self, path: &str) -> Result<Node> {
        let comps = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        if comps.len() > MAX_DEPTH {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("path deeper than {MAX_DEPTH}"),
            ));
        }
        let mut node = self.root.clone();
        let mut ancestors: Vec<u64> = node.extents.first().map(|e| e.0).into_iter().collect();
        let mut walked = String::new();
        for (i, c) in comps.iter().enumerate() {
            if node.meta.file_type != FileType::Directory {
                return Err(Error::wrong_type(FS, path, "not a directory"));
            }
            let here = if walked.is_empty() {
                "/"
            } else {
                walked.as_str()
            };
            let list = self.children(&node, here, i == 0)?;
            let found = list
                .iter()
                .find(|n| n.name == *c)
                .or_else(|| {
                    (self.names == Names::Primary)
                        .then(|| list.iter().find(|n| n.name.eq_ignore_ascii_case(c)))
                        .flatten()
                })
                .cloned()
                .ok_or_else(|| Error::not_found(FS, path))?;
            walked.push('/');
            walked.push_str(c);
            if found.meta.file_type == FileType::Directory && found.boot.is_none() {
                let start = found.extents.first().map_or(0, |e| e.0);
                if ancestors.contains(&start) {
                    return Err(Error::corrupt(
                        FS,
                        Some(&walked),
                        "directory loop: a directory record points to an ancestor",
                    )
                    .at(found.record));
                }
                ancestors.push(start);
            }
            node = found;
        }
        Ok(node)
    }
}

/// A `Read + Seek` view of a file's extents (`(volume offset, length)`,
/// in file order; a multi-extent file has several).
pub fn extent_reader(device: Arc<dyn BlockDevice>, extents: &[(u64, u64)]) -> RunReader {
    let mut runs = Vec::with_capacity(extents.len());
    let mut size = 0u64;
    for &(at, len) in extents {
        runs.push(DataRun {
            file_offset: size,
            len,
            at: Some(at),
        });
        size = size.saturating_add(len);
    }
    RunReader::new(device, runs, size)
}

impl FileSystem for IsoFs {
    fn kind(&self) -> FsKind {
        FsKind::Iso9660
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn serial(&self) -> Option<String> {
        self.serial.clone()
    }

    fn case_sensitive(&self) -> bool {
        self.names != Names::Primary
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let node = self.lookup(path)?;
        if node.meta.file_type != FileType::Directory {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        let is_root = components(path).is_some_and(|c| c.is_empty());
        Ok(self
            .children(&node, path, is_root)?
            .iter()
            .map(|n| DirEntry {
                name: n.name.clone(),
                file_type: n.meta.file_type,
            })
            .collect::<Vec<_>>()
            .into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(self.lookup(path)?.meta)
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        let node = self.lookup(path)?;
        match node.meta.file_type {
            FileType::File => {}
            FileType::Directory => return Err(Error::wrong_type(FS, path, "is a directory")),
            _ => return Err(Error::wrong_type(FS, path, "not a regular file")),
        }
        if node.interleaved {
            return Err(Error::unsupported(
                FS,
                Some(path),
                "interleaved file (file unit size / gap set)",
            ));
        }
        for &(start, len) in &node.extents {
            self.check_extent(start, len, node.record, path)?;
        }
        let raw = extent_reader(self.device.clone(), &node.extents);
        match node.zf {
            Some(z) => Ok(Box::new(zisofs::ZisofsReader::new(raw, z, path)?)),
            None => Ok(Box::new(raw)),
        }
    }

    fn read_link(&self, path: &str) -> Result<String> {
        self.lookup(path)?
            .target
            .ok_or_else(|| Error::wrong_type(FS, path, "not a symbolic link"))
    }
}
