//! [`ImageFile`]: one opened input file (or in-memory bytes) that format
//! readers read with positional, bounds-checked reads.
//!
//! Files are always opened read-only. Reads are positional (`pread` on
//! Unix through `std::os::unix::fs::FileExt`, `ReadFile` with an offset on
//! Windows through `std::os::windows::fs::FileExt`) by default, or a
//! read-only memory map when [`OpenOptions::mmap`] is set. Holes of sparse
//! files are asked for (`SEEK_DATA`/`SEEK_HOLE`) where the host has them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::block_device::FileRange;
use crate::budget::MemoryBudget;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::mmap::map_read_only;
use crate::options::OpenOptions;

enum Backend {
    Pread(File),
    /// The map, and the file kept open for hole queries.
    Mmap(Mmap, File),
    Memory(Arc<[u8]>),
}

/// An opened, read-only input file: its path, length and bytes.
pub struct ImageFile {
    path: PathBuf,
    len: u64,
    backend: Backend,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for ImageFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ImageFile {
    /// Opens `path` read-only; a directory, a missing file or an unreadable
    /// one is an error naming the path.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        if !options.allows(path) {
            return Err(Error::new(
                ErrorKind::OutsideFolder,
                Format::Probe,
                Detail::Invalid(format!(
                    "not opened: it is outside {} (allow it with --allow-outside)",
                    options
                        .confine_to
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                )),
            )
            .in_file(path));
        }
        let file = File::open(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::MissingFile
            } else {
                ErrorKind::Io
            };
            Error::new(kind, Format::Probe, Detail::Io(e)).in_file(path)
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(Format::Probe, e).in_file(path))?;
        if meta.is_dir() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                Format::Probe,
                Detail::Invalid("is a directory, not a disk image".into()),
            )
            .in_file(path));
        }
        let len = meta.len();
        let backend = if options.mmap && len > 0 {
            let map =
                map_read_only(&file).map_err(|e| Error::io(Format::Probe, e).in_file(path))?;
            Backend::Mmap(map, file)
        } else {
            Backend::Pread(file)
        };
        Ok(ImageFile {
            path: path.to_path_buf(),
            len,
            backend,
            budget: options.memory_budget(),
        })
    }

    /// Wraps bytes in memory as if they were the file at `path`.
    pub fn from_bytes(path: impl Into<PathBuf>, data: impl Into<Arc<[u8]>>) -> Self {
        let data = data.into();
        ImageFile {
            path: path.into(),
            len: data.len() as u64,
            backend: Backend::Memory(data),
            budget: Arc::new(MemoryBudget::default()),
        }
    }

    /// The file with its readers' tables and caches charged to `budget`
    /// (the open's, shared by the whole chain) instead of its own.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The memory budget that tables and caches read from this file charge.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fails with [`ErrorKind::OutOfBounds`] unless `len` bytes at `offset` are in the file.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::OutOfBounds,
            Format::Probe,
            Detail::Truncated {
                what: format!("read of {len} bytes"),
                needed: len,
                available: self.len.saturating_sub(offset),
            },
        )
        .at(offset)
        .in_file(&self.path))
    }

    /// Fills `buf` from byte `offset` of the file. Reading past the end is an
    /// [`ErrorKind::OutOfBounds`] error naming this file and the offset.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        self.check_range(offset, len)?;
        match &self.backend {
            Backend::Pread(file) => positional::read_exact_at(file, buf, offset)
                .map_err(|e| Error::io(Format::Probe, e).at(offset).in_file(&self.path)),
            Backend::Mmap(map, _) => copy_from(map, buf, offset, &self.path),
            Backend::Memory(data) => copy_from(data, buf, offset, &self.path),
        }
    }

    /// The runs of `[offset, offset + len)` that hold data, as the host file
    /// system stores the file: holes of a sparse file are left out
    /// (`SEEK_DATA`/`SEEK_HOLE`). Where that cannot be asked (bytes in
    /// memory, a file system without hole support) the whole range is one run.
    /// The range is clipped to the file.
    pub fn data_runs(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset.saturating_add(len).min(self.len);
        let file = match &self.backend {
            Backend::Pread(f) | Backend::Mmap(_, f) => f,
            Backend::Memory(_) => return whole_run(offset, end),
        };
        positional::data_runs(file, offset, end)
    }

    /// `len` bytes at `offset` of this file as a [`FileRange`]: `None` when
    /// the bytes are in memory, `len` is zero, or the range does not lie
    /// wholly within the file (a truncated file: the reader's own error
    /// then names it).
    pub fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        let file = match &self.backend {
            Backend::Pread(f) | Backend::Mmap(_, f) => f,
            Backend::Memory(_) => return None,
        };
        let end = offset.checked_add(len)?;
        (len > 0 && end <= self.len).then_some(FileRange { file, offset, len })
    }

    /// Reads `len` bytes at `offset` into a new vector. The range is checked
    /// against the file's length before anything is allocated, so a header
    /// field can never size an allocation larger than the file.
    pub fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        let n = usize::try_from(len)
            .map_err(|_| Error::limit(Format::Probe, "read length", len, usize::MAX as u64))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads up to `max` bytes at `offset`: fewer when the file ends first.
    pub fn read_up_to(&self, offset: u64, max: usize) -> Result<Vec<u8>> {
        let avail = self.len.saturating_sub(offset).min(max as u64);
        self.read_vec(offset.min(self.len), avail)
    }
}

/// Positional reads and hole queries on a host file, per platform.
mod positional {
    use std::fs::File;

    /// Fills `buf` from byte `offset` of `file` (no shared seek position).
    #[cfg(unix)]
    pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }

    /// Fills `buf` from byte `offset` of `file` (`seek_read` moves the
    /// handle's position, which nothing here relies on).
    #[cfg(windows)]
    pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match file.seek_read(buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The runs of `[offset, end)` of `file` that hold data, holes left
    /// out (`SEEK_DATA`/`SEEK_HOLE`).
    #[cfg(unix)]
    pub fn data_runs(file: &File, offset: u64, end: u64) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break, // only a hole from here on
                Err(_) => {
                    runs.extend(super::whole_run(pos, end));
                    break;
                }
            };
            if data >= end {
                break;
            }
            let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data))
                .map_or(end, |h| h.min(end));
            if hole <= data {
                runs.extend(super::whole_run(data, end)); // no progress: do not trust the answers
                break;
            }
            runs.push((data, hole - data));
            pos = hole;
        }
        runs
    }

    /// Hosts without hole queries: the whole range is data.
    #[cfg(not(unix))]
    pub fn data_runs(_file: &File, offset: u64, end: u64) -> Vec<(u64, u64)> {
        super::whole_run(offset, end)
    }
}

fn whole_run(start: u64, end: u64) -> Vec<(u64, u64)> {
    if end > start {
        vec![(start, end - start)]
    } else {
        Vec::new()
    }
}

fn copy_from(src: &[u8], buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    let slice = usize::try_from(offset)
        .ok()
        .and_then(|start| src.get(start..start.checked_add(buf.len())?));
    match slice {
        Some(s) => {
            buf.copy_from_slice(s);
            Ok(())
        }
        None => Err(Error::out_of_range(
            Format::Probe,
            "file",
            offset,
            buf.len() as u64,
            src.len() as u64,
        )
        .in_file(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_name_file_and_offset() {
        let f = ImageFile::from_bytes("mem.img", vec![1u8; 100]);
        let mut buf = [0u8; 8];
        f.read_exact_at(&mut buf, 92).unwrap();
        let e = f.read_exact_at(&mut buf, 93).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert_eq!(e.offset(), Some(93));
        assert_eq!(e.path(), Some(Path::new("mem.img")));
        assert!(f.read_vec(0, u64::MAX).is_err());
        assert_eq!(f.read_up_to(90, 64).unwrap().len(), 10);
    }

    #[test]
    fn pread_and_mmap_read_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(&p, (0..=255u8).collect::<Vec<_>>()).unwrap();
        for mmap in [false, true] {
            let opts = OpenOptions {
                mmap,
                ..OpenOptions::default()
            };
            let f = ImageFile::open(&p, &opts).unwrap();
            let mut buf = [0u8; 3];
            f.read_exact_at(&mut buf, 253).unwrap();
            assert_eq!(buf, [253, 254, 255]);
        }
    }

    #[test]
    #[cfg(unix)]
    fn data_runs_leave_out_the_holes_of_a_sparse_file() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.img");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 4 << 20).unwrap();
        drop(f);
        let img = ImageFile::open(&p, &OpenOptions::default()).unwrap();
        let runs = img.data_runs(0, 8 << 20);
        // tmpfs and ext4 report the hole; a file system that cannot gives one run.
        if runs.len() == 1 && runs[0] == (0, 8 << 20) {
            return;
        }
        assert!(
            runs.iter()
                .all(|&(o, l)| o <= 4 << 20 && o + l >= (4 << 20) + 4096),
            "{runs:?}"
        );
        assert_eq!(img.data_runs(0, 1 << 20), vec![]);
        let mem = ImageFile::from_bytes("m", vec![0u8; 10]);
        assert_eq!(mem.data_runs(2, 100), vec![(2, 8)]);
    }

    #[test]
    fn directory_and_missing_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions::default();
        let e = ImageFile::open(dir.path(), &opts).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = ImageFile::open(&dir.path().join("nope"), &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingFile);
    }
}
