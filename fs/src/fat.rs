//! FAT12/16/32 over the `fatfs` crate, strictly read-only.
//!
//! `fatfs` wants a `Read + Write + Seek` disk by value even to read; it gets
//! a [`ReadOnlyCursor`] whose `write` always fails with `PermissionDenied`
//! (and access-date updates are off), so nothing can ever be written. It
//! reads a few bytes at a time (3-byte directory-entry reads), so the
//! cursor keeps a small cache of [`CACHE_BLOCK`]-byte blocks.
//!
//! A read the device cannot satisfy (a volume whose image ends before the
//! volume does) fails with the device's out-of-bounds error inside an
//! `io::Error` of kind `Other`: `fatfs` takes a read of 0 bytes for the end
//! of a file and an `UnexpectedEof` error for the end of a directory, so a
//! cursor answering either would turn clusters past the end of the image
//! into files cut short and directories cut short without an error.
//!
//! A FAT32 volume is FAT32 by its BPB (no 16-bit FAT size, as the kernel,
//! fsck.fat and blkid decide), whatever its cluster count; `fatfs` 0.3
//! types a volume by its cluster count alone and refuses a FAT32 BPB with
//! fewer than 65,525 clusters. For such a volume the cursor shows `fatfs`
//! a boot sector whose total sector count is raised to what 65,525
//! clusters need ([`fat32_view`]): `fatfs` reads the FAT with 32-bit
//! entries, as the volume is made, and uses the count for nothing else
//! when reading (free-space counts and allocation are never asked for).
//! The device is never written and no other byte is changed.
//!
//! Lookups walk directories here, bounded by [`MAX_DIR_ENTRIES`], rather
//! than through `fatfs`'s own path walk, which loops forever on a
//! directory whose cluster chain is a cycle. Names compare
//! case-insensitively (Unicode lower case), long names first, then the
//! 8.3 short name. FAT times are local times without a zone; they are
//! reported as if UTC.
//!
//! # Threads
//! [`FatFs`] is `!Send` and `!Sync` (`fatfs` keeps a `RefCell` inside).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use diskimage_formats::BlockDevice;
use fatfs::{FileAttributes, FsOptions};

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, days_from_civil, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir,
    Timestamp, VisitFn, Visited,
};
use crate::FsKind;

const FS: FsName = FsName::Fat;

/// Size of one cached block, in bytes.
pub const CACHE_BLOCK: usize = 4096;
/// Number of blocks the cursor keeps.
pub const CACHE_BLOCKS: usize = 32;
/// Most entries read from one directory before it counts as a cluster-chain
/// cycle (a FAT32 directory holds at most 65,536 32-byte entries).
pub const MAX_DIR_ENTRIES: usize = 65_536;

/// Clusters below which `fatfs` 0.3 takes a volume for FAT12 or FAT16.
const FAT32_MIN_CLUSTERS: u64 = 65_525;

/// A read-only `Read + Write + Seek` cursor over a device, with a small
/// block cache. `write` and `flush` of dirty data fail; a read reaching
/// past the end of the device fails ([`past_end`]), never a short read.
pub struct ReadOnlyCursor {
    device: Arc<dyn BlockDevice>,
    pos: u64,
    cache: Vec<(u64, Vec<u8>)>,
    next_slot: usize,
    /// The boot sector shown in place of the device's first bytes.
    boot: Option<Vec<u8>>,
}

impl ReadOnlyCursor {
    /// A cursor at offset 0 of `device`.
    pub fn new(device: Arc<dyn BlockDevice>) -> Self {
        ReadOnlyCursor {
            device,
            pos: 0,
            cache: Vec::with_capacity(CACHE_BLOCKS),
            next_slot: 0,
            boot: None,
        }
    }

    /// The same cursor showing `boot` in place of the device's first
    /// `boot.len()` bytes (a view: the device is not written).
    #[must_use]
    pub fn with_boot_sector(mut self, boot: Vec<u8>) -> Self {
        self.boot = Some(boot);
        self.cache.clear();
        self
    }

    /// Copies the boot-sector view over the part of `buf` (read from
    /// device offset `at`) that it covers.
    fn overlay(&self, buf: &mut [u8], at: u64) {
        let Some(boot) = &self.boot else {
            return;
        };
        let Ok(at) = usize::try_from(at) else {
            return;
        };
        for (i, b) in buf.iter_mut().enumerate() {
            match at.checked_add(i).and_then(|o| boot.get(o)) {
                Some(v) => *b = *v,
                None => break,
            }
        }
    }

    fn block(&mut self, index: u64) -> io::Result<&[u8]> {
        if let Some(i) = self.cache.iter().position(|(b, _)| *b == index) {
            return Ok(self.cache.get(i).map_or(&[][..], |(_, d)| d.as_slice()));
        }
        let start = index * CACHE_BLOCK as u64;
        let len = self
            .device
            .size()
            .saturating_sub(start)
            .min(CACHE_BLOCK as u64);
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.device
            .read_at(&mut data, start)
            .map_err(io::Error::other)?;
        self.overlay(&mut data, start);
        let slot = if self.cache.len() < CACHE_BLOCKS {
            self.cache.push((index, data));
            self.cache.len() - 1
        } else {
            let s = self.next_slot % CACHE_BLOCKS;
            self.next_slot = s + 1;
            if let Some(e) = self.cache.get_mut(s) {
                *e = (index, data);
            }
            s
        };
        Ok(self.cache.get(slot).map_or(&[][..], |(_, d)| d.as_slice()))
    }
}

/// The error of a read of `len` bytes at `offset` that reaches past the
/// end of a device of `size` bytes: the device's typed out-of-bounds error
/// (naming the offset) inside an `io::Error` of kind `Other`, which `fatfs`
/// passes up (it takes `UnexpectedEof` for the end of a directory).
pub fn past_end(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::other(diskimage_formats::Error::out_of_range(
        diskimage_formats::Format::Probe,
        "volume (the image ends before the file system does)",
        offset,
        len as u64,
        size,
    ))
}

impl Read for ReadOnlyCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.device.size();
        if self
            .pos
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(past_end(self.pos, buf.len(), size));
        }
        let want = buf.len();
        if want >= CACHE_BLOCK {
            self.device
                .read_at(buf, self.pos)
                .map_err(io::Error::other)?;
            self.overlay(buf, self.pos);
            self.pos += want as u64;
            return Ok(want);
        }
        let index = self.pos / CACHE_BLOCK as u64;
        let within = usize::try_from(self.pos % CACHE_BLOCK as u64).unwrap_or(0);
        let block = self.block(index)?;
        let src = block.get(within..).unwrap_or_default();
        let n = src.len().min(want);
        if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for ReadOnlyCursor {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "diskimage opens file systems read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadOnlyCursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.device.size(), pos)?;
        Ok(self.pos)
    }
}

/// For a FAT32 BPB (16-bit FAT size zero, 32-bit one set) of fewer than
/// 65,525 clusters, the boot sector as `fatfs` must see it to read the
/// volume as FAT32: the 16-bit total sector count zero and the 32-bit one
/// raised to the data area's start plus 65,525 clusters. `None` for any
/// other volume (read as it is).
pub fn fat32_view(device: &dyn BlockDevice) -> Result<Option<Vec<u8>>> {
    use diskimage_formats::bytes::{le_u16, le_u32};
    if device.size() < 512 {
        return Ok(None);
    }
    let mut b = vec![0u8; 512];
    device.read_at(&mut b, 0)?;
    let n16 = |o| le_u16(&b, o).map_or(0, u64::from);
    let n32 = |o| le_u32(&b, o).map_or(0, u64::from);
    let spc = u64::from(b.get(13).copied().unwrap_or(0));
    let fats = u64::from(b.get(16).copied().unwrap_or(0));
    let (bps, rsvd, root_entries, fat16, fat32) = (n16(11), n16(14), n16(17), n16(22), n32(36));
    if fat16 != 0 || fat32 == 0 || root_entries != 0 || spc == 0 || bps == 0 {
        return Ok(None);
    }
    let total = match n16(19) {
        0 => n32(32),
        n => n,
    };
    let first_data = rsvd + fats * fat32;
    let clusters = total.saturating_sub(first_data) / spc;
    if clusters >= FAT32_MIN_CLUSTERS {
        return Ok(None);
    }
    let Ok(raised) = u32::try_from(first_data + FAT32_MIN_CLUSTERS * spc) else {
        return Ok(None);
    };
    if let Some(t16) = b.get_mut(19..21) {
        t16.copy_from_slice(&[0, 0]);
    }
    if let Some(t32) = b.get_mut(32..36) {
        t32.copy_from_slice(&raised.to_le_bytes());
    }
    Ok(Some(b))
}

type Inner = fatfs::FileSystem<ReadOnlyCursor>;
type FatEntry<'a> = fatfs::DirEntry<'a, ReadOnlyCursor>;
type FatDir<'a> = fatfs::Dir<'a, ReadOnlyCursor>;

/// A directory path and the metadata of its entries by name.
type ListedDir = (String, Vec<(String, Metadata)>);

/// A FAT12/16/32 file system.
pub struct FatFs {
    fs: Inner,
    kind: FsKind,
    /// The metadata of the entries of the directory listed last, so that a
    /// listing followed by `metadata` of each entry stays linear.
    last_dir: std::cell::RefCell<Option<ListedDir>>,
}

fn io_err(path: &str, e: io::Error) -> Error {
    // The device's error (or ours) inside: recovered as it is.
    if e.get_ref()
        .is_some_and(|i| i.is::<diskimage_formats::Error>() || i.is::<Error>())
    {
        return Error::from_io(FS, path, e);
    }
    match e.kind() {
        io::ErrorKind::NotFound => Error::not_found(FS, path),
        io::ErrorKind::Unsupported => Error::Unsupported {
            fs: FS,
            path: Some(path.to_string()),
            what: e.to_string(),
            source: Some(Box::new(e)),
        },
        _ => Error::Corrupt {
            fs: FS,
            path: Some(path.to_string()),
            offset: None,
            detail: Box::new(crate::error::Detail::Invalid(e.to_string())),
            source: Some(Box::new(e)),
        },
    }
}

fn date_ts(d: fatfs::Date, h: u16, mi: u16, s: u16, ms: u16) -> Timestamp {
    let days = days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day));
    Timestamp {
        secs: days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s),
        nanos: u32::from(ms.min(999)) * 1_000_000,
    }
}

fn dt_ts(t: fatfs::DateTime) -> Timestamp {
    date_ts(t.date, t.time.hour, t.time.min, t.time.sec, t.time.millis)
}

fn entry_type(e: &FatEntry<'_>) -> FileType {
    if e.is_dir() {
        FileType::Directory
    } else {
        FileType::File
    }
}

impl FatFs {
    /// Opens the FAT file system on `device`; `kind` is what detection found.
    pub fn open(device: Arc<dyn BlockDevice>, kind: FsKind) -> Result<Self> {
        let options = FsOptions::new().update_accessed_date(false);
        let mut cursor = ReadOnlyCursor::new(device.clone());
        if let Some(boot) = fat32_view(device.as_ref())? {
            cursor = cursor.with_boot_sector(boot);
        }
        let fs = fatfs::FileSystem::new(cursor, options).map_err(|e| io_err("/", e))?;
        Ok(FatFs {
            fs,
            kind,
            last_dir: std::cell::RefCell::new(None),
        })
    }

    /// The entries of `dir`, without `.`, `..` and volume labels, bounded.
    fn entries<'a>(&'a self, dir: &FatDir<'a>, path: &str) -> Result<Vec<FatEntry<'a>>> {
        let mut out = Vec::new();
        for (i, e) in dir.iter().enumerate() {
            if i >= MAX_DIR_ENTRIES {
                return Err(Error::limit(
                    FS,
                    Some(path),
                    format!(
                        "directory has more than {MAX_DIR_ENTRIES} entries (cluster-chain cycle?)"
                    ),
                ));
            }
            let e = e.map_err(|e| io_err(path, e))?;
            let n = e.short_file_name();
            if n == "." || n == ".." || e.attributes().contains(FileAttributes::VOLUME_ID) {
                continue;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The entry at `path`, or `None` for the root.
    fn lookup<'a>(&'a self, path: &str) -> Result<Option<FatEntry<'a>>> {
        let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        let mut dir = self.fs.root_dir();
        let mut found = None;
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let want = part.to_lowercase();
            let mut hit = None;
            for (n, e) in dir.iter().enumerate() {
                if n >= MAX_DIR_ENTRIES {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!("directory has more than {MAX_DIR_ENTRIES} entries (cluster-chain cycle?)"),
                    ));
                }
                let e = e.map_err(|e| io_err(path, e))?;
                if e.attributes().contains(FileAttributes::VOLUME_ID) {
                    continue;
                }
                let name = e.file_name();
                if name == want
                    || name.to_lowercase() == want
                    || e.short_file_name().to_lowercase() == want
                {
                    hit = Some(e);
                    break;
                }
            }
            let entry = hit.ok_or_else(|| Error::not_found(FS, path))?;
            if i + 1 < count {
                if !entry.is_dir() {
                    return Err(Error::wrong_type(FS, path, "not a directory"));
                }
                dir = subdir(&entry, path)?;
            }
            found = Some(entry);
        }
        Ok(found)
    }
}

/// The directory an entry names, refused unless it starts with its `.`
/// entry as every FAT subdirectory does: an entry whose first cluster is
/// 0 opens the root directory (the `fatfs` crate's reading of cluster 0),
/// and entering it would loop through the root without end, which inode
/// numbers (FAT has none) cannot show.
fn subdir<'a>(entry: &FatEntry<'a>, path: &str) -> Result<FatDir<'a>> {
    let dir = entry.to_dir();
    match dir.iter().next() {
        Some(Ok(first)) if first.short_file_name() == "." => Ok(dir),
        // The device's own error (an image cut short) stays that error.
        Some(Err(e)) => Err(io_err(path, e)),
        _ => Err(Error::corrupt(
            FS,
            Some(path),
            "subdirectory does not start with its '.' entry (first cluster 0 or damaged): not entered",
        )),
    }
}

impl FileSystem for FatFs {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn label(&self) -> Option<String> {
        // The root directory's label entry, as Windows and blkid show it;
        // the boot sector's copy may be stale and is not the label.
        let l = self.fs.read_volume_label_from_root_dir().ok().flatten()?;
        let l = l.trim_end().to_string();
        (!l.is_empty() && l != "NO NAME").then_some(l)
    }

    fn serial(&self) -> Option<String> {
        let v = self.fs.volume_id();
        Some(format!("{:04X}-{:04X}", v >> 16, v & 0xffff))
    }

    fn case_sensitive(&self) -> bool {
        false
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let dir = match self.lookup(path)? {
            None => self.fs.root_dir(),
            Some(e) if e.is_dir() => subdir(&e, path)?,
            Some(_) => return Err(Error::wrong_type(FS, path, "not a directory")),
        };
        let entries = self.entries(&dir, path)?;
        let cluster = u64::from(self.fs.cluster_size());
        let cached = entries
            .iter()
            .map(|e| (e.file_name(), self.entry_metadata(e, cluster)))
            .collect();
        let out: Vec<DirEntry> = entries
            .iter()
            .map(|e| DirEntry {
                name: e.file_name(),
                file_type: entry_type(e),
            })
            .collect();
        let key = components(path).map(|c| c.join("/")).unwrap_or_default();
        *self.last_dir.borrow_mut() = Some((key, cached));
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        if let Some(parts) = components(path) {
            if let Some((last, parent)) = parts.split_last() {
                if let Some((dir, cached)) = self.last_dir.borrow().as_ref() {
                    if *dir == parent.join("/") {
                        if let Some((_, m)) = cached.iter().find(|(n, _)| n == last) {
                            return Ok(m.clone());
                        }
                    }
                }
            }
        }
        let Some(e) = self.lookup(path)? else {
            return Ok(Metadata::bare(FileType::Directory));
        };
        Ok(self.entry_metadata(&e, u64::from(self.fs.cluster_size())))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        match self.lookup(path)? {
            Some(e) if e.is_file() => Ok(Box::new(e.to_file())),
            _ => Err(Error::wrong_type(FS, path, "not a regular file")),
        }
    }

    fn read_link(&self, path: &str) -> Result<String> {
        self.lookup(path)?;
        Err(Error::wrong_type(
            FS,
            path,
            "not a symbolic link (FAT has none)",
        ))
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let dir = match self.lookup(path)? {
            None => self.fs.root_dir(),
            Some(e) if e.is_dir() => subdir(&e, path)?,
            Some(_) => return Err(Error::wrong_type(FS, path, "not a directory")),
        };
        let cluster = u64::from(self.fs.cluster_size());
        for entry in self.entries(&dir, path)? {
            let v = FatVisited {
                fs: self,
                name: entry.file_name(),
                path,
                entry,
                cluster,
            };
            if f(Ok(&v)).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// An entry met by [`FatFs::visit_dir`]: opened from its directory entry.
struct FatVisited<'a> {
    fs: &'a FatFs,
    name: String,
    path: &'a str,
    entry: FatEntry<'a>,
    cluster: u64,
}

impl FatVisited<'_> {
    fn path(&self) -> String {
        crate::file_system::join(self.path, &self.name)
    }
}

impl Visited for FatVisited<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(self.fs.entry_metadata(&self.entry, self.cluster))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{}:{stream}", self.path())));
        }
        if !self.entry.is_file() {
            return Err(Error::wrong_type(FS, &self.path(), "not a regular file"));
        }
        Ok(Box::new(self.entry.to_file()))
    }
    fn read_link(&self) -> Result<String> {
        Err(Error::wrong_type(
            FS,
            &self.path(),
            "not a symbolic link (FAT has none)",
        ))
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

impl FatFs {
    fn entry_metadata(&self, e: &FatEntry<'_>, cluster: u64) -> Metadata {
        let file_type = entry_type(e);
        let size = if file_type == FileType::File {
            e.len()
        } else {
            0
        };
        Metadata {
            file_type,
            size,
            allocated: Some(size.div_ceil(cluster.max(1)) * cluster),
            mode: None,
            uid: None,
            gid: None,
            nlink: Some(1),
            inode: None,
            created: Some(dt_ts(e.created())),
            modified: Some(dt_ts(e.modified())),
            accessed: Some(date_ts(e.accessed(), 0, 0, 0, 0)),
            changed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1980, 1, 1), 3652);
    }

    #[test]
    fn cursor_refuses_writes() {
        let dev: Arc<dyn BlockDevice> =
            Arc::new(diskimage_formats::MemoryDevice::new(vec![7u8; 10_000]));
        let mut c = ReadOnlyCursor::new(dev);
        assert_eq!(
            c.write(b"x").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        c.seek(SeekFrom::Start(9_990)).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(c.read(&mut b).unwrap(), 8);
        assert_eq!(b, [7u8; 8]);
    }

    #[test]
    fn cursor_reads_past_the_end_are_errors_naming_the_offset() {
        let dev: Arc<dyn BlockDevice> =
            Arc::new(diskimage_formats::MemoryDevice::new(vec![7u8; 10_000]));
        let mut c = ReadOnlyCursor::new(dev);
        let mut b = [0u8; 8];
        c.seek(SeekFrom::Start(9_998)).unwrap();
        let e = c.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        c.seek(SeekFrom::Start(20_000)).unwrap();
        let e = io_err("/f", c.read(&mut b).unwrap_err());
        assert_eq!(e.kind(), crate::ErrorKind::Device);
        assert!(e.to_string().contains("0x4e20"), "{e}");
        let mut big = vec![0u8; 2 * CACHE_BLOCK];
        c.seek(SeekFrom::Start(4_000)).unwrap();
        assert!(c.read(&mut big).is_err());
    }

    #[test]
    fn boot_sector_view_replaces_only_its_bytes() {
        let dev: Arc<dyn BlockDevice> =
            Arc::new(diskimage_formats::MemoryDevice::new(vec![7u8; 10_000]));
        let mut c = ReadOnlyCursor::new(dev).with_boot_sector(vec![1u8; 512]);
        let mut b = vec![0u8; 16];
        c.seek(SeekFrom::Start(504)).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b[..8], &[1u8; 8]);
        assert_eq!(&b[8..], &[7u8; 8]);
        let mut big = vec![0u8; CACHE_BLOCK];
        c.seek(SeekFrom::Start(0)).unwrap();
        c.read_exact(&mut big).unwrap();
        assert!(big[..512].iter().all(|&x| x == 1) && big[512..].iter().all(|&x| x == 7));
    }
}
