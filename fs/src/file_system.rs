//! The one [`FileSystem`] trait every adapter implements, and the types it
//! returns.
//!
//! # Paths
//! Paths are `/`-separated UTF-8 strings from the root (`/`, `/dir/file`);
//! a leading `/` is optional, empty components and `.` are ignored and
//! `..` is refused (a path is a name inside the file system, never
//! resolved against anything). Symbolic links are never followed by the
//! trait: [`FileSystem::metadata`] describes the link itself.
//!
//! # Names that are not UTF-8
//! ext names are bytes. A name that is not valid UTF-8 is shown with each
//! byte that is not part of a valid UTF-8 sequence replaced by the
//! private-use character `U+10FF00 + byte` (see [`encode_name`]); passing
//! that string back in a path reaches the same entry ([`decode_name`]).
//! FAT, exFAT, NTFS and Joliet names are UTF-16: an unpaired surrogate is
//! replaced by `U+FFFD`, so such a name can be listed but not opened.
//!
//! # Named streams
//! On NTFS, `path:stream` names the alternate data stream `stream` of
//! `path` in [`FileSystem::open`] and [`FileSystem::metadata`];
//! [`FileSystem::streams`] lists them. Other file systems have none, and a
//! `:` there is an ordinary name character.
//!
//! # Threads
//! The ext reader (`RefCell` caches) and `fatfs` (a `RefCell` inside) are
//! `!Send`, so a [`FileSystem`] is not `Send`: open one per thread with
//! [`open_fs`](crate::open_fs) (the device is an `Arc` and shared).

use std::io::{Read, Seek};
use std::ops::ControlFlow;

use crate::error::Result;
use crate::FsKind;

/// First character of the range that stands for raw bytes in names.
pub const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (or an NTFS reparse point shown as one).
    Symlink,
    /// A device, FIFO or socket.
    Special,
}

impl FileType {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Directory => "dir",
            FileType::Symlink => "symlink",
            FileType::Special => "special",
        }
    }
}

/// A point in time with its full on-disk precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 UTC (negative before).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// From an NTFS time: 100 ns ticks since 1601-01-01 UTC.
    pub fn from_nt(ticks: u64) -> Self {
        const NT_TO_UNIX_SECS: i64 = 11_644_473_600;
        const TICKS_PER_SEC: u64 = 10_000_000;
        let secs = i64::try_from(ticks / TICKS_PER_SEC).unwrap_or(i64::MAX) - NT_TO_UNIX_SECS;
        let nanos = u32::try_from((ticks % TICKS_PER_SEC) * 100).unwrap_or(0);
        Timestamp { secs, nanos }
    }
}

/// What [`FileSystem::metadata`] knows of one file; `None` where the file
/// system (or the crate underneath) does not record or expose a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The type.
    pub file_type: FileType,
    /// Size in bytes of the data (of a symlink: of its target).
    pub size: u64,
    /// Bytes allocated on the volume.
    pub allocated: Option<u64>,
    /// POSIX mode bits including the type (`0o100644`), where recorded.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
    /// Hard-link count.
    pub nlink: Option<u64>,
    /// Inode or MFT record number.
    pub inode: Option<u64>,
    /// Creation (birth) time.
    pub created: Option<Timestamp>,
    /// Last data modification.
    pub modified: Option<Timestamp>,
    /// Last access.
    pub accessed: Option<Timestamp>,
    /// Last metadata change (inode ctime, NTFS MFT record change).
    pub changed: Option<Timestamp>,
}

impl Metadata {
    /// A file of `file_type` and size 0 with nothing else known (a
    /// directory that exists only implicitly, such as a volume's root
    /// without a record of its own).
    pub fn bare(file_type: FileType) -> Self {
        Metadata {
            file_type,
            size: 0,
            allocated: None,
            mode: None,
            uid: None,
            gid: None,
            nlink: None,
            inode: None,
            created: None,
            modified: None,
            accessed: None,
            changed: None,
        }
    }
}

/// The position a `Seek::seek(to)` gives on a stream of `size` bytes now
/// at `pos` (past the end is allowed, as for files); one before 0 is an
/// `InvalidInput` error. Every `Seek` of this crate uses it.
pub fn seek_position(pos: u64, size: u64, to: std::io::SeekFrom) -> std::io::Result<u64> {
    match to {
        std::io::SeekFrom::Start(p) => Some(p),
        std::io::SeekFrom::End(d) => size.checked_add_signed(d),
        std::io::SeekFrom::Current(d) => pos.checked_add_signed(d),
    }
    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One entry of [`FileSystem::read_dir`] (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name, encoded as the module docs say.
    pub name: String,
    /// The type.
    pub file_type: FileType,
}

/// The entries of one directory, as [`FileSystem::read_dir`] gives them:
/// an iterator (read when the call is made; [`FileSystem::visit_dir`]
/// streams entries with their metadata instead).
#[derive(Debug, Clone, Default)]
pub struct ReadDir(std::vec::IntoIter<DirEntry>);

impl Iterator for ReadDir {
    type Item = DirEntry;

    fn next(&mut self) -> Option<DirEntry> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ReadDir {}

impl DoubleEndedIterator for ReadDir {
    fn next_back(&mut self) -> Option<DirEntry> {
        self.0.next_back()
    }
}

impl From<Vec<DirEntry>> for ReadDir {
    fn from(entries: Vec<DirEntry>) -> Self {
        ReadDir(entries.into_iter())
    }
}

/// A file's data: `Read + Seek`.
pub trait FileReader: Read + Seek {}
impl<T: Read + Seek> FileReader for T {}

/// One entry met by [`FileSystem::visit_dir`]: everything a tree walk
/// asks of it, reached from the directory entry itself (adapters do not
/// resolve the entry's path again for each call).
pub trait Visited {
    /// The name, encoded as the module docs say.
    fn name(&self) -> &str;
    /// What [`FileSystem::metadata`] gives for this entry.
    fn metadata(&self) -> Result<Metadata>;
    /// The data of this regular file, or of its named stream `stream`
    /// (`""`: the unnamed data), as [`FileSystem::open`] gives it.
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>>;
    /// The target of this symbolic link, as [`FileSystem::read_link`].
    fn read_link(&self) -> Result<String>;
    /// The names of its named streams, as [`FileSystem::streams`].
    fn streams(&self) -> Result<Vec<String>>;
    /// Where the unnamed data of this regular file is stored verbatim on
    /// the volume: runs in file order that hold exactly its bytes, when
    /// every byte is so stored (not resident, inline, compressed,
    /// encrypted, sparse, unwritten or past an initialized size); `None`
    /// otherwise, or when the file system does not say. Only an
    /// optimisation (a copy by the kernel): [`open`](Visited::open) stays
    /// the reference, and the runs may lie past the end of the volume,
    /// which the caller checks.
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        None
    }
}

/// `len` bytes of a file's data stored from byte `at` of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRun {
    /// Offset on the volume, in bytes.
    pub at: u64,
    /// Length in bytes (never zero).
    pub len: u64,
}

/// The callback of [`FileSystem::visit_dir`]: called with each entry, or
/// with the name and error of an entry that cannot be read; returns
/// `ControlFlow::Break` to stop the visit.
pub type VisitFn<'f> =
    dyn FnMut(std::result::Result<&dyn Visited, (String, crate::Error)>) -> ControlFlow<()> + 'f;

/// A [`Visited`] through the path methods (what the default
/// [`FileSystem::visit_dir`] gives): for a single path.
pub struct PathEntry<'a, F: FileSystem + ?Sized> {
    fs: &'a F,
    name: String,
    path: String,
}

impl<'a, F: FileSystem + ?Sized> PathEntry<'a, F> {
    /// The entry at `path` of `fs` (its name is the last component).
    pub fn new(fs: &'a F, path: &str) -> Self {
        let name = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or("/");
        PathEntry {
            fs,
            name: name.to_string(),
            path: path.to_string(),
        }
    }
}

impl<F: FileSystem + ?Sized> Visited for PathEntry<'_, F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        self.fs.metadata(&self.path)
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        if stream.is_empty() {
            self.fs.open(&self.path)
        } else {
            self.fs.open(&format!("{}:{stream}", self.path))
        }
    }
    fn read_link(&self) -> Result<String> {
        self.fs.read_link(&self.path)
    }
    fn streams(&self) -> Result<Vec<String>> {
        self.fs.streams(&self.path)
    }
}

/// Read-only file-level access to one file system.
pub trait FileSystem {
    /// What file system this is.
    fn kind(&self) -> FsKind;
    /// The volume label.
    fn label(&self) -> Option<String>;
    /// The serial number or UUID, as the file system's own tools print it.
    fn serial(&self) -> Option<String>;
    /// Whether names are compared case-sensitively (ext, ISO Rock Ridge)
    /// or not (FAT, exFAT, NTFS: lookups ignore case).
    fn case_sensitive(&self) -> bool;
    /// What was found wrong or done to read the file system as it
    /// should be (e.g. an ext journal replayed in memory, blocks it
    /// skipped, a bad checksum tolerated: see
    /// [`FsOptions::strict`](crate::FsOptions)), one sentence each; empty
    /// when nothing was. Those met at open, then those met by the reads
    /// since (a reader checks some structures only when it reads them).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// The entries of the directory at `path`, without `.` and `..`.
    fn read_dir(&self, path: &str) -> Result<ReadDir>;
    /// What is known of `path` (a symlink itself, not its target).
    fn metadata(&self, path: &str) -> Result<Metadata>;
    /// The data of the regular file (or named stream) at `path`.
    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>>;
    /// The whole data of the regular file (or named stream) at `path`, like
    /// `std::fs::read`: a read that cannot be satisfied (a truncated
    /// image) is an error, never short data.
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(path)?
            .read_to_end(&mut out)
            .map_err(|e| crate::Error::from_io(crate::FsName::Detect, path, e))?;
        Ok(out)
    }
    /// The target of the symbolic link at `path`, as stored.
    fn read_link(&self, path: &str) -> Result<String>;
    /// The names of the named streams of `path` (NTFS alternate data
    /// streams); empty on file systems without them.
    fn streams(&self, _path: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Calls `f` for each entry of the directory at `path` (the entries
    /// [`read_dir`](FileSystem::read_dir) lists), in the file system's
    /// order, each as a [`Visited`] that reads its metadata and data from
    /// the directory entry at hand: a tree walk reads each directory once
    /// instead of resolving every path from the root. The error of the
    /// directory itself is returned; `f` gets those of single entries.
    ///
    /// The default goes through the path methods.
    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        visit_by_path(self, path, f)
    }
}

/// [`FileSystem::visit_dir`] through the path methods (its default).
pub(crate) fn visit_by_path<F: FileSystem + ?Sized>(
    fs: &F,
    path: &str,
    f: &mut VisitFn<'_>,
) -> Result<()> {
    for e in fs.read_dir(path)? {
        let v = PathEntry {
            fs,
            path: join(path, &e.name),
            name: e.name,
        };
        if f(Ok(&v)).is_break() {
            break;
        }
    }
    Ok(())
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The components of `path` (see the module docs), or `None` if it holds `..`.
pub fn components(path: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Shows raw name bytes as a string: valid UTF-8 as is, every other byte
/// as the character `U+10FF00 + byte`.
pub fn encode_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(RAW_BYTE_BASE + u32::from(b)).unwrap_or('\u{FFFD}'));
        }
    }
    out
}

/// The raw bytes a name made by [`encode_name`] stands for.
pub fn decode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for c in name.chars() {
        let v = u32::from(c);
        if (RAW_BYTE_BASE..=RAW_BYTE_BASE + 0xFF).contains(&v) {
            out.push(u8::try_from(v - RAW_BYTE_BASE).unwrap_or(b'?'));
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_names_round_trip() {
        let raw = b"a\xffb\xc3\xa9\xc3";
        let s = encode_name(raw);
        assert_eq!(s.chars().count(), 5);
        assert_eq!(decode_name(&s), raw);
        assert_eq!(encode_name("é".as_bytes()), "é");
    }

    #[test]
    fn dotdot_is_refused() {
        assert_eq!(components("/a//./b"), Some(vec!["a", "b"]));
        assert_eq!(components("/a/../b"), None);
    }

    #[test]
    fn nt_epoch() {
        assert_eq!(Timestamp::from_nt(116_444_736_000_000_000 + 15).nanos, 1500);
        assert_eq!(Timestamp::from_nt(116_444_736_000_000_000).secs, 0);
    }
}
