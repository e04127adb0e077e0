//! Shared pieces of the writers: positional reads and writes on a file
//! opened for writing (errors name the file and offset), a staging folder
//! that makes a new image appear only when complete, and random
//! identifiers.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::guid::Guid;

/// A file opened for reading and writing, named in every error.
#[derive(Debug)]
pub(crate) struct WFile {
    file: File,
    path: PathBuf,
    format: Format,
}

impl WFile {
    /// Opens an existing file for reading and writing (never creates it).
    pub fn open(path: &Path, format: Format) -> Result<Self> {
        let file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format, e).in_file(path))?;
        Ok(WFile {
            file,
            path: path.to_path_buf(),
            format,
        })
    }

    /// Creates `path`, which must not exist (staging files are fresh).
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        let file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(format, e).in_file(path))?;
        Ok(WFile {
            file,
            path: path.to_path_buf(),
            format,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: io::Error, offset: u64) -> Error {
        Error::io(self.format, e).in_file(&self.path).at(offset)
    }

    /// The file's length in bytes.
    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.err(e, 0))?.len())
    }

    /// Sets the file's length (holes where it grows).
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| self.err(e, len))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a read past the end of
    /// the file is an out-of-bounds error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = pread(&self.file, buf.get_mut(done..).unwrap_or_default(), at)
                .map_err(|e| self.err(e, at))?;
            if n == 0 {
                let size = self.len()?;
                return Err(Error::out_of_range(
                    self.format,
                    "file",
                    offset,
                    buf.len() as u64,
                    size,
                )
                .in_file(&self.path));
            }
            done += n;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = pwrite(&self.file, buf.get(done..).unwrap_or_default(), at)
                .map_err(|e| self.err(e, at))?;
            if n == 0 {
                return Err(self.err(io::Error::from(io::ErrorKind::WriteZero), at));
            }
            done += n;
        }
        Ok(())
    }

    /// Syncs the file's data (and the metadata needed to read it back).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.err(e, 0))
    }

    /// Allocates `len` bytes from `offset` on disk where the platform can
    /// (a fixed image), else leaves the range as it is.
    pub fn preallocate(&self, len: u64) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{fallocate, FallocateFlags};
            if len > 0 {
                fallocate(&self.file, FallocateFlags::empty(), 0, len)
                    .map_err(|e| self.err(io::Error::from(e), 0))?;
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.set_len(len)
        }
    }
}

#[cfg(unix)]
fn pread(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match f.read_at(buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(unix)]
fn pwrite(f: &File, buf: &[u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match f.write_at(buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(windows)]
fn pread(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, at)
}

#[cfg(windows)]
fn pwrite(f: &File, buf: &[u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(f, buf, at)
}

/// A folder beside the destination where a new image's files are written
/// under their final names, moved into place by [`Staging::commit`] only
/// when complete (the main file last); dropped uncommitted, it is removed,
/// so an interrupted create or convert never leaves a file that looks
/// finished.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    dest_dir: PathBuf,
    names: Vec<String>,
    done: bool,
}

impl Staging {
    /// A new staging folder in the folder of `dest`.
    pub fn new(dest: &Path, format: Format) -> Result<Self> {
        let dest_dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = dest_dir.join(format!(".{stem}.partial-{:08x}", random_u32()));
        std::fs::create_dir(&dir).map_err(|e| Error::io(format, e).in_file(&dir))?;
        Ok(Staging {
            dir,
            dest_dir,
            names: Vec::new(),
            done: false,
        })
    }

    /// The staging path of the file that will be `name` in the
    /// destination folder; files are moved in the order they were named.
    pub fn file(&mut self, name: &str) -> PathBuf {
        self.names.push(name.to_owned());
        self.dir.join(name)
    }

    /// The staging path of `name`, not recorded for moving.
    pub fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The staging folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name` will end up.
    pub fn dest(&self, name: &str) -> PathBuf {
        self.dest_dir.join(name)
    }

    /// Refuses when a file this image will create exists and `force` is off.
    pub fn check_free(&self, names: &[String], force: bool, format: Format) -> Result<()> {
        for n in names {
            let d = self.dest(n);
            if !force && std::fs::symlink_metadata(&d).is_ok() {
                return Err(Error::new(
                    ErrorKind::Io,
                    format,
                    Detail::Invalid("the file exists (replace it with --force)".into()),
                )
                .in_file(&d));
            }
        }
        Ok(())
    }

    /// Syncs and moves every staged file into the destination folder, in
    /// the order they were named, and removes the staging folder.
    pub fn commit(mut self, format: Format) -> Result<()> {
        self.sync_files(format)?;
        for n in &self.names {
            let from = self.dir.join(n);
            let to = self.dest_dir.join(n);
            std::fs::rename(&from, &to).map_err(|e| Error::io(format, e).in_file(&to))?;
        }
        if let Ok(d) = File::open(&self.dest_dir) {
            let _ = d.sync_all();
        }
        let _ = std::fs::remove_dir(&self.dir);
        self.done = true;
        Ok(())
    }
}

impl Staging {
    /// Syncs every staged file. Many files (the 2 GiB extents of a split
    /// disk) are synced from several threads at once, so that the file
    /// system commits them together instead of one journal commit per
    /// file (1,024 extents: seconds one by one, a few hundred
    /// milliseconds at once).
    fn sync_files(&self, format: Format) -> Result<()> {
        const THREADS: usize = 32;
        let sync = |n: &String| -> Result<()> {
            let from = self.dir.join(n);
            match File::open(&from) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| Error::io(format, e).in_file(&from)),
                Err(_) => Ok(()),
            }
        };
        if self.names.len() <= 2 {
            return self.names.iter().try_for_each(sync);
        }
        let chunk = self.names.len().div_ceil(THREADS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .names
                .chunks(chunk)
                .map(|names| scope.spawn(move || names.iter().try_for_each(sync)))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(
                        Error::io(format, io::Error::other("a sync thread panicked"))
                            .in_file(&self.dir),
                    )
                })
            })
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Makes the new one-file image `path` as `write` fills it: written under
/// its final name in a staging folder beside `path` and moved into place
/// only when `write` succeeded (the file synced by [`Staging::commit`]),
/// so an interrupted create leaves no file that looks finished. An
/// existing `path` is refused unless `force`.
pub(crate) fn create_staged(
    path: &Path,
    force: bool,
    format: Format,
    write: impl FnOnce(&WFile) -> Result<()>,
) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::new(
            ErrorKind::Io,
            format,
            Detail::Invalid("already exists (replace it with --force)".into()),
        )
        .in_file(path));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut staging = Staging::new(path, format)?;
    let file = WFile::create(&staging.file(&name), format)?;
    write(&file)?;
    drop(file);
    staging.commit(format)
}

/// A random version-4 GUID from the system's random source (`/dev/urandom`),
/// or, where there is none, from the writers' shared identifier source
/// ([`random_bytes16`]).
pub(crate) fn random_guid() -> Guid {
    use std::io::Read;
    let mut b = [0u8; 16];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        b = random_bytes16();
    }
    // Version 4, variant 1 (the byte order of the fields does not matter
    // for random bits; these bytes are the Microsoft layout's).
    b[7] = (b[7] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Guid(b)
}

/// 64 random bits from the standard library's per-process random hash
/// keys, the time and a counter (identifiers, not cryptography).
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// 32 random bits (see [`random_u64`]).
pub(crate) fn random_u32() -> u32 {
    (random_u64() >> 32) as u32
}

/// 16 random bytes (see [`random_u64`]).
pub(crate) fn random_bytes16() -> [u8; 16] {
    let mut out = [0u8; 16];
    let (a, b) = (random_u64().to_le_bytes(), random_u64().to_le_bytes());
    for (o, v) in out.iter_mut().zip(a.iter().chain(b.iter())) {
        *o = *v;
    }
    out
}
