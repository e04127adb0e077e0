//! Directories: walking an index once per name, and the entries
//! `visit_dir` hands out with their metadata from the record at hand.

use std::ops::ControlFlow;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileName, NtfsFileNamespace};
use ntfs::{NtfsFile, NtfsIndexEntry};

use super::volume_reader::VolumeReader;
use super::{map_err, ts, NtfsFs, FS, MAX_DIR_ENTRIES};
use crate::error::{Error, Result};
use crate::file_system::{FileReader, FileType, Metadata, StoredRun, Visited};

/// Calls `f` with each entry of the index of directory `dir` (at `path`)
/// under its Win32 or POSIX name, once per name: DOS names, `.` and
/// repeats are skipped, and more than [`MAX_DIR_ENTRIES`] entries (a loop
/// in a damaged index) is a limit error. `f` says whether to go on.
pub(super) fn for_each_index_entry<'n>(
    r: &mut VolumeReader,
    dir: &NtfsFile<'n>,
    path: &str,
    mut f: impl FnMut(
        &mut VolumeReader,
        &NtfsIndexEntry<'_, NtfsFileNameIndex>,
        &NtfsFileName,
        String,
    ) -> ControlFlow<()>,
) -> Result<()> {
    let index = dir.directory_index(r).map_err(|e| map_err(e, path))?;
    let mut entries = index.entries();
    let mut names = std::collections::HashSet::new();
    let mut count = 0usize;
    while let Some(entry) = entries.next(r) {
        count += 1;
        if count > MAX_DIR_ENTRIES {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("more than {MAX_DIR_ENTRIES} index entries (an index loop?)"),
            ));
        }
        let entry = entry.map_err(|e| map_err(e, path))?;
        let Some(key) = entry.key() else { continue };
        let key = key.map_err(|e| map_err(e, path))?;
        if key.namespace() == NtfsFileNamespace::Dos {
            continue;
        }
        let name = key.name().to_string_lossy();
        if name == "." || !names.insert(name.clone()) {
            continue;
        }
        if f(r, &entry, &key, name).is_break() {
            break;
        }
    }
    Ok(())
}

impl NtfsFs {
    /// What [`FileSystem::metadata`] gives for stream `stream` of `file`
    /// (at `path`, for errors).
    pub(super) fn file_metadata(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&[u8]>,
        path: &str,
        stream: &str,
    ) -> Result<Metadata> {
        let info = file.info().map_err(|e| map_err(e, path))?;
        let link = if stream.is_empty() {
            self.is_link(file, record, path)?
        } else {
            None
        };
        let (file_type, size) = if let Some(t) = &link {
            (FileType::Symlink, t.len() as u64)
        } else if file.is_directory() && stream.is_empty() {
            (FileType::Directory, 0)
        } else {
            let size = match self.data_stream(file, record, path, stream)? {
                Some(s) => s.size,
                None if stream.is_empty() => 0,
                None => return Err(Error::not_found(FS, path)),
            };
            (FileType::File, size)
        };
        Ok(Metadata {
            file_type,
            size,
            allocated: None,
            mode: None,
            uid: None,
            gid: None,
            nlink: Some(u64::from(file.hard_link_count())),
            inode: Some(file.file_record_number()),
            created: ts(info.creation_time()),
            modified: ts(info.modification_time()),
            accessed: ts(info.access_time()),
            changed: ts(info.mft_record_modification_time()),
        })
    }
}

/// An entry met by `NtfsFs::visit_dir`, with its MFT record read once.
pub(super) struct NtfsVisited<'n> {
    pub(super) fs: &'n NtfsFs,
    pub(super) file: NtfsFile<'n>,
    /// Its MFT record as read (fixups applied), if kept.
    pub(super) record: Option<Vec<u8>>,
    pub(super) name: String,
    /// Its path, for errors and symlink targets.
    pub(super) path: String,
}

impl Visited for NtfsVisited<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        self.fs
            .file_metadata(&self.file, self.record.as_deref(), &self.path, "")
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        let path = if stream.is_empty() {
            self.path.clone()
        } else {
            format!("{}:{stream}", self.path)
        };
        let (reader, _) =
            self.fs
                .open_file_stream(&self.file, self.record.as_deref(), &path, stream)?;
        Ok(reader)
    }
    fn read_link(&self) -> Result<String> {
        self.fs
            .is_link(&self.file, self.record.as_deref(), &self.path)?
            .ok_or_else(|| Error::wrong_type(FS, &self.path, "not a symbolic link"))
    }
    fn streams(&self) -> Result<Vec<String>> {
        let base = self.fs.base_record(&self.file, self.record.as_deref())?;
        self.fs.mft.stream_names(&base, &self.path)
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        self.fs.stored_runs(&self.file, self.record.as_deref())
    }
}
