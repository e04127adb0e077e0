//! One thread's extractor: creates the entries of one directory on the
//! host, under safe names, and writes their data.

use std::fs;
use std::io::{Seek, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use diskimage_formats::{BlockDevice, FileRange};
use diskimage_fs::file_system::join;
use diskimage_fs::{
    Error as FsError, FileReader, FileSystem, FileType, FsName, Timestamp, Visited,
};

use super::host::{file_ranges, fill, make_symlink, send_all, stamp};
use super::names::safe_name;
use super::order::Done;
use super::{ExtractOptions, Observer, Report};
use crate::error::{Error, Scheme};
use crate::walk::{depth_error, is_fs_metadata, loop_error};

/// Size of the buffer file data is copied through (one per thread).
const COPY_BUFFER: usize = 1 << 20;

/// Why an entry was not written: the file system could not give it (the
/// entry is reported and the walk goes on), or the host refused a write
/// (the extraction stops).
pub enum Fail {
    /// Reading the file system failed.
    Fs(FsError),
    /// Writing onto the host failed.
    Host(Error),
}

impl From<FsError> for Fail {
    fn from(e: FsError) -> Self {
        Fail::Fs(e)
    }
}

/// A host error on `path`.
fn host(path: &Path, e: std::io::Error) -> Fail {
    Fail::Host(Error::host_io(Scheme::Extract, path, e))
}

/// What to create on the host.
enum Make<'t> {
    Dir,
    File,
    Symlink(&'t str),
}

/// One thread's extractor: its own file system handle and buffer.
pub struct Extractor<'a> {
    pub(super) fs: &'a dyn FileSystem,
    /// The volume `fs` is on, for the image-file ranges of stored runs.
    device: &'a dyn BlockDevice,
    /// Whether files stored verbatim are copied by the kernel (cleared
    /// when it refuses once).
    pub(super) kernel_copy: bool,
    pub(super) streams: bool,
    /// Whether the file system's own metadata files are written.
    pub(super) fs_metadata: bool,
    /// Whether the file systems of other threads are opened strict.
    pub(super) strict: bool,
    /// The other devices the file systems of other threads are opened with.
    pub(super) fs_devices: diskimage_fs::Devices,
    /// The one read buffer, reused for every file.
    buf: Vec<u8>,
    observer: &'a dyn Observer,
}

impl<'a> Extractor<'a> {
    /// An extractor of `fs` (on `device`) with its own buffer.
    pub fn new(
        fs: &'a dyn FileSystem,
        device: &'a dyn BlockDevice,
        options: &ExtractOptions,
        observer: &'a dyn Observer,
    ) -> Self {
        Extractor {
            fs,
            device,
            kernel_copy: options.kernel_copy,
            streams: options.streams,
            fs_metadata: options.fs_metadata,
            strict: options.strict,
            fs_devices: options.fs_devices.clone(),
            buf: vec![0u8; COPY_BUFFER],
            observer,
        }
    }

    /// Creates `what` for `name` in the host directory `dir`, under a
    /// safe name, renamed `~N` while the name is taken (never through an
    /// existing file or link); the rename is reported. Returns the host
    /// path and, for a file, the file opened for writing.
    fn create(
        done: &mut Done,
        dir: &Path,
        fs_path: &str,
        name: &str,
        what: &Make<'_>,
    ) -> Result<(PathBuf, Option<fs::File>), Fail> {
        let safe = safe_name(name);
        let base = safe.as_deref().unwrap_or(name);
        let mut path = dir.join(base);
        let mut n = 1u64;
        let file = loop {
            let made = match what {
                Make::Dir => fs::create_dir(&path).map(|()| None),
                Make::File => fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map(Some),
                Make::Symlink(target) => make_symlink(target, &path).map(|()| None),
            };
            match made {
                Ok(file) => break file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    path = dir.join(format!("{base}~{n}"));
                    n += 1;
                }
                Err(e) => return Err(host(&path, e)),
            }
        };
        if safe.is_some() || n > 1 {
            done.renamed += 1;
            done.log.push(Report::Renamed {
                path: fs_path.to_string(),
                to: path.clone(),
            });
        }
        Ok((path, file))
    }

    /// Copies `reader` (the data of `fs_path`) into the new file `out` and
    /// stamps its modification time on the same handle. When the file
    /// system cannot give the data, the partial file is removed: a file
    /// that could not be read is reported, never left short or empty.
    fn copy(
        &mut self,
        mut reader: Box<dyn FileReader + '_>,
        mut out: fs::File,
        fs_path: &str,
        path: &Path,
        mtime: Option<Timestamp>,
    ) -> Result<(), Fail> {
        loop {
            let n = match fill(reader.as_mut(), &mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    drop(out);
                    let _ = fs::remove_file(path);
                    // Whatever the reader failed with, it is the file system's.
                    return Err(Fail::Fs(FsError::from_io(FsName::Detect, fs_path, e)));
                }
            };
            out.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| host(path, e))?;
            if n < self.buf.len() {
                break;
            }
        }
        stamp(&out, mtime);
        Ok(())
    }

    /// Has the kernel copy `ranges` (the data of `fs_path`, `v`) into the
    /// new file `out` (`sendfile`: one copy, no buffer), then stamps its
    /// modification time. If the kernel cannot, the file is written again
    /// through the reader (whose typed error, if any, is the one reported)
    /// and kernel copies stop for this thread.
    fn send(
        &mut self,
        v: &dyn Visited,
        ranges: &[FileRange<'_>],
        mut out: fs::File,
        fs_path: &str,
        path: &Path,
        mtime: Option<Timestamp>,
    ) -> Result<(), Fail> {
        if !send_all(&out, ranges) {
            self.kernel_copy = false;
            out.set_len(0)
                .and_then(|()| out.rewind())
                .map_err(|e| host(path, e))?;
            let reader = v.open("")?;
            return self.copy(reader, out, fs_path, path, mtime);
        }
        stamp(&out, mtime);
        Ok(())
    }

    /// Extracts one entry into the host directory `dir`; a directory is
    /// created and added to `done.subdirs`, for the caller to walk.
    pub fn entry(
        &mut self,
        done: &mut Done,
        dir: &Path,
        fs_path: &str,
        v: &dyn Visited,
        ancestors: &[u64],
    ) -> Result<(), Fail> {
        let meta = v.metadata()?;
        if !self.fs_metadata && is_fs_metadata(self.fs.kind(), fs_path, meta.inode) {
            return Ok(());
        }
        let name = v.name();
        match meta.file_type {
            FileType::Directory => {
                let (path, _) = Self::create(done, dir, fs_path, name, &Make::Dir)?;
                done.dir_times.push((path.clone(), meta.modified));
                // A loop is created as an empty directory and reported.
                match loop_error(self.fs.kind(), fs_path, meta.inode, ancestors) {
                    Some(e) => done.fail(fs_path, e),
                    None => done.subdirs.push((fs_path.to_string(), path, meta.inode)),
                }
            }
            FileType::File => {
                // Stored verbatim in image files: copied by the kernel.
                let ranges = self
                    .kernel_copy
                    .then(|| v.stored_runs())
                    .flatten()
                    .and_then(|runs| file_ranges(self.device, &runs));
                let reader = match ranges {
                    Some(_) => None,
                    None => Some(v.open("")?),
                };
                let (path, file) = Self::create(done, dir, fs_path, name, &Make::File)?;
                if let Some(file) = file {
                    match (reader, ranges) {
                        (Some(reader), _) => {
                            self.copy(reader, file, fs_path, &path, meta.modified)?;
                        }
                        (None, ranges) => {
                            let ranges = ranges.unwrap_or_default();
                            self.send(v, &ranges, file, fs_path, &path, meta.modified)?;
                        }
                    }
                }
                if self.streams {
                    for s in v.streams().unwrap_or_default() {
                        let sp = format!("{fs_path}:{s}");
                        let reader = v.open(&s)?;
                        let (path, file) =
                            Self::create(done, dir, &sp, &format!("{name}:{s}"), &Make::File)?;
                        if let Some(file) = file {
                            self.copy(reader, file, &sp, &path, None)?;
                        }
                    }
                }
                done.files += 1;
                self.observer.file_done();
            }
            FileType::Symlink => {
                let target = v.read_link()?;
                Self::create(done, dir, fs_path, name, &Make::Symlink(&target))?;
            }
            FileType::Special => {
                done.log.push(Report::SkippedSpecial {
                    path: fs_path.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Extracts the entries of the file-system directory `fs_dir` into the
    /// host directory `dir` (the directory is read once, its entries
    /// opened from their directory entries); its subdirectories are
    /// created and listed in the result, not walked.
    pub fn unit(&mut self, fs_dir: &str, dir: &Path, ancestors: &[u64]) -> Done {
        let mut done = Done::default();
        if let Some(e) = depth_error(self.fs.kind(), fs_dir, ancestors) {
            done.fail(fs_dir, e);
            return done;
        }
        let fs = self.fs;
        let visited = fs.visit_dir(fs_dir, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, e)) => {
                    done.fail(&join(fs_dir, &name), e);
                    return ControlFlow::Continue(());
                }
            };
            let path = join(fs_dir, v.name());
            match self.entry(&mut done, dir, &path, v, ancestors) {
                Ok(()) => {}
                // A file the file system cannot give: reported, the rest goes on.
                Err(Fail::Fs(e)) => done.fail(&path, e),
                Err(Fail::Host(e)) => {
                    done.stop = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if done.stop.is_some() {
            // As the walk always did: nothing below a stopped directory.
            done.subdirs.clear();
        } else if let Err(e) = visited {
            done.fail(fs_dir, e);
        }
        done
    }
}
