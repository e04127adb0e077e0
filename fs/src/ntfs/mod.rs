//! NTFS over the `ntfs` crate, with our own data reader.
//!
//! The crate parses the boot sector, MFT records (fixups checked),
//! indexes and the $UpCase table (names are looked up case-insensitively
//! through it). Data streams are found and read here: `mft` reads MFT
//! records through the data runs of `$MFT` (a record may cross from one
//! run into the next) and gathers a `$DATA` attribute from the base record
//! and, through `$ATTRIBUTE_LIST`, from extension records; `data` reads
//! the runs, with sparse runs and bytes past the initialized size as
//! zeros and LZNT1-compressed streams decompressed per compression unit
//! by `lznt1`. A run at cluster 0 (`$Boot`) is stored data, not sparse.
//!
//! Hard links are entries in several directories naming one MFT record
//! (`inode` and `nlink` in [`Metadata`]). Reparse points of the symlink and
//! junction kinds are shown as symlinks with their print name as target.
//!
//! # Threads
//! [`NtfsFs`] is `Send + Sync`: each call reads through its own cursor.

pub(crate) mod data;
mod dir;
pub(crate) mod lznt1;
mod mapping_pairs;
pub(crate) mod mft;
mod record;
mod reparse;
mod volume_reader;

use dir::{for_each_index_entry, NtfsVisited};

use volume_reader::VolumeReader;

use std::borrow::Cow;
use std::io::Cursor;
use std::sync::Arc;

use diskimage_formats::BlockDevice;
use std::ops::ControlFlow;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileAttributeFlags;
use ntfs::{Ntfs, NtfsError, NtfsFile};

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, DirEntry, FileReader, FileSystem, FileType, Metadata, ReadDir, StoredRun,
    Timestamp, VisitFn,
};
use crate::FsKind;
use data::RunReader;
use mft::{Mft, Stream, StreamData};

const FS: FsName = FsName::Ntfs;

/// Most entries read from one directory index.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Most data runs of one stream.
pub const MAX_RUNS: usize = 1 << 20;

/// An NTFS file system.
pub struct NtfsFs {
    ntfs: Ntfs,
    device: Arc<dyn BlockDevice>,
    label: Option<String>,
    /// Position and raw bytes of the first MFT record (`$MFT` itself),
    /// which the crate reads for every file it opens: read once.
    mft0: Option<Arc<(u64, Vec<u8>)>>,
    /// MFT records read ahead (see [`VolumeReader`]).
    ahead: volume_reader::RecordBlock,
    /// `$MFT` mapped through its data runs.
    mft: Arc<Mft>,
}

fn map_err(e: NtfsError, path: &str) -> Error {
    match e {
        NtfsError::Io(io) => Error::from_io(FS, path, io),
        NtfsError::NotADirectory { .. } => Error::wrong_type(FS, path, "not a directory"),
        e @ (NtfsError::UnsupportedAttributeType { .. }
        | NtfsError::UnsupportedClusterSize { .. }
        | NtfsError::UnsupportedFileNamespace { .. }
        | NtfsError::UnsupportedSectorSize { .. }) => Error::Unsupported {
            fs: FS,
            path: Some(path.to_string()),
            what: e.to_string(),
            source: Some(Box::new(e)),
        },
        e => Error::Corrupt {
            fs: FS,
            path: Some(path.to_string()),
            offset: None,
            detail: Box::new(crate::error::Detail::Invalid(e.to_string())),
            source: Some(Box::new(e)),
        },
    }
}

/// `path` split into the file path and the stream name (`""`: the unnamed data).
fn split_stream(path: &str) -> (&str, &str) {
    let last = path.rsplit('/').next().unwrap_or_default();
    match last.split_once(':') {
        Some((_, stream)) => (&path[..path.len() - stream.len() - 1], stream),
        None => (path, ""),
    }
}

/// Checks what `ntfs` 0.4 reads first, before it reads it: that crate
/// panics (an `unreachable!` on a wrapped binrw I/O error) when the boot
/// sector or the first MFT record cannot be read whole, e.g. on a
/// truncated volume. Found by the `fs_ntfs` fuzz target.
fn check_boot_sector(device: &dyn BlockDevice) -> Result<()> {
    use diskimage_formats::bytes::{le_u16, le_u64};
    let bad = |what: String| Error::corrupt(FsName::Ntfs, Some("/"), what);
    let size = device.size();
    if size < 512 {
        return Err(bad(format!(
            "volume of {size} bytes is smaller than the 512-byte boot sector"
        )));
    }
    let mut boot = [0u8; 512];
    device
        .read_at(&mut boot, 0)
        .map_err(|e| bad(format!("boot sector unreadable: {e}")))?;
    let bps = u64::from(le_u16(&boot, 0x0B).unwrap_or(0));
    let spc_raw = boot[0x0D];
    // Sectors per cluster: a power of two, or 2^(256 - n) for n >= 0xF4 (large clusters).
    let spc = if spc_raw >= 0xF4 {
        1u64 << (256 - u32::from(spc_raw))
    } else {
        u64::from(spc_raw)
    };
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() || spc == 0 || !spc.is_power_of_two()
    {
        return Err(bad(format!(
            "boot sector: {bps} bytes per sector, {spc} sectors per cluster"
        )));
    }
    let cluster = bps * spc;
    let mft = le_u64(&boot, 0x30).unwrap_or(u64::MAX);
    let mft_offset = mft
        .checked_mul(cluster)
        .filter(|&o| o.saturating_add(4096) <= size);
    if mft_offset.is_none() {
        return Err(bad(format!(
            "$MFT at cluster {mft} lies outside the {size}-byte volume"
        )));
    }
    Ok(())
}

fn ts(t: ntfs::NtfsTime) -> Option<Timestamp> {
    Some(Timestamp::from_nt(t.nt_timestamp()))
}

impl NtfsFs {
    /// Opens the NTFS file system on `device` and reads its $UpCase table.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        check_boot_sector(device.as_ref())?;
        let mut r = VolumeReader::new(Arc::clone(&device));
        let mut ntfs = Ntfs::new(&mut r).map_err(|e| map_err(e, "/"))?;
        ntfs.read_upcase_table(&mut r)
            .map_err(|e| map_err(e, "/"))?;
        let label = ntfs
            .volume_name(&mut r)
            .and_then(|v| v.ok())
            .map(|v| v.name().to_string_lossy())
            .filter(|s| !s.is_empty());
        let size = usize::try_from(ntfs.file_record_size()).unwrap_or(0);
        let mft0 = ntfs.mft_position().value().and_then(|p| {
            let mut bytes = vec![0u8; size];
            let at = p.get();
            device.read_at(&mut bytes, at).ok()?;
            Some(Arc::new((at, bytes)))
        });
        let mft = Mft::open(
            Arc::clone(&device),
            u64::from(ntfs.cluster_size()),
            size,
            ntfs.mft_position().value().map_or(0, |p| p.get()),
        )?;
        Ok(NtfsFs {
            ntfs,
            device,
            label,
            mft0,
            ahead: Arc::default(),
            mft: Arc::new(mft),
        })
    }

    fn reader(&self) -> VolumeReader {
        VolumeReader::with_records(
            Arc::clone(&self.device),
            usize::try_from(self.ntfs.file_record_size()).unwrap_or(0),
            self.mft0.clone(),
            Some(Arc::clone(&self.ahead)),
            Some(Arc::clone(&self.mft)),
        )
    }

    /// The file at `path` (without a stream suffix).
    fn lookup(&self, r: &mut VolumeReader, path: &str) -> Result<NtfsFile<'_>> {
        let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        let mut file = self.ntfs.root_directory(r).map_err(|e| map_err(e, path))?;
        for part in parts {
            if !file.is_directory() {
                return Err(Error::wrong_type(FS, path, "not a directory"));
            }
            let next = {
                let index = file.directory_index(r).map_err(|e| map_err(e, path))?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, &self.ntfs, r, part) {
                    Some(entry) => entry
                        .map_err(|e| map_err(e, path))?
                        .to_file(&self.ntfs, r)
                        .map_err(|e| map_err(e, path))?,
                    // The crate's B-tree search misses some system names
                    // ($Extend/$ObjId): fall back to a bounded scan.
                    None => self.scan(r, &file, part, path)?,
                }
            };
            file = next;
        }
        Ok(file)
    }

    /// The entry `name` of `dir` by a linear scan (names compared in upper case).
    fn scan<'n>(
        &'n self,
        r: &mut VolumeReader,
        dir: &NtfsFile<'n>,
        name: &str,
        path: &str,
    ) -> Result<NtfsFile<'n>> {
        let want = name.to_uppercase();
        let index = dir.directory_index(r).map_err(|e| map_err(e, path))?;
        let mut entries = index.entries();
        let mut seen = 0usize;
        while let Some(entry) = entries.next(r) {
            seen += 1;
            if seen > MAX_DIR_ENTRIES {
                return Err(Error::limit(
                    FS,
                    Some(path),
                    "directory index too large (a loop?)",
                ));
            }
            let entry = entry.map_err(|e| map_err(e, path))?;
            let Some(Ok(key)) = entry.key() else { continue };
            if key.name().to_string_lossy().to_uppercase() == want {
                return entry.to_file(&self.ntfs, r).map_err(|e| map_err(e, path));
            }
        }
        Err(Error::not_found(FS, path))
    }

    fn open_stream(&self, path: &str) -> Result<(Box<dyn FileReader + '_>, u64)> {
        let (fpath, stream) = split_stream(path);
        let mut r = self.reader();
        let file = self.lookup(&mut r, fpath)?;
        let record = r.fixed_record(&file);
        self.open_file_stream(&file, record.as_deref(), path, stream)
    }

    /// The base MFT record of `file` with its fixups applied: `record` when
    /// at hand (the record as read for `file`), else read again.
    fn base_record<'r>(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&'r [u8]>,
    ) -> Result<Cow<'r, [u8]>> {
        match record {
            Some(r) => Ok(Cow::Borrowed(r)),
            None => Ok(Cow::Owned(self.mft.record(file.file_record_number())?)),
        }
    }

    /// The `$DATA` stream `stream` of `file` (at `path`, for errors).
    fn data_stream(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&[u8]>,
        path: &str,
        stream: &str,
    ) -> Result<Option<Stream>> {
        let base = self.base_record(file, record)?;
        self.mft
            .stream(file.file_record_number(), &base, stream, path)
    }

    /// Where the unnamed data of `file` is stored verbatim, as
    /// [`Visited::stored_runs`] says.
    fn stored_runs(&self, file: &NtfsFile<'_>, record: Option<&[u8]>) -> Option<Vec<StoredRun>> {
        if file.is_directory() {
            return None;
        }
        let s = self.data_stream(file, record, "", "").ok()??;
        if s.flags & (mft::FLAG_COMPRESSED | mft::FLAG_ENCRYPTED | mft::FLAG_SPARSE) != 0
            || s.initialized < s.size
        {
            return None;
        }
        let StreamData::Runs(runs) = s.data else {
            return None;
        };
        crate::runs::stored_runs(&runs, s.size).filter(|out| out.len() <= MAX_RUNS)
    }

    /// The data of stream `stream` (`""`: the unnamed data) of `file`,
    /// which is at `path` (for errors), and its size. `record` is the
    /// file's MFT record as read (fixups applied), if at hand.
    fn open_file_stream(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&[u8]>,
        path: &str,
        stream: &str,
    ) -> Result<(Box<dyn FileReader + '_>, u64)> {
        if stream.is_empty() && file.is_directory() {
            return Err(Error::wrong_type(FS, path, "is a directory"));
        }
        let s = match self.data_stream(file, record, path, stream)? {
            Some(s) => s,
            // A file record without unnamed data (system files): empty.
            None if stream.is_empty() => return Ok((Box::new(Cursor::new(Vec::new())), 0)),
            None => return Err(Error::not_found(FS, path)),
        };
        if s.flags & mft::FLAG_ENCRYPTED != 0 {
            return Err(Error::unsupported(FS, Some(path), "EFS-encrypted stream"));
        }
        let runs = match s.data {
            StreamData::Resident(v) => return Ok((Box::new(Cursor::new(v)), s.size)),
            StreamData::Runs(runs) => runs,
        };
        let unit = if s.flags & mft::FLAG_COMPRESSED != 0 {
            if s.unit_exp == 0 || s.unit_exp > 8 {
                return Err(Error::unsupported(
                    FS,
                    Some(path),
                    "compressed stream without a compression unit",
                ));
            }
            Some(u64::from(self.ntfs.cluster_size()) << s.unit_exp)
        } else {
            None
        };
        let reader = RunReader::new(
            Arc::clone(&self.device),
            runs,
            s.size,
            s.initialized,
            unit,
            path,
        )?;
        Ok((Box::new(reader), s.size))
    }
}

impl FileSystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn serial(&self) -> Option<String> {
        Some(format!("{:016X}", self.ntfs.serial_number()))
    }

    fn case_sensitive(&self) -> bool {
        false
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let mut r = self.reader();
        let file = self.lookup(&mut r, path)?;
        if !file.is_directory() {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        let mut out: Vec<DirEntry> = Vec::new();
        for_each_index_entry(&mut r, &file, path, |_, _, key, name| {
            let attrs = key.file_attributes();
            let file_type = if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
                FileType::Symlink
            } else if key.is_directory() {
                FileType::Directory
            } else {
                FileType::File
            };
            out.push(DirEntry { name, file_type });
            ControlFlow::Continue(())
        })?;
        // Reparse points that are not links are shown as what they are.
        for e in out.iter_mut().filter(|e| e.file_type == FileType::Symlink) {
            if let Ok(m) = self.metadata(&crate::file_system::join(path, &e.name)) {
                e.file_type = m.file_type;
            }
        }
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        let (fpath, stream) = split_stream(path);
        let mut r = self.reader();
        let file = self.lookup(&mut r, fpath)?;
        let record = r.fixed_record(&file);
        self.file_metadata(&file, record.as_deref(), path, stream)
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        Ok(self.open_stream(path)?.0)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let mut r = self.reader();
        let file = self.lookup(&mut r, path)?;
        let record = r.fixed_record(&file);
        self.is_link(&file, record.as_deref(), path)?
            .ok_or_else(|| Error::wrong_type(FS, path, "not a symbolic link"))
    }

    fn streams(&self, path: &str) -> Result<Vec<String>> {
        let mut r = self.reader();
        let file = self.lookup(&mut r, path)?;
        let record = r.fixed_record(&file);
        let base = self.base_record(&file, record.as_deref())?;
        self.mft.stream_names(&base, path)
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let mut r = self.reader();
        let dir = self.lookup(&mut r, path)?;
        if !dir.is_directory() {
            return Err(Error::wrong_type(FS, path, "not a directory"));
        }
        for_each_index_entry(&mut r, &dir, path, |r, entry, _, name| {
            let full = crate::file_system::join(path, &name);
            match entry.to_file(&self.ntfs, r) {
                Ok(file) => {
                    let record = r.fixed_record(&file);
                    f(Ok(&NtfsVisited {
                        fs: self,
                        file,
                        record,
                        name,
                        path: full,
                    }))
                }
                Err(e) => f(Err((name, map_err(e, &full)))),
            }
        })
    }
}
